"""The OSC control surface: UDP messages in, validated and clamped into LiveParams."""

from __future__ import annotations

import difflib
import functools
import ipaddress
import logging
import math
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from pythonosc.osc_server import BlockingOSCUDPServer

from realtime.control import presets
from realtime.control.oscpacket import PacketError, parse_packet
from realtime.control.params import KNOBS, LiveParams, ParamError
from realtime.control.status import (
    ERROR_ADDRESS,
    PERIODIC,
    STATS,
    STATUS_PREFIX,
    TEXT,
    StatusSender,
)
from realtime.knobs import Knob

__all__ = ["OscError", "OscServer", "StatusSender", "address_table", "format_address_table"]

logger = logging.getLogger(__name__)

PREFIX = "/dream/"
PATTERN_CHARS = "*?[]{}"  # OSC address pattern syntax, refused (exact addresses only)
_TRIGGERS = ("reset", "snapshot", "sync")
MAX_SHOWN = 400  # characters of a refusal shown in the log and sent as /dream/status/error


class OscError(OSError):
    """The OSC server could not listen, or an allow entry was not an IP address."""


class _LogLimiter:
    """At most `burst` lines per `period` seconds; the rest are counted and the count reported.

    Used only from the server thread, so it needs no lock.
    """

    def __init__(self, burst: int, period: float) -> None:
        self._burst, self._period = burst, period
        self._start, self._count, self._suppressed = -math.inf, 0, 0

    def log(self, level: int, msg: str, *args: object, exc_info: bool = False) -> None:
        now = time.monotonic()
        if now - self._start >= self._period:
            if self._suppressed:
                logger.log(level, "(%d similar OSC log lines suppressed)", self._suppressed)
            self._start, self._count, self._suppressed = now, 0, 0
        if self._count < self._burst:
            self._count += 1
            logger.log(level, msg, *args, exc_info=exc_info)
        else:
            self._suppressed += 1


class _Router:
    """Exact-address dispatch for the strict parser's messages.

    OSC address patterns (`*`, `?`, `[...]`, `{...}`) are refused, not matched: our addresses
    are fixed, and a pattern matcher costs time that grows with the pattern (python-osc turns
    each `*` into a regular expression run against every address), so one crafted packet could
    stall the server. With a dict lookup no packet costs more than its parsing.
    """

    def __init__(
        self,
        on_malformed: Callable[[tuple, bytes, PacketError], None],
        on_unmatched: Callable[[tuple, str, tuple], None],
    ) -> None:
        self.routes: dict[str, Callable[[tuple, str, tuple], None]] = {}
        self._on_malformed = on_malformed
        self._on_unmatched = on_unmatched

    def map(self, address: str, handler: Callable[[tuple, str, tuple], None]) -> None:
        self.routes[address] = handler

    def call_handlers_for_packet(self, data: bytes, client_address: tuple) -> list:
        """Called by the server for each datagram (python-osc's dispatcher interface)."""
        try:
            messages = parse_packet(data)
        except PacketError as err:
            self._on_malformed(client_address, data, err)
            return []
        for message in messages:
            handler = self.routes.get(message.address)
            if handler is None:
                self._on_unmatched(client_address, message.address, tuple(message))
            else:
                handler(client_address, message.address, tuple(message))
        return []  # handlers never reply to the sender: status goes to the status target


class _UDPServer(BlockingOSCUDPServer):
    """One thread reads and handles datagrams in order (a thread per datagram would reorder)."""

    max_packet_size = 65535  # whole datagrams; socketserver's 8192 would cut big bundles

    def __init__(self, address, dispatcher, admit: Callable[[tuple], bool], on_error) -> None:
        super().__init__(address, dispatcher)
        self._admit = admit
        self._on_error = on_error

    def verify_request(self, request, client_address) -> bool:
        return self._admit(client_address)

    def handle_error(self, request, client_address) -> None:
        self._on_error(client_address)


