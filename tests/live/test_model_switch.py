"""Issue 11, items 8 and 9: a live model switch over real UDP on 127.0.0.1, with weights served
slowly from a local HTTP server. The newest request wins, status names the model dreaming and
the one loading apart, and a gallery that forbids downloads refuses a switch that would need one.
"""

from __future__ import annotations

import hashlib
import http.server
import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
import torchvision

from realtime.control.config import load_config, preset_path
from realtime.control.osc import OscServer, StatusSender
from realtime.control.params import LiveParams
from realtime.engine import models
from realtime.engine.models import MODEL_NAMES
from realtime.live.loop import DreamLoop
from realtime.live.slot import Frame, LatestSlot
from realtime.live.sources import DemoSource
from tests.control.test_osc import Collector, wait_for

SIZE = (160, 96)
SERVE_S = 1.5  # how long the weights take to arrive: a slow network, so a second request lands


@pytest.fixture(scope="module")
def googlenet_weights(tmp_path_factory) -> Path:
    """A random GoogLeNet state dict named as torchvision names its files (sha256 prefix)."""
    folder = tmp_path_factory.mktemp("served")
    raw = folder / "raw.pth"
    torch.manual_seed(0)
    net = torchvision.models.googlenet(weights=None, aux_logits=False, init_weights=True)
    torch.save(net.state_dict(), raw)
    path = folder / f"googlenet-{hashlib.sha256(raw.read_bytes()).hexdigest()[:8]}.pth"
    raw.rename(path)
    return path


