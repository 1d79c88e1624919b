"""Config presets, --set overrides, and refusals that list what is valid."""

import pytest

from realtime.control.config import (
    CONFIG_DIR,
    ConfigError,
    load_config,
    preset_names,
    preset_path,
)
from realtime.knobs import KnobError, parse_size


def test_every_preset_loads():
    assert {"default", "cpu", "hq", "gallery"} <= set(preset_names())
    for name in preset_names():
        cfg = load_config(CONFIG_DIR / f"{name}.toml")
        parse_size(cfg.capture.size)


def test_a_bare_name_is_a_preset():
    assert load_config("cpu").model.name == "efficientnet_lite0"


def test_set_overrides_parse_toml_values():
    cfg = load_config(
        None,
        [
            "dream.steps=5",
            "feedback.flow=false",
            "model.layer=inception4c",
            'capture.source="0"',
            "feedback.zoom=1",
        ],
    )
    assert cfg.dream.steps == 5
    assert cfg.feedback.flow is False
    assert cfg.model.layer == "inception4c"
    assert cfg.capture.source == "0"
    assert cfg.feedback.zoom == 1.0 and isinstance(cfg.feedback.zoom, float)


def test_unknown_key_lists_valid_keys():
    with pytest.raises(
        ConfigError, match=r"unknown key dream.stepz.*valid keys in \[dream\]: steps"
    ):
        load_config(None, ["dream.stepz=3"])


def test_unknown_section_lists_sections():
    with pytest.raises(ConfigError, match="valid sections: model, capture"):
        load_config(None, ["camera.size=3"])


def test_wrong_type_is_refused():
    with pytest.raises(
        ConfigError,
        match=r"dream.steps: expected an integer in 0..20, got 'lots' \(--set dream.steps=lots\)",
    ):
        load_config(None, ["dream.steps=lots"])
    with pytest.raises(ConfigError, match="expected an integer in 0..20, got True"):
        load_config(None, ["dream.steps=true"])


def test_malformed_set_and_broken_file(tmp_path):
    with pytest.raises(ConfigError, match="section.key=value"):
        load_config(None, ["steps"])
    bad = tmp_path / "bad.toml"
    bad.write_text("[dream\nsteps = 2")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(bad)
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.toml")


@pytest.mark.parametrize("name", ["../default", "/etc/passwd", "a/b", "..", ".hidden", "x:y"])
def test_preset_names_are_not_paths(name):
    with pytest.raises(ConfigError, match="valid presets"):
        preset_path(name)


@pytest.mark.parametrize("text", ["640", "0x0", "axb", "99999x10"])
def test_bad_sizes(text):
    with pytest.raises(KnobError, match="WxH"):
        parse_size(text)


def test_a_bad_override_is_blamed_on_the_command_line_with_the_range():
    with pytest.raises(ConfigError) as err:
        load_config("gallery", ["dream.steps=99"])
    assert str(err.value) == "dream.steps = 99 is out of range; valid: 0..20 (--set dream.steps=99)"
    # a flag is named as the user typed it
    with pytest.raises(ConfigError, match=r"valid: 0\.\.20 \(--steps 99\)$"):
        load_config(None, ["dream.steps=99"], {"dream.steps=99": "--steps 99"})
