"""The OSC control surface: UDP messages in, validated and clamped into LiveParams.

Whatever a sender does costs the dream little: each sender (source IP) has a message rate, and
the lookups that cost milliseconds (class names, presets) a smaller one; a datagram is handled
for at most `Limits.per_datagram` messages; over the limits, datagrams are dropped before they
are parsed. Log lines and /dream/status/error replies are rate-limited, the rest summed up
("... and 2,337 more like it"), and what a sender wrote is escaped (`printable`) wherever it is
shown.
"""

from __future__ import annotations

import difflib
import functools
import ipaddress
import logging
import math
import socket
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from realtime.control import presets
from realtime.control.audience import AudienceQueue
from realtime.control.midi import MidiError, MidiLearn
from realtime.control.oscpacket import PacketError, split_packet
from realtime.control.params import KNOBS, LiveParams, ParamError
from realtime.control.ratelimit import Quota, Senders, TokenBucket
from realtime.control.status import (
    AUDIENCE,
    ERROR_ADDRESS,
    PERIODIC,
    STATS,
    STATUS_PREFIX,
    TEXT,
    StatusSender,
    printable,
)
from realtime.knobs import Knob, KnobError, parse_networks

__all__ = [
    "LIMITS",
    "Limits",
    "OscError",
    "OscServer",
    "StatusSender",
    "address_table",
    "format_address_table",
]

logger = logging.getLogger(__name__)

PREFIX = "/dream/"
PATTERN_CHARS = "*?[]{}"  # OSC address pattern syntax, refused (exact addresses only)
_TRIGGERS = ("reset", "snapshot", "sync")
MIDI_LEARN = PREFIX + "midi/learn"
MAX_SHOWN = 400  # characters of a refusal shown in the log and sent as /dream/status/error
MAX_DATAGRAM = 65535  # whole datagrams: a shorter read would cut big bundles
POLL_S = 0.1  # how often the server thread looks up from the socket: stop() and summaries
MAX_SENDERS = 256  # senders whose rates are tracked; the oldest is forgotten past this
# In a flood (this many datagrams in a row dropped over the rates), the server thread stops
# reading for a moment: the socket's buffer fills and the kernel drops the rest, for free.
FLOOD_RUN = 8
FLOOD_PAUSE_S = 0.02


@dataclass(frozen=True)
class Limits:
    """What OSC may cost. Rates are per second, bursts what may come at once after a pause.

    A TouchDesigner OSC Out CHOP sends each changed channel once a cook (60 a second), so
    eight faders moving at once are 480 messages a second: `rate` leaves room for that.
    """

    rate: float = 500.0  # messages from one sender
    burst: float = 1000.0
    heavy_rate: float = 2.0  # class names and presets from one sender (each may cost ~25 ms)
    heavy_burst: float = 8.0
    total_rate: float = 1000.0  # messages from every sender together (forged sources too)
    total_burst: float = 2000.0
    total_heavy_rate: float = 4.0
    total_heavy_burst: float = 8.0
    per_datagram: int = 64  # messages handled from one datagram (bundle); the rest are counted
    log_period: float = 10.0  # s; each kind of log line shows 20 (5) a period, then a summary
    # Actions whose cost lands on the dream, not on OSC: a model switch loads a network in the
    # background (seconds of work); a snapshot writes a PNG (a flood would fill the disk).
    model_every: float = 10.0  # s between model switches, from all senders
    snapshot_every: float = 1.0  # s between snapshots, from all senders


LIMITS = Limits()


class OscError(OSError):
    """The OSC server could not listen, or an allow entry was not an IP address or network."""


@dataclass(eq=False)
class _Sender:
    """One source address: whether the allow list lets it in, and its rates."""

    allowed: bool
    messages: TokenBucket
    heavy: TokenBucket


