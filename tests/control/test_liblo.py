"""Interoperability with another OSC implementation: liblo's oscsend and oscdump."""

import queue
import shlex
import shutil
import socket
import subprocess
import threading
import time

import pytest

from realtime.control.osc import OscServer
from realtime.control.params import LiveParams
from realtime.control.status import StatusSender, build_message
from tests._require import require

LAYERS = [
    "conv1", "conv2", "conv3", "inception3a", "inception3b", "inception4a", "inception4b",
    "inception4c", "inception4d", "inception4e", "inception5a", "inception5b",
]  # fmt: skip


@pytest.fixture(autouse=True)
def _liblo() -> None:
    require(bool(shutil.which("oscsend") and shutil.which("oscdump")), "liblo-tools not installed")


@pytest.fixture
def params() -> LiveParams:
    return LiveParams(LAYERS, ["googlenet", "vgg16"], "googlenet")


def wait_for(predicate, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.005)
    return bool(predicate())


def oscsend(port: int, address: str, types: str, *values: str) -> None:
    subprocess.run(
        ["oscsend", "127.0.0.1", str(port), address, types, *values],
        check=True,
        timeout=10,
        capture_output=True,
    )


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def parse_oscdump(line: str) -> tuple[str, str, list[str]] | None:
    """'<timetag> /addr types v1 v2' (timetag absent in older liblo) -> (addr, types, values)."""
    tokens = shlex.split(line)
    starts = [i for i, t in enumerate(tokens) if t.startswith("/")]
    if not starts or starts[0] + 1 >= len(tokens):
        return None
    i = starts[0]
    return tokens[i], tokens[i + 1], tokens[i + 2 :]


def test_oscsend_drives_the_server(params):
    server = OscServer(params, port=0)
    server.start()
    try:
        port = server.address[1]
        oscsend(port, "/dream/layer", "s", "inception4c")
        oscsend(port, "/dream/feedback", "f", "0.3")
        oscsend(port, "/dream/steps", "i", "7")
        oscsend(port, "/dream/pause", "T")
        assert wait_for(lambda: server.applied == 4)
        assert params.get("layer") == "inception4c"
        assert params.get("feedback") == pytest.approx(0.3)
        assert params.get("steps") == 7
        assert params.get("paused") is True
        oscsend(port, "/dream/feedback", "s", "loud")  # refused, nothing changes
        assert wait_for(lambda: server.refused == 1)
        assert params.get("feedback") == pytest.approx(0.3)
    finally:
        server.stop()


class OscDump:
    """oscdump on a free port; a thread reads its stdout so the test can wait with a timeout."""

    def __init__(self) -> None:
        self.port = free_udp_port()
        self.proc = subprocess.Popen(
            ["oscdump", "-L", str(self.port)], stdout=subprocess.PIPE, text=True
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.received: dict[str, tuple[str, list[str]]] = {}
        threading.Thread(target=self._read, daemon=True).start()
        self._await_listening()

    def _await_listening(self) -> None:
        """Datagrams sent before oscdump has bound its port are lost: a first status tick cut
        in half would show "paused" without the "layer" sent before it. Probe until one shows."""
        probe = build_message("/dump/ready", 1.0)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            for _ in range(100):  # at most 10 s
                sock.sendto(probe.dgram, ("127.0.0.1", self.port))
                if self.wait_for("/dump/ready", timeout=0.1):
                    return
        raise AssertionError("oscdump never started listening")

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.put(line)

    def wait_for(self, address: str, timeout: float = 10.0) -> bool:
        """Collect lines until `address` arrives (the last value of each address is kept)."""
        deadline = time.monotonic() + timeout
        while address not in self.received and time.monotonic() < deadline:
            try:
                parsed = parse_oscdump(self.lines.get(timeout=0.1))
            except queue.Empty:
                continue
            if parsed:
                self.received[parsed[0]] = parsed[1:]
        return address in self.received

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait(timeout=5)


def test_oscdump_receives_status_and_sync(params):
    dump = OscDump()
    status = StatusSender(
        params, lambda: {"fps": 9.5, "latency_ms": 120.0}, f"127.0.0.1:{dump.port}"
    )
    server = OscServer(params, port=0, status=status)
    try:
        params.set("layer", "inception4e")
        params.set("target", "volcano")
        status.start()
        server.start()
        # One tick's messages, whatever their order (parameters and stats are sent in turn).
        assert dump.wait_for("/dream/status/paused") and dump.wait_for("/dream/status/fps")
        assert dump.wait_for("/dream/status/layer") and dump.wait_for("/dream/status/target")
        got = dump.received
        assert got["/dream/status/layer"] == ("s", ["inception4e"])
        assert got["/dream/status/target"] == ("s", ["volcano"])
        assert got["/dream/status/layer_index"][0] == "f"
        assert float(got["/dream/status/layer_index"][1][0]) == 9.0
        assert float(got["/dream/status/fps"][1][0]) == 9.5
        assert "/dream/status/saturation" not in got  # the whole state only on sync
        oscsend(server.address[1], "/dream/sync", "")
        for name, value in params.state().items():
            assert dump.wait_for(f"/dream/status/{name}"), name
            kind, values = got[f"/dream/status/{name}"]
            if isinstance(value, str):
                assert (kind, values) == ("s", [value]), name
            else:
                assert kind == "f" and float(values[0]) == pytest.approx(value, abs=1e-5), name
    finally:
        server.stop()
        status.stop()
        dump.close()
