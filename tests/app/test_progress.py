"""The render's progress bar: its time estimate, and log lines that never run into it."""

from __future__ import annotations

import io
import logging

import pytest

from realtime.app.progress import Progress


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


class Terminal(io.StringIO):
    """A stream that says it is a terminal; `screen()` plays back \\r, erase-line and \\n."""

    def isatty(self) -> bool:
        return True

    def screen(self) -> list[str]:
        lines, line, col, text, i = [], "", 0, self.getvalue(), 0
        while i < len(text):
            if text.startswith("\x1b[K", i):
                line, i = line[:col], i + 3
                continue
            c = text[i]
            if c == "\r":
                col = 0
            elif c == "\n":
                lines.append(line)
                line, col = "", 0
            else:
                line = line[:col] + c + line[col + 1 :]
                col += 1
            i += 1
        return [*lines, line] if line else lines


@pytest.fixture
def log_to():
    """Points the root logger's only handler at a stream for the test, then restores it."""
    root = logging.getLogger()
    saved, level = list(root.handlers), root.level

    def attach(stream) -> logging.Logger:
        root.handlers = [logging.StreamHandler(stream)]
        root.setLevel(logging.INFO)
        return logging.getLogger("test")

    yield attach
    root.handlers, root.level = saved, level


def test_the_estimate_leaves_out_the_warm_up_frame():
    clock = Clock()
    bar = Progress(100, "dreaming", stream=io.StringIO(), clock=clock)
    clock.t = 12.0  # the first frame: warm-up (cuDNN's search, graph capture) and a frame
    bar.update()
    assert bar.eta() is None and "estimating time left" in bar.text()
    for _ in range(4):  # then the steady pace: 0.2 s a frame
        clock.t += 0.2
        bar.update()
    assert bar.eta() == pytest.approx(95 * 0.2)  # 19 s, not the ~1140 s the first frame implies
    assert bar.text().endswith("19 s left")


def test_a_log_line_clears_the_bar_on_a_terminal(log_to):
    term = Terminal()
    log = log_to(term)
    bar = Progress(4, "dreaming clip.mp4", stream=term)
    bar.update()
    log.info("recording 160x120 at 10.0 fps to out.mp4")
    bar.update()
    bar.update()
    log.warning("disk nearly full")
    bar.update()
    bar.close()
    log.info("wrote 4 frames")
    lines = term.screen()
    assert lines[:2] == ["recording 160x120 at 10.0 fps to out.mp4", "disk nearly full"]
    assert lines[2].startswith("dreaming clip.mp4 [") and "4/4" in lines[2]
    assert lines[3:] == ["wrote 4 frames"]
    # the filter is gone with the bar
    assert not logging.getLogger().handlers[0].filters


def test_not_a_terminal_gets_whole_lines_a_tenth_apart(log_to):
    out = io.StringIO()
    log = log_to(out)
    bar = Progress(100, "dreaming", stream=out)
    for i in range(100):
        bar.update()
        if i == 50:
            log.info("a log line")
    bar.close()
    lines = out.getvalue().splitlines()
    assert "a log line" in lines
    bars = [line for line in lines if line.startswith("dreaming [")]
    assert 10 <= len(bars) <= 11 and "100/100" in bars[-1]
    assert "\r" not in out.getvalue()