class _Router:
    """Exact-address dispatch for the strict parser's messages.

    OSC address patterns (`*`, `?`, `[...]`, `{...}`) are refused, not matched: our addresses
    are fixed, and a pattern matcher costs time that grows with the pattern (python-osc turns
    each `*` into a regular expression run against every address), so one crafted packet could
    stall the server. With a dict lookup no packet costs more than its parsing.
    """

    def __init__(self) -> None:
        self.routes: dict[str, Callable[[tuple, str, tuple], None]] = {}

    def map(self, address: str, handler: Callable[[tuple, str, tuple], None]) -> None:
        self.routes[address] = handler


class OscServer:
    """Listens for OSC on UDP and writes into LiveParams; owns one daemon thread.

    Handlers only validate, clamp and store: they never touch the model, the GPU or
    the window. A refused message changes nothing, logs one warning and sends
    /dream/status/error to the status target (both rate-limited). start() and stop()
    may be called from any thread; handlers run on the server thread only.
    """

    def __init__(
        self,
        params: LiveParams,
        host: str = "127.0.0.1",
        port: int = 9000,
        allow: Iterable[str] = (),
        status: StatusSender | None = None,
        preset_dir: str | Path | None = None,
        snapshot_dir: str | Path | None = None,
        limits: Limits = LIMITS,
        audience: AudienceQueue | None = None,
        midi: MidiLearn | None = None,
    ) -> None:
        """Bind the socket now (so a busy port fails here), serve after start().

        Args:
            params: where accepted values go.
            host: address to bind; "0.0.0.0" listens on every interface.
            port: UDP port; 0 picks a free one (see `address`).
            allow: senders allowed to drive it, IP addresses or networks ("10.0.0.0/8");
                empty allows anyone. Not authentication: a forged source address passes.
            status: where /dream/sync and error reports go; None logs only.
            preset_dir: where /dream/preset finds TOML presets (default config/).
            snapshot_dir: where /dream/preset also finds snapshot PNGs by name; None: not at all.
            limits: the rates and caps (see Limits).
            audience: the visitors' requests that /dream/audience controls; None: refused.
            midi: the MIDI learner that /dream/midi/learn arms; None: MIDI is off.

        Raises:
            OscError: an allow entry is not an IP address or network, or the port cannot be
                bound.
        """
        self._params = params
        self._status = status
        self._preset_dir = preset_dir
        self._snapshot_dir = snapshot_dir
        self._limits = limits
        self._audience = audience
        self._midi = midi
        try:
            self._allow = parse_networks(tuple(allow))
        except KnobError as err:
            raise OscError(f"bad OSC allow entry: {err}") from err
        now = time.monotonic()
        self._total = TokenBucket(limits.total_rate, limits.total_burst, now)
        self._total_heavy = TokenBucket(limits.total_heavy_rate, limits.total_heavy_burst, now)
        self._senders: Senders[_Sender] = Senders(MAX_SENDERS, self._new_sender)
        warn, info, period = logging.WARNING, logging.INFO, limits.log_period
        # What is shown, at most how often; the rest is summed up ("... and N more like it").
        self._refused = Quota("refused messages", 20, period, warn, status=True)
        self._clamped = Quota("clamped values", 20, period, info, status=True)
        self._applied = Quota("applied messages", 20, period, info, status=False)
        self._limited = Quota("messages over the rate", 5, period, warn, status=True)
        self._malformed = Quota("malformed datagrams", 5, period, warn, status=False)
        self._blocked = Quota("datagrams not allowed", 5, 6 * period, warn, status=False)
        self._failed = Quota("failed messages", 5, 6 * period, logging.ERROR, status=True)
        self._quotas = (
            self._refused, self._clamped, self._applied, self._limited, self._malformed,
            self._blocked, self._failed,
        )  # fmt: skip
        self._next_summary = now
        self._last = {"model": -math.inf, "snapshot": -math.inf}  # when each was last done
        self.dispatcher = _Router()
        self._map_addresses()
        try:
            family, kind, proto, _, sockaddr = socket.getaddrinfo(
                host, port, type=socket.SOCK_DGRAM
            )[0]
            self._sock = socket.socket(family, kind, proto)
        except (OSError, UnicodeError) as err:
            raise OscError(
                f"cannot listen for OSC on {host}:{port} ({err}); expected an IP address to "
                f"bind such as 127.0.0.1 or 0.0.0.0"
            ) from err
        try:
            self._sock.bind(sockaddr)
        except OSError as err:
            self._sock.close()
            raise OscError(
                f"cannot listen for OSC on {host}:{port} ({err}); is another program using the "
                f"port? choose another with --osc-port, or a local address with --osc-host"
            ) from err
        self._sock.settimeout(POLL_S)
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        # Counters, written by the server thread only (other threads may read them).
        self.datagrams = 0  # datagrams received, blocked ones included
        self.applied = 0  # messages that changed something
        self.refused = 0  # messages refused (bad value, wrong arguments, unknown address, rate)
        self.malformed = 0  # datagrams dropped as malformed
        self.blocked = 0  # datagrams dropped by the allow list
        self.limited = 0  # dropped over the rates: whole datagrams, and messages past a cap
        self.failed = 0  # messages whose handler raised (a bug)

    @property
    def address(self) -> tuple[str, int]:
        """(host, port) actually bound."""
        host, port = self._sock.getsockname()[:2]
        return str(host), int(port)

    def start(self) -> None:
        """Start serving on the server thread."""
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._serve, name="osc-server", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop serving, join the thread and close the socket (within ~POLL_S: no datagram
        costs more than a bounded number of messages)."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=2.0)
            self._thread = None
        self._sock.close()

    # --- server thread: the gate ------------------------------------------------------------

    def _serve(self) -> None:
        try:  # Linux: `top -H` and `ps -L` show the thread by name (what OSC costs, measurable)
            Path(f"/proc/self/task/{threading.get_native_id()}/comm").write_text("osc-server")
        except OSError:
            pass
        run = 0  # datagrams in a row dropped over the rates
        while not self._stopping.is_set():
            try:
                data, client = self._sock.recvfrom(MAX_DATAGRAM)
            except TimeoutError:
                data = None
            except OSError as err:  # closed under us, or an ICMP error surfaced: carry on
                if self._stopping.is_set():
                    break
                self._report(self._failed, f"OSC: receiving failed: {err}")
                time.sleep(POLL_S)
                continue
            now = time.monotonic()
            if data is not None:
                limited = self.limited
                try:
                    self._datagram(data, client, now)
                except Exception:  # noqa: BLE001 - a bug must not end the server
                    self.failed += 1
                    self._report(
                        self._failed, f"OSC from {client[0]}: handling a datagram failed", True
                    )
                run = run + 1 if self.limited > limited else 0
                if run >= FLOOD_RUN:
                    run = 0
                    self._stopping.wait(FLOOD_PAUSE_S)
            if now >= self._next_summary:
                self._summarise(now)

    def _datagram(self, data: bytes, client: tuple, now: float) -> None:
        self.datagrams += 1
        sender = self._sender(str(client[0]), now)
        if not sender.allowed:
            self.blocked += 1
            self._report(
                self._blocked,
                lambda: (
                    f"OSC from {client[0]} dropped: not in the allow list "
                    f"({', '.join(map(str, self._allow))})"
                ),
            )
            return
        budget = min(self._limits.per_datagram, sender.messages.whole(now), self._total.whole(now))
        if budget < 1:  # over the rate: dropped before it costs a parse
            self.limited += 1
            self._report(self._limited, lambda: self._over_rate(client))
            return
        try:
            messages, more = split_packet(data, budget)
        except PacketError as err:
            self.malformed += 1  # it counts against the rates like a message: parsing costs
            sender.messages.tokens -= 1
            self._total.tokens -= 1
            why = f"OSC from {client[0]}: dropped a malformed datagram of {len(data)} bytes: {err}"
            self._report(self._malformed, why)
            return
        sender.messages.tokens -= len(messages)
        self._total.tokens -= len(messages)
        for message in messages:
            self._dispatch(client, message.address, tuple(message))
        if more:  # said after the handled ones: status keeps the newest errors of a burst
            self.limited += more
            cap = len(messages) == self._limits.per_datagram
            self._report(
                self._limited,
                lambda: (
                    f"OSC from {client[0]}: handled {len(messages)} of the "
                    f"{len(messages) + more} messages in one datagram; "
                    + (
                        f"at most {self._limits.per_datagram} are handled from one datagram"
                        if cap
                        else self._over_rate(client)
                    )
                ),
            )

    def _over_rate(self, client: tuple) -> str:
        lim = self._limits
        return (
            f"OSC from {client[0]}: messages dropped, over the rate of {lim.rate:g} a second "
            f"from one sender ({lim.total_rate:g} from all)"
        )

    def _sender(self, host: str, now: float) -> _Sender:
        return self._senders.get(host, now)

    def _new_sender(self, host: str, now: float) -> _Sender:
        lim = self._limits
        return _Sender(
            self._allowed(host),
            TokenBucket(lim.rate, lim.burst, now),
            TokenBucket(lim.heavy_rate, lim.heavy_burst, now),
        )

    def _allowed(self, host: str) -> bool:
        if not self._allow:
            return True
        ip = ipaddress.ip_address(host.split("%")[0])
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        return any(ip in net for net in self._allow if net.version == ip.version)

    def _heavy(self, client: tuple, address: str) -> bool:
        """Whether a costly lookup (class name, preset) may run now; refuses it if not."""
        now = time.monotonic()
        sender = self._sender(str(client[0]), now)
        if sender.heavy.whole(now) >= 1 and self._total_heavy.take(now):
            sender.heavy.tokens -= 1
            return True
        lim = self._limits
        self._refuse(
            client,
            address,
            f"too many names and presets: at most {lim.heavy_rate:g} a second from one sender "
            f"({lim.total_heavy_rate:g} from all); send indices, or fewer",
        )
        return False

    def _spaced(self, client: tuple, address: str, action: str, every: float) -> bool:
        """Whether `action` may happen now, `every` seconds after the last; refuses it if not.
        The caller marks it done (`_last`) once it is."""
        wait = self._last[action] + every - time.monotonic()
        if wait > 0:
            self._refuse(
                client, address, f"one {action} each {every:g} s at most; try again in {wait:.1f} s"
            )
            return False
        return True

    def _loads(self, model: str) -> bool:
        """Whether asking for `model` starts a model load: another than the one asked for, and
        than the one dreaming (asking for that one back only cancels a load, and costs nothing,
        so it is never spaced: the newest request wins)."""
        word = model.strip().lower()
        return word not in (self._params.get("model"), self._params.dreaming)

    def _dispatch(self, client: tuple, address: str, args: tuple) -> None:
        handler = self.dispatcher.routes.get(address)
        try:
            if handler is None:
                self._on_unknown(client, address, args)
            else:
                handler(client, address, args)
        except Exception:  # noqa: BLE001 - a bug in a handler must not end the server
            self.failed += 1
            self._report(
                self._failed,
                lambda: (
                    f"OSC from {client[0]}: handling {_shown(address)} failed (a bug; "
                    f"nothing or part of it applied)"
                ),
                exc_info=True,
            )

    # --- server thread: reports -------------------------------------------------------------

    def _report(
        self,
        quota: Quota,
        text: str | Callable[[], str],
        exc_info: bool = False,
        prefix: str = "",
    ) -> None:
        """Log `prefix` and `text` (and send `text` as /dream/status/error if the quota says so),
        unless the quota is spent: then it is only counted. A callable text is only made when
        shown."""
        if not quota.take(time.monotonic()):
            return
        line = printable(text() if callable(text) else text)
        logger.log(quota.level, "%s%s", printable(prefix), line, exc_info=exc_info)
        if quota.status and self._status is not None:
            self._status.error(line)

    def _summarise(self, now: float) -> None:
        """The '... and N more like it' lines of the quotas whose period is over."""
        self._next_summary = now + POLL_S
        for quota in self._quotas:
            line = quota.summary(now)
            if line is not None:
                logger.log(quota.level, "%s", line)
                if quota.status and self._status is not None:
                    self._status.error(line)

    def _refuse(self, client: tuple, address: str, reason: str | Callable[[], str]) -> None:
        self.refused += 1
        self._tell(self._refused, client, address, reason, "refused")

    def _tell(
        self,
        quota: Quota,
        client: tuple,
        address: str,
        reason: str | Callable[[], str],
        verb: str,
    ) -> None:
        """Report why a message was refused or changed on the way in (rate-limited)."""

        def text() -> str:
            line = f"{_shown(address)}: {reason() if callable(reason) else reason}"
            if len(line) > MAX_SHOWN:  # a huge string argument must not become a huge log line
                line = line[: MAX_SHOWN - 25] + f"... ({len(line)} chars)"
            return line

        self._report(quota, text, prefix=f"OSC from {client[0]} {verb}: ")

    # --- server thread: handlers -----------------------------------------------------------

    def _map_addresses(self) -> None:
        d = self.dispatcher
        for name, spec in KNOBS.items():
            d.map(PREFIX + name, functools.partial(self._on_param, spec))
        d.map(PREFIX + "pause", self._on_pause)
        d.map(PREFIX + "preset", self._on_preset)
        d.map(PREFIX + "audience", self._on_audience)
        d.map(MIDI_LEARN, self._on_midi_learn)
        for name in _TRIGGERS:
            d.map(PREFIX + name, functools.partial(self._on_trigger, name))

    def _one_value(self, client: tuple, address: str, args: tuple, expected: str) -> object:
        """The single number or string argument, or None after refusing the message."""
        if len(args) != 1:
            self._refuse(
                client, address, f"expected exactly one argument ({expected}), got {len(args)}"
            )
            return None
        (value,) = args
        if not isinstance(value, (int, float, str)):  # bools are ints; blobs, arrays, nil refused
            kind = "nil" if value is None else type(value).__name__
            self._refuse(client, address, f"expected {expected}, got {kind}")
            return None
        return value

    def _on_param(self, spec: Knob, client: tuple, address: str, args: tuple) -> None:
        value = self._one_value(client, address, args, _osc_type(spec))
        if value is None:
            return
        if spec.kind == "target" and isinstance(value, str) and not self._heavy(client, address):
            return  # a name is searched among a thousand: rationed
        switch = spec.kind == "model" and self._loads(str(value))
        if switch and not self._spaced(client, address, "model", self._limits.model_every):
            return
        try:
            stored = self._params.set(spec.live, value)
        except ParamError as err:
            self._refuse(client, address, str(err))
            return
        self.applied += 1
        if switch:
            self._last["model"] = time.monotonic()
        if spec.numeric and _outside(spec, value):  # applied, clamped: say so, as faders overshoot
            reason = f"{value!r} clamped to {stored!r} (range {spec.range_text()})"
            self._tell(self._clamped, client, address, reason, "clamped")

    def _on_pause(self, client: tuple, address: str, args: tuple) -> None:
        if not args:
            self.applied += 1
            paused = self._params.toggle_pause()
            self._report(self._applied, f"OSC {address}: {'paused' if paused else 'resumed'}")
            return
        value = self._one_value(client, address, args, "nothing to toggle, or 1/0")
        if value is None:
            return
        try:
            paused = self._params.set("paused", value)
        except ParamError as err:
            self._refuse(client, address, str(err))
            return
        self.applied += 1
        self._report(self._applied, f"OSC {address}: {'paused' if paused else 'resumed'}")

    def _on_trigger(self, action: str, client: tuple, address: str, args: tuple) -> None:
        if args:
            value = self._one_value(client, address, args, "nothing, or 1 to fire")
            if value is None:
                return
            try:
                number = float(value)
            except ValueError:
                number = math.nan
            if not math.isfinite(number):
                self._refuse(client, address, f"expected nothing, or 1 to fire, got {value!r}")
                return
            if number < 0.5:
                return  # a button's release (0) from an OSC Out CHOP: nothing to do
        if action == "reset":
            self._params.request_reset()
        elif action == "snapshot":
            if not self._spaced(client, address, "snapshot", self._limits.snapshot_every):
                return
            self._params.request_snapshot()
            self._last["snapshot"] = time.monotonic()
        elif self._status is None:
            self._refuse(client, address, "no status target; start with --status-to HOST:PORT")
            return
        else:
            self._status.sync()
        self.applied += 1
        self._report(self._applied, f"OSC {address}")

    def _on_preset(self, client: tuple, address: str, args: tuple) -> None:
        name = self._one_value(client, address, args, "a preset name")
        if name is None:
            return
        if not isinstance(name, str):
            self._refuse(client, address, f"expected a preset name (a string), got {name!r}")
            return
        if not self._heavy(client, address):
            return
        try:
            values = presets.preset_named(name, self._preset_dir, self._snapshot_dir)
            switch = "model" in values and self._loads(str(values["model"]))
            if switch and not self._spaced(client, address, "model", self._limits.model_every):
                return
            applied = presets.load_preset(name, self._params, values=values)
        except presets.PresetError as err:
            self._refuse(client, address, str(err))
            return
        if switch:
            self._last["model"] = time.monotonic()
        self.applied += 1
        self._report(
            self._applied,
            lambda: (
                f"OSC {address}: preset {name} applied: "
                + ", ".join(f"{k}={v}" for k, v in applied.items())
            ),
        )

    def _on_audience(self, client: tuple, address: str, args: tuple) -> None:
        value = self._one_value(client, address, args, "on, off, clear or skip (or 1/0)")
        if value is None:
            return
        if self._audience is None:
            self._refuse(
                client,
                address,
                "audience requests are not running; start with --audience HOST:PORT",
            )
            return
        word = str(value).strip().lower()
        if not isinstance(value, str):
            word = "on" if math.isfinite(float(value)) and float(value) >= 0.5 else "off"
        if word in ("on", "1", "true"):
            self._audience.set_enabled(True)
        elif word in ("off", "0", "false"):
            self._audience.set_enabled(False)
        elif word == "clear":
            self._audience.clear()
        elif word == "skip":
            self._audience.skip()
        else:
            self._refuse(
                client, address, f"expected on, off, clear or skip (or 1/0), got {value!r}"
            )
            return
        self.applied += 1
        self._report(self._applied, lambda: f"OSC {address}: audience {printable(word)}")

    def _on_midi_learn(self, client: tuple, address: str, args: tuple) -> None:
        param = self._one_value(client, address, args, "a parameter name, or none to cancel")
        if param is None:
            return
        if self._midi is None:
            self._refuse(client, address, "MIDI is off; start with --midi [PORT]")
            return
        try:
            self._midi.learn(str(param))
        except MidiError as err:
            self._refuse(client, address, str(err))
            return
        self.applied += 1

    def _on_unknown(self, client: tuple, address: str, args: tuple) -> None:
        if any(c in address for c in PATTERN_CHARS):
            self._refuse(
                client, address, "address patterns are not supported; send the exact address"
            )
            return

        def reason() -> str:  # a search: made only if the refusal is shown
            close = difflib.get_close_matches(address[:MAX_SHOWN], _input_addresses(), n=1)
            hint = f"did you mean {close[0]}? " if close else ""
            return f"unknown address; {hint}`installation.py osc-map` lists them all"

        self._refuse(client, address, reason)


