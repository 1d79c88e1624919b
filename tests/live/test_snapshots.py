"""The snapshot callback: one PNG per request, carrying the parameters; failures logged, not raised."""

import logging

import numpy as np

from realtime.control.params import LiveParams
from realtime.control.presets import read_snapshot_params
from realtime.live.slot import Output
from realtime.live.snapshots import SnapshotSaver


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
