"""The knob table: every setting out of range is refused at start, by --set, a TOML file and a
snapshot PNG alike, with its range; OSC clamps the same values into that range and says so."""

import dataclasses
import re

import numpy as np
import pytest
from pythonosc.udp_client import SimpleUDPClient

from realtime import knobs
from realtime.control.config import ConfigError, load_config
from realtime.control.osc import LIMITS, OscServer
from realtime.control.params import KNOBS, LiveParams
from realtime.control.presets import PresetError, apply_snapshot, save_snapshot
from realtime.control.status import StatusSender
from tests.control.test_osc import Collector, wait_for

NUMERIC = [k for k in knobs.table() if k.numeric]
LIVE_NUMERIC = [(name, k) for name, k in KNOBS.items() if k.numeric]
LAYERS = ["conv1", "conv2", "conv3"]


def outside(k: knobs.Knob) -> list[float | int]:
    """Values just outside the knob's range, below and above, of the knob's type."""
    span = (k.hi - k.lo) or 1
    step = 1 if k.type is int else span * 0.25
    return [k.type(k.lo - step), k.type(k.hi + step)]


def test_every_numeric_knob_has_a_range_and_a_doc():
    assert len(NUMERIC) > 25
    for k in knobs.table():
        assert k.doc, k.key
        if k.numeric:
            assert k.lo is not None and k.hi is not None and k.lo <= k.default <= k.hi, k.key


def test_config_sections_are_the_tables_sections():
    from realtime.control.config import Config

    assert [f.name for f in dataclasses.fields(Config)] == list(knobs.sections())


@pytest.mark.parametrize("k", NUMERIC, ids=lambda k: k.key)
def test_out_of_range_is_refused_by_set_with_the_range(k):
    for bad in outside(k):
        with pytest.raises(ConfigError) as info:
            load_config(None, [f"{k.key}={bad}"])
        text = str(info.value)
        assert k.key in text and k.range_text() in text and "--set" in text, text


@pytest.mark.parametrize("k", NUMERIC, ids=lambda k: k.key)
def test_out_of_range_is_refused_by_a_toml_file_with_the_range(k, tmp_path):
    for bad in outside(k):
        path = tmp_path / "preset.toml"
        path.write_text(f"[{k.section}]\n{k.name} = {bad!r}\n")
        with pytest.raises(ConfigError) as info:
            load_config(path)
        text = str(info.value)
        assert k.key in text and k.range_text() in text and "preset.toml" in text, text


@pytest.mark.parametrize(("name", "k"), LIVE_NUMERIC, ids=lambda v: v if isinstance(v, str) else "")
def test_out_of_range_is_refused_by_a_snapshot_png_with_the_range(name, k, tmp_path):
    params = LiveParams(LAYERS, ["googlenet"], "googlenet")
    for bad in outside(k):
        state = {**params.state(), name: bad}
        path = save_snapshot(np.zeros((8, 8, 3), np.uint8), state, tmp_path)
        before = params.state()
        with pytest.raises(PresetError) as info:
            apply_snapshot(path, params)
        assert name in str(info.value) and k.range_text() in str(info.value)
        assert params.state() == before  # nothing changed


def test_choices_types_and_formats_are_refused_with_what_is_valid():
    cases = {
        "dream.grad_norm=bogus": "valid: mean | smooth | laplacian",
        "model.name=resnet": "valid: auto | googlenet | vgg16 | efficientnet_lite0",
        "capture.size=big": "expected a size WxH",
        "feedback.flow=3": "expected true or false",
        "osc.allow=[1, 2]": "a list of strings",
        "log.level=LOUD": "valid: DEBUG | INFO | WARNING | ERROR",
        "record.path=show.gif": "expected a video file ending in .mkv, .avi, .mp4",
        "record.segment_seconds=-5": "valid: 0..86400 s",
    }
    for item, wanted in cases.items():
        with pytest.raises(ConfigError, match=re.escape(wanted)):
            load_config(None, [item])


def test_attract_values_are_checked_at_start():
    # Before the table, [attract] was never checked: this started and then failed every frame.
    with pytest.raises(
        ConfigError, match=r"attract.feedback = 1.5 is out of range; valid: 0..0.98"
    ):
        load_config(None, ["attract.feedback=1.5"])


def test_osc_clamps_the_same_values_and_says_so():
    params = LiveParams(LAYERS, ["googlenet"], "googlenet")
    status = Collector()
    sender = StatusSender(params, None, f"127.0.0.1:{status.port}", hz=0.0)
    sender.start()
    # Replies are rate-limited (20 a period): a period shorter than each round trip shows all.
    server = OscServer(
        params, port=0, status=sender, limits=dataclasses.replace(LIMITS, log_period=0.001)
    )
    server.start()
    client = SimpleUDPClient("127.0.0.1", server.address[1])

    def errors() -> list[tuple]:
        return status.addresses("/dream/status/error")

    try:
        sent = 0
        for name, k in LIVE_NUMERIC:
            for bad in outside(k):
                client.send_message(f"/dream/{name}", float(bad))
                sent += 1
                assert wait_for(lambda n=sent: server.applied == n), name
                assert params.get(name) == k.clamp(bad), (name, bad)
                assert wait_for(lambda n=sent: len(errors()) == n), name
                received = float(np.float32(bad))  # OSC floats are 32-bit
                assert errors()[-1][0] == (
                    f"/dream/{name}: {received!r} clamped to {k.clamp(bad)!r} "
                    f"(range {k.range_text()})"
                )
        assert server.refused == 0  # clamped values are applied, not refused
    finally:
        server.stop()
        sender.stop()
        status.close()
