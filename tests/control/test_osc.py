"""The OSC control surface over real UDP on 127.0.0.1: parameters, bundles, sync, fuzz, allow list."""

import logging
import math
import random
import socket
import struct
import threading
import time

import numpy as np
import pytest
from pythonosc.dispatcher import Dispatcher
from pythonosc.osc_bundle_builder import OscBundleBuilder
from pythonosc.osc_message_builder import OscMessageBuilder
from pythonosc.osc_packet import OscPacket
from pythonosc.osc_server import ThreadingOSCUDPServer
from pythonosc.udp_client import SimpleUDPClient

from realtime.control.osc import (
    Limits,
    OscError,
    OscServer,
    address_table,
    format_address_table,
)
from realtime.control.params import KNOBS, NAMES, LiveParams
from realtime.control.status import StatusError, StatusSender, parse_target

LAYERS = [
    "conv1", "conv2", "conv3", "inception3a", "inception3b", "inception4a", "inception4b",
    "inception4c", "inception4d", "inception4e", "inception5a", "inception5b",
]  # fmt: skip
MODELS = ["googlenet", "vgg16", "efficientnet_lite0"]
# No rate limits: for tests that send more than a sender may, to see every message handled.
UNLIMITED = Limits(*[1e9] * 8, per_datagram=10**6)


