"""A file written atomically is the old one or the new one, never a part, and leaves no temp."""

import pytest

from realtime.control.atomic import write_atomically
from tests._tmpfs import small_disk


def test_it_replaces_the_file_and_leaves_nothing_beside_it(tmp_path):
    path = tmp_path / "bindings.json"
    path.write_bytes(b"old")
    write_atomically(path, b"new")
    assert path.read_bytes() == b"new" and [p.name for p in tmp_path.iterdir()] == [path.name]


def test_a_full_disk_keeps_the_old_file_whole_and_removes_the_partial_one(tmp_path):
    """A real 1 MB tmpfs: 2 MB cannot be written; the old file stays, no temp file is left."""
    with small_disk(tmp_path / "disk", 1024) as disk:
        path = disk / "snap.png"
        path.write_bytes(b"old")
        for tmp in (None, disk / "snap.png.tmp"):
            with pytest.raises(OSError):
                write_atomically(path, b"x" * (2 * 1024 * 1024), tmp=tmp)
            assert path.read_bytes() == b"old"
            assert [p.name for p in disk.iterdir()] == ["snap.png"]
