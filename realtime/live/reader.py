"""A source's reads on their own thread, so that a read which blocks can be timed out."""

from __future__ import annotations

import threading
import time

import numpy as np

from realtime.live.sources import FrameSource


class TimedReader:
    """Runs source.read() on its own daemon thread, so that a read which blocks can be timed out.

    Only the capture thread calls its methods.
    """

    def __init__(self, source: FrameSource) -> None:
        self._source = source
        self._wake = threading.Event()  # set: a read is requested (or stop)
        self._done = threading.Event()  # set: the requested read has finished
        self._done.set()
        self._quit = False
        self.result: np.ndarray | None = None
        self.error: BaseException | None = None
        self.read_at = 0.0  # time.monotonic() when the last read returned
        self._thread = threading.Thread(target=self._run, name=f"read {source.name}", daemon=True)
        self._thread.start()

    @property
    def busy(self) -> bool:
        """A read is in progress."""
        return not self._done.is_set()

    def request(self) -> None:
        self.result, self.error = None, None
        self._done.clear()
        self._wake.set()

    def wait(self, timeout: float) -> bool:
        """True once the read has finished, False if it is still running after `timeout` s."""
        return self._done.wait(timeout)

    def quit(self) -> None:
        """Let the thread end; if a read is still blocked it ends when that read returns."""
        self._quit = True
        self._wake.set()

    def _run(self) -> None:
        while True:
            self._wake.wait()
            self._wake.clear()
            if self._quit:
                return
            try:
                self.result = self._source.read()
            except Exception as err:  # any failure of a source is reported, then it is reopened
                self.error = err
            self.read_at = time.monotonic()
            self._done.set()
