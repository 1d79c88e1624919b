"""The last line of a headless run: frames and frame rate, and the CPU a VM's host took meanwhile."""

import logging

from realtime.app import run


class Loop:
    """What the summary reads of the dream loop: its frame count."""

    def __init__(self, frames: int) -> None:
        self.frames = frames

    def stats(self) -> dict:
        return {"frames": self.frames}


def summary_line(caplog, monkeypatch, before, after) -> str:
    monkeypatch.setattr(run, "cpu_ticks", lambda: after)
    monkeypatch.setattr(run.time, "monotonic", lambda: 102.0)  # the run began at 100.0
    with caplog.at_level(logging.INFO, logger=run.logger.name):
        run._summarise(100.0, before, Loop(40), None, [])
    return caplog.records[-1].getMessage()


def test_the_summary_names_the_cpu_the_host_took(caplog, monkeypatch):
    # 1,000 ticks of both CPUs in the run, 300 of them run by the host for someone else
    line = summary_line(caplog, monkeypatch, (500, 10_000), (800, 11_000))
    assert line.startswith("dreamed 40 frames in 2.0 s (20.0 fps; the host took 30% of the CPU)")


def test_a_quiet_host_or_no_figures_leave_the_rate_alone(caplog, monkeypatch):
    line = summary_line(caplog, monkeypatch, (500, 10_000), (510, 11_000))  # 1%
    assert line.startswith("dreamed 40 frames in 2.0 s (20.0 fps)")
    line = summary_line(caplog, monkeypatch, None, None)  # not Linux
    assert line.startswith("dreamed 40 frames in 2.0 s (20.0 fps)")
