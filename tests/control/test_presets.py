"""Presets from TOML files and snapshot PNGs that carry their parameters."""

import json

import cv2
import numpy as np
import pytest
from PIL import Image

from realtime.control.params import LiveParams
from realtime.control.presets import (
    SNAPSHOT_KEY,
    PresetError,
    apply_snapshot,
    load_preset,
    preset_names,
    read_snapshot_params,
    save_snapshot,
)

LAYERS = [
    "conv1", "conv2", "conv3", "inception3a", "inception3b", "inception4a", "inception4b",
    "inception4c", "inception4d", "inception4e", "inception5a", "inception5b",
]  # fmt: skip
MODELS = ["googlenet", "vgg16", "efficientnet_lite0"]


@pytest.fixture
def params() -> LiveParams:
    return LiveParams(LAYERS, MODELS, "googlenet")


@pytest.fixture
def presets_dir(tmp_path):
    d = tmp_path / "config"
    d.mkdir()
    (d / "calm.toml").write_text(
        "# only two keys\n[feedback]\namount = 0.3\n\n[dream]\nsteps = 1\n"
    )
    (d / "deep.toml").write_text(
        '[model]\nname = "vgg16"\nlayer = "inception5a"\ntarget = "jellyfish"\n\n'
        "[feedback]\nzoom = 1.02\nflow = false\n\n[display]\nmix = 0.5\n"
    )
    (d / "clear.toml").write_text('[model]\ntarget = ""\n')
    return d


