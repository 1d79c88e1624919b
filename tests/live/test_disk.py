"""Disk helpers: claimed names never overwrite, free space is read from the file system."""

import os

import pytest

from realtime.live import disk


def test_claim_takes_the_first_free_number_and_creates_it_empty(tmp_path):
    (tmp_path / "show.mkv").write_bytes(b"old")
    (tmp_path / "show-1.mkv").write_bytes(b"older")
    path, n = disk.claim(tmp_path / "show.mkv")
    assert (path.name, n, path.stat().st_size) == ("show-2.mkv", 2, 0)
    assert disk.claim(tmp_path / "show.mkv")[0].name == "show-3.mkv"  # the claimed one is taken
    assert disk.claim(tmp_path / "new.avi") == (tmp_path / "new.avi", 0)
    assert (tmp_path / "show.mkv").read_bytes() == b"old"


def test_claim_gives_up_with_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setattr(disk, "MAX_NUMBER", 3)
    for name in ("a.mkv", "a-1.mkv", "a-2.mkv"):
        (tmp_path / name).touch()
    with pytest.raises(disk.DiskError, match="no free name .*move the old recordings"):
        disk.claim(tmp_path / "a.mkv")


def test_claim_refuses_a_folder_it_cannot_write(tmp_path):
    with pytest.raises(OSError):
        disk.claim(tmp_path / "missing" / "a.mkv")


def test_free_mb_is_what_statvfs_says(tmp_path):
    st = os.statvfs(tmp_path)
    assert disk.free_mb(tmp_path) == pytest.approx(st.f_bavail * st.f_frsize / disk.MB, rel=0.01)
