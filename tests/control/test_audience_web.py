"""The audience page over real HTTP on 127.0.0.1: requests reach the dream, limits hold under 50
concurrent phones, bad bodies change nothing, a slow client stalls no one; OSC and status."""

import http.client
import json
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from pythonosc.udp_client import SimpleUDPClient

from realtime.control import audience_web
from realtime.control.audience import AudienceQueue
from realtime.control.audience_web import MAX_BODY, AudienceServer, AudienceWebError
from realtime.control.osc import OscServer
from realtime.control.params import LiveParams
from realtime.control.status import StatusSender
from realtime.engine.classes import class_names, resolve_class
from realtime.knobs import AudienceConfig
from tests.control.test_osc import Collector, wait_for

VOLCANO = resolve_class("volcano")
GLIDE = 0.3  # s


@pytest.fixture
def params():
    return LiveParams(["a", "b", "c"], ["m"], "m", {"glide": GLIDE})


@pytest.fixture
def serve(params):
    """Starts AudienceServers on 127.0.0.1 (any free port); stops them at the end."""
    started = []

    def start(pin: str = "", **config):
        config.setdefault("per_client", 0.0)
        queue = AudienceQueue(AudienceConfig(**config), params)
        server = AudienceServer(queue, "127.0.0.1", 0, pin=pin)
        server.start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


def call(server, method, path, body=None, source="127.0.0.1", headers=None, timeout=5.0):
    """(status, parsed JSON or text) of one HTTP request from `source` (any 127.x address)."""
    host, port = server.address
    conn = http.client.HTTPConnection(host, port, timeout=timeout, source_address=(source, 0))
    try:
        if body is not None and not isinstance(body, bytes):
            body = json.dumps(body).encode()
        sent = {"Content-Type": "application/json"} if body is not None else {}
        conn.request(method, path, body=body, headers={**sent, **(headers or {})})
        response = conn.getresponse()
        data = response.read()
        kind = response.getheader("Content-Type", "")
        return response.status, json.loads(data) if "json" in kind else data.decode()
    finally:
        conn.close()


def ask(server, name, source="127.0.0.1", **extra):
    return call(server, "POST", "/api/request", {"name": name, **extra}, source=source)


def test_a_request_changes_the_dreamed_target_within_one_glide(serve, params):
    server = serve()
    status, reply = ask(server, "volcano")
    assert status == 200 and reply["ok"] and reply["name"] == "volcano"
    asked = time.monotonic()
    assert wait_for(lambda: params.snapshot().targets == ((VOLCANO, 1.0),), timeout=3.0)
    # The queue ticks every TICK_S; from there the target glides in over GLIDE.
    assert time.monotonic() - asked <= audience_web.TICK_S + GLIDE + 0.2
    status, state = call(server, "GET", "/api/state")
    assert status == 200 and state["now"]["name"] == "volcano" and state["queue"] == []


def test_the_page_is_static_and_shows_what_visitors_send_as_text_only(serve):
    server = serve()
    status, page = call(server, "GET", "/")
    assert status == 200 and '<script src="/app.js"' in page
    status, script = call(server, "GET", "/app.js")
    assert status == 200 and "textContent" in script and "innerHTML" not in script
    host, port = server.address
    conn = http.client.HTTPConnection(host, port, timeout=5)
    conn.request("GET", "/")
    headers = conn.getresponse().headers
    conn.close()
    assert "default-src 'self'" in headers["Content-Security-Policy"]
    assert call(server, "GET", "/../../etc/passwd")[0] == 404
    assert call(server, "GET", "/app.js/../../README.md")[0] == 404


def test_suggestions_are_forgiving(serve):
    server = serve()
    status, reply = call(server, "GET", "/api/classes?q=spider%20w")
    assert status == 200 and reply["names"][0] == "spider web"
    assert "volcano" in call(server, "GET", "/api/classes?q=volcanoe")[1]["names"]
    assert call(server, "GET", "/api/classes?q=" + "x" * 101)[0] == 400


def test_limits_hold_under_50_concurrent_clients(serve, params):
    """50 phones (each its own 127.0.0.x address) ask at once, twice each: the queue takes
    queue_max, every other first request is told the queue is full, every second one is told
    to wait."""
    server = serve(per_client=60.0, queue_max=5, dwell=60.0)
    names = [n for n in class_names()[:400] if " " not in n][:50]
    barrier = threading.Barrier(50)

    def phone(i):
        barrier.wait(timeout=10)
        source = f"127.0.0.{i + 2}"
        return ask(server, names[i], source), ask(server, names[i], source)

    with ThreadPoolExecutor(50) as pool:
        replies = list(pool.map(phone, range(50)))
    first = [status for (status, _), _ in replies]
    # 5 wait; one more when the first of them has started meanwhile (the queue ticks)
    assert first.count(200) in (5, 6) and first.count(429) == 50 - first.count(200)
    full = [r for (status, r), _ in replies if status == 429]
    assert all("queue is full (5 waiting)" in r["error"] for r in full)
    for (first_status, _), (status, reply) in replies:
        if first_status == 200:  # each phone once a minute
            assert status == 429 and reply["error"].startswith("one request every 60 s; try")
        else:  # the queue stays full; one place frees when the first request starts
            assert status in (200, 429)
    state = server.queue.view()
    taken = state["length"] + (state["now"] is not None)
    assert state["length"] <= 5 and taken == server.queue.accepted <= 6


