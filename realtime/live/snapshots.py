"""Snapshots: the per-frame callback that saves the dreamed output as a PNG when asked."""

from __future__ import annotations

import logging
from pathlib import Path

from realtime.control.params import LiveParams
from realtime.control.presets import PresetError, save_snapshot
from realtime.live.slot import Output

logger = logging.getLogger(__name__)


class SnapshotSaver:
    """Per-frame callback that saves the dreamed output when a snapshot was requested.

    It compares LiveParams' snapshot counter with the one it last saw, so any number
    of requests between two frames give one PNG. Call it from one thread only (the
    dream loop calls its callbacks on the dream thread); encoding takes a few ms,
    only on frames that save.
    """

    def __init__(self, params: LiveParams, directory: str | Path) -> None:
        self._params = params
        self.directory = Path(directory)
        self._seen = params.snapshot().snapshot_count  # requests before now are not ours
        self.last_path: Path | None = None  # the newest PNG written
        self.saved = 0  # how many PNGs were written

    def __call__(self, output: Output) -> Path | None:
        """Save `output.dream` if a snapshot was requested since the last call; returns its path."""
        count = self._params.snapshot().snapshot_count
        if count == self._seen:
            return None
        self._seen = count
        try:
            path = save_snapshot(output.dream, self._params.state(), self.directory)
        except PresetError as err:
            logger.error("snapshot not saved: %s", err)
            return None
        self.last_path = path
        self.saved += 1
        logger.info("snapshot saved: %s", path)
        return path