def picture(h: int = 48, w: int = 64) -> np.ndarray:
    """A deterministic RGB test card: gradients plus a red square (channel order matters)."""
    y, x = np.mgrid[0:h, 0:w]
    img = np.stack([x * 255 // (w - 1), y * 255 // (h - 1), (x + y) % 256], axis=-1)
    img = img.astype(np.uint8)
    img[4:12, 4:12] = (255, 0, 0)
    return img


def test_a_preset_changes_only_what_it_names(params, presets_dir):
    before = params.state()
    applied = load_preset("calm", params, directory=presets_dir)
    assert applied == {"feedback": pytest.approx(0.3), "steps": 1}
    after = params.state()
    assert after["feedback"] == pytest.approx(0.3) and after["steps"] == 1
    for name in before:
        if name not in ("feedback", "steps"):
            assert after[name] == before[name], name


def test_a_preset_sets_layer_target_model_and_flags(params, presets_dir):
    load_preset("deep.toml", params, directory=presets_dir, glide=False)
    assert params.get("model") == params.state()["model_loading"] == "vgg16"
    params.set_layers(LAYERS, "vgg16")  # what the loop does once the new model has loaded
    state = params.state()
    assert state["layer"] == "inception5a"
    assert state["target"] == "jellyfish"
    assert state["zoom"] == pytest.approx(1.02) and state["flow"] == 0
    assert params.snapshot().display.mix == pytest.approx(0.5)  # glide=False: there at once
    load_preset("clear", params, directory=presets_dir)  # target = "" clears it
    assert params.state()["target"] == "none"


@pytest.mark.parametrize("name", ["../x", "/etc/passwd", "a/b", "..", ".hidden", "a\\b", "c:x", ""])
def test_path_like_names_are_refused_with_the_valid_ones(params, presets_dir, name):
    before = params.state()
    with pytest.raises(PresetError, match="not paths") as err:
        load_preset(name, params, directory=presets_dir)
    assert "calm, clear, deep" in str(err.value)
    assert params.state() == before


def test_unknown_preset_lists_the_valid_ones(params, presets_dir):
    with pytest.raises(PresetError, match="no preset named 'stormy'.*calm, clear, deep"):
        load_preset("stormy", params, directory=presets_dir)


def test_a_bad_preset_file_changes_nothing(params, presets_dir):
    (presets_dir / "typo.toml").write_text("[feedback]\namuont = 0.3\n")
    (presets_dir / "broken.toml").write_text("[feedback\n")
    (presets_dir / "wrong.toml").write_text('[feedback]\namount = 0.2\n[model]\nlayer = "fc9"\n')
    before = params.state()
    with pytest.raises(PresetError, match="amuont.*valid keys"):
        load_preset("typo", params, directory=presets_dir)
    with pytest.raises(PresetError, match="TOML"):
        load_preset("broken", params, directory=presets_dir)
    with pytest.raises(PresetError, match="unknown layer 'fc9'"):
        load_preset("wrong", params, directory=presets_dir)  # feedback is not half-applied
    assert params.state() == before


def test_the_shipped_presets_load(params):
    names = preset_names()
    assert {"default", "cpu", "hq", "gallery"} <= set(names)
    load_preset("cpu", params)
    state = params.state()
    assert (state["model_loading"], state["steps"], state["octaves"]) == (
        "efficientnet_lite0",
        1,
        4,  # the knob default is 2: the preset's own value was applied
    )
    assert state["feedback"] == pytest.approx(0.95)
    load_preset("hq", params)
    params.set_layers(LAYERS, "googlenet")  # the loop, once GoogLeNet has loaded
    assert (params.get("model"), params.get("layer")) == ("googlenet", "inception4c")


# --- snapshots --------------------------------------------------------------------------


def test_snapshot_png_round_trip(params, tmp_path):
    params.set("layer", "inception4e")
    params.set("target", "volcano")
    params.set("feedback", 0.9)
    state = params.state()
    image = picture()
    path = save_snapshot(image, state, tmp_path / "snaps")
    assert path.parent == tmp_path / "snaps" and path.suffix == ".png"
    assert read_snapshot_params(path) == state
    # Independent readers: OpenCV sees the same pixels, Pillow sees the text chunk.
    back = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
    np.testing.assert_array_equal(back, image)
    with Image.open(path) as im:
        im.verify()  # every chunk's CRC checks out
    with Image.open(path) as im:
        assert json.loads(im.text[SNAPSHOT_KEY]) == state


def test_loading_a_snapshot_restores_its_values(params, tmp_path, presets_dir):
    params.update({"layer": "conv3", "target": "pizza", "steps": 7, "zoom": 1.05}, glide=False)
    made = params.state()
    params.set("paused", True)
    path = save_snapshot(picture(), params.state(), tmp_path)
    params.update({"layer": "inception5b", "target": None, "steps": 1, "zoom": 1.0}, glide=False)
    apply_snapshot(path, params)
    state = params.state()
    for name in ("layer", "target", "steps", "zoom", "feedback", "model"):
        assert state[name] == made[name], name
    assert state["paused"] == 1  # pause is not restored from a snapshot: it stays as it was
    params.set("paused", False)
    params.set("layer", "conv1")
    load_preset(path.stem, params, directory=presets_dir, snapshot_dir=tmp_path)  # by name
    assert params.get("layer") == "conv3" and params.get("paused") is False


def test_unique_names_for_snapshots_in_the_same_second(params, tmp_path):
    paths = {save_snapshot(picture(), params.state(), tmp_path) for _ in range(3)}
    assert len(paths) == 3 and all(p.is_file() for p in paths)
    assert not list(tmp_path.glob("*.tmp"))


def test_pngs_without_metadata_or_corrupt_are_refused(params, tmp_path):
    plain = tmp_path / "plain.png"
    cv2.imwrite(str(plain), picture())
    with pytest.raises(PresetError, match="no 'dream-params' metadata"):
        read_snapshot_params(plain)
    good = save_snapshot(picture(), params.state(), tmp_path)
    data = bytearray(good.read_bytes())
    i = data.index(b"tEXt") + 20
    data[i] ^= 0xFF  # flip a byte of the JSON: the CRC no longer matches
    bad = tmp_path / "bad.png"
    bad.write_bytes(bytes(data))
    with pytest.raises(PresetError, match="CRC"):
        read_snapshot_params(bad)
    (tmp_path / "fake.png").write_text("hello")
    with pytest.raises(PresetError, match="not a PNG"):
        read_snapshot_params(tmp_path / "fake.png")
    with pytest.raises(PresetError, match="could not be read"):
        read_snapshot_params(tmp_path / "missing.png")


def test_save_snapshot_refuses_wrong_images(params, tmp_path):
    with pytest.raises(PresetError, match=r"\(H, W, 3\)"):
        save_snapshot(np.zeros((8, 8), np.uint8), params.state(), tmp_path)
    with pytest.raises(PresetError, match="uint8"):
        save_snapshot(np.zeros((8, 8, 3), np.float32), params.state(), tmp_path)


def test_a_snapshot_that_cannot_be_written_leaves_no_temporary_file(params, tmp_path, monkeypatch):
    """A full disk, simulated: the .tmp is written, then flushing it fails (the tmpfs test of the
    same fault is tests/live/test_snapshots.py)."""
    import errno

    import realtime.control.atomic as atomic

    def disk_full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(atomic.os, "fsync", disk_full)
    with pytest.raises(PresetError, match="could not be written.*No space left"):
        save_snapshot(np.zeros((8, 8, 3), np.uint8), params.state(), tmp_path)
    assert list(tmp_path.iterdir()) == []
