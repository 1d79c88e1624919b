"""The outputs as an operator starts them: `--ndi` and `--stream` on a headless run, what the OSC
status says about them, and the refusals at start."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest

from realtime.control.config import ConfigError, load_config
from tests._require import require
from tests.control.test_osc import Collector
from tests.live.test_ndi import HAVE_NDI
from tests.live.test_stream import free_port
from tests.test_installation import ROOT, SIZE, cli


def test_a_show_with_ndi_and_a_stream_reports_both_on_status(tmp_path):
    ffmpeg = shutil.which("ffmpeg")
    require(ffmpeg is not None, "ffmpeg is not installed (scripts/install-system-deps.sh)")
    require(HAVE_NDI, "ndi-python is not installed (pip install '.[ndi]'; Python 3.11+)")
    port = free_port()
    received = tmp_path / "received.rgb"
    reader = subprocess.Popen(
        [
            *(ffmpeg, "-hide_banner", "-loglevel", "error", "-nostdin"),
            *("-probesize", "200000", "-analyzeduration", "1000000"),
            *("-i", f"udp://127.0.0.1:{port}?timeout=60000000"),
            *("-frames:v", "5", "-f", "rawvideo", "-pix_fmt", "rgb24", "-y", str(received)),
        ]
    )
    status = Collector()
    try:
        run = cli(
            *("--source", "demo", "--headless", "--frames", "60", "--device", "cpu"),
            *("--size", SIZE, "--osc-port", "0", "--set", "dream.octaves=1"),
            *("--ndi", "dream-cli-test", "--stream", f"udp://127.0.0.1:{port}"),
            *("--status-to", f"127.0.0.1:{status.port}", "--set", "osc.status_hz=20"),
            *("--set", f"record.snapshot_dir={tmp_path / 'snaps'!s}"),
        )
        reader.wait(timeout=30)
        seen = {a: [args[0] for args in status.addresses(a)] for a, _ in status.received}
    finally:
        status.close()
        if reader.poll() is None:
            reader.kill()
    assert run.returncode == 0, run.stderr[-1500:]
    assert "sending 160x96" in run.stderr and "streaming 160x96 to udp://" in run.stderr
    assert re.search(r"dreamed 60 frames .*; ndi sent \d+ frames .*; stream sent \d+", run.stderr)
    for kind in ("ndi", "stream"):
        assert "sending" in seen[f"/dream/status/{kind}"]
        assert max(seen[f"/dream/status/{kind}_sent"]) > 0
        assert f"/dream/status/{kind}_dropped" in seen
    assert reader.returncode == 0
    frames = np.frombuffer(received.read_bytes(), np.uint8).reshape(5, 96, 160, 3)
    assert frames.std() > 10  # a picture, not a flat screen


def test_ndi_without_its_library_is_one_line_at_start_saying_how_to_install_it(tmp_path):
    wrapper = tmp_path / "no_ndi.py"  # the installation on a machine without ndi-python
    wrapper.write_text(
        "import sys\n"
        f"sys.path.insert(0, {str(ROOT)!r})\n"
        "sys.modules['NDIlib'] = None  # import NDIlib raises ImportError\n"
        "import installation\n"
        "sys.exit(installation.main())\n"
    )
    run = cli("--headless", "--frames", "1", "--device", "cpu", "--ndi", "dream", script=wrapper)
    assert run.returncode == 2
    lines = [line for line in run.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "pip install ndi-python" in lines[0]
    assert "model:" not in run.stderr  # refused before the model loads
    assert "Traceback" not in run.stderr


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("output.stream", "udp://nohost", "expected a stream URL such as udp://127.0.0.1:5000"),
        ("output.stream", "http://h:80/x", "or a v4l2loopback device /dev/videoN"),
        ("output.ndi", "two\\nlines", "expected an NDI source name of 1..200 printable"),
    ],
)
def test_a_bad_output_is_refused_by_the_config_with_what_is_valid(key, value, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(None, [f'{key}="{value}"'])


def test_bench_outputs_takes_off_and_on_runs_in_turn(tmp_path):
    require(shutil.which("ffmpeg") is not None, "ffmpeg is not installed")
    require(HAVE_NDI, "ndi-python is not installed (pip install '.[ndi]'; Python 3.11+)")
    out = tmp_path / "outputs.json"
    run = subprocess.run(
        [sys.executable, "installation.py", "bench", "--outputs", "--quick", "--device", "cpu"]
        + ["--rounds", "2", "--json", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert run.returncode == 0, run.stderr[-1500:]
    assert (
        "| round | outputs | fps | CPU ms a frame | ndi sent / dropped | stream sent / dropped |"
        in (run.stdout)
    )
    assert re.search(r"All outputs on: [+-][\d.]+% of the mean off frame rate; goal", run.stdout)
    assert re.search(r"ndi\+stream / off in each round: [\d.]+, [\d.]+ \(median", run.stdout)
    result = json.loads(out.read_text())
    order = ["off", "ndi", "stream", "ndi+stream"]
    assert [(r["round"], r["outputs"]) for r in result["runs"]] == [
        (n, label) for n in (1, 2) for label in order
    ]
    for r in result["runs"]:
        assert r["fps"] > 0 and r["cpu_ms"] > 0
        for kind in ("ndi", "stream"):  # an output sent frames in every run it was on in
            assert (r.get(f"{kind}_sent", 0) > 0) == (kind in r["outputs"])
