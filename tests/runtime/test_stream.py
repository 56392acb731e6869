"""runtime.stream: frames equal to the image upscaler's, in order, pipelined, and the
input and output errors."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import threading
import time
import types

import numpy as np
import pytest
from PIL import Image

from runtime.engine import load_local
from runtime.imresize import imresize
from runtime.stream import (
    StreamConfig,
    StreamError,
    Upscaler,
    Writer,
    folder_frames,
    open_frames,
    raw_frames,
    run_stream,
)
from runtime.upscale import Picture, read_picture, to_uint8, upscale_picture

W, H = 48, 40
RNG = np.random.default_rng(0)


@pytest.fixture(scope="module")
def engine(host_artifact):
    return load_local(host_artifact)


def _frames(n: int) -> list[np.ndarray]:
    return [RNG.integers(0, 256, (H, W, 3), dtype=np.uint8) for _ in range(n)]


def _stream(raw: bytes, engine, pix_fmt="rgb24", cfg=None) -> tuple[bytes, dict]:
    out = io.BytesIO()
    rep = run_stream(raw_frames(io.BytesIO(raw), W, H, pix_fmt), Upscaler(engine, pix_fmt),
                     Writer("-", pix_fmt, out), cfg)
    return out.getvalue(), rep


def test_rgb24_frames_equal_the_image_upscaler_in_order(tmp_path, engine):
    frames = _frames(5)
    out, rep = _stream(b"".join(f.tobytes() for f in frames), engine)
    size = 2 * H * 2 * W * 3
    assert len(out) == 5 * size and rep["frames"] == 5 and rep["dropped"] == 0
    for i, frame in enumerate(frames):
        Image.fromarray(frame).save(tmp_path / f"{i}.png")
        want = to_uint8(upscale_picture(read_picture(tmp_path / f"{i}.png"), engine))
        got = np.frombuffer(out[i * size:(i + 1) * size], np.uint8).reshape(2 * H, 2 * W, 3)
        np.testing.assert_array_equal(got, want, err_msg=f"frame {i}")


def test_yuv420p_runs_luma_through_the_module(engine):
    y = RNG.integers(16, 236, (H, W), dtype=np.uint8)
    u, v = (RNG.integers(16, 241, (H // 2, W // 2), dtype=np.uint8) for _ in range(2))
    out, _ = _stream(b"".join(p.tobytes() for p in (y, u, v)) * 2, engine, "yuv420p")
    n = 4 * H * W
    assert len(out) == 2 * n * 3 // 2
    want_y = engine.upscale((y.astype(np.float32) / 255)[None])[0]
    want_y = np.floor(np.clip(want_y, 0, 1) * 255 + 0.5).astype(np.uint8)
    np.testing.assert_array_equal(np.frombuffer(out[:n], np.uint8).reshape(2 * H, 2 * W), want_y)
    want_u = np.clip(np.round(imresize(u.astype(np.float64), 2)), 0, 255).astype(np.uint8)
    got_u = np.frombuffer(out[n:n + n // 4], np.uint8).reshape(H, W)
    np.testing.assert_array_equal(got_u, want_u)


def test_a_truncated_frame_stops_with_the_frames_before_it_written(engine):
    frames = _frames(3)
    raw = b"".join(f.tobytes() for f in frames)[:-10]
    out = io.BytesIO()
    with pytest.raises(StreamError, match=r"frame 2 is truncated.*; 2 frames written"):
        run_stream(raw_frames(io.BytesIO(raw), W, H, "rgb24"), Upscaler(engine, "rgb24"),
                   Writer("-", "rgb24", out))
    assert len(out.getvalue()) == 2 * 4 * H * W * 3


def test_a_folder_frame_of_another_size_stops_the_stream(tmp_path, engine):
    src, dst = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    for i, f in enumerate(_frames(2)):
        Image.fromarray(f).save(src / f"{i}.png")
    Image.fromarray(_frames(1)[0][:, :20]).save(src / "2.png")
    with pytest.raises(StreamError, match=r"2.png is 20x40.*48x40; 2 frames written"):
        run_stream(folder_frames(src), Upscaler(engine, "rgb24"), Writer(str(dst), "rgb24"))
    written = sorted(p.name for p in dst.iterdir())
    assert written == ["000000.png", "000001.png"]  # whole files, no temporaries left
    assert Image.open(dst / "000001.png").size == (2 * W, 2 * H)


class _Closed(io.RawIOBase):
    def write(self, _):
        raise BrokenPipeError


def test_a_closed_output_pipe_is_one_line(engine):
    with pytest.raises(StreamError, match="output pipe was closed; 0 frames written"):
        run_stream(raw_frames(io.BytesIO(_frames(4)[0].tobytes() * 4), W, H, "rgb24"),
                   Upscaler(engine, "rgb24"), Writer("-", "rgb24", _Closed()))


class _SlowEngine:
    manifest = {"scale": 2, "colour": "y"}

    def upscale(self, planes):
        time.sleep(0.03)
        return np.zeros((1, 2 * planes.shape[1], 2 * planes.shape[2]), np.float32)


def _paced(n: int, gap: float):
    """``n`` rgb24 frames, one every ``gap`` seconds (a camera's pace)."""
    for f in _frames(n):
        time.sleep(gap)
        yield Picture(f.astype(np.float64) / 255, None, False, 8)


def test_drop_late_skips_and_counts_what_the_pipeline_cannot_take():
    out = io.BytesIO()
    rep = run_stream(_paced(30, 0.005), Upscaler(_SlowEngine(), "rgb24"),
                     Writer("-", "rgb24", out), StreamConfig(queue=1, drop_late=True))
    assert rep["dropped"] > 0 and rep["frames"] + rep["dropped"] == 30
    assert len(out.getvalue()) == rep["frames"] * 4 * H * W * 3
    slow = run_stream(_paced(6, 0.0), Upscaler(_SlowEngine(), "rgb24"),
                      Writer("-", "rgb24", io.BytesIO()), StreamConfig(queue=1))
    assert slow["dropped"] == 0 and slow["frames"] == 6  # without the option: waits


def test_stages_overlap():
    # module 30 ms, reading 20 ms a frame: run one after the other, 10 frames would take
    # the sum of the stage times; pipelined, well under it (compared with the stages' own
    # measured times, so that a loaded machine slows both sides)
    rep = run_stream(_paced(10, 0.02), Upscaler(_SlowEngine(), "rgb24"),
                     Writer("-", "rgb24", io.BytesIO()), StreamConfig(side_nice=0))
    serial = rep["frames"] * sum(e["p50_ms"] for e in rep["stages"].values()) / 1e3
    assert rep["seconds"] < 0.85 * serial
    assert set(rep["stages"]) == {"read", "prepare", "module", "finish"}


def test_yuv420p_needs_a_y_model():
    class Rgb(_SlowEngine):
        manifest = {"scale": 2, "colour": "rgb"}

    with pytest.raises(StreamError, match="Y-channel model"):
        Upscaler(Rgb(), "yuv420p")


def test_cli_pipes_raw_video(host_artifact):
    frames = _frames(3)
    proc = subprocess.run(
        [sys.executable, "-m", "runtime.stream", "--artifact", str(host_artifact),
         "--size", f"{W}x{H}"], input=b"".join(f.tobytes() for f in frames),
        capture_output=True, timeout=120)
    assert proc.returncode == 0, proc.stderr.decode()
    assert len(proc.stdout) == 3 * 4 * H * W * 3
    assert "3 frames" in proc.stderr.decode() and "fps" in proc.stderr.decode()


@pytest.mark.parametrize("args,message", [
    (["--size", "48"], "--size must be WIDTHxHEIGHT"),
    (["--size", "47x40", "--pix-fmt", "yuv420p"], "even width and height"),
    ([], "raw video needs --size"),
])
def test_cli_bad_input_is_one_line(host_artifact, args, message):
    proc = subprocess.run([sys.executable, "-m", "runtime.stream", "--artifact",
                           str(host_artifact), *args], input=b"\0" * 5000,
                          capture_output=True, timeout=120)
    err = proc.stderr.decode().strip()
    assert proc.returncode == 2 and message in err and len(err.splitlines()) == 1


@pytest.mark.skipif(not hasattr(os, "getpriority"), reason="no per-thread niceness here")
def test_threads_beside_the_module_run_nicer():
    seen = {}

    class Recording(Upscaler):
        def prepare(self, data):
            seen["prepare"] = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
            return super().prepare(data)

        def module(self, work):
            seen["module"] = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
            return super().module(work)

    run_stream(_paced(2, 0.0), Recording(_SlowEngine(), "rgb24"),
               Writer("-", "rgb24", io.BytesIO()), StreamConfig(side_nice=5))
    assert seen["prepare"] == min(19, seen["module"] + 5)


def test_grayscale_folder_frames_come_out_as_rgb24(tmp_path, engine):
    src = tmp_path / "in"
    src.mkdir()
    for i, f in enumerate(_frames(2)):
        Image.fromarray(f[..., 0]).save(src / f"{i}.png")
    out = io.BytesIO()
    run_stream(folder_frames(src), Upscaler(engine, "rgb24"), Writer("-", "rgb24", out))
    frame = np.frombuffer(out.getvalue()[:4 * H * W * 3], np.uint8).reshape(2 * H, 2 * W, 3)
    assert len(out.getvalue()) == 2 * 4 * H * W * 3
    np.testing.assert_array_equal(frame[..., 0], frame[..., 2])


class _FakeCapture:
    """OpenCV's ``VideoCapture`` on a list of BGR frames (no camera on a CI machine)."""

    def __init__(self, frames, opened=True):
        self.frames, self.opened, self.released = list(frames), opened, False

    def isOpened(self):  # noqa: N802 - OpenCV's name
        return self.opened

    def read(self):
        return (True, self.frames.pop(0)) if self.frames else (False, None)

    def release(self):
        self.released = True


def _fake_cv2(monkeypatch, capture):
    cv2 = types.ModuleType("cv2")
    cv2.VideoCapture = lambda device: capture
    monkeypatch.setitem(sys.modules, "cv2", cv2)


def test_camera_frames_are_the_image_upscalers_in_rgb_order(tmp_path, engine, monkeypatch):
    frames = _frames(3)
    cap = _FakeCapture(f[..., ::-1].copy() for f in frames)  # the camera delivers BGR
    _fake_cv2(monkeypatch, cap)
    out = io.BytesIO()
    rep = run_stream(open_frames("/dev/video0", None, "rgb24"), Upscaler(engine, "rgb24"),
                     Writer("-", "rgb24", out))
    assert rep["frames"] == 3 and cap.released
    size = 2 * H * 2 * W * 3
    for i, frame in enumerate(frames):
        Image.fromarray(frame).save(tmp_path / f"{i}.png")
        want = to_uint8(upscale_picture(read_picture(tmp_path / f"{i}.png"), engine))
        got = np.frombuffer(out.getvalue()[i * size:(i + 1) * size], np.uint8)
        np.testing.assert_array_equal(got.reshape(2 * H, 2 * W, 3), want)


def test_camera_errors_are_one_line(monkeypatch):
    _fake_cv2(monkeypatch, _FakeCapture([], opened=False))
    with pytest.raises(StreamError, match="/dev/video3: cannot open the camera"):
        next(iter(open_frames("/dev/video3", None, "rgb24")))
    with pytest.raises(StreamError, match="use --pix-fmt rgb24"):
        open_frames("/dev/video0", None, "yuv420p")
    monkeypatch.setitem(sys.modules, "cv2", None)  # not installed: import fails
    with pytest.raises(StreamError, match="needs OpenCV"):
        next(iter(open_frames("/dev/video0", None, "rgb24")))