def wait_for(predicate, timeout: float = 3.0) -> bool:
    """Poll until predicate() is true or the timeout passes; returns the last result."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.002)
    return bool(predicate())


def message(address: str, *args, types: str | None = None) -> bytes:
    builder = OscMessageBuilder(address)
    for i, arg in enumerate(args):
        builder.add_arg(arg, types[i] if types else None)
    return builder.build().dgram


class Collector:
    """A python-osc server on an ephemeral port that keeps every (address, args) it receives."""

    def __init__(self) -> None:
        self.received: list[tuple[str, tuple]] = []
        self._lock = threading.Lock()
        dispatcher = Dispatcher(strict_timing=False)
        dispatcher.set_default_handler(self._keep)
        self.server = ThreadingOSCUDPServer(("127.0.0.1", 0), dispatcher)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def _keep(self, address, *args) -> None:
        with self._lock:
            self.received.append((address, args))

    def latest(self) -> dict[str, object]:
        with self._lock:
            return {address: args[0] for address, args in self.received if len(args) == 1}

    def addresses(self, address: str) -> list[tuple]:
        with self._lock:
            return [args for a, args in self.received if a == address]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def params() -> LiveParams:
    return LiveParams(LAYERS, MODELS, "googlenet")


@pytest.fixture
def server(params):
    srv = OscServer(params, port=0)
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture
def client(server) -> SimpleUDPClient:
    return SimpleUDPClient("127.0.0.1", server.address[1])


@pytest.fixture
def collector():
    c = Collector()
    yield c
    c.close()


def test_layer_by_float_index_and_by_name(params, client):
    client.send_message("/dream/layer", 3.0)
    assert wait_for(lambda: params.get("layer") == "inception3a")
    client.send_message("/dream/layer", "inception4c")
    assert wait_for(lambda: params.get("layer") == "inception4c")
    client.send_message("/dream/layer", 0)  # an int index works too
    assert wait_for(lambda: params.get("layer") == "conv1")


def test_every_parameter_address_sets_its_parameter(params, client, server):
    values = {"steps": 5.0, "octaves": 3.0, "octave_scale": 1.6, "step_size": 0.05,
              "jitter": 8.0, "feedback": 0.5, "flow": 0.0, "zoom": 1.01, "rotate": -1.5,
              "mix": 0.25, "brightness": 0.1, "contrast": 1.2, "saturation": 0.7, "glide": 2.0,
              "smooth": 0.5, "model": "vgg16", "target": "volcano"}  # fmt: skip
    assert set(values) | {"layer", "paused"} == set(NAMES)
    for name, value in values.items():
        client.send_message(f"/dream/{name}", value)
    assert wait_for(lambda: server.applied == len(values))
    state = params.state()
    for name, value in values.items():
        if isinstance(value, float):
            assert state[name] == pytest.approx(value, abs=1e-6), name
    assert params.get("model") == state["model_loading"] == "vgg16"  # asked for, not dreaming
    assert state["model"] == "googlenet"  # status names the model dreaming until the loop swaps
    assert state["target"] == "volcano"


def test_target_none_and_minus_one_clear(params, client):
    params.set("target", "volcano")
    client.send_message("/dream/target", "none")
    assert wait_for(lambda: params.state()["target"] == "none")
    params.set("target", "volcano")
    client.send_message("/dream/target", -1.0)
    assert wait_for(lambda: params.state()["target_index"] == -1)


def test_bundle_with_future_timetag_applies_at_once(params, client):
    bundle = OscBundleBuilder(time.time() + 10.0)
    msg = OscMessageBuilder("/dream/feedback")
    msg.add_arg(0.3, "f")
    bundle.add_content(msg.build())
    msg = OscMessageBuilder("/dream/layer")
    msg.add_arg("inception5a", "s")
    bundle.add_content(msg.build())
    start = time.monotonic()
    client.send(bundle.build())
    assert wait_for(lambda: params.get("layer") == "inception5a", timeout=2.0)
    assert time.monotonic() - start < 2.0
    assert params.get("feedback") == pytest.approx(0.3, abs=1e-6)


def test_out_of_range_values_are_clamped(params, client, server):
    client.send_message("/dream/feedback", 5.0)
    client.send_message("/dream/steps", -3)
    client.send_message("/dream/zoom", 0.0)
    assert wait_for(lambda: server.applied == 3)
    assert params.get("feedback") == pytest.approx(0.98)
    assert params.get("steps") == 0
    assert params.get("zoom") == pytest.approx(0.9)


def test_pause_toggles_without_argument_and_sets_with_one(params, client, server):
    client.send_message("/dream/pause", [])
    assert wait_for(lambda: params.get("paused") is True)
    client.send_message("/dream/pause", [])
    assert wait_for(lambda: params.get("paused") is False)
    client.send_message("/dream/pause", 1.0)
    assert wait_for(lambda: params.get("paused") is True)
    client.send_message("/dream/pause", 0.0)
    assert wait_for(lambda: params.get("paused") is False)


def test_triggers_fire_on_no_argument_or_one_and_ignore_zero(params, client, server):
    client.send_message("/dream/reset", [])
    client.send_message("/dream/snapshot", 1.0)
    client.send_message("/dream/reset", 0.0)  # a button's release: ignored, not refused
    client.send_message("/dream/snapshot", 0.0)
    client.send_message("/dream/feedback", 0.2)  # in-order barrier
    assert wait_for(lambda: params.get("feedback") == pytest.approx(0.2))
    snap = params.snapshot()
    assert (snap.reset_count, snap.snapshot_count) == (1, 1)
    assert server.refused == 0


def test_bad_messages_change_nothing_and_each_gives_one_warning_and_error(
    params, collector, caplog
):
    status = StatusSender(params, None, f"127.0.0.1:{collector.port}", hz=0)
    status.start()
    srv = OscServer(params, port=0, status=status)
    srv.start()
    try:
        before, version = params.state(), params.snapshot().version
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        bad = [
            message("/dream/feedback", "loud"),  # not a number
            message("/dream/feedback", 0.1, 0.2),  # two arguments
            message("/dream/feedback"),  # none
            message("/dream/feedback", b"blob"),  # a blob
            message("/dream/layer", "inception9z"),  # unknown layer
            message("/dream/model", "resnet"),  # unknown model
            message("/dream/steps", float("nan")),
            message("/dream/rotate", float("inf")),
            message("/dream/nonsense", 1.0),  # unknown address
            message("/dream/pause", "maybe"),
            message("/dream/reset", "now"),
        ]
        with caplog.at_level(logging.WARNING, logger="realtime.control.osc"):
            for dgram in bad:
                sock.sendto(dgram, srv.address)
            assert wait_for(lambda: len(collector.addresses("/dream/status/error")) == len(bad))
        sock.close()
        assert params.state() == before
        assert params.snapshot().version == version
        assert srv.refused == len(bad) and srv.applied == 0
        refusals = [r for r in caplog.records if r.name == "realtime.control.osc"]
        assert len(refusals) == len(bad)
        errors = [args[0] for args in collector.addresses("/dream/status/error")]
        assert any("inception9z" in e and "inception4c" in e for e in errors)  # lists valid ones
        assert any("resnet" in e and "googlenet" in e for e in errors)
        assert any("did you mean" in e for e in errors)
    finally:
        srv.stop()
        status.stop()


def test_sync_sends_whole_state_as_one_bundle(params):
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    receiver.bind(("127.0.0.1", 0))
    receiver.settimeout(3.0)
    stats = {"fps": np.float32(12.5), "latency_ms": np.int64(80), "capture": "running"}
    status = StatusSender(params, lambda: stats, f"127.0.0.1:{receiver.getsockname()[1]}", hz=0)
    status.start()
    srv = OscServer(params, port=0, status=status)
    srv.start()
    try:
        params.set("target", "jellyfish")
        SimpleUDPClient("127.0.0.1", srv.address[1]).send_message("/dream/sync", 1.0)
        dgram, _ = receiver.recvfrom(65535)
        assert dgram.startswith(b"#bundle\x00")  # one datagram holds it all
        got = {m.message.address: m.message.params for m in OscPacket(dgram).messages}
    finally:
        srv.stop()
        status.stop()
        receiver.close()
    state = params.state()
    for name, value in state.items():
        (sent,) = got[f"/dream/status/{name}"]
        if isinstance(value, str):
            assert sent == value, name
        else:
            assert isinstance(sent, float) and sent == pytest.approx(value), name
    assert got["/dream/status/layer"] == ["inception4b"]  # the middle layer, as a string
    assert got["/dream/status/target"] == ["jellyfish"]
    assert got["/dream/status/fps"] == [12.5]  # numpy scalars went out as plain floats
    assert got["/dream/status/latency_ms"] == [80.0]
    assert got["/dream/status/capture"] == ["running"]


def test_sync_without_status_target_is_refused(params, server, client):
    client.send_message("/dream/sync", [])
    assert wait_for(lambda: server.refused == 1)


def test_periodic_status_reaches_a_listener(params, collector):
    status = StatusSender(
        params, lambda: {"fps": 24.0, "latency_ms": 41.5}, f"127.0.0.1:{collector.port}", hz=50
    )
    status.start()
    try:
        params.set("layer", "inception4e")
        params.set("target", -1)
        assert wait_for(lambda: len(collector.addresses("/dream/status/model")) >= 2)
    finally:
        status.stop()
    latest = collector.latest()
    assert latest["/dream/status/fps"] == 24.0
    assert latest["/dream/status/latency_ms"] == 41.5
    assert latest["/dream/status/layer"] == "inception4e"
    assert latest["/dream/status/layer_index"] == 9.0
    assert latest["/dream/status/target"] == "none"
    assert latest["/dream/status/target_index"] == -1.0
    assert latest["/dream/status/model"] == "googlenet"
    assert latest["/dream/status/paused"] == 0.0
    assert "/dream/status/feedback" not in latest  # the whole state only on sync


def test_unreachable_status_targets_are_ignored(params, caplog):
    closed = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()  # nobody listens there now
    senders = [
        StatusSender(params, None, f"127.0.0.1:{port}", hz=100),
        StatusSender(params, None, "no-such-host.invalid:9001", hz=100),
    ]
    with caplog.at_level(logging.WARNING, logger="realtime.control.status"):
        for s in senders:
            s.start()
            s.sync()
            s.error("x")
        time.sleep(0.2)
        for s in senders:
            s.stop()
    assert senders[0].sent > 10  # UDP to a closed port: sent and lost, never raised
    assert senders[1].sent == 0
    warnings = [r for r in caplog.records if "no-such-host.invalid" in r.getMessage()]
    assert len(warnings) == 1  # logged once, not on every tick


@pytest.mark.parametrize("bad", ["", "9001", "localhost", "host:", "host:0", "host:70000",
                                 ":9001", "host:port", "a b:9001"])  # fmt: skip
def test_bad_status_target_is_refused_at_construction(params, bad):
    with pytest.raises(StatusError, match="HOST:PORT"):
        StatusSender(params, None, bad)


def test_status_target_forms():
    assert parse_target("127.0.0.1:9001") == ("127.0.0.1", 9001)
    assert parse_target("[::1]:7000") == ("::1", 7000)
    assert parse_target("td-machine.local:10000") == ("td-machine.local", 10000)


def test_allow_list_drops_other_senders(params):
    for allow, changes in ((["127.0.0.2"], False), (["127.0.0.1"], True)):
        srv = OscServer(params, port=0, allow=allow)
        srv.start()
        try:
            SimpleUDPClient("127.0.0.1", srv.address[1]).send_message("/dream/mix", 0.5)
            assert wait_for(lambda s=srv: s.datagrams == 1)
            assert (
                wait_for(lambda: params.get("mix") == 0.5, timeout=0.5 if not changes else 3)
                is changes
            )
            assert srv.blocked == (0 if changes else 1)
        finally:
            srv.stop()


def test_bad_allow_entry_is_refused(params):
    with pytest.raises(OscError, match="allow"):
        OscServer(params, port=0, allow=["not-an-ip"])


def test_busy_port_gives_clear_error_and_stop_frees_the_port(params):
    srv = OscServer(params, port=0)
    port = srv.address[1]
    srv.start()
    with pytest.raises(OSError, match="--osc-port"):
        OscServer(params, port=port)
    start = time.monotonic()
    srv.stop()
    assert time.monotonic() - start < 1.0
    again = OscServer(params, port=port)  # the socket was closed
    again.stop()  # never started: stop still closes


def test_preset_names_with_paths_are_refused_over_osc(params, collector, tmp_path):
    (tmp_path / "calm.toml").write_text("[feedback]\namount = 0.3\n\n[dream]\nsteps = 1\n")
    status = StatusSender(params, None, f"127.0.0.1:{collector.port}", hz=0)
    status.start()
    srv = OscServer(params, port=0, status=status, preset_dir=tmp_path)
    srv.start()
    try:
        client = SimpleUDPClient("127.0.0.1", srv.address[1])
        before = params.state()
        for name in ("../x", "/etc/passwd", "a/b", "..", "C:\\x", "nope"):
            client.send_message("/dream/preset", name)
        assert wait_for(lambda: len(collector.addresses("/dream/status/error")) == 6)
        assert params.state() == before
        errors = [args[0] for args in collector.addresses("/dream/status/error")]
        assert all("calm" in e for e in errors)  # each names the valid presets
        assert sum("not paths" in e for e in errors) == 5
        client.send_message("/dream/preset", "calm")
        assert wait_for(lambda: params.get("steps") == 1)
        assert params.get("feedback") == pytest.approx(0.3)
        assert params.get("octaves") == before["octaves"]  # not in the file: unchanged
    finally:
        srv.stop()
        status.stop()


# --- malformed input --------------------------------------------------------------------


def _bundle(*elements: bytes, timetag: bytes = b"\x00" * 7 + b"\x01") -> bytes:
    out = b"#bundle\x00" + timetag
    for e in elements:
        out += struct.pack(">i", len(e)) + e
    return out


def _fuzz_datagrams(count: int, seed: int = 20240601) -> list[bytes]:
    """Deterministic garbage and near-misses, none of which may change anything."""
    rng = random.Random(seed)
    numeric = [n for n, s in KNOBS.items() if not s.kind]
    valid = [message("/dream/feedback", 0.3, types="f"), message("/dream/steps", 5, types="i"),
             message("/dream/layer", "inception4c"), message("/dream/mix", 0.25, types="d"),
             message("/dream/target", "volcano")]  # fmt: skip
    known = {row["address"] for row in address_table()}

    def letters(n: int) -> str:
        return "".join(rng.choice("abcdefghijklmnopqrstuvwxyz_") for _ in range(n))

    def bad_message() -> bytes:
        kind = rng.randrange(9)
        param = rng.choice(numeric)
        if kind == 0:  # a non-number
            return message(f"/dream/{param}", letters(rng.randint(1, 12)))
        if kind == 1:  # NaN or infinity, as float or double
            return message(
                f"/dream/{rng.choice(numeric + ['layer', 'target', 'pause'])}",
                rng.choice([math.nan, math.inf, -math.inf]),
                types=rng.choice("fd"),
            )
        if kind == 2:  # argument count wrong
            n = rng.choice([0, 2, 3])
            return message(
                f"/dream/{rng.choice(numeric + ['layer', 'target', 'preset'])}",
                *[rng.random() for _ in range(n)],
            )
        if kind == 3:  # wrong argument types
            arg, tag = rng.choice([(b"\x01\x02", "b"), (None, "N"), ((1, 2, 3, 4), "m")])
            address = rng.choice(
                numeric + ["layer", "target", "model", "preset", "pause", "reset", "snapshot"]
            )
            return message(f"/dream/{address}", arg, types=tag)
        if kind == 4:  # a huge string where a name or number goes
            return message(
                f"/dream/{rng.choice(['layer', 'model', 'preset', param])}",
                letters(rng.randint(1000, 30000)),
            )
        if kind == 5:  # unknown addresses with a perfectly good value
            address = rng.choice(["/dream/", "/", "/td/", "/dream/status/"]) + letters(
                rng.randint(1, 20)
            )
            return b"" if address in known else message(address, rng.random())
        if kind == 6:  # path-like preset names
            return message(
                "/dream/preset",
                rng.choice(
                    ["../x", "/etc/passwd", "a/b", ".hidden", "..\\..\\x", "c:x", "no such"]
                ),
            )
        if kind == 7:  # unknown layer / model names
            return message(f"/dream/{rng.choice(['layer', 'model'])}", "zz" + letters(8))
        return message(f"/dream/{rng.choice(['pause', 'reset', 'snapshot'])}", "x" + letters(3))

    def garbage() -> bytes:
        kind = rng.randrange(8)
        if kind == 0:  # random bytes
            return rng.randbytes(rng.randint(1, 300))
        if kind == 1:  # random bytes that look like an address
            return b"/" + rng.randbytes(rng.randint(0, 300))
        if kind == 2:  # a valid message cut short
            v = rng.choice(valid)
            return v[: rng.randint(1, len(v) - 1)]
        if kind == 3:  # a valid message with a type tag that does not fit its data
            v = rng.choice(valid)
            i = v.index(b",") + 1
            eight = len(v) - (i + 3) == 8  # an 8-byte payload would read fine as h, d or t
            tags = b"bTFN[]Scx?" + (b"" if eight else b"hdt")
            return v[:i] + rng.choice(tags).to_bytes(1, "big") + v[i + 1 :]
        if kind == 4:  # valid message, garbage tail
            return rng.choice(valid) + rng.randbytes(rng.choice([1, 3, 4, 8]))
        if kind == 5:  # bundles with garbage: bad sizes, garbage elements, a good one beside
            element = rng.choice([rng.randbytes(8), rng.choice(valid)[:-4], b"#bundle\x00"])
            size = rng.choice([-4, -1, 0, 3, 1 << 30, len(element)])
            return _bundle(rng.choice(valid)) + struct.pack(">i", size) + element
        if kind == 6:  # deep nesting around a valid message
            out = rng.choice(valid)
            for _ in range(rng.randint(9, 40)):
                out = _bundle(out)
            return out
        return _bundle() + rng.randbytes(rng.randint(1, 64))  # bundle with a random body

    out = []
    while len(out) < count:
        dgram = bad_message() if rng.random() < 0.5 else garbage()
        if dgram:
            out.append(dgram)
    return out


def test_ten_thousand_malformed_datagrams_leave_server_running_and_state_unchanged(params):
    server = OscServer(params, port=0, limits=UNLIMITED)
    server.start()
    try:
        _fuzz(params, server)
    finally:
        server.stop()


def _fuzz(params, server):
    datagrams = _fuzz_datagrams(10_000)
    before, snap = params.state(), params.snapshot()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sent, in_flight = 0, 0
    start = time.monotonic()
    for dgram in datagrams:
        sock.sendto(dgram, server.address)
        sent += 1
        in_flight += len(dgram)
        if in_flight > 30_000 or sent % 100 == 0:  # stay well inside the receive buffer
            assert wait_for(lambda n=sent: server.datagrams == n), (server.datagrams, sent)
            in_flight = 0
    assert wait_for(lambda: server.datagrams == sent)
    elapsed = time.monotonic() - start
    after = params.snapshot()
    assert params.state() == before
    assert (after.version, after.reset_count, after.snapshot_count) == (
        snap.version, snap.reset_count, snap.snapshot_count)  # fmt: skip
    assert server.applied == 0
    assert server.malformed > 1000 and server.refused > 1000
    assert elapsed < 15.0
    sock.sendto(message("/dream/layer", "inception4c"), server.address)  # still alive
    assert wait_for(lambda: params.get("layer") == "inception4c")


# --- the reference ----------------------------------------------------------------------


def test_address_table_covers_every_parameter_and_handler(server):
    table = address_table()
    addresses = {row["address"] for row in table}
    for name in KNOBS:
        assert f"/dream/{name}" in addresses
    for address in ("/dream/pause", "/dream/preset", "/dream/reset", "/dream/snapshot",
                    "/dream/sync", "/dream/status/fps", "/dream/status/layer",
                    "/dream/status/error"):  # fmt: skip
        assert address in addresses
    mapped = set(server.dispatcher.routes)  # every address the server answers is documented
    assert mapped == {row["address"] for row in table if row["direction"] == "in"}
    feedback = next(row for row in table if row["address"] == "/dream/feedback")
    assert (feedback["range"], feedback["default"]) == ("0..0.98", "0.6")
    text = format_address_table()
    assert "/dream/feedback" in text and "0..0.98" in text
    md = format_address_table(markdown=True).splitlines()
    assert md[0].startswith("| dir | address |") and len(md) == len(table) + 2


def test_a_wildcard_address_is_refused_at_once_and_cannot_stall_the_server(params, server):
    """Issue 11's attack: '/dream/' plus 26 '*' and '!' took python-osc's pattern matcher over a
    minute. Addresses are matched exactly, so a pattern costs no more than its parsing."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        bad = message("/dream/" + "*" * 26 + "!", 1.0, types="f")
        started = time.monotonic()
        for _ in range(200):
            sock.sendto(bad, server.address)
        sock.sendto(message("/dream/layer", "inception4c"), server.address)
        assert wait_for(lambda: params.get("layer") == "inception4c", 5.0)
        elapsed = time.monotonic() - started
    finally:
        sock.close()
    assert elapsed < 2.0, elapsed  # 200 attacks and a real message, handled in well under 2 s
    assert server.refused >= 200 and server.applied == 1
