"""Snapshots: the per-frame callback that saves the dreamed output as a PNG when asked, within a
rate, a size budget and the disk's free space."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

from realtime.control.params import LiveParams
from realtime.control.presets import TMP_SUFFIX, PresetError, save_snapshot
from realtime.knobs import RecordConfig
from realtime.live.disk import MB, Statvfs, space_problem
from realtime.live.slot import Output

logger = logging.getLogger(__name__)

PATTERN = "dream-*.png"  # what save_snapshot names its files: they count against the budget
_DEFAULTS = RecordConfig()


class SnapshotSaver:
    """Per-frame callback that saves the dreamed output when a snapshot was requested.

    It compares LiveParams' snapshot counter with the one it last saw, so any number
    of requests between two frames give one PNG. Call it from one thread only (the
    dream loop calls its callbacks on the dream thread); encoding takes a few ms,
    only on frames that save.

    A request is refused (not saved) when it comes sooner than `min_interval` after the last
    save, when the snapshot PNGs in the folder already take `budget_mb`, or when the disk has
    less than `min_free_mb` free. Refusals and failed writes are logged once per kind until a
    snapshot is saved again, each kind passed once to `on_error` (status out); nothing raises.
    Temporary files of interrupted saves are removed at start.
    """

    def __init__(
        self,
        params: LiveParams,
        directory: str | Path,
        *,
        min_interval: float = _DEFAULTS.snapshot_interval,
        budget_mb: float = _DEFAULTS.snapshot_budget_mb,
        min_free_mb: float = _DEFAULTS.min_free_mb,
        on_error: Callable[[str], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        statvfs: Statvfs = os.statvfs,
    ) -> None:
        """
        Args:
            params: where requests are counted (request_snapshot) and the state saved with them.
            directory: where the PNGs go (created on the first save).
            min_interval: seconds between saves; requests in between are refused.
            budget_mb: the most the folder's snapshot PNGs may take.
            min_free_mb: refuse when the folder's disk has less free; 0: no check.
            on_error: called once with each kind of refusal or failure (status out).
            clock, statvfs: stand-ins for time.monotonic and os.statvfs (tests).
        """
        self._params = params
        self.directory = Path(directory)
        self.min_interval = float(min_interval)
        self.budget_bytes = float(budget_mb) * MB
        self.min_free_mb = float(min_free_mb)
        self.on_error = on_error
        self._clock = clock
        self._statvfs = statvfs
        self._seen = params.snapshot().snapshot_count  # requests before now are not ours
        self._last_save: float | None = None  # clock() of the last save
        self._told: set[str] = set()  # refusal kinds logged since the last save
        self.last_path: Path | None = None  # the newest PNG written
        self.saved = 0  # how many PNGs were written
        self.refused = 0  # requests not saved: too soon, over budget, no space, or failed
        self.errors = 0  # of those, the disk's faults: no space, a failed write
        self.used_bytes = self._scan()  # the snapshot PNGs in the folder, in bytes

    def __call__(self, output: Output) -> Path | None:
        """Save `output.dream` if a snapshot was requested since the last call; returns its path."""
        count = self._params.snapshot().snapshot_count
        if count == self._seen:
            return None
        self._seen = count
        now = self._clock()
        if self._last_save is not None and now - self._last_save < self.min_interval:
            return self._refuse(
                "interval",
                f"snapshot refused: requested {now - self._last_save:.2f} s after the last, "
                f"sooner than record.snapshot_interval = {self.min_interval:g} s",
                logging.WARNING,
            )
        if self.used_bytes >= self.budget_bytes:
            return self._refuse(
                "budget",
                f"snapshot refused: the snapshots in {str(self.directory)!r} take "
                f"{self.used_bytes / MB:.0f} MB, record.snapshot_budget_mb is "
                f"{self.budget_bytes / MB:g}; move them away or raise it",
                logging.WARNING,
            )
        if self.min_free_mb and not self._space_ok():
            return None
        try:
            path = save_snapshot(output.dream, self._params.state(), self.directory)
        except PresetError as err:
            self.errors += 1
            return self._refuse("write", f"snapshot not saved: {err}")
        self._last_save = now
        self._told.clear()
        self.last_path = path
        self.saved += 1
        self.used_bytes += _size(path)
        logger.info("snapshot saved: %s", path)
        return path

    def _space_ok(self) -> bool:
        folder = next((p for p in (self.directory, *self.directory.parents) if p.is_dir()), None)
        why = space_problem(folder or ".", self.min_free_mb, self._statvfs)
        if why is None:
            return True
        self.errors += 1
        self._refuse("space", f"snapshot refused: {why}")
        return False

    def _refuse(self, kind: str, message: str, level: int = logging.ERROR) -> None:
        """Count a refusal; log it (and report it) the first time of its kind since a save.
        Refusals by the limits are warnings; the disk's faults errors."""
        self.refused += 1
        if kind in self._told:
            return None
        self._told.add(kind)
        logger.log(level, "%s (said once until a snapshot is saved again)", message)
        if self.on_error is not None:
            self.on_error(message)
        return None

    def _scan(self) -> int:
        """Bytes of the snapshot PNGs already in the folder; removes interrupted saves' files."""
        if not self.directory.is_dir():
            return 0
        for tmp in self.directory.glob(PATTERN + TMP_SUFFIX):
            tmp.unlink(missing_ok=True)
            logger.info("removed %s, left by an interrupted snapshot", tmp)
        return sum(_size(p) for p in self.directory.glob(PATTERN))


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0