class SlowWeights:
    """An HTTP server on 127.0.0.1 that sends one file in pieces over SERVE_S seconds, and
    counts the requests it gets."""

    def __init__(self, path: Path) -> None:
        self.requests = 0
        data = path.read_bytes()
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (the base class's name)
                owner.requests += 1
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                pieces = 10
                step = -(-len(data) // pieces)
                for i in range(0, len(data), step):
                    time.sleep(SERVE_S / pieces)
                    self.wfile.write(data[i : i + step])

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/{path.name}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def slow_weights(googlenet_weights, tmp_path, monkeypatch) -> Iterator[SlowWeights]:
    """GoogLeNet's weights not on disk (an empty torch cache), downloadable slowly."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    server = SlowWeights(googlenet_weights)
    monkeypatch.setitem(models.WEIGHT_URLS, "googlenet", server.url)
    yield server
    server.close()


class Show:
    """A dream loop fed demo frames, its OSC server, and status out to a collector."""

    def __init__(self, params: LiveParams, lite0, **loop_kw) -> None:
        self.params = params
        self.errors: list[str] = []
        self.loop = DreamLoop(
            LatestSlot(), params, lite0, torch.device("cpu"), on_error=self._error, **loop_kw
        )
        self.collector = Collector()
        self.status = StatusSender(params, self.loop.stats, f"127.0.0.1:{self.collector.port}", 20)
        self.server = OscServer(params, port=0, status=self.status)
        self._stop = threading.Event()
        self._feeder = threading.Thread(target=self._feed, daemon=True)

    def __enter__(self) -> Show:
        self.status.start()
        self.server.start()
        self.loop.start()
        self._feeder.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._feeder.join()
        self.loop.stop()
        self.server.stop()
        self.status.stop()
        self.collector.close()

    def _error(self, text: str) -> None:  # what the app's Parts.report does
        self.errors.append(text)
        self.status.error(text)

    def _feed(self) -> None:
        demo = DemoSource(SIZE)
        demo.open()
        i = 0
        while not self._stop.wait(0.05):
            self.loop.frames.put(Frame(demo.frame_at(i), time.monotonic(), i))
            i += 1

    def send(self, address: str, value: object) -> None:
        from pythonosc.udp_client import SimpleUDPClient

        SimpleUDPClient("127.0.0.1", self.server.address[1]).send_message(address, value)

    def said(self, address: str) -> list[object]:
        """Every value status sent to /dream/status/<address>, in order."""
        return [args[0] for args in self.collector.addresses("/dream/status/" + address)]

    def models(self) -> list[tuple[object, object]]:
        """(model, model_loading) as each status tick sent them (one consistent reading)."""
        out, model = [], None
        for address, args in list(self.collector.received):
            if address == "/dream/status/model":
                model = args[0]
            elif address == "/dream/status/model_loading":
                out.append((model, args[0]))
        return out


@pytest.fixture
def params(lite0) -> LiveParams:
    p = LiveParams(lite0.layers, MODEL_NAMES, lite0.name, {"steps": 1, "octaves": 1})
    p.set("layer", lite0.default_layer)
    return p


def test_the_newest_model_request_wins_while_another_loads(lite0, params, slow_weights, caplog):
    """Issue 11, item 9: `/dream/model googlenet`, then 0.1 s later `/dream/model
    efficientnet_lite0`, ended on googlenet every time, with no log line."""
    caplog.set_level(logging.INFO, logger="realtime.live.loop")
    with Show(params, lite0) as show:
        show.send("/dream/model", "googlenet")
        assert wait_for(lambda: "loading model googlenet" in caplog.text, 10)
        time.sleep(0.1)
        show.send("/dream/model", "efficientnet_lite0")
        assert wait_for(lambda: params.get("model") == "efficientnet_lite0", 5)
        assert wait_for(lambda: "has been asked for since" in caplog.text, 60)
        frames = show.loop.stats()["frames"]
        assert wait_for(lambda: show.loop.stats()["frames"] > frames + 3, 30)  # dreams on
        assert wait_for(lambda: show.said("model_loading")[-1:] == ["none"], 5)
    assert slow_weights.requests == 1  # the first load was not cut short, only not used
    assert "model googlenet loaded, but efficientnet_lite0 has been asked for since" in caplog.text
    assert "switched to model googlenet" not in caplog.text
    assert show.loop.model is lite0 and params.get("model") == "efficientnet_lite0"
    assert set(show.said("model")) == {"efficientnet_lite0"}  # never claimed googlenet
    assert "googlenet" in show.said("model_loading")  # but said it was loading it


def test_a_switch_swaps_in_when_it_dreams_and_status_says_so_only_then(
    lite0, params, slow_weights, caplog
):
    caplog.set_level(logging.INFO, logger="realtime.live.loop")
    with Show(params, lite0) as show:
        show.send("/dream/model", "googlenet")
        assert wait_for(lambda: "googlenet" in show.said("model_loading"), 10)
        assert wait_for(lambda: show.models()[-1:] == [("googlenet", "none")], 60)
    assert show.loop.model.name == "googlenet" and params.get("layer") in show.loop.model.layers
    # While googlenet loaded, status said the old one dreams and the new one loads; then that
    # googlenet dreams, never before.
    said = [pair for i, pair in enumerate(show.models()) if i == 0 or pair != show.models()[i - 1]]
    assert said == [
        ("efficientnet_lite0", "none"),
        ("efficientnet_lite0", "googlenet"),
        ("googlenet", "none"),
    ]


def test_a_gallery_refuses_a_switch_that_would_download(lite0, slow_weights, caplog):
    """Issue 11, item 8: `/dream/model vgg16` with uncached weights downloaded 528 MB during the
    show while status already said vgg16. The gallery preset forbids downloads at show time."""
    cfg = load_config(preset_path("gallery"))
    assert cfg.model.live_download is False
    params = LiveParams.from_config(cfg, lite0.layers, MODEL_NAMES, lite0.name)
    with Show(params, lite0, download=cfg.model.live_download) as show:
        show.send("/dream/model", "googlenet")
        assert wait_for(lambda: show.said("error"), 10)
        time.sleep(0.5)  # time to start a download, if anything were going to
        assert wait_for(lambda: len(show.said("model")) > 2, 5)
    (error,) = show.said("error")
    assert "/dream/model: not switching to googlenet: googlenet weights are not on disk" in error
    assert "model.live_download = false" in error and str(models.cache_path("googlenet")) in error
    assert slow_weights.requests == 0 and not models.cache_path("googlenet").parent.exists()
    assert params.get("model") == "efficientnet_lite0" and show.loop.model is lite0
    assert set(show.said("model")) == {"efficientnet_lite0"}
    assert set(show.said("model_loading")) == {"none"}


def test_weights_gone_between_the_request_and_the_load_are_refused_not_downloaded(
    lite0, params, slow_weights, caplog
):
    """The loader's own check: no download even when the request got past the OSC check (the
    weights were deleted in between); the fault goes to status."""
    with Show(params, lite0, download=False) as show:
        show.send("/dream/model", "googlenet")
        assert wait_for(lambda: show.errors, 30)
        assert wait_for(lambda: show.said("error"), 5)
    assert "could not switch to model googlenet, keeping efficientnet_lite0" in show.errors[0]
    assert "model.live_download = false" in show.said("error")[0]
    assert slow_weights.requests == 0
    assert params.get("model") == "efficientnet_lite0" and show.loop.model is lite0
