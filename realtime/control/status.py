"""OSC status out: what the installation is doing, a few times a second, to one HOST:PORT."""

from __future__ import annotations

import collections
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator, Mapping

from pythonosc.osc_bundle import OscBundle
from pythonosc.osc_bundle_builder import IMMEDIATELY, OscBundleBuilder
from pythonosc.osc_message import OscMessage
from pythonosc.osc_message_builder import OscMessageBuilder

from realtime.control.audience import AudienceQueue
from realtime.control.params import LiveParams

logger = logging.getLogger(__name__)

STATUS_PREFIX = "/dream/status/"
ERROR_ADDRESS = STATUS_PREFIX + "error"

# Parameters sent on every tick besides the stats (name in LiveParams.state(), what it says).
# Numbers go out as floats (an OSC In CHOP wants numbers), names as strings (for an OSC In DAT).
PERIODIC = (
    ("layer", "the layer being dreamed"),
    ("layer_index", "its index in the model's layer list"),
    ("target", "the class target's name, or none"),
    ("target_index", "its ImageNet index, -1 for none"),
    ("model", "the network dreaming now (a switch shows here once the new one dreams)"),
    ("model_loading", "the network asked for and loading in the background; none when none"),
    ("paused", "1 while paused"),
)
# Stats the running installation reports (sent every tick with the rest of its stats).
STATS = (
    ("fps", "dreamed frames per second; 0 once no frames come"),
    ("latency_ms", "camera capture to dreamed output, milliseconds"),
    ("errors", "faults so far: frames that failed, the recording's, the snapshots', the outputs'"),
    (
        "source",
        "ok, stalled (no frames; the last one holds while it is reopened), retrying (it "
        "cannot be reopened), holding (the holding picture shows while it is retried)",
    ),
    ("source_fps", "frames per second from the source itself; 0 while it gives none"),
    ("recording", "ready, recording, stopped (a fault: see error) or closed; only with --record"),
    ("ndi", "starting, sending, failed (see error) or stopped; only with --ndi"),
    ("ndi_sent", "frames sent over NDI"),
    ("ndi_dropped", "frames NDI did not send: a newer one came first, or it had failed"),
    ("stream", "starting, sending, failed (see error; retried) or stopped; only with --stream"),
    ("stream_sent", "frames handed to ffmpeg for the stream"),
    ("stream_dropped", "frames the stream did not send: a newer one came first, or it had failed"),
)
# Audience requests (only with --audience), sent every tick under /dream/status/.
AUDIENCE = (
    ("audience/now", "the class a visitor asked for, dreamed now; none when it is the operator's"),
    ("audience/length", "visitors' requests waiting"),
    ("audience/queue", "the waiting classes, next first, comma-separated"),
)
# Sent as strings ("s"), not numbers.
TEXT = frozenset(
    {
        "layer",
        "target",
        "model",
        "model_loading",
        "recording",
        "source",
        "ndi",
        "stream",
        "audience/now",
        "audience/queue",
    }
)

RESOLVE_RETRY_S = 5.0  # how often an unresolvable status host is looked up again
MAX_PENDING_ERRORS = 16  # error messages queued between ticks; a flood keeps only the newest
MAX_ERROR_CHARS = 1000  # an error text is cut to this, so one message stays one small datagram


def printable(text: object) -> str:
    """`text` with every control character escaped as Python writes it (\\n, \\x1b, \\u2028).

    What a sender controls (an address, a name) reaches the log and status replies only through
    this: a newline or an escape code in it cannot start a forged log line or colour a terminal.
    """
    text = str(text)
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


class StatusError(ValueError):
    """A status target or rate was refused; the message says what is valid."""


