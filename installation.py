#!/usr/bin/env python3
"""The installation's one entry point: run it live, render offline, list layers and classes, bench."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from dataclasses import replace
from pathlib import Path

COMMANDS = ("run", "render", "layers", "classes", "bench", "osc-map", "settings")
DEMO_FRAMES = 90  # frames recorded by a run with no display and no --frames: 3 s at 30 fps
DEMO_RECORDING = "out/demo.mp4"

logger = logging.getLogger("installation")


def _dream_options(p: argparse.ArgumentParser) -> None:
    """Options shared by run and render: what to dream, on what."""
    p.add_argument(
        "--config",
        help="a TOML file, a preset name in config/ (default: default), or a snapshot PNG",
    )
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override one config value, e.g. --set dream.steps=3 (repeatable)",
    )
    p.add_argument("--model", help="googlenet | vgg16 | efficientnet_lite0 | auto")
    p.add_argument("--weights", help="weights file for an offline machine (googlenet/vgg16)")
    p.add_argument("--layer", help="layer to dream at (see the layers command)")
    p.add_argument("--target", help="ImageNet class to dream towards (see the classes command)")
    p.add_argument("--device", choices=("auto", "cuda", "mps", "cpu"))
    p.add_argument("--log-level", choices=("DEBUG", "INFO", "WARNING", "ERROR"))
    p.add_argument("--log-file", help="also log to this rotating file")


def _knob_flags(p: argparse.ArgumentParser, section: str, defaults: dict) -> None:
    """A flag per knob of a config section (--steps, --step-size, ...), from the knob table."""
    from realtime.knobs import knobs_of, sections

    for k in knobs_of(sections()[section]):
        default = defaults.get(k.name, k.default)
        p.add_argument(
            "--" + k.name.replace("_", "-"),
            dest=f"knob_{section}_{k.name}",
            type={bool: _flag_bool, int: int, float: float}.get(k.type, str),
            metavar=k.range_text().replace(" ", ""),
            help=f"{k.doc} (default {default})",
        )


def _flag_bool(text: str) -> bool:
    word = text.strip().lower()
    if word not in ("true", "false", "1", "0", "on", "off"):
        raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")
    return word in ("true", "1", "on")


def _audience_address(text: str) -> tuple[str, int]:
    host, sep, port = text.strip().rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise argparse.ArgumentTypeError(
            f"expected HOST:PORT such as 192.168.1.10:8080 (port 0..65535), got {text!r}"
        )
    return host, int(port)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="installation.py",
        description=__doc__,
        epilog="With no command, `run` is assumed: python installation.py --source 0 --fullscreen",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="the live installation (default)")
    _dream_options(run)
    run.add_argument("--source", help="camera index (0), video or image path, stream URL, or demo")
    run.add_argument("--size", help="dream size WxH, e.g. 640x360")
    run.add_argument("--headless", action="store_true", help="no window (record or stream instead)")
    run.add_argument("--frames", type=int, help="stop after N output frames")
    run.add_argument(
        "--record",
        help="write the output video here: .mkv (readable after a kill or a full disk), .avi or "
        ".mp4; an existing file is kept and the next free name-N used",
    )
    run.add_argument("--fullscreen", action="store_true", help="fill the chosen screen")
    run.add_argument("--screen", type=int, help="monitor index for --fullscreen (0-based)")
    run.add_argument("--osc-host", help="address the OSC server binds (0.0.0.0 exposes it)")
    run.add_argument("--osc-port", type=int, help="UDP port the OSC server listens on")
    run.add_argument("--status-to", help="HOST:PORT to send status messages to")
    run.add_argument(
        "--midi",
        nargs="?",
        const="auto",
        metavar="PORT",
        help="MIDI learn from a controller: the first MIDI input, or the one whose name contains "
        "PORT (needs pip install 'dream-installation[midi]')",
    )
    run.add_argument(
        "--audience",
        metavar="HOST:PORT",
        type=_audience_address,
        help="serve the audience request page on this address (this machine's address on the "
        "gallery network, e.g. 192.168.1.10:8080; 0.0.0.0:8080 for every interface)",
    )

    render = sub.add_parser("render", help="dream an image or a video file offline")
    render.add_argument("input")
    render.add_argument("output")
    _dream_options(render)
    from realtime.knobs import RENDER_DREAM

    _knob_flags(render, "dream", RENDER_DREAM)
    render.add_argument("--max-side", type=int, help="shrink so the longer side is at most this")
    render.add_argument(
        "--live",
        action="store_true",
        help="video: exactly the live look (the preset's settings, at capture.size, through the "
        "live loop's per-frame code) instead of the offline defaults",
    )

    layers = sub.add_parser("layers", help="list a model's dreamable layers")
    layers.add_argument(
        "--model",
        default="auto",
        help="googlenet | vgg16 | efficientnet_lite0 | auto (default: the one a run would use)",
    )
    layers.add_argument("--weights", help="weights file for an offline machine (as run takes it)")

    classes = sub.add_parser("classes", help="find ImageNet classes by name")
    classes.add_argument("query", nargs="?", default="")
    classes.add_argument("--limit", type=int, default=20)

    bench = sub.add_parser("bench", help="measure speed and print a table")
    bench.add_argument("--device", default="auto", choices=("auto", "cuda", "mps", "cpu"))
    bench.add_argument("--quick", action="store_true", help="few frames, small sizes (smoke test)")
    bench.add_argument("--json", default="bench.json", help="also write the table here")
    bench.add_argument("--models", help="comma-separated model names")
    bench.add_argument("--sizes", help="comma-separated WxH sizes")
    bench.add_argument("--frames", type=int, help="timed frames per row")
    bench.add_argument(
        "--random-weights",
        action="store_true",
        help="bench googlenet/vgg16 with random weights when theirs are missing (same speed)",
    )
    bench.add_argument(
        "--profile", action="store_true", help="also profile the first row: where the time goes"
    )
    look = bench.add_argument_group("the look (--look)")
    look.add_argument(
        "--look",
        action="store_true",
        help="measure the look instead of speed: steadiness, ghosting, strength per preset",
    )
    look.add_argument(
        "--footage",
        nargs="+",
        metavar="FILE",
        help="videos to measure on (default footage/people.mp4 from `make footage`; "
        "'synthetic' for the built-in clip)",
    )
    look.add_argument("--presets", help="comma-separated presets (default: every one in config/)")
    look.add_argument("--size", help="dream size WxH instead of each preset's capture.size")
    look.add_argument("--strips", metavar="DIR", help="write a strip of frames per preset here")
    look.add_argument(
        "--classes",
        action="store_true",
        help="also dream five class targets (offline and live) and have a second network judge",
    )

    sub.add_parser("osc-map", help="print the OSC address reference")
    sub.add_parser("settings", help="print every config key with its range, default and effect")
    return parser


def parse_args(argv: list[str]) -> argparse.Namespace:
    if not argv or argv[0] not in COMMANDS and argv[0] not in ("-h", "--help"):
        argv = ["run", *argv]
    return build_parser().parse_args(argv)


def _config_from(args: argparse.Namespace):
    """The config file plus --set plus the dedicated flags (flags win)."""
    from realtime.control.config import load_config

    flags = {  # config key -> the flag that sets it
        "model.name": "model",
        "model.weights": "weights",
        "model.layer": "layer",
        "model.target": "target",
        "model.device": "device",
        "capture.source": "source",
        "capture.size": "size",
        "record.path": "record",
        "display.screen": "screen",
        "osc.host": "osc_host",
        "osc.port": "osc_port",
        "osc.status_to": "status_to",
        "midi.port": "midi",
        "log.file": "log_file",
        "log.level": "log_level",
    }
    values = {key: (flag, getattr(args, flag, None)) for key, flag in flags.items()}
    if getattr(args, "fullscreen", False):
        values["display.fullscreen"] = ("fullscreen", True)
    if getattr(args, "audience", None):
        host, port = args.audience
        values["audience.enabled"] = ("audience", True)
        values["audience.host"] = ("audience", host)
        values["audience.port"] = ("audience", port)
    for name, value in vars(args).items():  # flags generated from the knob table
        if name.startswith("knob_"):
            section, _, key = name.removeprefix("knob_").partition("_")
            values[f"{section}.{key}"] = (key, value)
    overrides = list(args.set)
    blame = {}  # override -> the flag as typed, so that a refusal names what the user wrote
    for key, (flag, value) in values.items():
        if value is None:
            continue
        item = f"{key}={json.dumps(value)}"  # JSON strings are valid TOML strings
        overrides.append(item)
        blame[item] = "--" + flag.replace("_", "-") + ("" if value is True else f" {value}")
    config = args.config
    if config and config.lower().endswith(".png"):
        config = None  # a snapshot PNG: defaults here, its parameters once the model is loaded
    return load_config(config, overrides, blame)


def _default_preset(args: argparse.Namespace) -> None:
    """With no --config: the default preset with a GPU, the cpu preset without one (it dreams
    small and shows 640x360, to keep its frame rate on a laptop)."""
    if args.config:
        return
    from realtime.engine.device import DeviceError, pick_device

    try:
        device = pick_device(args.device or "auto")
    except DeviceError:
        return  # the config's device check says what is wrong, with the config it names
    if device.type == "cpu":
        args.config = "cpu"
        logger.info("no GPU in use: running the cpu preset (pass --config default for the other)")


def cmd_run(args: argparse.Namespace) -> int:
    from realtime.app import run as app

    _default_preset(args)
    cfg = _config_from(args)
    _setup_logging(cfg)
    headless, frames = args.headless, args.frames
    if not headless and not app.display_available():
        headless = True
        if frames is None:
            frames = DEMO_FRAMES
        if not cfg.record.path:
            cfg.record = replace(cfg.record, path=DEMO_RECORDING)
            Path(DEMO_RECORDING).parent.mkdir(parents=True, exist_ok=True)
        logger.info(
            "no display found: running headless for %d frames and recording to %s",
            frames,
            cfg.record.path,
        )
    snapshot = args.config if args.config and args.config.lower().endswith(".png") else None
    code = app.run(cfg, headless=headless, frames=frames, snapshot=snapshot)
    global _STOPPED
    _STOPPED = True
    return code


# Set once a live run has stopped every part it started (recording finalised, camera and sockets
# closed): the process may then end without the interpreter's teardown of torch, which takes
# about a second on a busy machine, so that SIGTERM ends it within two.
_STOPPED = False


def cmd_render(args: argparse.Namespace) -> int:
    from realtime.app.render import render
    from realtime.control.params import LiveParams
    from realtime.engine.device import pick_device
    from realtime.engine.models import MODEL_NAMES, load_model
    from realtime.knobs import RENDER_DREAM, RENDER_TARGET, parse_size

    if not args.live:  # the offline defaults (more steps and octaves), unless a flag says otherwise
        defaults = (
            RENDER_TARGET if (args.target or _config_from(args).model.target) else RENDER_DREAM
        )
        for key, value in defaults.items():
            if getattr(args, f"knob_dream_{key}") is None:
                setattr(args, f"knob_dream_{key}", value)
    cfg = _config_from(args)
    _setup_logging(cfg)
    device = pick_device(cfg.model.device)
    model, _reason = load_model(  # logs which model and why
        None if cfg.model.name == "auto" else cfg.model.name,
        device=device,
        weights=cfg.model.weights or None,
    )
    params = LiveParams.from_config(cfg, model.layers, MODEL_NAMES, model.name)
    if not cfg.model.layer:
        params.set("layer", model.default_layer)
    snap = params.snapshot()
    size = parse_size(cfg.capture.size) if args.live else None
    logger.info(
        "dreaming %s at layer %s, target %s, %d octaves x %d steps%s",
        args.input,
        snap.layer,
        snap.target_name,
        snap.dream.octaves,
        snap.dream.steps,
        f", live look at {cfg.capture.size}" if args.live else "",
    )
    count = render(
        args.input,
        args.output,
        model,
        snap,
        device,
        size=size,
        max_side=args.max_side,
        flow_width=cfg.feedback.flow_width,
    )
    logger.info("wrote %d frame%s to %s", count, "s" * (count != 1), Path(args.output).resolve())
    return 0


def cmd_layers(args: argparse.Namespace) -> int:
    from realtime.engine.models import auto_choice, model_layers, resolve_model_name

    if args.model.strip().lower() == "auto":
        model, why = auto_choice(args.weights)
        print(why, file=sys.stderr)  # stdout stays the plain list
    else:
        model = resolve_model_name(args.model)
    for i, name in enumerate(model_layers(model)):
        print(f"{i:3d}  {name}")
    return 0


def cmd_classes(args: argparse.Namespace) -> int:
    from realtime.engine.classes import search

    hits = search(args.query, limit=args.limit)
    if not hits:
        print(
            f"no ImageNet class matches {args.query!r}; try a shorter or different word",
            file=sys.stderr,
        )
        return 1
    for index, name in hits:
        print(f"{index:4d}  {name}")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.look:
        from realtime.app.look_bench import main as look_main

        if args.json == "bench.json":
            args.json = "look.json"
        return look_main(args)
    from realtime.app.bench import main as bench_main

    return bench_main(args)


def cmd_osc_map(args: argparse.Namespace) -> int:
    from realtime.control.osc import format_address_table

    print(format_address_table())
    return 0


def cmd_settings(args: argparse.Namespace) -> int:
    from realtime.control.config import settings_table

    print(settings_table())
    return 0


def _setup_logging(cfg) -> None:
    from realtime.app.logs import setup_logging

    setup_logging(cfg.log.level, cfg.log.file)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    handler = {
        "run": cmd_run,
        "render": cmd_render,
        "layers": cmd_layers,
        "classes": cmd_classes,
        "bench": cmd_bench,
        "osc-map": cmd_osc_map,
        "settings": cmd_settings,
    }[args.command]
    try:
        return handler(args)
    except KeyboardInterrupt:
        return 130
    except Exception as err:  # noqa: BLE001 - one clear line for the operator, not a traceback
        if type(err).__module__.startswith("realtime") or isinstance(err, (OSError, ValueError)):
            print(f"error: {err}", file=sys.stderr)
            return 2
        raise


def console_main() -> None:
    """The `dream-installation` command (pyproject.toml's [project.scripts]) and this script."""
    code = main()
    if _STOPPED:
        logging.shutdown()  # flushes and closes the log file
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


if __name__ == "__main__":
    console_main()
