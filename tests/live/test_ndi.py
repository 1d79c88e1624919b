"""NDI output through the real NDI runtime (PyPI ndi-python): a known frame sent, found without
mDNS and received over loopback by the same library, pixels compared."""

from __future__ import annotations

import importlib.util
import os
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from realtime.live.sender import OutputError
from realtime.live.slot import Output
from tests._require import require

HAVE_NDI = importlib.util.find_spec("NDIlib") is not None


@pytest.fixture(scope="module")
def ndi():
    require(HAVE_NDI, "ndi-python is not installed (pip install '.[ndi]'; Python 3.11+)")
    from realtime.live.ndi import load_ndi

    return load_ndi()


def known_frame(w: int = 160, h: int = 96) -> np.ndarray:
    """Four flat quadrants (NDI's codec is lossy and halves the colour resolution: flat areas
    come back within a few levels) in distinct colours."""
    image = np.empty((h, w, 3), np.uint8)  # (H, W, 3) RGB
    image[: h // 2, : w // 2] = (220, 30, 30)
    image[: h // 2, w // 2 :] = (30, 200, 40)
    image[h // 2 :, : w // 2] = (40, 40, 210)
    image[h // 2 :, w // 2 :] = (240, 240, 240)
    return image


def quadrant_means(image: np.ndarray) -> np.ndarray:
    """The mean colour inside each quadrant, away from the edges the codec blurs: (4, 3)."""
    h, w = image.shape[:2]
    m = 8
    boxes = [
        image[m : h // 2 - m, m : w // 2 - m],
        image[m : h // 2 - m, w // 2 + m : w - m],
        image[h // 2 + m : h - m, m : w // 2 - m],
        image[h // 2 + m : h - m, w // 2 + m : w - m],
    ]
    return np.array([b.reshape(-1, 3).mean(0) for b in boxes])


def receive(ndi, address: str, offer, timeout: float = 10.0) -> np.ndarray | None:
    """Connect straight to `address` and return the first video frame's RGB pixels, calling
    `offer()` (which sends a frame) while waiting."""
    settings = ndi.RecvCreateV3()
    settings.color_format = ndi.RECV_COLOR_FORMAT_RGBX_RGBA
    settings.source_to_connect_to = ndi.Source(None, address)
    receiver = ndi.recv_create_v3(settings)
    assert receiver is not None
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            offer()
            kind, video, _, _ = ndi.recv_capture_v2(receiver, 100)
            if kind == ndi.FRAME_TYPE_VIDEO:
                pixels = np.array(video.data[:, :, :3])  # (H, W, 3) RGB, copied out
                ndi.recv_free_video_v2(receiver, video)
                return pixels
        return None
    finally:
        ndi.recv_destroy(receiver)


def listening_ports() -> set[int]:
    """The TCP ports this process listens on (Linux: /proc), to find the NDI sender's own."""
    inodes = set()
    for fd in Path("/proc/self/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    ports = set()
    for table in ("/proc/self/net/tcp", "/proc/self/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def test_a_known_frame_makes_the_round_trip(ndi):
    from realtime.live.ndi import NdiOutput, find_source

    sent = known_frame()
    out = NdiOutput(f"dream-test-{os.getpid()}", fps=30)
    before = listening_ports()
    out.start()
    try:
        index = iter(range(10**6))

        def offer() -> None:
            out(Output(sent, sent, next(index), 0.0, 0.0))

        offer()
        deadline = time.monotonic() + 5
        while not out.source and time.monotonic() < deadline:
            time.sleep(0.02)
        assert out.source.endswith(f"(dream-test-{os.getpid()})")
        # Found without mDNS by asking this machine directly (as NDI Access Manager's remote
        # sources do); where another NDI program on this machine answers that question instead
        # (it holds port 5960), straight at the sender's own port.
        address = find_source(ndi, out.source, "127.0.0.1", 5.0)
        if not address:
            opened = sorted(listening_ports() - before)
            assert opened, "the NDI sender opened no TCP port"
            address = f"127.0.0.1:{opened[-1]}"
        assert address.startswith("127.0.0.1:")
        got = receive(ndi, address, offer)
    finally:
        out.stop()
    assert got is not None, "no video frame arrived over NDI within 10 s"
    assert got.shape == sent.shape  # the dream's size
    means = quadrant_means(got)
    assert np.abs(means - quadrant_means(sent)).max() < 12, means
    assert np.abs(got.astype(int) - sent).mean() < 10
    assert out.sent >= 1 and out.errors == 0
    assert out.state == "stopped"


def test_a_second_source_of_the_same_name_fails_and_the_first_goes_on(ndi):
    from realtime.live.ndi import NdiOutput

    name = f"dream-twice-{os.getpid()}"
    first, second = NdiOutput(name), NdiOutput(name, on_error=(reported := []).append)
    image = known_frame(32, 16)
    first.start()
    try:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and first.sent < 1:
            first(image)
            time.sleep(0.02)
        second.start()
        while time.monotonic() < deadline and (first.sent < 4 or second.state != "failed"):
            first(image)
            second(image)
            time.sleep(0.02)
        assert first.state == "sending" and first.sent >= 4
        assert second.state == "failed" and "another output of that name" in second.error
        assert len(reported) == 1 and second.sent == 0
    finally:
        first.stop()
        second.stop()


def test_without_the_library_ndi_is_refused_with_how_to_install_it(monkeypatch):
    from realtime.live.ndi import NdiOutput

    monkeypatch.setitem(sys.modules, "NDIlib", None)  # import NDIlib now raises ImportError
    with pytest.raises(OutputError, match=r"pip install ndi-python \(in the checkout: pip install"):
        NdiOutput("dream")


def test_a_runtime_missing_a_system_library_is_refused_naming_it(monkeypatch, tmp_path):
    """ndi-python installed on a system without Avahi (as a bare CUDA image): the import fails
    inside the package, and the message names the missing library and the package to install,
    not pip."""
    from realtime.live.ndi import load_ndi

    package = tmp_path / "NDIlib"
    package.mkdir()
    (package / "__init__.py").write_text(
        "raise ImportError('libavahi-common.so.3: cannot open shared object file: "
        "No such file or directory')\n"
    )
    monkeypatch.delitem(sys.modules, "NDIlib", raising=False)
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(OutputError) as err:
        load_ndi()
    message = str(err.value)
    assert "libavahi-common.so.3" in message and "apt-get install libavahi-client3" in message
    assert "pip install" not in message


@pytest.mark.parametrize("name", ["", " ", "a\nb", "x" * 201])
def test_a_bad_name_is_refused(name):
    from realtime.live.ndi import NdiOutput

    with pytest.raises(OutputError, match="NDI source name"):
        NdiOutput(name)