def parse_target(text: str) -> tuple[str, int]:
    """ "HOST:PORT" (or "[v6addr]:PORT") -> (host, port).

    Raises:
        StatusError: not HOST:PORT with a port 1..65535.
    """
    host, sep, port_text = str(text).strip().rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        port = int(port_text)
    except ValueError:
        port = -1
    if not sep or not host or any(c.isspace() for c in host) or not 1 <= port <= 65535:
        raise StatusError(
            f"expected a status target HOST:PORT such as 127.0.0.1:9001 (port 1..65535), "
            f"got {text!r}"
        )
    return host, port


def osc_value(value: object) -> tuple[str, float | str] | None:
    """(type tag, value) for python-osc: strings as "s", numbers (numpy too) as "f"; else None."""
    if isinstance(value, str):
        return "s", value
    try:
        return "f", float(value)  # type: ignore[arg-type]  # plain float: never a numpy scalar
    except (TypeError, ValueError):
        return None


def build_message(address: str, value: object) -> OscMessage | None:
    """One OSC message with one argument, or None if the value is neither number nor string."""
    typed = osc_value(value)
    if typed is None:
        logger.debug("status %s not sent: %r is neither a number nor a string", address, value)
        return None
    builder = OscMessageBuilder(address)
    builder.add_arg(typed[1], typed[0])
    return builder.build()


