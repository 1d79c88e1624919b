"""Strict OSC packet parsing: a datagram is a well-formed message or bundle, or it is refused whole."""

from __future__ import annotations

import struct

from pythonosc.osc_message import OscMessage
from pythonosc.osc_message import ParseError as MessageParseError

_BUNDLE = b"#bundle\x00"
_MAX_BUNDLE_DEPTH = 8  # TouchDesigner and liblo nest one level; deeper is garbage
# Bytes each fixed-size OSC argument takes (python-osc's set; anything else is refused).
_ARG_SIZE = {"i": 4, "f": 4, "r": 4, "m": 4, "h": 8, "d": 8, "t": 8}
_NO_DATA_TAGS = "TFN[]"


class PacketError(ValueError):
    """A datagram is not a well-formed OSC message or bundle; the message says what is wrong."""


def _string_end(dgram: bytes, start: int) -> int:
    """Index just past the NUL-terminated, 4-byte-padded OSC string at `start`."""
    nul = dgram.find(b"\x00", start)
    if nul < 0:
        raise PacketError("a string has no terminating NUL")
    end = (nul // 4 + 1) * 4
    if end > len(dgram):
        raise PacketError("a string's padding is cut short")
    return end


def _check_layout(dgram: bytes) -> None:
    """Refuse a message whose arguments do not exactly fill it.

    python-osc pads a short float with zeros (so a truncated /dream/feedback would
    set 0.0) and logs and skips unknown type tags, misreading what follows.
    """
    if len(dgram) % 4:
        raise PacketError(f"length {len(dgram)} is not a multiple of 4")
    i = _string_end(dgram, 0)
    if i == len(dgram):
        return  # no type tags: no arguments
    if dgram[i : i + 1] != b",":
        raise PacketError("type tags must start with ','")
    tags = dgram[i + 1 : dgram.index(b"\x00", i)].decode("latin-1")
    i = _string_end(dgram, i)
    for tag in tags:
        if tag in _ARG_SIZE:
            i += _ARG_SIZE[tag]
        elif tag == "s":
            i = _string_end(dgram, i)
        elif tag == "b":
            if i + 4 > len(dgram):
                raise PacketError("a blob's size is cut short")
            (size,) = struct.unpack_from(">i", dgram, i)
            if size < 0:
                raise PacketError("a blob has a negative size")
            i += 4 + size + (-size % 4)
        elif tag not in _NO_DATA_TAGS:
            raise PacketError(f"unsupported type tag {tag!r}")
        if i > len(dgram):
            raise PacketError(f"arguments cut short (type tags {tags!r})")
    if i != len(dgram):
        raise PacketError(f"{len(dgram) - i} stray bytes after the arguments")


def parse_packet(dgram: bytes) -> list[OscMessage]:
    """Every message in a datagram, bundles flattened; time tags are ignored (all apply now).

    Stricter than python-osc, whose bundle parser loops for ever on a negative
    element size and recurses without limit: a malformed packet is refused whole.

    Raises:
        PacketError: the datagram is not a well-formed OSC message or bundle.
    """
    return split_packet(dgram, None)[0]


def split_packet(dgram: bytes, limit: int | None) -> tuple[list[OscMessage], int]:
    """(the first `limit` messages of a datagram, how many more it holds); None: no limit.

    The messages past the limit are counted, not parsed, so a bundle packed with thousands
    of messages costs no more than `limit` of them; the bundle's structure (element sizes,
    nesting) is still checked whole.

    Raises:
        PacketError: the datagram is not a well-formed OSC message or bundle.
    """
    messages: list[OscMessage] = []
    more = _walk(dgram, 0, messages, len(dgram) if limit is None else limit)
    return messages, more


def _walk(dgram: bytes, depth: int, out: list[OscMessage], limit: int) -> int:
    """Parse `dgram`'s messages into `out` until it holds `limit`; returns how many were left."""
    if dgram.startswith(_BUNDLE):
        if depth >= _MAX_BUNDLE_DEPTH:
            raise PacketError(f"bundles nested deeper than {_MAX_BUNDLE_DEPTH}")
        if len(dgram) < 16:  # "#bundle\0" and an 8-byte time tag
            raise PacketError("bundle header cut short")
        left, i = 0, 16
        while i < len(dgram):
            if i + 4 > len(dgram):
                raise PacketError("bundle element size cut short")
            (size,) = struct.unpack_from(">i", dgram, i)
            i += 4
            if size <= 0 or size % 4 or i + size > len(dgram):
                raise PacketError(f"bundle element of {size} bytes does not fit the bundle")
            left += _walk(dgram[i : i + size], depth + 1, out, limit)
            i += size
        return left
    if not dgram.startswith(b"/"):
        raise PacketError("not OSC: a packet starts with '/' or '#bundle'")
    if len(out) >= limit:
        return 1
    _check_layout(dgram)
    try:
        out.append(OscMessage(dgram))
    except (MessageParseError, UnicodeDecodeError) as err:
        raise PacketError(f"unreadable message: {err}") from err
    return 0
