"""The package installs like a tool: a wheel, installed into a fresh venv, gives a working
`dream-installation` command that finds its shaders and presets away from the checkout."""

from __future__ import annotations

import os
import shutil
import site
import subprocess
import sys
import zipfile
from pathlib import Path

import cv2
import pytest

ROOT = Path(__file__).resolve().parent.parent
# What a wheel is built from: the package, the entry script, the data folders and the metadata.
SOURCES = ("realtime", "shaders", "config", "installation.py", "pyproject.toml", "README.md")


def run(*cmd: object, cwd: Path, timeout: float = 60, env: dict | None = None):
    done = subprocess.run(
        [str(c) for c in cmd],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )
    assert done.returncode == 0, f"{cmd} failed:\n{done.stdout}\n{done.stderr}"
    return done


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel, built (no dependencies, no downloads) from a copy of the checkout."""
    src = tmp_path_factory.mktemp("src")
    for name in SOURCES:
        path = ROOT / name
        if path.is_dir():
            shutil.copytree(path, src / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(path, src / name)
    out = tmp_path_factory.mktemp("wheel")
    run(
        sys.executable,
        "-m",
        "pip",
        "wheel",
        "--no-deps",
        "--no-build-isolation",
        "-q",
        "-w",
        out,
        src,
        cwd=src,
        timeout=120,
    )
    (found,) = out.glob("dream_installation-*.whl")
    return found


def test_the_wheel_holds_every_module_the_shaders_presets_and_the_command(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    modules = {p.relative_to(ROOT).as_posix() for p in (ROOT / "realtime").rglob("*.py")}
    assert modules - names == set(), "modules missing from the wheel"
    for folder, pattern in (("shaders", "*.[vf]*"), ("config", "*.toml")):
        files = {f"realtime/{folder}/{p.name}" for p in (ROOT / folder).glob(pattern)}
        assert files and files <= names, f"{folder}/ missing from the wheel"
    assert "installation.py" in names
    entry = next(n for n in names if n.endswith("entry_points.txt"))
    text = zipfile.ZipFile(wheel).read(entry).decode()
    assert "dream-installation = installation:console_main" in text


@pytest.mark.slow
def test_installed_command_runs_the_demo_from_elsewhere(wheel, tmp_path):
    """A fresh venv (its dependencies taken from this one's site-packages, nothing downloaded),
    the wheel installed into it, the command run headless from a folder outside the checkout."""
    venv = tmp_path / "venv"
    run(sys.executable, "-m", "venv", "--without-pip", venv, cwd=tmp_path)
    python = venv / "bin" / "python"
    purelib = run(
        python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))", cwd=tmp_path
    ).stdout.strip()
    # The dependencies (torch and all) from this interpreter's site-packages, after the venv's
    # own: the installed package is found first, and .pth files there (an editable install of
    # the checkout) are not read.
    Path(purelib, "deps.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    run(
        sys.executable,
        "-m",
        "pip",
        "--python",
        python,
        "install",
        "--no-deps",
        "-q",
        wheel,
        cwd=tmp_path,
    )
    work = tmp_path / "elsewhere"
    work.mkdir()
    where = run(
        python,
        "-c",
        "import realtime.control.resources as r; print(r.data_dir('shaders'));"
        "print(r.data_dir('config'))",
        cwd=work,
    ).stdout.split()
    assert all(Path(p).is_relative_to(purelib) for p in where), where
    command = venv / "bin" / "dream-installation"
    env = {"DREAM_WEIGHTS_BASE_URL": "http://127.0.0.1:9/", "DISPLAY": "", "WAYLAND_DISPLAY": ""}
    done = run(
        command,
        "--config",
        "gallery",
        "--source",
        "demo",
        "--size",
        "96x64",
        "--headless",
        "--frames",
        "4",
        "--record",
        "demo.mkv",
        "--device",
        "cpu",
        "--osc-port",
        "0",  # any free port: two runs on one machine must not collide on 9000
        cwd=work,
        env=env,
        timeout=120,
    )
    cap = cv2.VideoCapture(str(work / "demo.mkv"))
    frames = []
    while (got := cap.read())[0]:
        frames.append(got[1])
    cap.release()
    assert "dreamed 4 frames" in done.stderr, done.stderr
    # The recorder keeps the pace the frames were dreamed at (repeating or skipping frames to
    # its fps), so how many it writes depends on the machine's speed: only that it wrote some.
    assert len(frames) >= 2, done.stderr
    assert frames[0].shape == (64, 96, 3)
    assert frames[-1].std() > 5  # a picture, not a blank frame
