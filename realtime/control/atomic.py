"""Files replaced whole or never: written beside their place, flushed to disk, then renamed."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def write_atomically(path: Path, data: bytes, tmp: Path | None = None) -> None:
    """Write `data` to `path` so that a reader, a crash or a full disk finds the old file or the
    new one, never part of one.

    Args:
        path: the file to create or replace.
        data: its whole content.
        tmp: the file written first and renamed (a name a cleaner can find); None: a unique
            hidden name beside `path`. Removed again if anything fails.

    Raises:
        OSError: the folder or disk refused; `path` is as it was.
    """
    if tmp is None:
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        tmp, f = Path(name), os.fdopen(fd, "wb")
    else:
        f = open(tmp, "wb")  # closed by the with below
    try:
        with f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
