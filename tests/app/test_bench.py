"""The benchmark: `bench --quick` end to end, row selection, goals, the reference, missing weights."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from realtime.app.bench import (
    COLUMNS,
    GOALS,
    BenchError,
    Row,
    default_rows,
    format_table,
    frame_ms,
    get_model,
    goal_check,
    run_on_own_thread,
    select_rows,
    time_dream,
)
from realtime.control.config import load_config
from realtime.engine import objectives
from realtime.engine.device import cpu_ticks, steal_share
from realtime.engine.models import random_model
from realtime.engine.strategy import make_dreamer, reference_dreamer
from realtime.knobs import DreamConfig

ROOT = Path(__file__).resolve().parents[2]
NUMBERS = ("dream_ms", "ref_dream_ms", "speedup", "fps", "latency_ms", "latency_p95_ms")
# What format_table reads of a run's header (bench.header() makes the real one).
HEAD = {
    "device": "cpu",
    "device_name": "x",
    "torch": "t",
    "cuda": None,
    "python": "3",
    "cpu_cores": 2,
    "date": "d",
    "capture_fps": 60.0,
    "goals": list(GOALS),
}


def test_quick_bench_prints_the_table_and_writes_the_json(tmp_path):
    out = tmp_path / "bench.json"
    cmd = [sys.executable, "installation.py", "bench", "--quick", "--device", "cpu"]
    proc = subprocess.run(
        [*cmd, "--json", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    table = proc.stdout
    assert "| " + " | ".join(COLUMNS) + " |" in table
    assert all(goal in table for goal in GOALS)
    assert "torch " + torch.__version__ in table
    data = json.loads(out.read_text())
    assert data["torch"] == torch.__version__ and data["device"] == "cpu"
    assert data["device_name"] and data["date"] and data["cpu_cores"] >= 1
    assert len(data["rows"]) == 2
    for row in data["rows"]:
        assert row["model"] == "efficientnet_lite0" and row["weights"] == "pretrained"
        for key in NUMBERS:
            assert row[key] > 0, (key, row)
        assert row["latency_p95_ms"] >= row["latency_ms"]
        if Path("/proc/stat").exists():  # Linux: the host's share of the CPU during the loop
            assert 0.0 <= row["steal"] <= 1.0, row
        assert row["speedup"] == pytest.approx(row["ref_dream_ms"] / row["dream_ms"])
        assert f"| {row['size']} | {row['octaves']} x {row['steps']} |" in table


def preset_model():
    from realtime.engine.models import build_architecture

    return build_architecture("efficientnet_lite0")  # its layer names are all a config needs


def test_cpu_rows_hold_the_cpu_preset_and_googlenet():
    rows = default_rows("cpu")
    preset = rows[0]
    shipped = load_config("cpu")
    assert (preset.model, preset.size, preset.octaves, preset.steps) == (
        "efficientnet_lite0",
        (640, 360),
        shipped.dream.octaves,
        1,
    )
    assert shipped.dream.octaves > 1  # an octave a frame in turn: the row times the cycle
    cfg = preset.config(preset_model())  # every other setting is the preset's own
    assert (cfg.dream.scale, cfg.dream.octave_cycle, cfg.feedback.smooth) == (0.5, True, 0.8)
    assert preset.label == "cpu preset"
    assert any(r.model == "efficientnet_lite0" and (r.octaves, r.steps) == (2, 2) for r in rows)
    assert any(r.model == "googlenet" and r.size == (320, 180) for r in rows)


def test_gpu_rows_hold_the_goal_configurations():
    got = {(r.model, r.size, r.octaves, r.steps) for r in default_rows("cuda")}
    assert ("googlenet", (1280, 720), 2, 2) in got
    assert ("googlenet", (1920, 1080), 2, 2) in got
    assert ("efficientnet_lite0", (1280, 720), 2, 2) in got
    assert any(size == (640, 360) for _, size, _, _ in got)


def test_models_and_sizes_options_replace_the_defaults():
    rows = [Row("googlenet", (1280, 720), 2, 2), Row("googlenet", (640, 360), 2, 2)]
    picked = select_rows(rows, "VGG16,efficientnet-lite0", "320x180")
    assert {(r.model, r.size) for r in picked} == {
        ("vgg16", (320, 180)),
        ("efficientnet_lite0", (320, 180)),
    }
    assert len(picked) == 2  # the two sizes collapse into one: no duplicate rows
    cpu = select_rows(default_rows("cpu"), "googlenet", None)
    assert not any(r.label for r in cpu)  # "cpu preset" names Lite0's preset, not GoogLeNet's
    assert len({(r.size, r.octaves, r.steps, r.threads) for r in cpu}) == len(cpu)
    with pytest.raises(BenchError, match="valid models"):
        select_rows(rows, "resnet", None)
    with pytest.raises(BenchError, match="WxH"):
        select_rows(rows, None, "big")


def test_goals_are_read_against_the_right_rows():
    hd = Row("googlenet", (1280, 720), 2, 2)
    good = {"fps": 75.0, "latency_ms": 31.0, "speedup": 5.2}
    assert goal_check("cuda", hd, good) == "met"
    slow = {"fps": 41.0, "latency_ms": 62.0, "speedup": 3.0}
    verdict = goal_check("cuda", hd, slow)
    assert verdict.startswith("MISSED") and "fps 41.0 >= 60" in verdict
    assert "latency 62.0 <= 50" in verdict and "speed-up 3.0 >= 4" in verdict
    assert goal_check("cuda", Row("googlenet", (1920, 1080), 2, 2), {"fps": 31.0, "speedup": 4.5})
    assert goal_check("cpu", default_rows("cpu")[0], {"fps": 21.0}) == "met"
    assert goal_check("cpu", default_rows("cpu")[0], {"fps": 18.0}).startswith("MISSED")
    fewer = replace(default_rows("cpu")[0], threads=1)  # beside it, to show whether threads contend
    assert goal_check("cpu", fewer, {"fps": 18.0}) == "-"
    assert goal_check("cpu", Row("efficientnet_lite0", (320, 180), 2, 2), {"fps": 3.0}) == "-"


def test_a_missed_goal_names_the_cpu_the_host_took(tmp_path):
    """/proc/stat's first line: user nice system idle iowait irq softirq steal ...; the share
    stolen between two readings goes into a missed goal's verdict (and the table's column)."""
    stat = tmp_path / "stat"
    stat.write_text("cpu  100 0 20 800 5 0 5 70 0 0\ncpu0 50 0 10 400 2 0 3 35 0 0\n")
    before = cpu_ticks(stat)
    assert before == (70, 1000)
    stat.write_text("cpu  250 0 30 900 5 0 5 110 0 0\n")  # 300 ticks later, 40 of them stolen
    share = steal_share(before, cpu_ticks(stat))
    assert share == pytest.approx(40 / 300)
    stat.write_text("intr 1 2 3\n")
    assert cpu_ticks(stat) is None and steal_share(before, None) is None
    assert cpu_ticks(tmp_path / "absent") is None
    row = default_rows("cpu")[0]
    verdict = goal_check("cpu", row, {"fps": 17.0, "steal": share})
    assert verdict == "MISSED: fps 17.0 >= 20 (the host took 13% of the CPU)"
    assert goal_check("cpu", row, {"fps": 17.0, "steal": 0.01}) == "MISSED: fps 17.0 >= 20"
    assert goal_check("cpu", row, {"fps": 21.0, "steal": share}) == "met"
    table = format_table(
        HEAD,
        [
            {"model": "m", "weights": "w", "size": "s", "octaves": 4, "steps": 1, "steal": share},
            {"model": "n", "weights": "w", "size": "s", "octaves": 4, "steps": 1},
        ],
    )
    assert table.splitlines()[-2].endswith("| 13% | - |")
    assert table.splitlines()[-1].endswith("| - | - |")


def test_the_reference_runs_the_full_network_and_takes_the_same_step(lite0):
    calls = []
    img = torch.rand(1, 3, 64, 96)
    objective = objectives.layer("block6")
    cfg = DreamConfig(jitter=4, step_size=0.05)
    fast, ref = make_dreamer(lite0, "cpu"), reference_dreamer(lite0, "cpu")
    hooks = [
        d.model.classifier.register_forward_hook(lambda *_: calls.append(1)) for d in (fast, ref)
    ]
    try:
        want = fast.step(img, objective, cfg, torch.Generator().manual_seed(2))
        assert not calls  # the fast path stops at block6
        got = ref.step(img, objective, cfg, torch.Generator().manual_seed(2))
        assert calls  # the reference ran all the way to the classifier
    finally:
        for hook in hooks:
            hook.remove()
    cosine = torch.nn.functional.cosine_similarity(
        (got - img).flatten(), (want - img).flatten(), dim=0
    )
    assert cosine > 0.999


def test_missing_weights_skip_a_row_unless_random_weights_are_allowed(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # an empty weights cache
    monkeypatch.setenv("DREAM_WEIGHTS_BASE_URL", "http://127.0.0.1:9")  # refused: offline
    model, why = get_model("googlenet", torch.device("cpu"), random_weights=False)
    assert model is None and why.startswith("skipped:") and "--random-weights" in why
    model, label = get_model("googlenet", torch.device("cpu"), random_weights=True)
    assert label == "random weights" and model.name == "googlenet"
    with torch.no_grad():
        act = model(torch.rand(1, 3, 64, 64), {"inception4c"})["inception4c"]
    assert act.shape[1] == 512 and torch.isfinite(act).all() and act.abs().sum() > 0
    row = {"model": "googlenet", "size": "320x180", "octaves": 2, "steps": 2}
    table = format_table(
        HEAD,
        [{**row, "weights": "missing", "note": why}],
    )
    assert "| googlenet | missing | 320x180 | 2 x 2 | - |" in table and why in table


def test_random_weights_build_every_model_on_the_cpu():
    for name in ("efficientnet_lite0", "vgg16"):
        model = random_model(name, torch.device("cpu"))
        assert not any(p.requires_grad for p in model.parameters())
        assert not model.training


def test_the_dream_is_timed_over_every_octave_of_a_cycle():
    """With dream.octave_cycle each frame dreams one octave in turn; timing frame 0 alone would
    time the smallest octave only."""
    seen = []

    class Recorder:
        def dream(self, img, objective, cfg, generator=None, frame=0):
            seen.append(frame)
            return img

    cfg = DreamConfig(octaves=3, octave_cycle=True)
    time_dream(Recorder(), torch.zeros(1, 3, 8, 8), None, cfg, warmup=2, frames=6)
    timed = seen[2:]
    assert sorted({f % 3 for f in timed}) == [0, 1, 2]
    assert len(set(timed)) == len(timed)


def test_a_cycle_of_octaves_is_timed_as_the_mean_frame_of_whole_cycles():
    """Four octaves in turn at 10, 12, 14 and 60 ms: the frame rate is set by their mean, 24 ms;
    the median of the frames would say 13. A slow cycle does not move the median over cycles,
    and a partial cycle at the end is left out."""
    times = [10.0, 12.0, 14.0, 60.0] * 4 + [90.0, 95.0, 99.0, 99.0] + [1.0, 1.0]
    assert frame_ms(times, 4) == pytest.approx(24.0)
    assert frame_ms([10.0, 12.0, 14.0, 60.0], 1) == pytest.approx(13.0)  # no cycle: the median
    assert frame_ms([10.0, 30.0], 4) == pytest.approx(20.0)  # fewer than a cycle: the median


def test_run_on_own_thread_returns_and_raises_what_the_function_does():
    main = threading.get_ident()
    assert run_on_own_thread(threading.get_ident) != main
    with pytest.raises(ZeroDivisionError):
        run_on_own_thread(lambda: 1 / 0)