def _shown(address: str) -> str:
    return address[:MAX_SHOWN]


# --- the reference table -----------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def _input_addresses() -> tuple[str, ...]:
    return tuple(row["address"] for row in address_table() if row["direction"] == "in")


def _osc_type(spec: Knob) -> str:
    if spec.kind in ("layer", "target"):
        return "s|i|f"
    if spec.kind == "model":
        return "s"
    return "f" if spec.type is float else "f|i"


def _outside(spec: Knob, value: object) -> bool:
    """Whether a number sent for `spec` lies outside its range (it was clamped)."""
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return False
    return (spec.lo is not None and number < spec.lo) or (spec.hi is not None and number > spec.hi)


def _default_text(spec: Knob) -> str:
    if spec.kind:
        return {"layer": "model's default", "target": "none", "model": "from config"}[spec.kind]
    return str(int(spec.default)) if isinstance(spec.default, bool) else str(spec.default)


def address_table() -> list[dict[str, str]]:
    """The OSC reference: one row per address with direction, type, range, default and effect."""
    rows = []
    for name, spec in KNOBS.items():
        doc = spec.doc + (" (glides)" if spec.glide else "")
        rows.append(
            _row("in", PREFIX + name, _osc_type(spec), spec.range_text(), _default_text(spec), doc)
        )
    rows += [
        _row(
            "in",
            PREFIX + "pause",
            "[f]",
            "none or 0/1",
            "0",
            "no argument toggles; 1 pauses, 0 resumes the dream",
        ),
        _row(
            "in",
            PREFIX + "preset",
            "s",
            "preset name",
            "",
            "apply a preset from config/ (or a snapshot PNG by name); only the keys it sets",
        ),
        _row(
            "in",
            PREFIX + "audience",
            "s|f",
            "on | off | clear | skip, or 1/0",
            "on",
            "audience requests (--audience): on or off (off empties the queue), clear the "
            "queue, or skip to the next request",
        ),
        _row(
            "in",
            MIDI_LEARN,
            "s",
            "parameter name, or none",
            "",
            "MIDI learn (with --midi): the next moved control drives this parameter; none "
            "cancels (key M in the window does the same)",
        ),
        _row(
            "in",
            PREFIX + "reset",
            "[f]",
            "none or 1",
            "",
            "clear the feedback and start the dream afresh (0, a button's release, is ignored)",
        ),
        _row(
            "in",
            PREFIX + "snapshot",
            "[f]",
            "none or 1",
            "",
            "save the next output as a PNG carrying its parameters (0 is ignored)",
        ),
        _row(
            "in",
            PREFIX + "sync",
            "[f]",
            "none or 1",
            "",
            "send every parameter and stat to the status target at once, as one bundle",
        ),
    ]
    for name, doc in (*STATS, *PERIODIC, *AUDIENCE):
        kind = "s" if name in TEXT else "f"
        rows.append(_row("out", STATUS_PREFIX + name, kind, "", "", doc))
    rows += [
        _row(
            "out",
            ERROR_ADDRESS,
            "s",
            "",
            "",
            "why a message was refused, or what stopped the recording, a snapshot or an output "
            "(as logged)",
        ),
        _row(
            "out",
            STATUS_PREFIX + "<parameter>",
            "f|s",
            "",
            "",
            "on /dream/sync: every parameter above, numbers as f, names as s",
        ),
    ]
    return rows


def _row(direction: str, address: str, kind: str, range_: str, default: str, doc: str) -> dict:
    return {
        "direction": direction,
        "address": address,
        "type": kind,
        "range": range_,
        "default": default,
        "doc": doc,
    }


def format_address_table(markdown: bool = False) -> str:
    """The reference as aligned text (for `installation.py osc-map`) or a markdown table."""
    columns = ("direction", "address", "type", "range", "default", "doc")
    headers = ("dir", "address", "type", "range", "default", "what it does")
    rows = [[row[c] for c in columns] for row in address_table()]
    if markdown:
        lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
        for row in rows:
            row[1] = f"`{row[1]}`"
            lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |")
        return "\n".join(lines)
    widths = [max(len(r[i]) for r in [list(headers), *rows]) for i in range(len(headers) - 1)]
    lines = []
    for row in [list(headers), *rows]:
        cells = [cell.ljust(w) for cell, w in zip(row, widths, strict=False)] + [row[-1]]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)
