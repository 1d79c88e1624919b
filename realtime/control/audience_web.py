"""The audience request page: an aiohttp server on its own thread and event loop.

aiohttp serves each connection as a coroutine, so a thousand phones, or a client that sends one
byte a second, cost a little memory each and never hold up the others; its request bodies are
bounded (`client_max_size`) before they are read. What a visitor sends becomes a class index or a
refusal, never a path, a shell word or HTML: the page is static, and its script shows every text
with `textContent`. The same loop ticks the queue (AudienceQueue.tick) ten times a second.
"""

from __future__ import annotations

import asyncio
import functools
import hmac
import json
import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from realtime.control.audience import AudienceQueue, Refused
from realtime.control.ratelimit import Quota, Senders, TokenBucket
from realtime.control.status import printable
from realtime.engine.classes import MAX_QUERY, search

logger = logging.getLogger(__name__)

PAGE_DIR = Path(__file__).resolve().parent / "audience_page"
PAGE_FILES = {  # path -> (file, content type): all the server ever reads from disk
    "/": ("index.html", "text/html"),
    "/app.js": ("app.js", "text/javascript"),
    "/style.css": ("style.css", "text/css"),
}
# A request is {"name": "...", "pin": "..."}: well under 1 KB. Larger bodies get 413 unread.
MAX_BODY = 4096  # bytes
BODY_TIMEOUT_S = 5.0  # a body that takes longer to arrive gets 408 (one byte a second does)
TICK_S = 0.1  # how often the queue advances: a request starts within this and one glide
SUGGESTIONS = 8  # names sent back per keystroke
JOIN_S = 5.0  # stop() waits this long for the server thread
SECURITY_HEADERS = {
    # Only the page's own files run: no inline script, nothing from elsewhere, no framing.
    "Content-Security-Policy": "default-src 'self'; frame-ancestors 'none'; base-uri 'none'; "
    "form-action 'self'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


class AudienceWebError(OSError):
    """The page could not be served (the address cannot be bound); the message says what to do."""


@dataclass(frozen=True)
class WebLimits:
    """What one visitor's phone may cost, per second (bursts: what may come at once)."""

    reads: float = 10.0  # suggestion and state requests (a keystroke each, a poll every 2 s)
    reads_burst: float = 30.0
    asks: float = 0.2  # request attempts, refused ones included (PIN guesses, unknown names)
    asks_burst: float = 5.0
    searches: float = 200.0  # suggestion searches from everyone (~1-5 ms each, cached)
    searches_burst: float = 400.0


WEB_LIMITS = WebLimits()


@dataclass(eq=False)
class _Visitor:
    reads: TokenBucket
    asks: TokenBucket


@functools.lru_cache(maxsize=2048)
def _suggest(query: str) -> tuple[str, ...]:
    return tuple(name for _, name in search(query, limit=SUGGESTIONS))


class AudienceServer:
    """Serves the page and ticks the queue; owns one daemon thread running an asyncio loop.

    start() and stop() may be called from any thread (once each); handlers run on the
    server's loop only and touch nothing but the queue.
    """

    def __init__(
        self,
        queue: AudienceQueue,
        host: str,
        port: int,
        pin: str = "",
        url: str = "",
        limits: WebLimits = WEB_LIMITS,
    ) -> None:
        """Args:
        queue: where requests go; ticked by this server.
        host: the address to bind, as the operator named it (never chosen here).
        port: TCP port; 0 picks a free one (see `address`).
        pin: visitors must send this to ask; "" for none.
        url: the page's address for the QR code; "" for http://HOST:PORT/.
        limits: per-visitor rates.
        """
        self.queue = queue
        self._host, self._port, self._pin, self._url = host, port, pin, url
        self._limits = limits
        self._pages = {
            path: ((PAGE_DIR / name).read_bytes(), kind)
            for path, (name, kind) in PAGE_FILES.items()
        }
        now = time.monotonic()
        self._visitors: Senders[_Visitor] = Senders(4096, self._new_visitor)
        self._searches = TokenBucket(limits.searches, limits.searches_burst, now)
        self._refusals = Quota("refused requests", 20, 10.0, logging.INFO, False, "audience")
        # Set by the server thread before `_ready` is set; read-only afterwards.
        self._address: tuple[str, int] | None = None
        self._error: BaseException | None = None
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._thread: threading.Thread | None = None

    def _new_visitor(self, _ip: str, now: float) -> _Visitor:
        lim = self._limits
        return _Visitor(
            TokenBucket(lim.reads, lim.reads_burst, now), TokenBucket(lim.asks, lim.asks_burst, now)
        )

    @property
    def address(self) -> tuple[str, int]:
        """(host, port) actually bound (after start)."""
        if self._address is None:
            raise AudienceWebError("the audience page is not being served; call start() first")
        return self._address

    @property
    def url(self) -> str:
        """The page's address as phones reach it: audience.url, or http://HOST:PORT/."""
        if self._url:
            return self._url
        host, port = self.address
        return f"http://{f'[{host}]' if ':' in host else host}:{port}/"

    def start(self) -> None:
        """Bind and serve; returns once the page is being served.

        Raises:
            AudienceWebError: the address could not be bound (busy port, not this machine's).
        """
        self._thread = threading.Thread(target=self._run, name="audience-web", daemon=True)
        self._thread.start()
        self._ready.wait(30.0)
        if self._error is not None or self._address is None:
            self.stop()
            raise AudienceWebError(
                f"cannot serve the audience page on {self._host}:{self._port} ({self._error}); "
                f"is it this machine's address, and is the port free? choose them with "
                f"--audience HOST:PORT"
            ) from self._error

    def stop(self) -> None:
        """Stop serving (open connections are closed) and join the thread."""
        loop, stopping = self._loop, self._stopping
        if loop is not None and stopping is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(stopping.set)
            except RuntimeError:  # the loop closed meanwhile
                pass
        if self._thread is not None:
            self._thread.join(JOIN_S)
            if self._thread.is_alive():
                logger.warning("audience: the web server did not stop within %.0f s", JOIN_S)
            self._thread = None

    # --- server thread ---------------------------------------------------------------------

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)  # this thread's own
        self._loop = loop
        try:
            loop.run_until_complete(self._serve())
        except Exception as err:  # noqa: BLE001 - reported to start(), or logged after it
            if not self._ready.is_set():
                self._error = err
            else:
                logger.error("audience: the web server stopped: %s", err, exc_info=True)
        finally:
            self._ready.set()
            # Connections still open (a slow client) end here, not in a closed loop.
            pending = asyncio.all_tasks(loop)
            for task in pending:
                task.cancel()
            if pending:
                loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.close()

    async def _serve(self) -> None:
        self._stopping = asyncio.Event()
        app = web.Application(client_max_size=MAX_BODY, middlewares=[self._headers])
        app.router.add_get("/", self._page)
        app.router.add_get("/app.js", self._page)
        app.router.add_get("/style.css", self._page)
        app.router.add_get("/api/state", self._state)
        app.router.add_get("/api/classes", self._classes)
        app.router.add_post("/api/request", self._request)
        # No access log: a busy gallery would fill the disk with a line per keystroke.
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        try:
            site = web.TCPSite(runner, self._host, self._port, backlog=256)
            await site.start()
            host, port = runner.addresses[0][:2]
            self._address = (str(host), int(port))
            self._ready.set()
            ticker = asyncio.ensure_future(self._tick())
            await self._stopping.wait()
            ticker.cancel()
        finally:
            await runner.cleanup()

    async def _tick(self) -> None:
        while True:
            try:
                self.queue.tick()
                line = self._refusals.summary(time.monotonic())
                if line:
                    logger.info("%s", line)
            except Exception:  # noqa: BLE001 - a bug must not end the ticker (or the page)
                logger.exception("audience: advancing the queue failed")
            await asyncio.sleep(TICK_S)

    @web.middleware
    async def _headers(self, request: web.Request, handler) -> web.StreamResponse:
        try:
            response = await handler(request)
        except web.HTTPException as err:  # 404, 405, 413: said as the page's other refusals
            response = _refusal(err.reason, err.status)
        response.headers.update(SECURITY_HEADERS)
        return response

    def _allow_read(self, request: web.Request) -> web.Response | None:
        visitor = self._visitors.get(request.remote or "?", time.monotonic())
        if visitor.reads.take(time.monotonic()):
            return None
        return _refusal("too many requests from this phone; slow down", 429, retry_after=1.0)

    async def _page(self, request: web.Request) -> web.Response:
        body, kind = self._pages[request.path]
        return web.Response(body=body, content_type=kind, charset="utf-8")

    async def _state(self, request: web.Request) -> web.Response:
        refused = self._allow_read(request)
        if refused is not None:
            return refused
        view = self.queue.view()
        view["pin"] = bool(self._pin)
        return web.json_response(view)

    async def _classes(self, request: web.Request) -> web.Response:
        refused = self._allow_read(request)
        if refused is not None:
            return refused
        query = request.query.get("q", "").strip()
        if len(query) > MAX_QUERY:
            return _refusal(f"at most {MAX_QUERY} characters", 400)
        if not query:
            return web.json_response({"names": []})
        if not self._searches.take(time.monotonic()):
            return _refusal("busy; try again in a moment", 503, retry_after=1.0)
        return web.json_response({"names": list(_suggest(query.lower()))})

    async def _request(self, request: web.Request) -> web.Response:
        client = request.remote or "?"
        now = time.monotonic()
        visitor = self._visitors.get(client, now)
        if not visitor.asks.take(now):
            wait = visitor.asks.wait(now)
            return self._refuse(client, f"too many tries; wait {wait:.0f} s", 429, retry_after=wait)
        if request.content_type != "application/json":
            return self._refuse(client, 'send JSON: {"name": "volcano"}', 415)
        try:
            body = await asyncio.wait_for(request.read(), BODY_TIMEOUT_S)
        except asyncio.TimeoutError:
            return self._refuse(client, "the request took too long to arrive", 408)
        except web.HTTPRequestEntityTooLarge:
            return self._refuse(client, f"a request is at most {MAX_BODY} bytes", 413)
        try:
            data = json.loads(body)
        except (ValueError, RecursionError):
            return self._refuse(client, 'expected JSON such as {"name": "volcano"}', 400)
        if not isinstance(data, dict) or not isinstance(data.get("name"), str):
            return self._refuse(client, 'expected JSON such as {"name": "volcano"}', 400)
        if self._pin:
            pin = data.get("pin")
            if not isinstance(pin, str) or not hmac.compare_digest(
                pin.strip().encode(), self._pin.encode()
            ):
                return self._refuse(client, "wrong PIN; it is posted in the room", 403)
        try:
            asked = self.queue.ask(client, data["name"])
        except Refused as err:
            suggestions = []
            if err.status == 422:  # no such class: the names nearest to what was typed
                suggestions = list(_suggest(data["name"].strip().lower()[:MAX_QUERY]))
            return self._refuse(client, str(err), err.status, err.retry_after, suggestions)
        view = self.queue.view()
        return web.json_response(
            {"ok": True, "name": asked.name, "merged": asked.asks > 1, "state": view}
        )

    def _refuse(
        self,
        client: str,
        message: str,
        status: int,
        retry_after: float | None = None,
        suggestions: list[str] | None = None,
    ) -> web.Response:
        if self._refusals.take(time.monotonic()):
            shown = printable(message)  # it may quote what the visitor typed
            logger.info("audience: refused %s (%d): %s", printable(client), status, shown)
        return _refusal(message, status, retry_after, suggestions)


def _refusal(
    message: str,
    status: int,
    retry_after: float | None = None,
    suggestions: list[str] | None = None,
) -> web.Response:
    """A JSON refusal the page shows: {"ok": false, "error": ..., "suggestions": [...]}."""
    headers = {} if retry_after is None else {"Retry-After": str(max(1, round(retry_after)))}
    return web.json_response(
        {"ok": False, "error": message, "suggestions": suggestions or []},
        status=status,
        headers=headers,
    )
