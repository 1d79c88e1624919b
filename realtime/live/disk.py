"""The disk under recordings and snapshots: free space, and new file names that never overwrite."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

MB = 1024 * 1024
# A folder with this many show-N files is a loop gone wrong, not a gallery week (a 5-minute
# segment a day for 270 years).
MAX_NUMBER = 100_000

Statvfs = Callable[[str], os.statvfs_result]


class DiskError(OSError):
    """No free name could be claimed; the message says where and why."""


def free_mb(folder: str | Path, statvfs: Statvfs = os.statvfs) -> float:
    """Megabytes an unprivileged writer may still use in `folder`'s file system.

    Raises:
        OSError: the folder cannot be inspected (gone, not a folder).
    """
    st = statvfs(str(folder))
    return st.f_bavail * st.f_frsize / MB


def space_problem(
    folder: str | Path, min_free_mb: float, statvfs: Statvfs = os.statvfs
) -> str | None:
    """Why `folder`'s disk is too full to write to (less than `min_free_mb` free, or its free
    space unreadable), or None when there is room."""
    try:
        free = free_mb(folder, statvfs)
    except OSError as err:
        return f"cannot read the free space of {str(folder)!r}: {err}"
    if free < min_free_mb:
        # Whole MB, but tenths under 10 ("only 1.6 MB free ... less than 2 MB", not "only 2").
        shown = f"{free:.0f}" if free >= 10 else f"{free:.1f}".removesuffix(".0")
        return (
            f"only {shown} MB free on the disk of {str(folder)!r}, less than "
            f"record.min_free_mb = {min_free_mb:g} MB"
        )
    return None


def numbered(path: Path, n: int) -> Path:
    """`show.mkv` for 0, `show-1.mkv` for 1, ..."""
    return path if n == 0 else path.with_name(f"{path.stem}-{n}{path.suffix}")


def claim(path: str | Path, start: int = 0) -> tuple[Path, int]:
    """Create an empty file at the first free name `path`, `path-1`, ... from number `start`.

    The file is created exclusively (O_EXCL), so an existing file, or one another process
    claims at the same moment, is never opened for writing.

    Returns:
        (the path created, its number).

    Raises:
        DiskError: MAX_NUMBER names are taken.
        OSError: the folder refuses the file (read-only, full, no permission).
    """
    path = Path(path)
    for n in range(start, MAX_NUMBER):
        candidate = numbered(path, n)
        try:
            fd = os.open(candidate, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            continue
        os.close(fd)
        return candidate, n
    raise DiskError(
        f"no free name for {str(path)!r}: {path.stem}-{start} .. -{MAX_NUMBER - 1} all exist; "
        f"move the old recordings away or choose another path"
    )
