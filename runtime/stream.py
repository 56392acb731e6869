"""Upscale a stream of frames on the device, pipelined: raw video or a folder of frames in,
raw video or a folder of frames out, with frames per second and per-stage latency.

``ffmpeg -i in.mp4 -f rawvideo -pix_fmt yuv420p - | python -m runtime.stream --artifact DIR
--size 640x360 --pix-fmt yuv420p | ffmpeg -f rawvideo -pix_fmt yuv420p -s 1280x720 -i - out.mp4``

Four stages run at once, joined by bounded queues: reading (and decoding a folder's
images), preparing (colour conversion, chroma upscaling), the module, and finishing
(back to pixels) with writing. While the module runs on frame n, frame n+1 is prepared
and frame n-1 written, so the stream runs at the module's own rate when the other stages
are shorter. Frames come out in order; none is dropped unless ``--drop-late`` says so
(frames that find the queue full are then skipped, and counted).

Pixel formats of raw video: ``rgb24`` (any model; each frame is exactly what
``runtime.upscale`` makes of the same image) and ``yuv420p`` (Y models: the luma plane
runs through the module, the half-size chroma planes are upscaled bicubically). A camera
(``--input /dev/videoN``) is read with OpenCV where it is installed (not a dependency of
the runtime). Needs only the TVM runtime, numpy and pillow.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .artifact import ArtifactError, write_bytes_atomic
from .imresize import imresize
from .upscale import (
    ImageError,
    Picture,
    finish_picture,
    prepare_picture,
    read_picture,
    to_uint8,
    write_picture,
)

PIX_FMTS = ("rgb24", "yuv420p")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
STAGES = ("read", "prepare", "module", "finish")


class StreamError(Exception):
    """A stream that cannot go on (bad input, closed output); one line."""


@dataclass
class Frame:
    """One frame on its way through the stages."""

    index: int
    data: object  # Picture (rgb24, folder) or (y, u, v) uint8 planes (yuv420p)
    born: float  # when its reading started (perf_counter)
    times: dict[str, float] = field(default_factory=dict)  # stage -> seconds
    work: object = None  # what one stage hands the next


def frame_bytes(width: int, height: int, pix_fmt: str) -> int:
    """Bytes of one raw frame."""
    return width * height * 3 if pix_fmt == "rgb24" else width * height * 3 // 2


def parse_size(text: str, flag: str = "--size") -> tuple[int, int]:
    """``WxH`` (ffmpeg's order) -> (width, height); errors name ``flag``."""
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise StreamError(f"{flag} must be WIDTHxHEIGHT (e.g. 640x360); got {text!r}") from None
    if w < 1 or h < 1:
        raise StreamError(f"{flag} must be positive; got {text!r}")
    return w, h


@dataclass
class RawFrame:
    """One frame of raw video as read: its bytes, size and pixel format."""

    data: np.ndarray  # flat uint8
    width: int
    height: int
    pix_fmt: str

    def decode(self) -> object:
        """A ``Picture`` (rgb24), or the (y, u, v) uint8 planes (yuv420p, views)."""
        w, h, flat = self.width, self.height, self.data
        if self.pix_fmt == "rgb24":
            rgb = flat.reshape(h, w, 3).astype(np.float32) / np.float32(255.0)
            return Picture(rgb, None, False, 8)
        y = flat[:w * h].reshape(h, w)
        u = flat[w * h:w * h * 5 // 4].reshape(h // 2, w // 2)
        return y, u, flat[w * h * 5 // 4:].reshape(h // 2, w // 2)


def raw_frames(stream, width: int, height: int, pix_fmt: str) -> Iterator[RawFrame]:
    """Frames of raw video from a binary file object; a partial last frame is an error."""
    if pix_fmt == "yuv420p" and (width % 2 or height % 2):
        raise StreamError(f"yuv420p needs an even width and height; got {width}x{height}")
    size = frame_bytes(width, height, pix_fmt)
    index = 0
    while True:
        buf = _read_exactly(stream, size)
        if not buf:
            return
        if len(buf) < size:
            raise StreamError(f"frame {index} is truncated: {len(buf)} of {size} bytes "
                              f"({width}x{height} {pix_fmt})")
        yield RawFrame(np.frombuffer(buf, np.uint8), width, height, pix_fmt)
        index += 1


def _read_exactly(stream, size: int) -> bytes:
    chunks, got = [], 0
    while got < size:
        chunk = stream.read(size - got)
        if not chunk:
            break
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def folder_frames(folder: Path) -> Iterator[Picture]:
    """The images of a folder in name order, all of the first one's size."""
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise StreamError(f"{folder}: no images ({', '.join(IMAGE_SUFFIXES)})")
    first = None
    for path in files:
        pic = read_picture(path)
        shape = pic.rgb.shape[:2]
        if first is None:
            first = shape
        elif shape != first:
            raise StreamError(f"{path.name} is {shape[1]}x{shape[0]}, the stream's frames "
                              f"are {first[1]}x{first[0]}")
        yield pic


def camera_frames(device: str) -> Iterator[Picture]:
    """Frames from a V4L2 camera through OpenCV (optional: not a runtime dependency)."""
    try:
        import cv2
    except ImportError:
        raise StreamError("reading a camera needs OpenCV: pip install "
                          "opencv-python-headless") from None
    cap = cv2.VideoCapture(device)
    if not cap.isOpened():
        raise StreamError(f"{device}: cannot open the camera")
    try:
        while True:
            ok, bgr = cap.read()
            if not ok:
                return
            yield Picture(bgr[..., ::-1].astype(np.float32) / np.float32(255.0), None, False, 8)
    finally:
        cap.release()


class Upscaler:
    """The per-frame work of the three middle stages for one engine and pixel format.

    A raw frame of the size and pixel format of the module's ``frame`` function (a
    ``--frame`` build) goes through it whole: its colour work runs in the module and
    ``prepare``/``finish`` only move bytes. Other frames are decoded and converted here.
    """

    def __init__(self, engine, pix_fmt: str):
        self.engine, self.pix_fmt = engine, pix_fmt
        self.scale = int(engine.manifest["scale"])
        self.colour = engine.manifest["colour"]
        self.frame_fn = engine.manifest.get("frame")
        if pix_fmt == "yuv420p" and self.colour != "y":
            raise StreamError("yuv420p streams need a Y-channel model; this one is RGB: "
                              "use --pix-fmt rgb24")

    def whole(self, data) -> bool:
        """Whether ``data`` goes through the module's ``frame`` function."""
        fn = self.frame_fn
        return (fn is not None and isinstance(data, RawFrame) and fn["pix_fmt"] == data.pix_fmt
                and (fn["width"], fn["height"]) == (data.width, data.height))

    def prepare(self, data):
        if self.whole(data):
            return _Whole(data)
        if isinstance(data, RawFrame):
            data = data.decode()
        if self.pix_fmt == "yuv420p":
            y, u, v = data
            chroma = [imresize(c, self.scale) for c in (u, v)]  # uint8: rounded, clipped
            return data, ((y.astype(np.float32) / np.float32(255.0))[None], chroma)
        return data, prepare_picture(data, self.scale, self.colour)

    def module(self, work):
        if isinstance(work, _Whole):
            return work, self.engine.frame(work.raw.data)
        data, prep = work
        planes = prep[0] if self.pix_fmt == "yuv420p" else prep.planes
        return work, self.engine.upscale(planes)

    def finish(self, work) -> bytes | np.ndarray | Picture:
        prep, out = work
        if isinstance(prep, _Whole):
            if self.pix_fmt == "yuv420p":
                return out.tobytes()
            s = self.scale
            return out.reshape(prep.raw.height * s, prep.raw.width * s, 3)
        source, prep = prep
        if self.pix_fmt == "yuv420p":
            y = np.floor(np.clip(out[0], 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
            return b"".join(p.tobytes() for p in (y, *prep[1]))
        return finish_picture(source, prep, out)


@dataclass
class _Whole:
    """A raw frame on its way through the module's ``frame`` function."""

    raw: RawFrame


class Writer:
    """Raw frames to a binary stream (stdout unless given), or numbered frames into a
    folder (``000000.png``, or ``.yuv`` for yuv420p; each written atomically)."""

    def __init__(self, target: str, pix_fmt: str, stream=None):
        self.pix_fmt, self.count = pix_fmt, 0
        self.folder = None if target == "-" else Path(target)
        if self.folder is not None:
            self.folder.mkdir(parents=True, exist_ok=True)
        self.out = (stream or sys.stdout.buffer) if self.folder is None else None

    def write(self, result) -> None:
        if self.folder is not None:
            if isinstance(result, bytes):
                write_bytes_atomic(self.folder / f"{self.count:06d}.yuv", result)
            else:
                if isinstance(result, np.ndarray):  # 8-bit RGB from the frame function
                    result = Picture(result.astype(np.float32) / np.float32(255.0), None,
                                     False, 8)
                write_picture(result, self.folder / f"{self.count:06d}.png")
        else:
            if isinstance(result, bytes):
                data = result
            elif isinstance(result, np.ndarray):
                data = result.tobytes()
            else:  # rgb24 whatever the source image was (grayscale replicated, alpha dropped)
                u8 = to_uint8(result)
                data = (np.repeat(u8[..., None], 3, 2) if u8.ndim == 2 else u8).tobytes()
            try:
                self.out.write(data)
                self.out.flush()
            except BrokenPipeError:
                raise StreamError("the output pipe was closed") from None
        self.count += 1


_END = object()


@dataclass
class StreamConfig:
    """What ``run_stream`` needs besides its frames.

    Attributes:
        queue: Frames each queue between two stages holds (the pipeline's depth).
        drop_late: Skip a frame that finds the first queue full instead of waiting.
        limit: Stop after this many frames (0: all).
        side_nice: Niceness added to the reading, preparing and finishing threads (Linux),
            so that the module's threads keep their cores and its barriers do not wait
            for a preempted worker (0: none).
    """

    queue: int = 2
    drop_late: bool = False
    limit: int = 0
    side_nice: int = 10


def run_stream(frames: Iterator[object], upscaler: Upscaler, writer: Writer,
               cfg: StreamConfig | None = None) -> dict:
    """Run the four stages on ``frames`` at once; return the report (``report``).

    Raises:
        StreamError: bad input or a closed output, with the frames written so far in the
            message. What was written stays whole: every folder frame is atomic.
    """
    cfg = cfg or StreamConfig()
    queues = [queue.Queue(max(1, cfg.queue)) for _ in range(3)]
    done: list[Frame] = []
    failure: list[BaseException] = []
    stop = threading.Event()
    dropped = [0]
    start = time.perf_counter()

    def put(q, item) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def get(q):
        while not stop.is_set():
            try:
                return q.get(timeout=0.1)
            except queue.Empty:
                continue
        return _END

    def guarded(body: Callable[[], None], out_q, drain: bool = False) -> Callable[[], None]:
        """Run a stage; on failure keep the error for the caller and stop every stage,
        except for bad input (``drain``): the frames read before it are still written."""
        def run() -> None:
            try:
                _renice(cfg.side_nice)
                body()
            except BaseException as exc:  # noqa: BLE001 - handed to the caller below
                failure.append(exc)
                if not drain:
                    stop.set()
            finally:
                if out_q is not None:
                    put(out_q, _END)
        return run

    def read() -> None:
        index = 0
        it = iter(frames)
        while not stop.is_set() and (not cfg.limit or index < cfg.limit):
            born = time.perf_counter()
            data = next(it, _END)
            if data is _END:
                return
            frame = Frame(index, data, born, {"read": time.perf_counter() - born})
            index += 1
            if cfg.drop_late and queues[0].full():
                dropped[0] += 1
                continue
            if not put(queues[0], frame):
                return

    def stage(name: str, src, dst, work: Callable[[Frame], object]) -> Callable[[], None]:
        def body() -> None:
            while (frame := get(src)) is not _END:
                t0 = time.perf_counter()
                frame.work = work(frame)
                frame.times[name] = time.perf_counter() - t0
                if dst is None:
                    frame.data = frame.work = None  # written: keep only its times
                    frame.times["latency"] = time.perf_counter() - frame.born
                    done.append(frame)
                elif not put(dst, frame):
                    return
        return body

    # the reader may wait on its input for good (a stalled pipe or camera): a daemon
    reader = threading.Thread(target=guarded(read, queues[0], drain=True), name="read",
                              daemon=True)
    workers = [
        threading.Thread(target=guarded(stage("prepare", queues[0], queues[1],
                                              lambda f: upscaler.prepare(f.data)),
                                        queues[1]), name="prepare"),
        threading.Thread(target=guarded(stage("finish", queues[2], None,
                                              lambda f: writer.write(
                                                  upscaler.finish(f.work))),
                                        None), name="finish"),
    ]
    reader.start()
    for w in workers:
        w.start()
    # the module runs on this thread: TVM's own pool is started from it
    try:
        guarded(stage("module", queues[1], queues[2], lambda f: upscaler.module(f.work)),
                queues[2])()
    finally:
        for w in workers:
            w.join()
        stop.set()
        reader.join(timeout=1.0)
    if failure:
        exc = failure[0]
        if isinstance(exc, (StreamError, ImageError, ArtifactError)):
            raise StreamError(f"{exc}; {writer.count} frames written") from None
        raise exc
    return report(done, time.perf_counter() - start, dropped[0])


def _renice(step: int) -> None:
    """Raise the calling thread's niceness by ``step`` (Linux threads are tasks; a no-op
    elsewhere or where refused)."""
    if step <= 0 or threading.current_thread() is threading.main_thread():
        return
    try:
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, os.getpriority(os.PRIO_PROCESS, tid) + step)
    except (AttributeError, OSError):
        pass


def _pct(values: list[float], q: float) -> float:
    return round(float(np.percentile(values, q)) * 1e3, 2) if values else 0.0


def report(frames: list[Frame], wall: float, dropped: int = 0) -> dict:
    """Frames per second, and p50/p90 milliseconds of each stage and of each frame's
    whole way (its reading started to its writing done)."""
    out = {"frames": len(frames), "dropped": dropped, "seconds": round(wall, 3),
           "fps": round(len(frames) / wall, 2) if wall > 0 else 0.0}
    def entry(name: str) -> dict:
        values = [f.times[name] for f in frames if name in f.times]
        return {"p50_ms": _pct(values, 50), "p90_ms": _pct(values, 90)}

    return {**out, "stages": {name: entry(name) for name in STAGES},
            "latency": entry("latency")}


def format_report(rep: dict) -> str:
    """One line per stage for stderr."""
    lines = [f"{rep['frames']} frames in {rep['seconds']:.2f} s: {rep['fps']:.2f} fps"
             + (f", {rep['dropped']} dropped (late)" if rep["dropped"] else "")
             + (f"; the module alone {rep['module_fps']:.2f} fps (stream at "
                f"{rep['ratio']:.0%} of it)" if "module_fps" in rep else "")
             + ("; colour work in the module's frame function"
                if rep.get("frame_function") else "")]
    for name, e in rep["stages"].items():
        lines.append(f"  {name:<8} p50 {e['p50_ms']:8.2f} ms  p90 {e['p90_ms']:8.2f} ms")
    e = rep["latency"]
    lines.append(f"  {'frame':<8} p50 {e['p50_ms']:8.2f} ms  p90 {e['p90_ms']:8.2f} ms "
                 "(read to written)")
    return "\n".join(lines)


class NullWriter(Writer):
    """Counts frames and discards them (benchmarks)."""

    def __init__(self):  # noqa: D107 - nothing to open
        self.count = 0

    def write(self, result) -> None:
        self.count += 1


def synthetic_frames(n: int, width: int, height: int, pix_fmt: str) -> Iterator[object]:
    """``n`` frames of noise, decoded as a raw stream would be (a benchmark's input)."""
    rng = np.random.default_rng(0)
    raw = rng.integers(0, 256, frame_bytes(width, height, pix_fmt), dtype=np.uint8).tobytes()

    class _Repeat:
        left = n

        def read(self, size: int) -> bytes:
            if self.left == 0:
                return b""
            self.left -= 1
            return raw[:size]

    return raw_frames(_Repeat(), width, height, pix_fmt)


def stream_bench(engine, width: int, height: int, pix_fmt: str = "yuv420p",
                 frames: int = 30, side_nice: int = StreamConfig.side_nice) -> dict:
    """The stream's frames per second against the module's own: the model alone on one
    frame's planes ``frames`` times, then ``frames`` synthetic frames through the whole
    pipeline (output discarded). ``ratio`` is stream fps / module fps (1.0: the other
    stages are hidden); ``frame_function`` says whether the frames went through the
    module's ``frame`` function (colour work in the module) or numpy."""
    up = Upscaler(engine, pix_fmt)
    data = next(synthetic_frames(1, width, height, pix_fmt))
    bare = Upscaler(engine, pix_fmt)
    bare.frame_fn = None  # the model on the planes: what the stream is measured against
    work = bare.prepare(data)
    bare.module(work)  # warm-up: TVM's pool, caches
    t0 = time.perf_counter()
    for _ in range(frames):
        bare.module(work)
    module_fps = frames / (time.perf_counter() - t0)
    rep = run_stream(synthetic_frames(frames, width, height, pix_fmt), up, NullWriter(),
                     StreamConfig(side_nice=side_nice))
    return {**rep, "module_fps": round(module_fps, 2), "ratio": round(rep["fps"] / module_fps, 3),
            "size": f"{width}x{height}", "pix_fmt": pix_fmt, "side_nice": side_nice,
            "frame_function": up.whole(data)}


def register() -> None:
    """Register ``edge_sr.stream_bench(library, manifest_json, width, height, pix_fmt,
    frames, side_nice) -> json`` (library: an upload): ``stream_bench`` on the device."""
    import tvm
    from tvm.runtime.vm import VirtualMachine

    from .engine import Engine
    from .threads import AdaptivePool, configure_pool

    def bench(library: str, manifest_json: str, width: int, height: int, pix_fmt: str,
              frames: int, side_nice: int) -> str:
        path = tvm.get_global_func("tvm.rpc.server.workpath")(library)
        configure_pool()
        engine = Engine(VirtualMachine(tvm.runtime.load_module(path), tvm.cpu()), tvm.cpu(),
                        json.loads(manifest_json), AdaptivePool())
        try:
            return json.dumps(stream_bench(engine, int(width), int(height), pix_fmt,
                                           int(frames), int(side_nice)))
        except StreamError as exc:
            return json.dumps({"error": str(exc)})

    tvm.register_global_func("edge_sr.stream_bench", bench, override=True)


def open_frames(source: str, size: str | None, pix_fmt: str) -> Iterator[object]:
    """The frames of ``-`` (raw stdin), a raw video file, a folder of images or a camera."""
    if source.startswith("/dev/video"):
        if pix_fmt != "rgb24":
            raise StreamError("a camera gives rgb24 frames: use --pix-fmt rgb24")
        return camera_frames(source)
    path = Path(source)
    if source != "-" and path.is_dir():
        if pix_fmt != "rgb24":
            raise StreamError("a folder of images is rgb24: use --pix-fmt rgb24")
        return folder_frames(path)
    if size is None:
        raise StreamError("raw video needs --size WIDTHxHEIGHT")
    width, height = parse_size(size)
    if source == "-":
        return raw_frames(sys.stdin.buffer, width, height, pix_fmt)
    if not path.is_file():
        raise StreamError(f"{source}: no such file or folder")
    return raw_frames(path.open("rb"), width, height, pix_fmt)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m runtime.stream", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--artifact", required=True, help="artifact folder")
    parser.add_argument("--input", default="-",
                        help="- (raw video on stdin), a raw video file, a folder of images, "
                        "or /dev/videoN (default: -)")
    parser.add_argument("--output", default="-",
                        help="- (raw video on stdout) or a folder (default: -)")
    parser.add_argument("--size", help="raw input frame size, WIDTHxHEIGHT")
    parser.add_argument("--pix-fmt", choices=PIX_FMTS, default="rgb24")
    parser.add_argument("--frames", type=int, default=0, help="stop after N frames (0: all)")
    parser.add_argument("--queue", type=int, default=2, help="frames between two stages")
    parser.add_argument("--drop-late", action="store_true",
                        help="skip frames that arrive while the pipeline is full (counted)")
    parser.add_argument("--bench", type=int, default=0, metavar="N",
                        help="no input or output: N frames of noise at --size, timed against "
                        "the module alone")
    parser.add_argument("--side-nice", type=int, default=StreamConfig.side_nice,
                        help="niceness added to the threads beside the module's "
                        "(default %(default)s; 0: none)")
    parser.add_argument("--stats", help="write the report as JSON to this file")
    parser.add_argument("--quiet", action="store_true", help="no report on stderr")
    args = parser.parse_args(argv)
    from .engine import load_local

    try:
        if args.bench:
            if args.size is None:
                raise StreamError("--bench needs --size WIDTHxHEIGHT")
            rep = stream_bench(load_local(args.artifact), *parse_size(args.size), args.pix_fmt,
                               args.bench, args.side_nice)
        else:
            frames = open_frames(args.input, args.size, args.pix_fmt)
            upscaler = Upscaler(load_local(args.artifact), args.pix_fmt)
            writer = Writer(args.output, args.pix_fmt)
            rep = run_stream(frames, upscaler, writer,
                             StreamConfig(args.queue, args.drop_late, args.frames,
                                          args.side_nice))
    except (StreamError, ImageError, ArtifactError) as exc:
        print(f"runtime.stream: error: {exc}", file=sys.stderr)
        return 2
    if args.stats:
        Path(args.stats).write_text(json.dumps(rep, indent=1) + "\n")
    if not args.quiet:
        print(format_report(rep), file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
