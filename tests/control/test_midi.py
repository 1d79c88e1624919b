"""MIDI learn: mapping, learn, soft takeover and the bindings file, driven by mido's own Message
objects fed to the handler mido would call. No MIDI hardware or ALSA exists here, so the port
itself is not opened (only its refusal at start is tried, through the command line)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import mido
import pytest
from pythonosc.udp_client import SimpleUDPClient

from realtime.control.midi import (
    LEARNABLE,
    BindingsFile,
    MidiError,
    MidiLearn,
    device_key,
    find_midi,
    pick_port,
    scale,
)
from realtime.control.osc import OscServer
from realtime.control.params import KNOBS, LiveParams

ROOT = Path(__file__).resolve().parents[2]
LAYERS = ["conv1", "conv2", "conv3"]
DEVICE = "nanoKONTROL2:nanoKONTROL2 MIDI 1 20:0"


def cc(control: int, value: int, channel: int = 0) -> mido.Message:
    return mido.Message("control_change", channel=channel, control=control, value=value)


@pytest.fixture
def params() -> LiveParams:
    return LiveParams(LAYERS, ["googlenet"], "googlenet", initial={"glide": 0.0})


@pytest.fixture
def learner(params, tmp_path) -> MidiLearn:
    return MidiLearn(params, DEVICE, BindingsFile(tmp_path / "midi.json"))


def test_cc_is_scaled_into_the_knob_table_range():
    zoom, steps = KNOBS["zoom"], KNOBS["steps"]
    assert scale(zoom, 0) == pytest.approx(zoom.lo)
    assert scale(zoom, 127) == pytest.approx(zoom.hi)
    assert scale(steps, 127) == steps.hi and scale(steps, 0) == steps.lo
    assert scale(KNOBS["flow"], 127) == 1.0
    # numbers with a range and switches; names (layer, target, model) are not knobs to turn
    assert {"zoom", "mix", "steps", "flow", "rotate"} <= set(LEARNABLE)
    assert "layer" in LEARNABLE and not {"target", "model"} & set(LEARNABLE)


def test_learn_binds_the_next_moved_control_and_saves_it(learner, params, tmp_path):
    learner.learn("mix")
    before = params.get("mix")
    learner.handle(mido.Message("note_on", note=60))  # not a control: ignored, still armed
    assert learner.armed == "mix"
    learner.handle(cc(7, 0, channel=2))
    assert learner.armed is None
    assert learner.bindings() == {(2, 7): "mix"}
    assert params.get("mix") == before  # the move that was learnt changes nothing
    saved = json.loads((tmp_path / "midi.json").read_text())
    assert saved == {
        "version": 1,
        "devices": {"nanoKONTROL2:nanoKONTROL2 MIDI 1": [
            {"channel": 3, "control": 7, "param": "mix"}
        ]},
    }  # fmt: skip
    assert [p.name for p in tmp_path.iterdir()] == ["midi.json"]  # no temporary file left
    # learning the same parameter on another control moves it there
    learner.learn("mix")
    learner.handle(cc(8, 0, channel=2))
    assert learner.bindings() == {(2, 8): "mix"}


def test_soft_takeover_waits_until_the_knob_passes_the_value(learner, params):
    params.set("zoom", 1.0, glide=False)  # the middle of 0.9..1.1
    learner.learn("zoom")
    learner.handle(cc(1, 0))  # learnt with the knob turned fully down
    for value in (5, 20, 40, 60):  # below the value: held, the picture does not jump
        learner.handle(cc(1, value))
        assert params.get("zoom") == 1.0
    assert learner.held == 4 and learner.applied == 0
    learner.handle(cc(1, 70))  # passes 1.0 (cc 63.5): taken over
    assert params.get("zoom") == pytest.approx(scale(KNOBS["zoom"], 70))
    learner.handle(cc(1, 100))
    assert params.get("zoom") == pytest.approx(scale(KNOBS["zoom"], 100))
    # OSC (or a key, or a preset) moves it elsewhere: the knob must catch it again
    params.set("zoom", 0.95, glide=False)
    learner.handle(cc(1, 101))
    assert params.get("zoom") == 0.95
    learner.handle(cc(1, 30))  # from 101 down to 30 passes 0.95 (cc 31.75)
    assert params.get("zoom") == pytest.approx(scale(KNOBS["zoom"], 30))


def test_an_integer_parameter_is_caught_within_half_a_step(learner, params):
    params.set("steps", 3, glide=False)
    learner.learn("steps")
    learner.handle(cc(2, 127))
    learner.handle(cc(2, 20))  # 20/127 * 20 = 3.15: within half a step of 3
    assert params.get("steps") == 3 and learner.applied == 1
    learner.handle(cc(2, 127))
    assert params.get("steps") == 20


def test_a_switch_switches_without_takeover(learner, params):
    learner.learn("flow")
    learner.handle(cc(3, 0))
    learner.handle(cc(3, 127))
    assert params.get("flow") is True
    learner.handle(cc(3, 0))
    assert params.get("flow") is False


def test_a_control_sweeps_the_layers_of_the_dreaming_model_with_takeover(learner, params):
    params.set("layer", "conv2")  # the middle one of three
    learner.learn("layer")
    learner.handle(cc(4, 0))  # learnt fully down: conv1's end
    learner.handle(cc(4, 10))  # index 0.16: not yet near conv2 (index 1)
    assert params.get("layer") == "conv2" and learner.held == 1
    learner.handle(cc(4, 64))  # index 1.0: caught
    assert params.get("layer") == "conv2" and learner.applied == 1
    learner.handle(cc(4, 127))
    assert params.get("layer") == "conv3"
    learner.handle(cc(4, 0))
    assert params.get("layer") == "conv1"
    # Another model with five layers: the same control now spans all five.
    params.set_layers(["a", "b", "c", "d", "e"], "googlenet")
    learner.handle(cc(4, 0))  # caught where it is (the layer at the same depth was kept)
    learner.handle(cc(4, 127))
    assert params.get("layer") == "e"
    learner.handle(cc(4, 95))  # 95/127 * 4 = 2.99: the fourth
    assert params.get("layer") == "d"


def test_learn_refuses_what_midi_cannot_drive_and_cancels(learner):
    with pytest.raises(MidiError, match="MIDI can drive: .*zoom.*layer"):
        learner.learn("target")
    with pytest.raises(MidiError, match="cannot learn 'zom'"):
        learner.learn("zom")
    learner.learn("zoom")
    learner.learn("none")
    learner.handle(cc(1, 10))
    assert learner.bindings() == {}
    assert learner.learn_next() == LEARNABLE[0]
    assert learner.learn_next() == LEARNABLE[1]


def test_bindings_are_loaded_per_device_when_the_port_number_changes(params, tmp_path):
    path = tmp_path / "midi.json"
    first = MidiLearn(params, DEVICE, BindingsFile(path))
    first.learn("mix")
    first.handle(cc(7, 0))
    other = MidiLearn(params, "Launch Control XL 28:0", BindingsFile(path))
    other.learn("zoom")
    other.handle(cc(21, 64))
    # plugged in again: rtmidi numbers the port anew
    again = MidiLearn(params, "nanoKONTROL2:nanoKONTROL2 MIDI 1 24:0", BindingsFile(path))
    assert again.bindings() == {(0, 7): "mix"}
    assert BindingsFile(path).devices["Launch Control XL"] == {(0, 21): "zoom"}
    params.set("mix", 0.0, glide=False)
    again.handle(cc(7, 0))  # at the value: caught at once
    again.handle(cc(7, 127))
    assert params.get("mix") == 1.0
    assert device_key("Midi Through:Midi Through Port-0 14:0") == "Midi Through:Midi Through Port-0"


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("{not json", "is not valid JSON"),
        ('{"devices": []}', "expected"),
        ('{"version": 2, "devices": {}}', "version 2"),
        ('{"version": 1, "devices": {"x": [{"channel": 0, "control": 7, "param": "mix"}]}}',
         "channel\": 1-16"),
        ('{"version": 1, "devices": {"x": [{"channel": 1, "control": 128, "param": "mix"}]}}',
         "control\": 0-127"),
        ('{"version": 1, "devices": {"x": [{"channel": 1, "control": 7, "param": "model"}]}}',
         "bad binding"),
        ('{"version": 1, "devices": {"x": [7]}}', "bad binding 7"),
        ('{"version": 1, "devices": {"x": {"channel": 1}}}', "expected a list of bindings"),
        ('{"version": 1, "devices": {"x": [{"channel": true, "control": 7, "param": "mix"}]}}',
         "bad binding"),
    ],
)  # fmt: skip
def test_a_malformed_bindings_file_is_refused_with_what_is_valid(tmp_path, text, why):
    path = tmp_path / "midi.json"
    path.write_text(text)
    with pytest.raises(MidiError, match="midi.json") as err:
        BindingsFile(path)
    assert why in str(err.value)


def test_pick_port():
    names = ["Midi Through:Midi Through Port-0 14:0", "nanoKONTROL2:nanoKONTROL2 MIDI 1 20:0"]
    assert pick_port("auto", names) == names[0]
    assert pick_port("nanokontrol", names) == names[1]
    with pytest.raises(MidiError, match="matches several"):
        pick_port("midi", names)
    with pytest.raises(MidiError, match="matches no MIDI input; inputs: 'Midi Through"):
        pick_port("launch", names)
    with pytest.raises(MidiError, match="no MIDI input found"):
        pick_port("auto", [])


def test_osc_learn_address_arms_the_learner(learner, params):
    server = OscServer(params, port=0, midi=learner)
    off = OscServer(params, port=0)
    server.start()
    off.start()
    try:
        client = SimpleUDPClient("127.0.0.1", server.address[1])
        client.send_message("/dream/midi/learn", "zoom")
        deadline = time.monotonic() + 3
        while learner.armed != "zoom" and time.monotonic() < deadline:
            time.sleep(0.005)
        assert learner.armed == "zoom"
        client.send_message("/dream/midi/learn", "target")  # refused: not a knob
        client.send_message("/dream/midi/learn", "none")
        while learner.armed is not None and time.monotonic() < deadline:
            time.sleep(0.005)
        assert learner.armed is None and server.refused == 1
        SimpleUDPClient("127.0.0.1", off.address[1]).send_message("/dream/midi/learn", "zoom")
        while off.refused == 0 and time.monotonic() < deadline:
            time.sleep(0.005)
        assert off.refused == 1  # MIDI off: refused, nothing armed
    finally:
        server.stop()
        off.stop()


def cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "installation.py"), *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "DREAM_WEIGHTS_BASE_URL": "http://127.0.0.1:9/", **(env or {})},
    )


@pytest.mark.slow  # a fresh interpreter imports torch: ~10 s here
def test_start_without_mido_says_how_to_install(tmp_path):
    shadow = tmp_path / "shadow" / "mido"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ImportError(\"No module named 'mido'\")\n")
    done = cli("run", "--midi", "--headless", "--frames", "1", env={"PYTHONPATH": shadow.parent})
    assert done.returncode == 2
    (line,) = done.stderr.strip().splitlines()[-1:]
    assert "pip install 'dream-installation[midi]'" in line
    assert "model:" not in done.stderr  # refused before the model loads


def test_find_midi_refuses_at_start(tmp_path, monkeypatch):
    bad = tmp_path / "bindings.json"
    bad.write_text("[1, 2")
    with pytest.raises(MidiError, match="is not valid JSON"):  # before mido is even asked
        find_midi("auto", bad)
    # The real port: this machine has no ALSA sequencer (a machine with one has no such input).
    with pytest.raises(MidiError, match="MIDI input"):
        find_midi("no such controller", tmp_path / "new.json")
    monkeypatch.setitem(sys.modules, "rtmidi", None)  # as if python-rtmidi were not installed
    with pytest.raises(MidiError, match=r"pip install 'dream-installation\[midi\]'"):
        find_midi("auto", tmp_path / "new.json")