class OscServer:
    """Listens for OSC on UDP and writes into LiveParams; owns one daemon thread.

    Handlers only validate, clamp and store: they never touch the model, the GPU or
    the window. A refused message changes nothing, logs one warning (rate-limited)
    and sends /dream/status/error to the status target. start() and stop() may be
    called from any thread; handlers run on the server thread only.
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
    ) -> None:
        """Bind the socket now (so a busy port fails here), serve after start().

        Args:
            params: where accepted values go.
            host: address to bind; "0.0.0.0" listens on every interface.
            port: UDP port; 0 picks a free one (see `address`).
            allow: sender IPs allowed to drive it; empty allows anyone.
            status: where /dream/sync and error reports go; None logs only.
            preset_dir: where /dream/preset finds TOML presets (default config/).
            snapshot_dir: where /dream/preset also finds snapshot PNGs by name; None: not at all.

        Raises:
            OscError: an allow entry is not an IP address, or the port cannot be bound.
        """
        self._params = params
        self._status = status
        self._preset_dir = preset_dir
        self._snapshot_dir = snapshot_dir
        try:
            self._allow = frozenset(ipaddress.ip_address(a) for a in allow)
        except ValueError as err:
            raise OscError(f"bad OSC allow entry: {err}; expected IP addresses") from err
        self._refused = _LogLimiter(burst=20, period=10.0)  # bad values, unknown addresses
        self._malformed = _LogLimiter(burst=5, period=10.0)
        self._blocked = _LogLimiter(burst=5, period=60.0)
        self._failed = _LogLimiter(burst=5, period=60.0)  # a handler raised: a bug, with traceback
        self.dispatcher = _Router(self._on_malformed, self._on_unknown)
        self._map_addresses()
        try:
            self._server = _UDPServer((host, port), self.dispatcher, self._admit, self._on_error)
        except OSError as err:
            raise OscError(
                f"cannot listen for OSC on {host}:{port} ({err}); is another program using the "
                f"port? choose another with --osc-port, or a local address with --osc-host"
            ) from err
        self._thread: threading.Thread | None = None
        # Counters, written by the server thread only (other threads may read them).
        self.datagrams = 0  # datagrams received, blocked ones included
        self.applied = 0  # messages that changed something
        self.refused = 0  # messages refused (bad value, wrong arguments, unknown address)
        self.malformed = 0  # datagrams dropped as malformed
        self.blocked = 0  # datagrams dropped by the allow list

    @property
    def address(self) -> tuple[str, int]:
        """(host, port) actually bound."""
        host, port = self._server.server_address[:2]
        return str(host), int(port)

    def start(self) -> None:
        """Start serving on the server thread."""
        if self._thread is not None:
            return
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.1},  # how soon stop() is noticed
            name="osc-server",
            daemon=True,
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop serving, join the thread and close the socket (within ~0.1 s)."""
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(timeout=2.0)
            self._thread = None
        self._server.server_close()

    # --- server thread: gate and errors ----------------------------------------------------

    def _admit(self, client: tuple) -> bool:
        self.datagrams += 1
        if not self._allow:
            return True
        ip = ipaddress.ip_address(client[0].split("%")[0])
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        if ip in self._allow:
            return True
        self.blocked += 1
        self._blocked.log(
            logging.WARNING,
            "OSC from %s dropped: not in the allow list (%s)",
            client[0],
            ", ".join(sorted(map(str, self._allow))),
        )
        return False

    def _on_malformed(self, client: tuple, data: bytes, err: PacketError) -> None:
        self.malformed += 1
        self._malformed.log(
            logging.WARNING,
            "OSC from %s: dropped a malformed datagram of %d bytes: %s",
            client[0],
            len(data),
            err,
        )

    def _on_error(self, client: tuple) -> None:
        self._failed.log(
            logging.ERROR, "OSC from %s: handling a message failed", client[0], exc_info=True
        )

    def _refuse(self, client: tuple, address: str, reason: str) -> None:
        self.refused += 1
        self._tell(client, address, reason, logging.WARNING, "refused")

    def _tell(self, client: tuple, address: str, reason: str, level: int, verb: str) -> None:
        """Log (rate-limited) and send /dream/status/error: why a message was refused or
        changed on the way in."""
        text = f"{address[:MAX_SHOWN]}: {reason}"
        if len(text) > MAX_SHOWN:  # a huge string argument must not become a huge log line
            text = text[: MAX_SHOWN - 25] + f"... ({len(text)} chars)"
        self._refused.log(level, "OSC from %s %s: %s", client[0], verb, text)
        if self._status is not None:
            self._status.error(text)

    # --- server thread: handlers -----------------------------------------------------------

    def _map_addresses(self) -> None:
        d = self.dispatcher
        for name, spec in KNOBS.items():
            d.map(PREFIX + name, functools.partial(self._on_param, spec))
        d.map(PREFIX + "pause", self._on_pause)
        d.map(PREFIX + "preset", self._on_preset)
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
        try:
            stored = self._params.set(spec.live, value)
        except ParamError as err:
            self._refuse(client, address, str(err))
            return
        self.applied += 1
        logger.debug("OSC %s %r -> %s = %r", address, value, spec.live, stored)
        if spec.numeric and _outside(spec, value):  # applied, clamped: say so, as faders overshoot
            reason = f"{value!r} clamped to {stored!r} (range {spec.range_text()})"
            self._tell(client, address, reason, logging.INFO, "clamped")

    def _on_pause(self, client: tuple, address: str, args: tuple) -> None:
        if not args:
            self.applied += 1
            logger.info(
                "OSC %s: %s", address, "paused" if self._params.toggle_pause() else "resumed"
            )
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
        logger.info("OSC %s: %s", address, "paused" if paused else "resumed")

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
            self._params.request_snapshot()
        elif self._status is None:
            self._refuse(client, address, "no status target; start with --status-to HOST:PORT")
            return
        else:
            self._status.sync()
        self.applied += 1
        logger.info("OSC %s", address)

    def _on_preset(self, client: tuple, address: str, args: tuple) -> None:
        name = self._one_value(client, address, args, "a preset name")
        if name is None:
            return
        if not isinstance(name, str):
            self._refuse(client, address, f"expected a preset name (a string), got {name!r}")
            return
        try:
            presets.load_preset(name, self._params, self._preset_dir, self._snapshot_dir)
        except presets.PresetError as err:
            self._refuse(client, address, str(err))
            return
        self.applied += 1

    def _on_unknown(self, client: tuple, address: str, args: tuple) -> None:
        if any(c in address for c in PATTERN_CHARS):
            self._refuse(
                client, address, "address patterns are not supported; send the exact address"
            )
            return
        close = difflib.get_close_matches(address, _input_addresses(), n=1)
        hint = f"did you mean {close[0]}? " if close else ""
        self._refuse(
            client, address, f"unknown address; {hint}`installation.py osc-map` lists them all"
        )


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
    for name, doc in (*STATS, *PERIODIC):
        kind = "s" if name in TEXT else "f"
        rows.append(_row("out", STATUS_PREFIX + name, kind, "", "", doc))
    rows += [
        _row(
            "out",
            ERROR_ADDRESS,
            "s",
            "",
            "",
            "why a message was refused, or what stopped the recording or a snapshot (as logged)",
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
