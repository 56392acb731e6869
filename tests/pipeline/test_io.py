"""uint8 image I/O (``--io uint8``): the module takes and returns the image's pixels."""

from __future__ import annotations

import numpy as np
import pytest

from edge_sr.harness.profile import profile_artifact
from edge_sr.models import MODELS, load_model
from edge_sr.pipeline import BuildConfig, BuildError, build
from edge_sr.pipeline.builder import export_program, import_relax
from edge_sr.pipeline.passes import uint8_io
from runtime.artifact import read_manifest
from runtime.engine import load_local


def _build(tmp_path, dtype: str, io: str, model: str = "fsrcnn_tiny_x2"):
    return build(BuildConfig(model=model, target="host", size=(24, 24), dtype=dtype, io=io,
                             out=str(tmp_path), calib_images=16, max_psnr_drop=10.0,
                             reference_dataset="set5" if dtype == "int8" else ""))


def test_uint8_io_pass_changes_only_the_signature():
    spec = MODELS["fsrcnn_tiny_x2"]
    raw = import_relax(export_program(load_model("fsrcnn_tiny_x2"), spec, (16, 16), False))
    mod = uint8_io(raw)
    main = mod["main"]
    assert main.params[0].ty.dtype == "uint8" and main.ret_ty.dtype == "uint8"
    assert [gv.name_hint for gv, _ in mod.functions_items()] == ["main"]  # inlined
    with pytest.raises(ValueError, match="already takes uint8"):
        uint8_io(mod)


@pytest.mark.slow
@pytest.mark.parametrize("dtype", ["float32", "int8"])
def test_uint8_module_returns_the_float_modules_output_rounded(tmp_path, dtype):
    art = _build(tmp_path, dtype, "uint8")
    u8 = load_local(art)
    f32 = load_local(_build(tmp_path, dtype, "float32"))
    assert u8.manifest["input"]["dtype"] == "uint8" and u8.io == "uint8"
    assert u8.manifest["output"]["dtype"] == "uint8" and f32.io == "float32"
    x = np.random.default_rng(0).integers(0, 256, (1, 40, 52), dtype=np.uint8)
    out = u8.upscale(x)  # uint8 in, uint8 out, tiled
    assert out.dtype == np.uint8 and out.shape == (1, 80, 104)
    ref = np.floor(np.clip(f32.upscale(x.astype(np.float32) / 255), 0, 1) * 255 + 0.5)
    diff = np.abs(out.astype(int) - ref.astype(int))
    # int8: the input quantization takes the pixels back exactly, the same integer
    # kernels follow; float32: x * (1/255) vs x / 255 may differ in the last bit
    assert diff.max() == 0 if dtype == "int8" else diff.max() <= 1 and diff.mean() < 1e-3
    back = u8.upscale(x.astype(np.float32) / 255)  # float planes: converted both ways
    assert back.dtype == np.float32 and np.array_equal(np.round(back * 255), out)
    # the profiler and the device bench feed a module its own input dtype
    assert any(r["macs"] for r in profile_artifact(art, repeat=1)["rows"])


@pytest.mark.slow
def test_int8_uint8_build_keeps_its_quality_and_name(tmp_path):
    art = _build(tmp_path, "int8", "uint8", "fsrcnn_s_x2")
    m = read_manifest(art)
    assert art.name == "fsrcnn_s_x2-host-int8-uint8io"
    # the guard ran through the uint8 module: Set5 in pixels, the same arithmetic
    assert m["quality"]["passed"] and m["quality"]["drop"] < 0.2


def test_unknown_io_is_a_one_line_error(tmp_path):
    with pytest.raises(BuildError, match="unknown --io int4"):
        build(BuildConfig(model="fsrcnn_tiny_x2", target="host", io="int4", out=str(tmp_path)))
    assert not any(tmp_path.iterdir())