class StatusSender:
    """Sends status to one OSC target from its own daemon thread.

    Every 1/hz seconds: each stats value and the PERIODIC parameters, as separate
    messages /dream/status/<name>. `sync()` sends the whole state (every
    parameter of LiveParams.state() plus the stats) as ONE bundle with the
    immediate time tag. `error(text)` sends /dream/status/error s.

    Any thread may call start(), stop(), sync() and error(); they never block on
    the network: sync and error only queue work and wake the status thread, which
    alone owns the socket. An unreachable or unresolvable target is logged once
    and otherwise ignored; the show goes on.
    """

    def __init__(
        self,
        params: LiveParams,
        stats: Callable[[], Mapping[str, object]] | None = None,
        target: str = "127.0.0.1:9001",
        hz: float = 4.0,
        audience: AudienceQueue | None = None,
    ) -> None:
        """Args:
        params: the live parameters to report.
        stats: returns the dream loop's numbers (fps, latency_ms, ...); called from
            the status thread, so it must be thread-safe. None sends no stats.
        target: "HOST:PORT" to send to.
        hz: status ticks per second (0 = only sync and errors).
        audience: the visitors' requests, reported each tick (AUDIENCE); None: not.

        Raises:
            StatusError: a malformed target or a rate outside 0..100.
        """
        self.host, self.port = parse_target(target)
        if not 0.0 <= float(hz) <= 100.0:
            raise StatusError(f"expected a status rate 0..100 per second, got {hz!r}")
        self._params = params
        self._stats = stats
        self._audience = audience
        self._period = 1.0 / float(hz) if hz else None
        # Guards _errors and _sync_requested, which other threads fill.
        self._lock = threading.Lock()
        self._errors: collections.deque[str] = collections.deque(maxlen=MAX_PENDING_ERRORS)
        self._sync_requested = False
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        # Owned by the status thread alone:
        self._sock: socket.socket | None = None
        self._sockaddr: tuple | None = None
        self._next_resolve = 0.0
        self._failing = False  # the last send failed (logged once until one succeeds)
        self._stats_failing = False
        self.sent = 0  # datagrams sent, for tests and the HUD

    @property
    def target(self) -> str:
        return f"{self.host}:{self.port}"

    # --- any thread ----------------------------------------------------------------------

    def start(self) -> None:
        """Start the status thread."""
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="osc-status", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the status thread, wait for it and close the socket."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=2.0)
            self._thread = None
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def sync(self) -> None:
        """Ask for the whole state to be sent at once (one bundle, within milliseconds)."""
        with self._lock:
            self._sync_requested = True
        self._wake.set()

    def error(self, text: str) -> None:
        """Queue /dream/status/error with `text`, control characters escaped (only the newest
        few are kept in a flood)."""
        with self._lock:
            self._errors.append(printable(str(text)[:MAX_ERROR_CHARS]))
        self._wake.set()

    # --- status thread -------------------------------------------------------------------

    def _run(self) -> None:
        next_tick = time.monotonic()
        while not self._stop.is_set():
            timeout = None if self._period is None else max(0.0, next_tick - time.monotonic())
            self._wake.wait(timeout)
            self._wake.clear()
            if self._stop.is_set():
                break
            with self._lock:
                errors = list(self._errors)
                self._errors.clear()
                sync, self._sync_requested = self._sync_requested, False
            for text in errors:
                self._send(build_message(ERROR_ADDRESS, text))
            if sync:
                self._send(self._bundle(self._sync_values()))
            now = time.monotonic()
            if self._period is not None and now >= next_tick:
                for message in self._messages(self._periodic_values()):
                    self._send(message)
                # Keep the cadence, but never try to catch up on missed ticks in a burst.
                next_tick = max(next_tick + self._period, now)

    def _read_stats(self) -> dict[str, object]:
        if self._stats is None:
            return {}
        try:
            stats = dict(self._stats())
        except Exception as err:  # noqa: BLE001 - a broken stats source must not stop status out
            if not self._stats_failing:
                logger.warning("status: reading stats failed (%s); sending parameters only", err)
            self._stats_failing = True
            return {}
        self._stats_failing = False
        return stats

    def _periodic_values(self) -> dict[str, object]:
        state = self._params.state()
        values = self._read_stats()
        values.update({name: state[name] for name, _ in PERIODIC})
        values.update(self._audience_values())
        return values

    def _sync_values(self) -> dict[str, object]:
        values = self._read_stats()
        values.update(self._params.state())
        values.update(self._audience_values())
        return values

    def _audience_values(self) -> dict[str, object]:
        if self._audience is None:
            return {}
        view = self._audience.view()
        now = view["now"]
        return {
            "audience/now": "none" if now is None else now["name"],  # type: ignore[index]
            "audience/length": view["length"],
            "audience/queue": ", ".join(view["queue"]),  # type: ignore[arg-type]
        }

    @staticmethod
    def _messages(values: Mapping[str, object]) -> Iterator[OscMessage]:
        for name, value in values.items():
            message = build_message(STATUS_PREFIX + name, value)
            if message is not None:
                yield message

    def _bundle(self, values: Mapping[str, object]) -> OscBundle:
        builder = OscBundleBuilder(IMMEDIATELY)
        for message in self._messages(values):
            builder.add_content(message)
        return builder.build()

    def _resolve(self) -> bool:
        """Look the target up (again, every RESOLVE_RETRY_S while it fails); True when usable."""
        if self._sock is not None:
            return True
        now = time.monotonic()
        if now < self._next_resolve:
            return False
        self._next_resolve = now + RESOLVE_RETRY_S
        try:
            family, kind, proto, _, sockaddr = socket.getaddrinfo(
                self.host, self.port, type=socket.SOCK_DGRAM
            )[0]
            self._sock = socket.socket(family, kind, proto)
        except OSError as err:
            if not self._failing:
                logger.warning(
                    "status out to %s is off: cannot resolve or open it (%s); check --status-to; "
                    "retrying every %.0f s",
                    self.target,
                    err,
                    RESOLVE_RETRY_S,
                )
            self._failing = True
            return False
        self._sockaddr = sockaddr
        return True

    def _send(self, packet: OscMessage | OscBundle | None) -> None:
        if packet is None or not self._resolve():
            return
        try:
            self._sock.sendto(packet.dgram, self._sockaddr)  # type: ignore[union-attr]
        except OSError as err:
            if not self._failing:
                logger.warning(
                    "status out to %s failed (%s); carrying on without it until it works again",
                    self.target,
                    err,
                )
            self._failing = True
            return
        if self._failing:
            logger.info("status out to %s works again", self.target)
            self._failing = False
        self.sent += 1
