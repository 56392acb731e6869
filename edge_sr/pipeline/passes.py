"""Named Relax passes and ``PIPELINE``, the one declared order they run in; each step
can dump its IR.

Names keep the pipeline readable in logs and ``--dump-ir`` folders, and let graph
rewrites (sub-pixel deconvolution, quantization) slot in as one more entry.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tvm
from tvm import relax

from .vnni import int8_form, vnni_conv


def _dlight_gpu() -> tvm.transform.Pass:
    # Unscheduled TIR has no thread bindings and fails on a GPU; dlight's rules give
    # every kernel a valid default schedule (MetaSchedule can replace it later).
    from tvm.s_tir import dlight

    return dlight.ApplyDefaultSchedule(dlight.gpu.Matmul(), dlight.gpu.GEMV(),
                                       dlight.gpu.Reduction(), dlight.gpu.GeneralReduction(),
                                       dlight.gpu.Fallback())


def _dlight_gpu_spatial() -> tvm.transform.Pass:
    # int8 kernels: dlight's (General)Reduction rules give the fused int8 conv epilogues
    # (int32 accumulate, requantize, clip) a cross-thread reduction that fails to lower
    # ("reduction-related loops ... not the deepest"); Fallback binds the output pixels
    # to threads and keeps each reduction in one thread, which always lowers.
    from tvm.s_tir import dlight

    return dlight.ApplyDefaultSchedule(dlight.gpu.Matmul(), dlight.gpu.GEMV(),
                                       dlight.gpu.Fallback())


def _layout_nhwc() -> tvm.transform.Pass:
    # conv2d only: conv2d_transpose stays NCHW (TVM 0.27 computes it wrongly in NHWC).
    return relax.transform.ConvertLayout({"relax.nn.conv2d": ["NHWC", "OHWI"]})


def _u8(bb: relax.BlockBuilder, y: relax.Expr) -> relax.Var:
    """[0, 1] float -> uint8 with the evaluation convention (x255, round half up, clip)."""
    f32 = lambda v: relax.const(np.float32(v))  # noqa: E731
    t = bb.emit(relax.op.floor(relax.op.add(relax.op.multiply(y, f32(255.0)), f32(0.5))))
    t = bb.emit(relax.op.minimum(relax.op.maximum(t, f32(0.0)), f32(255.0)))
    return bb.emit(relax.op.astype(t, "uint8"))


@tvm.transform.module_pass(opt_level=0, name="Uint8IO")
def uint8_io(mod: tvm.IRModule, _ctx) -> tvm.IRModule:
    """``main(x: float32) -> float32`` on [0, 1] becomes ``main(x: uint8) -> uint8`` on
    [0, 255]: the image's own pixels in and out, no float conversion on the device.

    The old body is kept as it is (its input is ``x / 255``, its output rounded): an
    int8 module's input quantization (scale 1/255, zero point 0) then takes the uint8
    pixels back exactly, and its output equals the float-I/O module's rounded.
    """
    main = mod["main"]
    if len(main.params) != 1:
        raise ValueError("uint8_io needs a one-input main")
    (x,) = main.params
    if x.ty.dtype != "float32":
        raise ValueError(f"uint8_io: main already takes {x.ty.dtype}")
    bb = relax.BlockBuilder()
    inner = bb.add_func(main.without_attr("global_symbol"), "main_float32")
    xu = relax.Var("x", relax.TensorType(x.ty.shape, "uint8"))
    with bb.function("main", [xu], attrs=dict(main.attrs) if main.attrs else None):
        xf = bb.emit(relax.op.multiply(relax.op.astype(xu, "float32"),
                                       relax.const(np.float32(1.0 / 255.0))))
        y = bb.emit(relax.Call(inner, [xf]))
        bb.emit_func_output(_u8(bb, y))
    for gv, func in mod.functions_items():
        if gv.name_hint != "main":
            bb.add_func(func, gv.name_hint)
    # One function and one dataflow block again, so that FuseOps can merge the casts
    # into the first and last kernels.
    seq = tvm.transform.Sequential([relax.transform.InlinePrivateFunctions(),
                                    relax.transform.ToNonDataflow(),
                                    relax.transform.ConvertToDataflow()])
    return seq(bb.get())


def _conv_chain() -> tvm.transform.Pass:
    from .conv_chain import conv_chain

    return conv_chain


def _winograd_conv() -> tvm.transform.Pass:
    from .winograd import winograd_conv

    return winograd_conv()


def _dot4_conv() -> tvm.transform.Pass:
    from .sdot import dot4_conv

    return dot4_conv


# uint8_io is not a pass-list entry: it changes the module's signature, which the
# manifest records from BuildConfig.io; the build applies it to the imported module.
PASSES: dict[str, Callable[[], tvm.transform.Pass]] = {
    "layout_nhwc": _layout_nhwc,
    "dot4_conv": _dot4_conv,
    "vnni_conv": vnni_conv,
    "conv_chain": _conv_chain,
    "winograd_conv": _winograd_conv,
    "fold_constant": relax.transform.FoldConstant,
    "legalize": relax.transform.LegalizeOps,
    "annotate_op_pattern": relax.transform.AnnotateTIROpPattern,
    "fuse_ops": relax.transform.FuseOps,
    "fuse_tir": relax.transform.FuseTIR,
    "dead_code_elimination": relax.transform.DeadCodeElimination,
    "dlight_gpu": _dlight_gpu,
    "dlight_gpu_spatial": _dlight_gpu_spatial,
}

LAYOUTS = ("NCHW", "NHWC")


@dataclass(frozen=True)
class PassTarget:
    """What decides which passes a build runs: the target's kind and features, the conv
    layout and the dtype."""

    cpu: bool
    layout: str
    dtype: str
    x86_int8: bool = False  # x86 with AVX2: packed int8 convs (vpdpbusd or vpmaddwd)
    dotprod: bool = False  # Arm dot product (sdot)
    arm: bool = False  # an aarch64 CPU

    @classmethod
    def of(cls, target: tvm.target.Target, layout: str, dtype: str) -> PassTarget:
        """The pass-relevant facts of a TVM target."""
        if layout not in LAYOUTS:
            raise ValueError(f"unknown layout {layout!r}: choose NCHW or NHWC")
        from .templates import is_aarch64

        cpu = "gpu" not in target.keys
        return cls(cpu, layout, dtype, x86_int8=cpu and int8_form(target) is not None,
                   dotprod=cpu and bool(target.attrs.get("feature.has_dotprod", False)),
                   arm=cpu and is_aarch64(target))


def _always(_: PassTarget) -> bool:
    return True


# The pass list of every build, declared once in order: each pass with the builds it runs
# in. NHWC converts first, so that constant folding bakes the transposed weights. The conv
# rewrites come after the first fold (they need constant weights and biases; dot4 packs
# the folded OHWI ones): int8 NHWC on a dot-product CPU packs conv weights for sdot,
# int8 NCHW on an x86 CPU for vpdpbusd (VNNI) or vpmaddwd (AVX2), float32 on a CPU fuses cheap
# convs into the 1x1 convs that read them, and float32 NCHW on an Arm CPU computes 3x3
# convs by Winograd's F(4x4, 3x3). GPU builds end with a default schedule.
PIPELINE: tuple[tuple[str, Callable[[PassTarget], bool]], ...] = (
    ("layout_nhwc", lambda t: t.layout == "NHWC"),
    ("fold_constant", _always),
    ("dot4_conv", lambda t: t.layout == "NHWC" and t.dtype == "int8" and t.dotprod),
    ("vnni_conv", lambda t: t.layout == "NCHW" and t.dtype == "int8" and t.x86_int8),
    ("conv_chain", lambda t: t.cpu and t.dtype == "float32"),
    ("winograd_conv", lambda t: t.arm and t.layout == "NCHW" and t.dtype == "float32"),
    ("legalize", _always),
    ("annotate_op_pattern", _always),
    ("fold_constant", _always),
    ("fuse_ops", _always),
    ("fuse_tir", _always),
    ("dead_code_elimination", _always),
    ("dlight_gpu", lambda t: not t.cpu and t.dtype != "int8"),
    ("dlight_gpu_spatial", lambda t: not t.cpu and t.dtype == "int8"),
)
# What every build runs: fold the weights, lower ops to TIR, fuse conv+bias+activation
# chains into one kernel.
DEFAULT_PASSES: list[str] = [name for name, when in PIPELINE if when is _always]


def passes_for(target: tvm.target.Target, layout: str = "NCHW",
               dtype: str = "float32") -> list[str]:
    """The pass list of a build for ``target``, conv layout (``NCHW`` or ``NHWC``) and
    dtype: the ``PIPELINE`` entries whose condition holds, in its order."""
    facts = PassTarget.of(target, layout, dtype)
    return [name for name, when in PIPELINE if when(facts)]


def run_passes(mod: tvm.IRModule, target: tvm.target.Target, names: list[str],
               dump_dir: str | Path | None = None) -> tvm.IRModule:
    """Apply named passes in order under ``target``; dump ``NN_name.py`` after each.

    Args:
        mod: The Relax module.
        target: Target in scope while passes run (legalization is target-aware).
        names: Keys of ``PASSES``.
        dump_dir: Folder for the IR dumps (``00_import.py`` is the input).

    Returns:
        The transformed module.
    """
    unknown = [n for n in names if n not in PASSES]
    if unknown:
        raise KeyError(f"unknown passes {unknown}; known: {sorted(PASSES)}")
    dump = Path(dump_dir) if dump_dir else None
    if dump:
        dump.mkdir(parents=True, exist_ok=True)
        (dump / "00_import.py").write_text(mod.script())
    with target:
        for i, name in enumerate(names, 1):
            mod = PASSES[name]()(mod)
            if dump:
                (dump / f"{i:02d}_{name}.py").write_text(mod.script())
    return mod
