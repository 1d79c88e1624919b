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


def test_running_it_examples_work_offline_as_written(tmp_path):
    """Each example's files are made by an earlier line, each layer is the bundled model's or
    the line says it needs GoogLeNet and the bundled model's twin follows, and the line that
    makes the sample picture runs."""
    import shlex
    import subprocess
    import sys

    from realtime.engine.models import model_layers

    block = README.split("## Running it", 1)[1].split("```sh\n", 1)[1].split("```", 1)[0]
    bundled = model_layers("efficientnet_lite0")
    lines = block.splitlines()
    made: set[str] = set()
    for i, line in enumerate(lines):
        command, _, comment = line.partition("  #")
        words = shlex.split(command)
        if words[:2] == ["python", "-c"]:
            made.update(re.findall(r"imwrite\('([^']+)'", words[2]))
            done = subprocess.run([sys.executable, "-c", words[2]], cwd=tmp_path, timeout=60)
            assert done.returncode == 0 and (tmp_path / "astronaut.png").is_file()
            continue
        assert words[:2] == ["python", "installation.py"], line
        args = words[2:]
        if "--layer" in args:
            layer = args[args.index("--layer") + 1]
            if layer not in bundled:
                assert "GoogLeNet" in comment, f"{line!r} needs GoogLeNet and does not say so"
                twin = shlex.split(lines[i + 1].partition("  #")[0])
                assert twin[twin.index("--layer") + 1] in bundled, "no bundled-model twin follows"
        inputs = []
        if args and args[0] == "render":
            inputs.append(args[1])
            made.add(args[2])
        if "--source" in args:
            source = args[args.index("--source") + 1]
            if not source.isdigit() and source != "demo":
                inputs.append(source)
        for name in inputs:
            assert name in made, f"{line!r} reads {name}, which no earlier line makes"
        if "--record" in args:
            made.add(args[args.index("--record") + 1])
