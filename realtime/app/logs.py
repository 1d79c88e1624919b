"""Logging set-up: the console, an optional rotating file, and a periodic fps/latency line."""

from __future__ import annotations

import logging
import logging.handlers
import threading
from collections.abc import Callable, Mapping
from pathlib import Path

FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"
LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


class LogError(ValueError):
    """A bad log level or an unwritable log file."""


def setup_logging(
    level: str = "INFO", file: str = "", max_bytes: int = 5_000_000, backups: int = 5
) -> None:
    """Log to the console, and to a rotating file when `file` is given.

    Args:
        level: one of LEVELS.
        file: path of the log file; "" for console only.
        max_bytes: size at which the file rotates (5 MB: weeks of minute lines stay small).
        backups: how many rotated files are kept.
    """
    if level.upper() not in LEVELS:
        raise LogError(f"expected a log level in {', '.join(LEVELS)}, got {level!r}")
    root = logging.getLogger()
    root.setLevel(level.upper())
    for handler in list(root.handlers):
        root.removeHandler(handler)
        handler.close()
    console = logging.StreamHandler()
    console.setFormatter(logging.Formatter(FORMAT, "%H:%M:%S"))
    root.addHandler(console)
    if file:
        try:
            Path(file).parent.mkdir(parents=True, exist_ok=True)
            handler = logging.handlers.RotatingFileHandler(
                file, maxBytes=max_bytes, backupCount=backups
            )
        except OSError as err:
            raise LogError(f"cannot write log file {file!r}: {err}") from err
        handler.setFormatter(logging.Formatter(FORMAT))
        root.addHandler(handler)


class StatsLogger:
    """Owns a daemon thread that logs one fps/latency line every `interval` seconds."""

    def __init__(self, stats: Callable[[], Mapping[str, object]], interval: float = 60.0) -> None:
        self.stats = stats
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="stats-log", daemon=True)
        self._log = logging.getLogger("realtime.stats")

    def start(self) -> None:
        if self.interval > 0:
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(2.0)

    def line(self) -> str:
        s = self.stats()
        return " ".join(
            f"{k}={v:.1f}" if isinstance(v, float) else f"{k}={v}" for k, v in s.items()
        )

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._log.info("%s", self.line())
