"""Audience requests: the queue of classes visitors asked for, and which one is dreamed now.

Visitors ask from their phones (realtime.control.audience_web); the operator clears, skips or
switches it off over OSC. Each request is dreamed for `dwell` seconds, then the next one
cross-fades in (LiveParams' target glide); with nothing left the operator's own setting comes
back. The same class asked twice in a row is merged into one request. Each visitor (IP address)
may ask once per `per_client` seconds, at most `queue_max` requests wait, and the operator's
block list or allow list is checked at start, each name refused with the nearest class names.
"""

from __future__ import annotations

import collections
import math
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from realtime.control.params import LiveParams
from realtime.control.ratelimit import Senders
from realtime.engine.classes import MAX_QUERY, ClassLookupError, class_names, resolve_class
from realtime.knobs import AudienceConfig

MAX_CLIENTS = 4096  # visitors whose last request time is kept; the oldest is forgotten past this


class AudienceError(ValueError):
    """A block or allow list names no class; the message lists the nearest names."""


class Refused(ValueError):
    """A visitor's request was refused; `status` is the HTTP status that says why, the message
    says what to do (it is shown to the visitor)."""

    def __init__(self, message: str, status: int, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after  # seconds, for a Retry-After header


@dataclass
class Request:
    """One class a visitor asked for."""

    index: int  # ImageNet class index
    asked: float  # monotonic seconds when it was (first) asked
    started: float | None = None  # when it began to be dreamed; None while it waits
    asks: int = 1  # how many visitors asked for it in a row (merged)

    @property
    def name(self) -> str:
        return class_names()[self.index]


def resolve_names(names: Iterable[str], key: str) -> frozenset[int]:
    """Class indices of a configured list of names (config key `key`, for the message).

    Raises:
        AudienceError: a name that is no class, with the nearest names.
    """
    out = set()
    for name in names:
        try:
            out.add(resolve_class(name))
        except ClassLookupError as err:
            raise AudienceError(f"{key}: {err}") from err
    return frozenset(out)


class AudienceQueue:
    """The requests; any thread may call any method (one lock guards everything).

    The web server calls `ask`, the OSC server `clear`, `skip` and `set_enabled`, the ticker
    (the web server's loop) `tick`, which puts the class to dream into LiveParams.
    """

    def __init__(
        self,
        config: AudienceConfig,
        params: LiveParams | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Args:
        config: dwell, per_client, queue_max, block and allow.
        params: where `tick` puts the class dreamed now (None: nowhere, for tests).
        clock: monotonic seconds.

        Raises:
            AudienceError: a block or allow entry names no class (the nearest are listed).
        """
        self.dwell = config.dwell
        self.per_client = config.per_client
        self.queue_max = config.queue_max
        self.blocked = resolve_names(config.block, "audience.block")
        self.allowed = resolve_names(config.allow, "audience.allow")
        self._params = params
        self._clock = clock
        # Guards everything below: the web server's loop and the OSC thread both write.
        self._lock = threading.Lock()
        self._waiting: collections.deque[Request] = collections.deque()
        self._now: Request | None = None
        self._last_ask: Senders[list[float]] = Senders(MAX_CLIENTS, lambda _c, _t: [-math.inf])
        self._enabled = True
        self._applied: int | None = None  # the class last put into params
        self.accepted = 0  # requests taken (merged ones included)
        self.refused = 0  # requests refused, for any reason

    # --- visitors --------------------------------------------------------------------------

    def ask(self, client: str, text: str) -> Request:
        """Queue the class `text` names for visitor `client` (an IP address).

        Returns:
            The request it joined: a new one, or the one before it when that asked for the
            same class (merged).

        Raises:
            Refused: audience requests are off, the name is no class (422, nearest names in the
                message), the class is not allowed here (403), the visitor asked too recently or
                the queue is full (429).
        """
        try:
            return self._ask(client, text)
        except Refused:
            with self._lock:
                self.refused += 1
            raise

    def _ask(self, client: str, text: str) -> Request:
        if not self.enabled:
            raise Refused("requests are paused right now; try again later", 503)
        text = text.strip()
        if not text:
            raise Refused("type the name of something to dream, such as volcano", 400)
        if len(text) > MAX_QUERY:
            raise Refused(f"that is {len(text)} characters; class names are shorter", 400)
        try:
            index = resolve_class(text)
        except ClassLookupError as err:
            raise Refused(_visitor_text(str(err)), 422) from err
        name = class_names()[index]
        if index in self.blocked or (self.allowed and index not in self.allowed):
            raise Refused(f"{name} is not one of the things this dream may show; try another", 403)
        now = self._clock()
        with self._lock:
            last = self._last_ask.get(client, now)
            wait = last[0] + self.per_client - now
            if wait > 0:
                raise Refused(
                    f"one request every {self.per_client:g} s; try again in {math.ceil(wait)} s",
                    429,
                    retry_after=wait,
                )
            latest = self._waiting[-1] if self._waiting else self._now
            if latest is not None and latest.index == index:
                latest.asks += 1
                request = latest
            elif len(self._waiting) >= self.queue_max:
                raise Refused(
                    f"the queue is full ({self.queue_max} waiting); try again in a minute",
                    429,
                    retry_after=self.dwell,
                )
            else:
                request = Request(index, now)
                self._waiting.append(request)
            last[0] = now
            self.accepted += 1
            return request

    # --- the operator ----------------------------------------------------------------------

    @property
    def enabled(self) -> bool:
        with self._lock:
            return self._enabled

    def set_enabled(self, on: bool) -> None:
        """Switch requests on or off; off clears the queue and returns to the operator's
        setting at the next tick."""
        with self._lock:
            self._enabled = bool(on)
            if not on:
                self._waiting.clear()
                self._now = None

    def clear(self) -> int:
        """Drop every waiting request (the one dreamed now runs out); returns how many."""
        with self._lock:
            n = len(self._waiting)
            self._waiting.clear()
            return n

    def skip(self) -> None:
        """End the request dreamed now; the next one (or the operator's setting) fades in at the
        next tick."""
        with self._lock:
            self._now = None

    # --- the ticker ------------------------------------------------------------------------

    def tick(self) -> Request | None:
        """Advance: the request dreamed now ends after `dwell`, the next one starts. Puts the
        class to dream into LiveParams (None: the operator's own) when it changed.

        Returns:
            The request dreamed now, or None.
        """
        now = self._clock()
        with self._lock:
            current = self._now
            if current is not None and now - current.started >= self.dwell:  # type: ignore[operator]
                current = None
            if current is None and self._waiting:
                current = self._waiting.popleft()
                current.started = now
            self._now = current
            index = None if current is None else current.index
            changed, self._applied = index != self._applied, index
        if changed and self._params is not None:
            self._params.override_target(index)
        return current

    # --- reading ---------------------------------------------------------------------------

    def view(self) -> dict[str, object]:
        """What is dreamed now and what waits, as plain values (the page's JSON, status, HUD).

        `now` is None or {name, asked_s (seconds since it was asked), left_s (seconds it has
        left)}; `queue` the waiting class names, first next.
        """
        t = self._clock()
        with self._lock:
            current, waiting, enabled = self._now, list(self._waiting), self._enabled
        now = None
        if current is not None:
            now = {
                "name": current.name,
                "asked_s": max(0.0, t - current.asked),
                "left_s": max(0.0, self.dwell - (t - (current.started or t))),
            }
        return {
            "enabled": enabled,
            "now": now,
            "queue": [r.name for r in waiting],
            "length": len(waiting),
            "dwell_s": self.dwell,
            "per_client_s": self.per_client,
        }


def _visitor_text(refusal: str) -> str:
    """A class lookup's refusal, for a visitor: without the command-line hint."""
    return refusal.split("; try `python installation.py", 1)[0]
