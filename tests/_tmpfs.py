"""A real small disk for fault tests: a tmpfs of a few MB, mounted for one test (root only)."""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest


@contextlib.contextmanager
def small_disk(folder: Path, size_kb: int, readonly: bool = False) -> Iterator[Path]:
    """Mount a `size_kb` tmpfs on `folder` (created) for the block, then unmount it.

    Skips the test where mounting is not permitted (not root, or a container without
    CAP_SYS_ADMIN); the same faults are also tested with a simulated disk, so CI does not
    depend on it.
    """
    folder.mkdir(parents=True, exist_ok=True)
    options = f"size={size_kb}k" + (",ro" if readonly else "")
    try:
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)],
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.TimeoutExpired) as err:
        pytest.skip(f"cannot mount a tmpfs to fill: {err}")
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs to fill (needs root): {done.stderr.strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True, timeout=10)
