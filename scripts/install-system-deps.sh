#!/usr/bin/env bash
# System packages the tests use: Xvfb (a real window), Mesa EGL (headless GL), liblo (a second OSC
# implementation), libGL (opencv-python), ffmpeg (--stream, and its loopback test), chromium (the
# audience page in a real browser, driven by Playwright, which is never let download a browser of
# its own), Avahi's client library (the NDI runtime that ndi-python bundles links it). Installs
# what is missing when run as root with apt-get; otherwise prints the command to run and carries
# on (those tests then skip, except in CI).
set -u
missing=()
command -v Xvfb >/dev/null || missing+=(xvfb)
command -v oscsend >/dev/null || missing+=(liblo-tools)
command -v ffmpeg >/dev/null || missing+=(ffmpeg)
ldconfig -p 2>/dev/null | grep -q 'libEGL_mesa.so' || missing+=(libegl1 libegl-mesa0 libgl1-mesa-dri)
ldconfig -p 2>/dev/null | grep -q 'libGL.so.1' || missing+=(libgl1)
ldconfig -p 2>/dev/null | grep -q 'libgthread-2.0.so.0' || missing+=(libglib2.0-0)
ldconfig -p 2>/dev/null | grep -q 'libavahi-client.so.3' || missing+=(libavahi-client3)
[ -x /usr/bin/chromium ] || missing+=(chromium fonts-dejavu-core)
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "installing system packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
  echo "note: missing system packages (${missing[*]}); install them with:"
  echo "  sudo apt-get install ${missing[*]}"
fi
exit 0
