"""Audience requests in the live run: checked at start, served beside the show, never stopping it."""

from __future__ import annotations

import ipaddress
import logging
import socket

from realtime.control.audience import AudienceQueue, resolve_names
from realtime.control.params import LiveParams
from realtime.knobs import AudienceConfig
from realtime.present.audience_hud import AudienceShow

logger = logging.getLogger(__name__)


class AudienceStartError(ValueError):
    """The audience settings cannot work; the message says what to set."""


def check_audience(cfg: AudienceConfig) -> None:
    """Refuse, before anything starts, settings that cannot work: no address named, or a block or
    allow entry that is no class (with the nearest names).

    Raises:
        AudienceStartError: naming the setting and what is valid.
    """
    if not cfg.enabled:
        return
    try:
        import aiohttp  # noqa: F401
        import segno  # noqa: F401
    except ImportError as err:
        raise AudienceStartError(
            f"audience requests need the audience extra ({err.name} is missing): "
            f"pip install -e '.[audience]'"
        ) from err
    if not cfg.host:
        raise AudienceStartError(
            "audience.host: name the address to serve the page on, e.g. --audience "
            "192.168.1.10:8080 (this machine on the gallery network) or 0.0.0.0:8080 (every "
            "interface); it is never chosen for you"
        )
    try:
        resolve_names(cfg.block, "audience.block")
        resolve_names(cfg.allow, "audience.allow")
    except ValueError as err:
        raise AudienceStartError(str(err)) from err


def start_audience(
    cfg: AudienceConfig, params: LiveParams, parts
) -> tuple[AudienceQueue, AudienceShow] | None:
    """Start the request page; returns the queue and what the window shows of it, or None when
    it is off or cannot be served (logged: the show goes on without it).

    Args:
        parts: the run's Parts; the server's stop is added to it.
    """
    if not cfg.enabled:
        return None
    from realtime.control.audience_web import AudienceServer, AudienceWebError

    queue = AudienceQueue(cfg, params)
    server = AudienceServer(queue, cfg.host, cfg.port, pin=cfg.pin, url=cfg.url)
    try:
        server.start()
    except AudienceWebError as err:
        logger.error("audience requests are off: %s", err)
        return None
    parts.add("audience page", server.stop)
    url = server.url
    if not cfg.url and ipaddress.ip_address(server.address[0]).is_unspecified:
        url = url.replace(server.address[0], primary_address(), 1)
        logger.warning(
            "audience page on every interface; the QR code says %s (this machine's address "
            "toward the network); set audience.url if phones reach it by another",
            url,
        )
    logger.info(
        "audience page at %s (bound to %s:%d)%s",
        url,
        *server.address,
        ", PIN required" if cfg.pin else "",
    )
    return queue, AudienceShow(queue, url, cfg.corner, cfg.hud)


def primary_address() -> str:
    """This machine's address toward the network (the default route's interface), or 127.0.0.1.

    A UDP socket "connected" to a documentation address (TEST-NET-1) sends nothing; the kernel
    only picks the source address it would use.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))
            return str(probe.getsockname()[0])
        except OSError:
            return "127.0.0.1"
