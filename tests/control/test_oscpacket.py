"""The strict OSC packet parser: what python-osc would misread or hang on is refused whole."""

import struct

import pytest
from pythonosc.osc_message_builder import OscMessageBuilder

from realtime.control.oscpacket import PacketError, parse_packet


def message(address: str, *args, types: str | None = None) -> bytes:
    builder = OscMessageBuilder(address)
    for i, arg in enumerate(args):
        builder.add_arg(arg, types[i] if types else None)
    return builder.build().dgram


def _bundle(*elements: bytes, timetag: bytes = b"\x00" * 7 + b"\x01") -> bytes:
    out = b"#bundle\x00" + timetag
    for e in elements:
        out += struct.pack(">i", len(e)) + e
    return out


def test_well_formed_messages_of_every_supported_type_parse():
    args = (7, 2**40, 0.5, 0.25, "inception4c", b"blob!", True, False, None)
    dgram = message("/dream/x", *args, types="ihfdsbTFN")
    assert parse_packet(dgram)[0].params == list(args)
    assert parse_packet(message("/dream/reset"))[0].params == []  # no type tags at all
    assert parse_packet(message("/dream/reset", types=""))[0].params == []


def test_bundles_flatten_in_order_and_ignore_time_tags():
    a, b = message("/a", 1.0, types="f"), message("/b", "x")
    future = struct.pack(">II", 0xFFFFFFF0, 0)  # far in the future
    got = parse_packet(_bundle(a, _bundle(b, timetag=future), timetag=future))
    assert [(m.address, m.params) for m in got] == [("/a", [1.0]), ("/b", ["x"])]


def test_truncated_or_padded_messages_are_refused():
    good = message("/dream/feedback", 0.3, types="f")
    assert parse_packet(good)[0].params == [pytest.approx(0.3)]
    with pytest.raises(PacketError, match="cut short"):
        parse_packet(good[:-4])  # python-osc pads the float with zeros and sets 0.0
    with pytest.raises(PacketError, match="multiple of 4"):
        parse_packet(good[:-2])
    with pytest.raises(PacketError, match="stray"):
        parse_packet(good + b"\x00\x00\x00\x00")
    with pytest.raises(PacketError, match="NUL"):
        parse_packet(b"/dream/feedback!")
    s = message("/dream/layer", "inception4c")
    with pytest.raises(PacketError):
        parse_packet(s[:-4])  # the string loses its NUL


def test_unknown_type_tags_blobs_and_non_osc_are_refused():
    good = message("/dream/feedback", 0.3, types="f")
    with pytest.raises(PacketError, match="type tag"):
        parse_packet(good.replace(b",f\x00\x00", b",c\x00\x00"))  # python-osc skips it
    with pytest.raises(PacketError, match="','"):
        parse_packet(good.replace(b",f\x00\x00", b"xf\x00\x00"))
    blob = message("/dream/x", b"abcd", types="b")
    with pytest.raises(PacketError, match="negative"):
        parse_packet(blob[:-8] + struct.pack(">i", -8) + b"abcd")
    with pytest.raises(PacketError, match="starts with"):
        parse_packet(b"hello world!")
    with pytest.raises(PacketError, match="starts with"):
        parse_packet(b"")
    with pytest.raises(PacketError):
        parse_packet(b"/\xff\xfe\x00,f\x00\x00" + b"\x00" * 4)  # not UTF-8


def test_malformed_bundles_are_refused_whole():
    good = message("/dream/feedback", 0.3, types="f")
    negative = _bundle(good) + struct.pack(">i", -4) + b"\x00" * 4  # python-osc loops for ever
    with pytest.raises(PacketError, match="does not fit"):
        parse_packet(negative)  # the good message beside it is not applied either
    with pytest.raises(PacketError, match="does not fit"):
        parse_packet(_bundle(good) + struct.pack(">i", 1 << 30) + good)
    with pytest.raises(PacketError, match="size cut short"):
        parse_packet(_bundle(good) + b"\x00\x00")
    with pytest.raises(PacketError, match="header"):
        parse_packet(b"#bundle\x00\x00\x00")
    nested = good
    for _ in range(20):
        nested = _bundle(nested)
    with pytest.raises(PacketError, match="nested"):
        parse_packet(nested)
