"""Frame sources: real files written here, the demo, and the forms open_source recognises."""

from pathlib import Path

import cv2
import numpy as np
import pytest

from realtime.live.sources import (
    CameraSource,
    DemoSource,
    ImageSource,
    SourceError,
    StreamSource,
    VideoFileSource,
    holding_source,
    make_source,
    open_source,
)

STEP = 20  # grey level per frame number: survives lossy codecs with a wide margin


def write_numbered_video(path: Path, count: int = 10, size=(64, 48), fourcc="mp4v") -> None:
    """A video whose frame i is uniform grey STEP * i, so a reader can tell which frame it got."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*fourcc), 30.0, size)
    assert writer.isOpened()
    for i in range(count):
        writer.write(np.full((size[1], size[0], 3), STEP * i, np.uint8))
    writer.release()


def frame_number(frame: np.ndarray) -> int:
    return round(float(frame.mean()) / STEP)


@pytest.mark.parametrize("suffix,fourcc", [(".mp4", "mp4v"), (".avi", "MJPG")])
def test_video_file_loops(tmp_path, suffix, fourcc):
    path = tmp_path / f"numbers{suffix}"
    write_numbered_video(path, fourcc=fourcc)
    source = open_source(str(path))
    assert isinstance(source, VideoFileSource)
    assert source.fps == pytest.approx(30.0)
    frames = [source.read() for _ in range(25)]
    source.close()
    assert all(f.shape == (48, 64, 3) and f.dtype == np.uint8 for f in frames)
    assert [frame_number(f) for f in frames] == [*range(10), *range(10), *range(5)]


def test_video_file_without_loop_ends(tmp_path):
    path = tmp_path / "numbers.avi"
    write_numbered_video(path, count=3, fourcc="MJPG")
    source = VideoFileSource(path, loop=False)
    source.open()
    assert [frame_number(source.read()) for _ in range(3)] == [0, 1, 2]
    assert source.read() is None
    source.close()


def test_frames_are_rgb(tmp_path):
    bgr = np.zeros((40, 60, 3), np.uint8)
    bgr[..., 2] = 255  # pure red in OpenCV's BGR order
    path = tmp_path / "red.png"
    cv2.imwrite(str(path), bgr)
    source = open_source(str(path))
    assert isinstance(source, ImageSource) and not source.is_live
    first, second = source.read(), source.read()
    assert first.shape == (40, 60, 3)
    assert tuple(first[0, 0]) == (255, 0, 0)
    first[:] = 0  # a consumer scribbling on one frame must not change the next
    assert tuple(source.read()[5, 5]) == (255, 0, 0) and tuple(second[0, 0]) == (255, 0, 0)


def test_open_source_forms(tmp_path):
    image = tmp_path / "still.jpg"
    cv2.imwrite(str(image), np.full((16, 16, 3), 128, np.uint8))
    video = tmp_path / "clip.avi"
    write_numbered_video(video, count=2, fourcc="MJPG")
    assert isinstance(make_source("demo"), DemoSource)
    assert isinstance(make_source(" Demo "), DemoSource)
    camera = make_source("2", (320, 240))
    assert isinstance(camera, CameraSource) and camera.index == 2 and camera.size == (320, 240)
    assert isinstance(make_source(0), CameraSource) and make_source(0).is_live
    stream = make_source("rtsp://user:secret@127.0.0.1:8554/cam")
    assert isinstance(stream, StreamSource) and stream.is_live
    assert "secret" not in stream.name
    assert isinstance(make_source("http://127.0.0.1:8080/video.mjpg"), StreamSource)
    assert isinstance(make_source("udp://127.0.0.1:5000"), StreamSource)
    assert isinstance(make_source(str(image)), ImageSource)
    assert isinstance(make_source(str(video)), VideoFileSource)
    # A file with an unusual name is recognised by content.
    odd = tmp_path / "still.picture"
    odd.write_bytes(image.read_bytes())
    assert isinstance(make_source(str(odd)), ImageSource)


@pytest.mark.parametrize("spec", ["webcam", "nosuchfile.mp4", "-1", ""])
def test_bad_spec_lists_valid_forms(spec):
    with pytest.raises(SourceError, match=r'"demo".*image or video.*URL'):
        open_source(spec)


def test_bad_spec_kinds(tmp_path):
    with pytest.raises(SourceError, match="unsupported stream scheme 'gopher'"):
        open_source("gopher://example")
    with pytest.raises(SourceError, match="folder"):
        open_source(str(tmp_path))
    with pytest.raises(SourceError, match="camera index"):
        open_source(-3)
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"this is not a video")
    with pytest.raises(SourceError, match="cannot decode"):
        open_source(str(junk))


def test_missing_camera_is_a_clear_error():
    # No machine running these tests has 64 cameras.
    with pytest.raises(SourceError, match="camera 63 could not be opened.*--source demo"):
        open_source("63")


def test_demo_source_moves_and_is_deterministic():
    demo = open_source("demo", (96, 64))
    assert isinstance(demo, DemoSource) and demo.fps == 30.0
    frames = [demo.read() for _ in range(6)]
    for f in frames:
        assert f.shape == (64, 96, 3) and f.dtype == np.uint8
    diffs = [np.abs(a.astype(int) - b).mean() for a, b in zip(frames, frames[1:], strict=False)]
    assert min(diffs) > 0.1  # every frame moves a little
    assert np.abs(frames[0].astype(int) - demo.frame_at(60)).mean() > 5  # and a lot over 2 s
    # Pure function of the frame number, also in a fresh source with the same seed.
    again = DemoSource((96, 64))
    again.open()
    for i in (0, 3, 149, 160, 1000):
        assert np.array_equal(demo.frame_at(i), again.frame_at(i))
    assert np.array_equal(frames[3], again.frame_at(3))
    other = DemoSource((96, 64), seed=1)
    other.open()
    assert not np.array_equal(other.frame_at(10), demo.frame_at(10))


def test_demo_source_is_rgb_and_crossfades():
    demo = DemoSource((64, 48))
    demo.open()
    shots = DemoSource.SHOT_FRAMES
    # Channel order: the ginger cat is red-dominant, the rocket's dusk sky blue-dominant.
    seen = set()
    for shot in range(len(DemoSource.PICTURES)):
        i = shot * shots + shots // 2
        name, frame = demo.picture_at(i), demo.frame_at(i).astype(float)
        seen.add(name)
        red, blue = frame[..., 0].mean(), frame[..., 2].mean()
        if name == "chelsea":
            assert red > blue + 20
        if name == "rocket":
            assert blue > red + 20
    assert {"chelsea", "rocket"} <= seen
    # Mid-fade frames lie between the outgoing and the incoming picture.
    a = demo.frame_at(shots - 1).astype(float)
    mid = demo.frame_at(shots + DemoSource.FADE_FRAMES // 2).astype(float)
    b = demo.frame_at(shots + DemoSource.FADE_FRAMES).astype(float)
    assert demo.picture_at(shots - 1) != demo.picture_at(shots)
    assert np.abs(mid - a).mean() > 2 and np.abs(mid - b).mean() > 2


def test_holding_source_is_the_demo_or_a_still_and_refuses_the_rest(tmp_path):
    assert holding_source("") is None
    demo = holding_source("demo", (64, 48))
    assert isinstance(demo, DemoSource) and demo.is_open and demo.read().shape == (48, 64, 3)
    still = tmp_path / "closed.png"
    cv2.imwrite(str(still), np.zeros((30, 40, 3), np.uint8))
    assert holding_source(str(still)).read().shape == (30, 40, 3)
    clip = tmp_path / "clip.avi"
    write_numbered_video(clip, fourcc="MJPG")
    with pytest.raises(SourceError, match="capture.holding: expected demo or a still image"):
        holding_source(str(clip))
    with pytest.raises(SourceError, match="capture.holding: unknown source 'nowhere.png'"):
        holding_source("nowhere.png")


def test_an_empty_video_file_is_named_as_empty_not_as_a_codec_fault(tmp_path):
    """A file truncated to 0 bytes (issue 11) said "OpenCV cannot decode ... convert it"."""
    path = tmp_path / "show.avi"
    path.write_bytes(b"")
    with pytest.raises(SourceError, match=r"show.avi' is empty \(0 bytes\)"):
        open_source(str(path))
