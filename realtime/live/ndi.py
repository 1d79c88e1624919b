"""NDI output: the dream as an NDI video source that TouchDesigner, Resolume and OBS receive."""

from __future__ import annotations

import time
from types import ModuleType

import cv2
import numpy as np

from realtime.knobs import KnobError, check_ndi_name
from realtime.live.sender import FrameSender, OutputError, OutputFault

INSTALL = "pip install ndi-python (in the checkout: pip install '.[ndi]'); it needs Python 3.11+"
SYSTEM_LIBS = "apt-get install libavahi-client3 (Debian, Ubuntu), dnf install avahi-libs (Fedora)"
FIND_S = 3.0  # how long the sender looks itself up to log its address (ms when idle, s when busy)


def load_ndi() -> ModuleType:
    """The NDI library (PyPI ndi-python, which bundles the NDI runtime), initialised.

    Raises:
        OutputError: it is not installed (the message says how to install it), its runtime
            cannot load a system library it links (the message names it), or the runtime does
            not start on this CPU.
    """
    try:
        import NDIlib
    except ModuleNotFoundError as err:
        raise OutputError(
            f"NDI output needs the NDI library, not installed here: {INSTALL}"
        ) from err
    except ImportError as err:  # installed, but libndi.so links a library this system lacks
        raise OutputError(
            f"the NDI library is installed but its runtime does not load ({err}); it needs "
            f"Avahi's client libraries: {SYSTEM_LIBS}"
        ) from err
    if not NDIlib.initialize():  # refcounted: each output initialises it, none destroys it
        raise OutputError(
            "the NDI runtime did not start: NDIlib.initialize() failed, so this CPU is not one "
            "NDI supports (x86 needs SSE4.2)"
        )
    return NDIlib


def find_source(ndi: ModuleType, full_name: str, ips: str, timeout: float) -> str:
    """The address (IP:PORT) of the NDI source called `full_name` ("MACHINE (name)"), asked of
    the machines at `ips` ("127.0.0.1" or "10.0.0.5,10.0.0.6") directly, without mDNS; "" when
    none answers within `timeout` seconds."""
    settings = ndi.FindCreate()
    settings.show_local_sources = True
    settings.extra_ips = ips
    finder = ndi.find_create_v2(settings)
    if finder is None:
        return ""
    try:
        deadline = time.monotonic() + timeout
        while True:
            for source in ndi.find_get_current_sources(finder):
                if source.ndi_name == full_name and source.url_address:
                    return source.url_address
            left = deadline - time.monotonic()
            if left <= 0:
                return ""
            ndi.find_wait_for_sources(finder, max(1, int(left * 1000)))
    finally:
        ndi.find_destroy(finder)


class NdiOutput(FrameSender):
    """Sends every dreamed frame as the NDI source `name`, at the frame's size, as it comes.

    NDI compresses on its own threads: a frame goes out with the asynchronous send, so the
    sender thread holds Python's lock (which the dream thread needs) for a copy, not for the
    compression. The frame's pixels must then stay untouched until the next send: two RGBX
    buffers take turns.

    Threads: as FrameSender; the NDI sender is created, used and destroyed on the sender thread.
    """

    kind = "ndi"

    def __init__(self, name: str, fps: float = 30.0, **kwargs) -> None:
        """Args:
        name: the source name receivers list (as "MACHINE (name)").
        fps: the frame rate written into each frame (a receiver's hint; frames go out as they
            are dreamed).
        kwargs: FrameSender's retry_s and on_error.

        Raises:
            OutputError: the NDI library is missing (with how to install it), or a bad name.
        """
        try:
            check_ndi_name(name)
        except KnobError as err:
            raise OutputError(str(err)) from err
        if not name:
            raise OutputError("expected an NDI source name such as dream, got an empty one")
        super().__init__(name, **kwargs)
        self._ndi = load_ndi()
        self._rate = (round(fps * 1000), 1000)  # NDI's rational frame rate, N / D
        self.source = ""  # "MACHINE (name)" once sending
        self.address = ""  # IP:PORT a receiver can connect to, once found
        self._instance = None
        self._frames: list = []  # two VideoFrameV2 taking turns ...
        self._pixels: list[np.ndarray] = []  # ... each sending one of these (H, W, 4) RGBX
        self._turn = 0

    def _open(self, width: int, height: int) -> None:
        ndi = self._ndi
        settings = ndi.SendCreate()
        settings.ndi_name = self.target
        settings.clock_video = False  # frames go out as they are dreamed, never paced by NDI
        settings.clock_audio = False
        self._instance = ndi.send_create(settings)
        if self._instance is None:
            raise OutputFault(
                f"NDI could not create a source named {self.target!r}; is another output of "
                "that name running in this process? Choose another name"
            )
        self.source = ndi.send_get_source_name(self._instance).ndi_name
        self._buffers(width, height)
        self.address = find_source(ndi, self.source, "127.0.0.1", FIND_S)
        self._note(
            "NDI source %r sending %dx%d%s; receivers on other machines list it by name "
            "(mDNS), or add this machine's IP address in NDI Access Manager's remote sources",
            self.source,
            width,
            height,
            f" from port {self.address.rpartition(':')[2]}" if self.address else "",
        )

    def _buffers(self, width: int, height: int) -> None:
        self._pixels = [np.zeros((height, width, 4), np.uint8) for _ in range(2)]
        self._frames = []
        for pixels in self._pixels:
            frame = self._ndi.VideoFrameV2()
            frame.data = pixels  # the frame points at these pixels (no copy)
            frame.FourCC = self._ndi.FOURCC_VIDEO_TYPE_RGBX
            frame.frame_rate_N, frame.frame_rate_D = self._rate
            self._frames.append(frame)

    def _send(self, image: np.ndarray) -> None:
        h, w = image.shape[:2]
        if self._pixels[0].shape[:2] != (h, w):
            self._ndi.send_send_video_async_v2(self._instance, None)  # lets go of both buffers
            self._buffers(w, h)
        turn, self._turn = self._turn, self._turn ^ 1
        # These pixels went out two sends ago; NDI let go of them at the last send.
        cv2.cvtColor(image, cv2.COLOR_RGB2RGBA, dst=self._pixels[turn])
        self._ndi.send_send_video_async_v2(self._instance, self._frames[turn])

    def _close(self) -> None:
        instance, self._instance = self._instance, None
        if instance is not None:
            self._ndi.send_send_video_async_v2(instance, None)  # wait for the last frame
            self._ndi.send_destroy(instance)
