"""``--frame``: the module's ``frame`` function equals the stream's numpy path (the colour
work compiled into the module), and ``runtime.stream`` sends whole frames through it."""

from __future__ import annotations

import io

import numpy as np
import pytest

from edge_sr.pipeline import BuildConfig, BuildError, build
from runtime.engine import load_local
from runtime.stream import RawFrame, Upscaler, Writer, raw_frames, run_stream, stream_bench

H, W = 40, 48  # LR frame: height, width


def _artifact(tmp_path_factory, random_weights, model, pix_fmt, **kw):
    out = tmp_path_factory.mktemp("frame")
    return build(BuildConfig(model=model, target="host", size=(H, W), frame=pix_fmt,
                             out=str(out), weights=str(random_weights(model)),
                             reference_dataset="", **kw))


def _raw(pix_fmt: str, seed: int = 0) -> np.ndarray:
    n = W * H * 3 if pix_fmt == "rgb24" else W * H * 3 // 2
    return np.random.default_rng(seed).integers(0, 256, n, dtype=np.uint8)


def _numpy_path(engine, raw: np.ndarray, pix_fmt: str) -> np.ndarray:
    """The stream's own conversions around the model (no frame function)."""
    up = Upscaler(engine, pix_fmt)
    up.frame_fn = None
    out = io.BytesIO()
    run_stream(raw_frames(io.BytesIO(raw.tobytes()), W, H, pix_fmt), up,
               Writer("-", pix_fmt, out))
    return np.frombuffer(out.getvalue(), np.uint8)


# (model, pix_fmt, build options): x2/x3/x4, Y and RGB models, uint8 I/O, int8
CASES = [
    ("fsrcnn_tiny_x2", "yuv420p", {}),
    ("fsrcnn_tiny_x2", "rgb24", {}),
    ("fsrcnn_tiny_x2", "rgb24", {"io": "uint8"}),
    ("fsrcnn_tiny_x2", "yuv420p", {"dtype": "int8", "calib_images": 4}),
    ("fsrcnn_x3", "rgb24", {}),
    ("fsrcnn_x4", "yuv420p", {}),
    ("srresnet_b2_x4", "rgb24", {}),
]


@pytest.mark.parametrize("model,pix_fmt,kw", CASES,
                         ids=[f"{m}-{f}-{'-'.join(map(str, k.values())) or 'float32'}"
                              for m, f, k in CASES])
def test_frame_equals_the_numpy_path(tmp_path_factory, random_weights, model, pix_fmt, kw):
    engine = load_local(_artifact(tmp_path_factory, random_weights, model, pix_fmt, **kw))
    fn = engine.frame_format
    assert (fn["pix_fmt"], fn["width"], fn["height"]) == (pix_fmt, W, H)
    for seed in range(2):
        raw = _raw(pix_fmt, seed)
        got, want = engine.frame(raw), _numpy_path(engine, raw, pix_fmt)
        assert got.dtype == np.uint8 and got.shape == want.shape == (fn["bytes_out"],)
        diff = np.abs(got.astype(int) - want.astype(int))
        if pix_fmt == "yuv420p" and engine.manifest["scale"] == 2:
            # chroma in float32 is exact at x2 (dyadic weights): bit for bit
            assert diff.max() == 0
        else:  # float32 sums in another association: a rare level
            assert diff.max() <= 1 and (diff > 0).mean() < 1e-3


def test_the_stream_sends_whole_frames_through_the_frame_function(tmp_path_factory,
                                                                  random_weights):
    engine = load_local(_artifact(tmp_path_factory, random_weights, "fsrcnn_tiny_x2",
                                  "rgb24"))
    up = Upscaler(engine, "rgb24")
    raws = [_raw("rgb24", seed) for seed in range(3)]
    assert up.whole(RawFrame(raws[0], W, H, "rgb24"))
    assert not up.whole(RawFrame(raws[0][:W * (H - 2) * 3], W, H - 2, "rgb24"))  # other size
    out = io.BytesIO()
    rep = run_stream(raw_frames(io.BytesIO(b"".join(r.tobytes() for r in raws)), W, H,
                                "rgb24"), up, Writer("-", "rgb24", out))
    assert rep["frames"] == 3
    want = b"".join(engine.frame(r).tobytes() for r in raws)
    assert out.getvalue() == want
    bench = stream_bench(engine, W, H, "rgb24", frames=2, side_nice=0)
    assert bench["frame_function"] and bench["frames"] == 2
    assert not stream_bench(engine, W, H - 2, "rgb24", frames=2, side_nice=0)["frame_function"]


@pytest.mark.parametrize("model,pix_fmt,kw,message", [
    ("srresnet_b2_x4", "yuv420p", {}, "Y-channel model"),
    ("fsrcnn_tiny_x2", "yuv420p", {"size": (41, 48)}, "even"),
    ("fsrcnn_tiny_x2", "rgb24", {"dynamic": True}, "static --size"),
    ("fsrcnn_tiny_x2", "nv12", {}, "unknown --frame"),
])
def test_frames_a_build_cannot_take_are_one_line(tmp_path, model, pix_fmt, kw, message):
    cfg = BuildConfig(model=model, target="host", size=kw.pop("size", (H, W)), frame=pix_fmt,
                      out=str(tmp_path), reference_dataset="", **kw)
    with pytest.raises(BuildError, match=message):
        build(cfg)
    assert not any(tmp_path.iterdir())  # nothing written


@pytest.mark.device
@pytest.mark.parametrize("pix_fmt", ["yuv420p", "rgb24"])
def test_frames_on_the_emulated_pi(tmp_path, random_weights, pix_fmt):
    from edge_sr.harness.stream import StreamBenchConfig, bench_stream

    art = build(BuildConfig(model="fsrcnn_tiny_x2", target="arm", size=(H, W), frame=pix_fmt,
                            out=str(tmp_path), weights=str(random_weights("fsrcnn_tiny_x2")),
                            reference_dataset=""))
    rep = bench_stream(StreamBenchConfig(art, device="127.0.0.1:9090", size=(W, H),
                                         pix_fmt=pix_fmt, frames=3, timeout=300))
    assert rep["frame_function"] and rep["frames"] == 3 and rep["dropped"] == 0