def test_a_blocked_class_is_refused_with_a_clear_message(serve, params):
    server = serve(block=("tarantula",))
    status, reply = ask(server, "Tarantula")
    assert status == 403 and reply["error"] == (
        "tarantula is not one of the things this dream may show; try another"
    )
    status, reply = ask(server, "spaceship")
    assert status == 422 and reply["error"].startswith("unknown ImageNet class 'spaceship'")
    assert "space shuttle" in reply["suggestions"]
    assert server.queue.view()["length"] == 0 and params.snapshot().target is None


@pytest.mark.parametrize(
    "body, headers, expected",
    [
        (b"{" + b" " * (2 * MAX_BODY) + b"}", {}, 413),  # oversized
        (b'{"name": "volcano"', {}, 400),  # cut short
        (b"\xff\xfe not json", {}, 400),
        (b'["volcano"]', {}, 400),  # JSON, but not {"name": ...}
        (b'{"name": 42}', {}, 400),
        (b"[" * 5000 + b"]" * 5000, {}, 413),
        (b"name=volcano", {"Content-Type": "application/x-www-form-urlencoded"}, 415),
    ],
)
def test_oversized_and_malformed_bodies_get_a_4xx_and_change_nothing(
    serve, params, body, headers, expected
):
    server = serve()
    status, reply = call(server, "POST", "/api/request", body, headers=headers)
    assert status == expected and reply["ok"] is False and reply["error"]
    time.sleep(2 * audience_web.TICK_S)
    assert server.queue.view()["length"] == 0 and server.queue.accepted == 0
    assert params.snapshot().target is None
    assert ask(server, "volcano")[0] == 200  # and the server still serves


def test_a_pin_is_required_when_set(serve):
    server = serve(pin="4711")
    assert call(server, "GET", "/api/state")[1]["pin"] is True
    status, reply = ask(server, "volcano", pin="1234")
    assert status == 403 and "wrong PIN" in reply["error"]
    assert ask(server, "volcano", source="127.0.0.3")[0] == 403  # none sent
    assert ask(server, "volcano", pin="4711")[0] == 200


def test_a_slow_client_does_not_delay_the_others(serve, monkeypatch):
    """One client sends its request a byte a second; meanwhile others are answered at once, and
    its body is given up on after BODY_TIMEOUT_S."""
    monkeypatch.setattr(audience_web, "BODY_TIMEOUT_S", 1.5)
    server = serve()
    slow = socket.create_connection(server.address, timeout=5)
    try:
        body = b'{"name": "volcano"}'
        head = (
            f"POST /api/request HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode()
        stop = threading.Event()

        def dribble():
            for byte in head + body:
                if stop.wait(1.0):
                    return
                try:
                    slow.send(bytes([byte]))
                except OSError:
                    return

        threading.Thread(target=dribble, daemon=True).start()
        time.sleep(0.5)
        for i in range(10):
            t0 = time.monotonic()
            status, _ = call(server, "GET", "/api/state", source=f"127.0.1.{i + 1}")
            assert status == 200 and time.monotonic() - t0 < 0.5
        assert ask(server, "pizza", source="127.0.2.1")[0] == 200
        stop.set()
        # Its body never arrives in time: 408 (headers sent at once, then a byte a second).
        late = socket.create_connection(server.address, timeout=5)
        late.sendall(head)
        t0 = time.monotonic()
        answer = late.recv(4096)
        late.close()
        assert answer.startswith(b"HTTP/1.1 408") and 1.4 < time.monotonic() - t0 < 3.0
    finally:
        slow.close()


def test_a_busy_port_is_refused_with_what_to_do(serve):
    server = serve()
    other = AudienceServer(server.queue, "127.0.0.1", server.address[1])
    with pytest.raises(AudienceWebError, match="is the port free"):
        other.start()


def test_osc_controls_the_queue_and_status_reports_it(serve, params):
    server = serve(dwell=60.0)
    queue = server.queue
    collector = Collector()
    status = StatusSender(params, target=f"127.0.0.1:{collector.port}", hz=20, audience=queue)
    osc = OscServer(params, port=0, status=status, audience=queue)
    osc.start()
    status.start()
    client = SimpleUDPClient("127.0.0.1", osc.address[1])
    try:
        for i, name in enumerate(("volcano", "pizza", "jellyfish")):
            assert ask(server, name, source=f"127.0.0.{i + 2}")[0] == 200
        assert wait_for(lambda: queue.view()["now"] is not None)
        assert wait_for(lambda: collector.latest().get("/dream/status/audience/now") == "volcano")
        assert wait_for(lambda: collector.latest().get("/dream/status/audience/length") == 2.0)
        queued = lambda: collector.latest().get("/dream/status/audience/queue")  # noqa: E731
        assert wait_for(lambda: queued() == "pizza, jellyfish")
        client.send_message("/dream/audience", "skip")
        assert wait_for(lambda: (queue.view()["now"] or {}).get("name") == "pizza")
        client.send_message("/dream/audience", "clear")
        assert wait_for(lambda: queue.view()["length"] == 0)
        client.send_message("/dream/audience", 0.0)
        assert wait_for(lambda: not queue.enabled and params.snapshot().target is None)
        assert ask(server, "volcano")[0] == 503
        client.send_message("/dream/audience", "on")
        assert wait_for(lambda: queue.enabled)
        client.send_message("/dream/audience", "dance")
        errors = lambda: str(collector.addresses("/dream/status/error"))  # noqa: E731
        assert wait_for(lambda: "expected on, off, clear or skip" in errors())
    finally:
        osc.stop()
        status.stop()
        collector.close()


def test_page_files_are_in_the_package():
    for name, _ in audience_web.PAGE_FILES.values():
        assert (Path(audience_web.__file__).parent / "audience_page" / name).is_file()
