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


def test_too_little_space_says_how_much_in_numbers_that_differ_from_the_limit(tmp_path):
    """1.6 MB free under a 2 MB limit used to read "only 2 MB free ..., less than 2 MB"."""

    def statvfs(free_mb):
        blocks = round(free_mb * 256)  # 4 KiB blocks
        return lambda folder: os.statvfs_result(
            (4096, 4096, 10**6, blocks, blocks, 10**6, 10**5, 10**5, 0, 255)
        )

    said = {mb: disk.space_problem(tmp_path, 500, statvfs(mb)) for mb in (1.6, 1.0, 120.4)}
    assert "only 1.6 MB free" in said[1.6] and "record.min_free_mb = 500 MB" in said[1.6]
    assert "only 1 MB free" in said[1.0] and "only 120 MB free" in said[120.4]
    assert disk.space_problem(tmp_path, 500, statvfs(600)) is None
