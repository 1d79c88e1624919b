"""The snapshot callback: one PNG per request, carrying the parameters, within a rate, a size
budget and the free space; refusals and failures logged once, never raised, no partial files."""

import logging
import os

import numpy as np

from realtime.control.params import LiveParams
from realtime.control.presets import read_snapshot_params
from realtime.live.slot import Output
from realtime.live.snapshots import SnapshotSaver
from tests._tmpfs import small_disk


def picture(h: int = 48, w: int = 64) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([x * 255 // (w - 1), y * 255 // (h - 1), (x + y) % 256], -1).astype(np.uint8)


def make_params() -> LiveParams:
    return LiveParams(["conv1", "conv2", "conv3"], ["googlenet"], "googlenet")


def _output(index: int) -> Output:
    img = picture()
    return Output(dream=img, camera=img, index=index, capture_ts=0.0, done_ts=0.01)


def test_snapshot_saver_saves_once_per_request(tmp_path):
    params = make_params()
    params.request_snapshot()  # before the saver existed: not its business
    saver = SnapshotSaver(params, tmp_path / "shots")
    assert saver(_output(0)) is None
    params.request_snapshot()
    params.request_snapshot()  # two requests between frames give one PNG
    path = saver(_output(1))
    assert path is not None and path.is_file() and saver.saved == 1
    assert saver(_output(2)) is None
    assert read_snapshot_params(path) == params.state()
    assert len(list((tmp_path / "shots").glob("*.png"))) == 1


def test_snapshot_saver_survives_an_unwritable_directory(tmp_path, caplog):
    params = make_params()
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    saver = SnapshotSaver(params, blocker / "shots")
    params.request_snapshot()
    with caplog.at_level(logging.ERROR, logger="realtime.live.snapshots"):
        assert saver(_output(0)) is None
    assert any("snapshot not saved" in r.getMessage() for r in caplog.records)


class Clock:
    """time.monotonic stand-in that the test moves."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def warnings_logged(caplog) -> list[str]:
    """What the saver said at WARNING (refused by a limit) or above (the disk's faults)."""
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


def test_a_flood_of_requests_saves_one_snapshot_per_interval(tmp_path, caplog):
    """The attack: 122 requests in 6 s (a stuck key, an OSC loop) made 122 files."""
    params, clock, reports = make_params(), Clock(), []
    saver = SnapshotSaver(
        params, tmp_path / "shots", min_interval=1.0, clock=clock, on_error=reports.append
    )
    with caplog.at_level(logging.WARNING):
        for i in range(122):
            params.request_snapshot()
            saver(_output(i))
            clock.now += 6.0 / 122
    files = list((tmp_path / "shots").glob("*.png"))
    assert saver.saved == len(files) == 6  # at 0, ~1.03, ~2.07, ... s
    assert saver.refused == 116 and saver.errors == 0
    # one line per burst between two saves, not one per request
    assert len(warnings_logged(caplog)) == 6 and len(reports) == 6
    assert all("record.snapshot_interval = 1 s" in m for m in warnings_logged(caplog))


def test_snapshots_stop_at_the_size_budget(tmp_path, caplog):
    shots = tmp_path / "shots"
    shots.mkdir()
    (shots / "dream-20260101-000000.png").write_bytes(b"x" * 30_000)  # yesterday's
    (shots / "notes.png").write_bytes(b"x" * 90_000)  # not a snapshot: not counted
    params, reports = make_params(), []
    saver = SnapshotSaver(params, shots, min_interval=0, budget_mb=0.04, on_error=reports.append)
    assert saver.used_bytes == 30_000
    with caplog.at_level(logging.WARNING):
        for i in range(20):
            params.request_snapshot()
            saver(_output(i))
    assert saver.saved >= 1 and saver.used_bytes >= 0.04 * 1024 * 1024
    assert saver.used_bytes - 0.04 * 1024 * 1024 < 12_000  # over by at most one PNG
    assert len(list(shots.glob("dream-*.png"))) == saver.saved + 1
    assert len(warnings_logged(caplog)) == len(reports) == 1
    assert "record.snapshot_budget_mb" in reports[0]


def test_too_little_free_space_refuses_snapshots_once(tmp_path, caplog):
    def statvfs(folder):
        return os.statvfs_result((4096, 4096, 10**6, 256, 256, 10**6, 10**5, 10**5, 0, 255))

    params = make_params()
    saver = SnapshotSaver(params, tmp_path / "shots", min_interval=0, statvfs=statvfs)
    with caplog.at_level(logging.WARNING):
        for i in range(10):
            params.request_snapshot()
            assert saver(_output(i)) is None
    assert saver.errors == saver.refused == 10 and saver.saved == 0
    assert len(warnings_logged(caplog)) == 1
    assert "only 1 MB free" in warnings_logged(caplog)[0]
    assert not (tmp_path / "shots").exists()


def test_a_full_disk_leaves_no_partial_file(tmp_path, caplog):
    """A real 256 KB tmpfs, nearly filled: the PNG (about 230 KB) cannot be written."""
    with small_disk(tmp_path / "disk", 256) as disk:
        (disk / "filler").write_bytes(b"\0" * 200_000)
        params = make_params()
        saver = SnapshotSaver(params, disk / "shots", min_interval=0, min_free_mb=0)
        noise = np.random.default_rng(0).integers(0, 256, (240, 320, 3), dtype=np.uint8)
        with caplog.at_level(logging.WARNING):
            for i in range(3):
                params.request_snapshot()
                assert saver(Output(noise, noise, i, 0.0, 0.0)) is None
        assert saver.errors == 3 and len(warnings_logged(caplog)) == 1
        assert "No space left" in warnings_logged(caplog)[0]
        assert list((disk / "shots").iterdir()) == []  # no .png.tmp, no empty .png


def test_files_of_an_interrupted_save_are_removed_at_start(tmp_path):
    shots = tmp_path / "shots"
    shots.mkdir()
    (shots / "dream-20260101-000000.png.tmp").write_bytes(b"")  # SIGKILL mid-save
    (shots / "other.tmp").write_bytes(b"not ours")
    SnapshotSaver(make_params(), shots)
    assert sorted(p.name for p in shots.iterdir()) == ["other.tmp"]
