"""The README stays true: its test command is CI's, and its OSC and key tables match the code."""

import re
from pathlib import Path

from realtime.control.osc import format_address_table
from realtime.present.display import KEYS

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def test_quickstart_test_command_is_what_ci_runs():
    quickstart = README.split("## Quickstart", 1)[1].split("##", 1)[0]
    commands = re.findall(r"^(make \w+)", quickstart, flags=re.M)
    assert commands == ["make demo", "make test"]
    ci = (ROOT / ".ci" / "run").read_text()
    assert re.search(r"^make test$", ci, flags=re.M)


def test_osc_table_matches_the_server():
    assert format_address_table(markdown=True) in README


def test_every_key_is_documented():
    for key, action in KEYS:
        assert f"| {key} | {action} |" in README


def test_settings_table_matches_the_knobs():
    from realtime.control.config import settings_table

    assert settings_table(markdown=True) in README
