"""``build``: a registered model -> a deployable artifact folder for one target.

A build runs ``STEPS``, the one declared sequence of its steps, each with the condition on
the build (dtype, I/O, target kind, database) that selects it; the manifest records the
steps that ran (``steps``) and the Relax passes among them (``passes``, ``passes.PIPELINE``).
The steps up to ``relax_passes`` are ``lower`` (what ``tune`` tunes); the rest write the
artifact folder, atomically: a failed build leaves no folder that looks valid.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import tvm
from tvm import relax
from tvm.relax.frontend.torch import from_exported_program

import targets as target_registry
from runtime.artifact import FORMAT_VERSION, MANIFEST, atomic_dir, sha256_file, write_json_atomic
from runtime.stream import frame_bytes

from ..models import ModelSpec, get_spec, load_model
from ..models.analysis import receptive_radius
from ..models.torch_passes import DEFAULT_TORCH_PASSES, run_torch_passes
from ..quant import Quantized
from ..quant.lower import lower_to_relax
from .config import DEFAULT_MODEL, DEFAULT_SIZE, IO_DTYPES, BuildConfig, BuildError
from .cuda import check_cuda_kernels
from .database import apply_tuning, stale_note, tune_command, tuning_dir
from .default_schedule import default_schedule
from .frame_io import add_frame, check_frame
from .passes import LAYOUTS, passes_for, run_passes, uint8_io
from .provenance import foreign_note, provenance, record_cpus, target_cpu

__all__ = ["DEFAULT_MODEL", "DEFAULT_SIZE", "STEPS", "BuildConfig", "BuildError", "BuildState",
           "build", "lower", "steps_for"]


def export_program(model: torch.nn.Module, spec: ModelSpec, size: tuple[int, int],
                   dynamic: bool) -> torch.export.ExportedProgram:
    """``torch.export`` the deploy-form model at a static size, or dynamic H/W <= size."""
    x = torch.rand(1, spec.channels, *size)
    shapes = None
    if dynamic:
        h = torch.export.Dim("h", min=8, max=size[0])
        w = torch.export.Dim("w", min=8, max=size[1])
        shapes = ({2: h, 3: w},)
    with torch.no_grad():
        return torch.export.export(model, (x,), dynamic_shapes=shapes)


def import_relax(program: torch.export.ExportedProgram) -> tvm.IRModule:
    """Import an exported program into Relax with the weights bound as constants."""
    return from_exported_program(program, keep_params_as_input=False,
                                 unwrap_unit_return_tuple=True)


def compile_module(mod: tvm.IRModule, target: tvm.target.Target) -> relax.Executable:
    """Compile a (lowered, fused) Relax module into a VM executable."""
    return relax.build(mod, target)


def export_library(ex: relax.Executable, path: Path,
                   spec: target_registry.TargetSpec) -> None:
    """Link the executable into a shared library for the target's machine."""
    from tvm.support import cc

    fcompile = cc.cross_compiler(spec.cross_compiler) if spec.cross_compiler else None
    ex.export_library(str(path), fcompile=fcompile)


def reference_quality(model: torch.nn.Module, spec: ModelSpec, host_lib: Path,
                      manifest: dict, dataset: str) -> dict:
    """Set5 (or other) PSNR on the host: PyTorch fp32 and the host TVM build, vs bicubic."""
    from tvm.runtime.vm import VirtualMachine

    from runtime.engine import Engine
    from runtime.threads import configure_pool

    from ..evaluate import load_pairs, output_to_image, run_torch, score_images

    pairs = load_pairs(dataset, spec.scale, spec.colour)
    # TVM never grows a thread's pool past its first size: create it as load_local does,
    # so that a module run later in this thread can follow the load
    configure_pool()
    dev = tvm.cpu()
    engine = Engine(VirtualMachine(tvm.runtime.load_module(str(host_lib)), dev), dev, manifest)
    from ..data import to_model_input

    tvm_out = [output_to_image(engine.upscale(to_model_input(p.lr, spec.colour)), spec.colour)
               for p in pairs]
    torch_out = [run_torch(model, p.lr, spec.colour) for p in pairs]
    tvm_score, torch_score = score_images(pairs, tvm_out, spec.scale), score_images(
        pairs, torch_out, spec.scale)
    return {"dataset": dataset, "psnr_tvm_host": tvm_score["mean"]["psnr"],
            "ssim_tvm_host": tvm_score["mean"]["ssim"], "psnr_torch": torch_score["mean"]["psnr"],
            "psnr_bicubic": tvm_score["bicubic"]["psnr"]}


def quantize_for_build(model: torch.nn.Module, spec: ModelSpec, cfg: BuildConfig) -> Quantized:
    """Calibrate and plan the int8 model; one-line BuildError for unsupported graphs."""
    from ..quant import QuantConfig, QuantError, quantize

    try:
        calib = {"datasets": (cfg.calib,)} if cfg.calib else {}
        return quantize(model, spec, QuantConfig(observer=cfg.observer,
                                                 calib_images=cfg.calib_images, **calib,
                                                 max_drop=cfg.max_psnr_drop,
                                                 fallback=cfg.fallback))
    except QuantError as exc:
        raise BuildError(str(exc)) from None


def original_psnr(model: torch.nn.Module, spec: ModelSpec, dataset: str) -> float | None:
    """For a QAT checkpoint, PyTorch fp32 PSNR of the committed float model it was
    fine-tuned from (what the user had before QAT); None otherwise."""
    if getattr(model, "qat_acts", None) is None or not spec.weights_path.exists():
        return None
    from ..evaluate import evaluate_module, load_pairs

    pairs = load_pairs(dataset, spec.scale, spec.colour)
    return evaluate_module(load_model(spec.name), spec, pairs)["mean"]["psnr"]


def int8_guard(manifest: dict, cfg: BuildConfig, report: dict,
               psnr_original: float | None = None) -> dict:
    """The PSNR guard: Set5 int8 (host TVM) vs float32 (PyTorch); fail past the budget.

    The float32 side is the checkpoint being built; for a QAT checkpoint the committed
    float model's PSNR and the drop from it are recorded beside (QAT also moves the
    float weights, so the honest cost of int8 is against the model before QAT).
    """
    ref = manifest["reference"]
    quality = {"dataset": ref["dataset"], "psnr_float32": ref["psnr_torch"],
               "psnr_int8": ref["psnr_tvm_host"], "ssim_int8": ref["ssim_tvm_host"],
               "drop": ref["psnr_torch"] - ref["psnr_tvm_host"],
               "max_drop": cfg.max_psnr_drop, "float_layers": report["float_layers"],
               "float_ops": report.get("float_ops", []),
               "int16_activations": report.get("int16_activations", []),
               "goal": report.get("goal_db")}
    if psnr_original is not None:
        quality.update(psnr_float32_original=psnr_original,
                       drop_vs_original=psnr_original - ref["psnr_tvm_host"])
    worst = max(quality["drop"], quality.get("drop_vs_original", quality["drop"]))
    quality["passed"] = worst <= cfg.max_psnr_drop
    if not quality["passed"] and cfg.enforce_guard:
        culprits = ", ".join(f"{k} ({v:+.3f} dB)" for k, v in
                             list(report["sensitivity_db"].items())[:3]) or "none measured"
        raise BuildError(f"int8 {cfg.model} loses {worst:.3f} dB on "
                         f"{ref['dataset']} (> --max-psnr-drop {cfg.max_psnr_drop}); most "
                         f"sensitive layers: {culprits}; 16-bit activations: "
                         f"{report.get('int16_activations') or 'none'}; float layers: "
                         f"{report['float_layers'] or 'none'} (fallback stops at half the "
                         f"layers); fine-tune with `edge-sr train --qat`, or accept the "
                         f"loss with --max-psnr-drop")
    return quality


# The largest module input: bigger images run through it in tiles, so a bigger module
# only costs memory (a 4096x4096 float32 FSRCNN build holds ~3.7 GB of activations).
MAX_SIDE = 4096


def check_size(size: tuple[int, int]) -> None:
    """Refuse a module input that is not positive or over ``MAX_SIDE`` on a side."""
    if min(size) < 1 or max(size) > MAX_SIDE:
        raise BuildError(f"--size {size[0]}x{size[1]} is outside 1..{MAX_SIDE} per side: "
                         "images larger than the module run through it in tiles, so build "
                         "at a tile size (e.g. 360x640)")


@dataclass
class BuildState:
    """One build as its steps fill it in: the resolved names first (``start``), then each
    step's product. ``lower`` returns it after ``relax_passes`` (what ``tune`` tunes: the
    same module, so tuned workloads match)."""

    cfg: BuildConfig
    spec: ModelSpec
    tspec: target_registry.TargetSpec
    target: tvm.target.Target
    layout: str
    steps: list[str]
    model: torch.nn.Module | None = None
    radius: int = 0
    quant: Quantized | None = None
    raw: tvm.IRModule | None = None  # imported (and I/O-wrapped), before the Relax passes
    passes: list[str] = field(default_factory=list)
    mod: tvm.IRModule | None = None
    tuning: dict = field(default_factory=dict)
    executable: relax.Executable | None = None
    cuda: dict | None = None
    folder: Path | None = None
    manifest: dict = field(default_factory=dict)
    host_lib: Path | None = None

    @property
    def name(self) -> str:
        """The artifact folder's name: ``MODEL-TARGET-DTYPE[-uint8io]`` (an external
        model's file-safe name, ``models.external``)."""
        cfg = self.cfg
        return (f"{self.spec.name}-{self.tspec.name}-{cfg.dtype}"
                + ("-uint8io" if cfg.io == "uint8" else "")
                + (f"-{cfg.frame}" if cfg.frame else ""))


@dataclass(frozen=True)
class BuildFacts:
    """What decides which steps a build runs."""

    dtype: str
    io: str
    frame: bool
    cpu: bool
    on_host: bool
    database: bool
    default_schedule: bool
    reference: bool

    @classmethod
    def of(cls, cfg: BuildConfig, tspec: target_registry.TargetSpec) -> BuildFacts:
        """The step-relevant facts of a build."""
        return cls(dtype=cfg.dtype, io=cfg.io, frame=bool(cfg.frame), cpu=tspec.kind == "llvm",
                   on_host=tspec.name == "host",
                   database=bool(cfg.use_tuning and (cfg.tuning_db
                                                     or tuning_dir(cfg, tspec.name).is_dir())),
                   default_schedule=cfg.default_schedule,
                   reference=bool(cfg.reference_dataset) or cfg.dtype == "int8")


def _load(s: BuildState) -> None:
    s.model = load_model(s.cfg.model, s.cfg.weights)
    try:
        s.radius = receptive_radius(s.spec)
    except ValueError as exc:
        raise BuildError(str(exc)) from None
    if min(s.cfg.size) <= 2 * s.radius:
        raise BuildError(f"--size {s.cfg.size[0]}x{s.cfg.size[1]} is too small for "
                         f"{s.cfg.model}: tiles need more than twice the receptive radius "
                         f"({s.radius} px)")


def _torch_passes(s: BuildState) -> None:
    s.model = run_torch_passes(s.model, DEFAULT_TORCH_PASSES)


def _export(s: BuildState) -> None:
    s.raw = import_relax(export_program(s.model, s.spec, s.cfg.size, s.cfg.dynamic))


def _quantize(s: BuildState) -> None:
    s.quant = quantize_for_build(s.model, s.spec, s.cfg)


def _lower_int8(s: BuildState) -> None:
    s.raw = lower_to_relax(s.quant.gm, s.quant.plan, (1, s.spec.channels, *s.cfg.size),
                           signed=s.tspec.signed_int8)


def _uint8_io(s: BuildState) -> None:
    s.raw = uint8_io(s.raw)


def _frame_io(s: BuildState) -> None:
    try:
        s.raw = add_frame(s.raw, s.cfg.frame, s.spec.scale, s.spec.colour)
    except ValueError as exc:
        raise BuildError(str(exc)) from None


def _relax_passes(s: BuildState) -> None:
    s.passes = s.cfg.passes or passes_for(s.target, s.layout, s.cfg.dtype)
    dump = Path(s.cfg.dump_ir) / s.tspec.name if s.cfg.dump_ir else None
    s.mod = run_passes(s.raw, s.target, s.passes, dump)
    s.tuning = apply_tuning(s.mod, s.target, None)[1]  # until a database says otherwise


def _tuning_database(s: BuildState) -> None:
    cfg, db, mcpu = s.cfg, tuning_dir(s.cfg, s.tspec.name), target_cpu(s.target)
    # This CPU's records only, unless the user named a database that has none for it.
    own_only = s.tspec.kind == "llvm" and (not cfg.tuning_db or record_cpus(db).get(mcpu, 0) > 0)
    s.mod, s.tuning = apply_tuning(s.mod, s.target, db, mcpu if own_only else None,
                                   check_stale=s.tspec.kind == "llvm")
    notes = [foreign_note(db, mcpu, tune_command(cfg, s.tspec), own_only=own_only),
             stale_note(s.tuning.get("stale", []), s.tuning["kernels"],
                        tune_command(cfg, s.tspec, budget="--trials 0"))]
    s.tuning.update(provenance(db), warning="; ".join(n for n in notes if n) or None)


def _default_schedule(s: BuildState) -> None:
    s.mod, s.tuning["default_scheduled"] = default_schedule(s.mod, s.target)


def _compile(s: BuildState) -> None:
    s.executable = compile_module(s.mod, s.target)
    if s.tspec.kind == "cuda":
        s.cuda = check_cuda_kernels(s.executable, s.target)


def _frame_entry(cfg: BuildConfig, scale: int) -> dict | None:
    """The manifest's description of the ``frame`` function (None without one)."""
    if not cfg.frame:
        return None
    h, w = cfg.size
    return {"function": "frame", "pix_fmt": cfg.frame, "width": w, "height": h,
            "bytes_in": frame_bytes(w, h, cfg.frame),
            "bytes_out": frame_bytes(w * scale, h * scale, cfg.frame)}


def _export_library(s: BuildState) -> None:
    cfg, spec, tspec = s.cfg, s.spec, s.tspec
    export_library(s.executable, s.folder / "model.so", tspec)
    s.host_lib = s.folder / "model.so"
    s.manifest = {
        "format": FORMAT_VERSION, "model": cfg.model, "scale": spec.scale,
        "colour": spec.colour, "dtype": cfg.dtype, "receptive_radius": s.radius,
        "input": {"shape": [1, spec.channels, *cfg.size], "dynamic": cfg.dynamic,
                  "layout": "NCHW", "dtype": cfg.io,
                  "range": [0.0, 255.0] if cfg.io == "uint8" else [0.0, 1.0]},
        "output": {"dtype": cfg.io},
        "frame": _frame_entry(cfg, spec.scale),
        "target": {"name": tspec.name, "tvm": json.loads(str(s.target)),
                   "arch": tspec.arch, "kind": tspec.kind},
        "tvm_version": tvm.__version__, "tuning": s.tuning,
        "conv_layout": "NHWC" if "layout_nhwc" in s.passes else "NCHW",
        "int8_storage": (None if s.quant is None else
                         "int8 (uint8 shifted by -128)" if tspec.signed_int8 else "uint8"),
        "torch_passes": DEFAULT_TORCH_PASSES if s.quant is None else ["subpixel_deconv",
                                                                      "quantize_int8"],
        "steps": s.steps,
        "passes": s.passes,
        "library": {"file": "model.so", "sha256": sha256_file(s.folder / "model.so")},
        "build": {"config": {k: v for k, v in asdict(cfg).items() if k != "passes"},
                  "seconds": None, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")},
    }
    if s.cuda is not None:
        s.manifest["cuda"] = s.cuda
    if s.quant is not None:
        s.manifest["quantization"] = s.quant.report


def _host_twin(s: BuildState) -> None:
    """The same module built for this machine, untuned: the reference for device outputs
    (its Relax passes for the host's layout and this build's dtype)."""
    host = target_registry.TARGETS["host"]
    target = target_registry.tvm_target(host)
    mod = run_passes(s.raw, target, passes_for(target, host.layout(s.cfg.dtype), s.cfg.dtype))
    s.host_lib = s.folder / "host.so"
    export_library(compile_module(mod, target), s.host_lib, host)
    s.manifest["host_library"] = {"file": "host.so", "sha256": sha256_file(s.host_lib),
                                  "note": "untuned host twin, the reference for device "
                                          "outputs"}


def _reference_quality(s: BuildState) -> None:
    dataset = s.cfg.reference_dataset or "set5"  # int8 builds always measure quality
    s.manifest["reference"] = reference_quality(s.model, s.spec, s.host_lib, s.manifest,
                                                dataset)


def _int8_guard(s: BuildState) -> None:
    s.manifest["quality"] = int8_guard(s.manifest, s.cfg, s.quant.report, original_psnr(
        s.model, s.spec, s.manifest["reference"]["dataset"]))


Step = tuple[str, Callable[[BuildFacts], bool], Callable[[BuildState], None]]

# Every step of a build, in the order it runs, with the condition that selects it.
STEPS: tuple[Step, ...] = (
    ("load", lambda f: True, _load),
    ("torch_passes", lambda f: f.dtype == "float32", _torch_passes),   # sub-pixel, merged heads
    ("export", lambda f: f.dtype == "float32", _export),               # torch.export -> Relax
    ("quantize_int8", lambda f: f.dtype == "int8", _quantize),         # traces the sub-pixel form
    ("lower_int8", lambda f: f.dtype == "int8", _lower_int8),          # plan -> integer Relax
    ("uint8_io", lambda f: f.io == "uint8", _uint8_io),
    ("frame_io", lambda f: f.frame, _frame_io),                        # + frame(raw video)
    ("relax_passes", lambda f: True, _relax_passes),                   # passes.PIPELINE
    ("tuning_database", lambda f: f.database, _tuning_database),
    ("default_schedule", lambda f: f.cpu and f.default_schedule, _default_schedule),
    ("compile", lambda f: True, _compile),
    ("export_library", lambda f: True, _export_library),               # + the manifest
    ("host_twin", lambda f: not f.on_host, _host_twin),
    ("reference_quality", lambda f: f.reference, _reference_quality),
    ("int8_guard", lambda f: f.dtype == "int8", _int8_guard),
)
_RUN = {name: run for name, _, run in STEPS}
LOWERED = "relax_passes"  # the last step of ``lower``


def steps_for(cfg: BuildConfig, tspec: target_registry.TargetSpec) -> list[str]:
    """The steps a build runs: the ``STEPS`` whose condition holds, in their order."""
    facts = BuildFacts.of(cfg, tspec)
    return [name for name, when, _ in STEPS if when(facts)]


def start(cfg: BuildConfig) -> BuildState:
    """Resolve and check a build's names and sizes (one-line errors, nothing loaded)."""
    spec = get_spec(cfg.model)
    tspec = target_registry.get_target(cfg.target)
    target_registry.check_toolchain(tspec)
    if cfg.dtype not in ("float32", "int8"):
        raise BuildError(f"unknown dtype {cfg.dtype}: choose float32 or int8")
    if cfg.io not in IO_DTYPES:
        raise BuildError(f"unknown --io {cfg.io}: choose {' or '.join(IO_DTYPES)}")
    if cfg.dtype == "int8" and cfg.dynamic:
        raise BuildError("int8 builds need a static --size (the plan is per shape)")
    check_size(cfg.size)
    _check_frame(cfg, spec)
    layout = cfg.layout or tspec.layout(cfg.dtype)
    if layout not in LAYOUTS:
        raise BuildError(f"unknown --layout {layout}: choose NCHW or NHWC")
    return BuildState(cfg, spec, tspec, target_registry.tvm_target(tspec), layout,
                      steps_for(cfg, tspec))


def _check_frame(cfg: BuildConfig, spec: ModelSpec) -> None:
    """One-line errors for a ``--frame`` the build cannot compile."""
    if not cfg.frame:
        return
    try:
        check_frame(cfg.frame, spec.colour, *cfg.size)
    except ValueError as exc:
        raise BuildError(str(exc)) from None
    if cfg.dynamic:
        raise BuildError("--frame needs a static --size (a frame is exactly that size)")


def lower(cfg: BuildConfig) -> BuildState:
    """The steps up to ``relax_passes``: the module ``build`` compiles and ``tune`` tunes."""
    state = start(cfg)
    for name in state.steps[: state.steps.index(LOWERED) + 1]:
        _RUN[name](state)
    return state


def build(cfg: BuildConfig) -> Path:
    """Build a model for a target and write its artifact folder: ``lower``, then the rest
    of ``steps_for(cfg)`` inside the folder being written.

    Returns:
        The artifact folder ``cfg.out/MODEL-TARGET-DTYPE`` (``-uint8io`` appended for
        ``io="uint8"``).

    Raises:
        BuildError, ModelError, TargetError: one-line reasons (unknown names, missing
        cross compiler, unreadable tuning database, unsupported dtype).
    """
    t0 = time.time()
    state = lower(cfg)
    with atomic_dir(Path(cfg.out) / state.name) as tmp:
        state.folder = tmp
        for name in state.steps[state.steps.index(LOWERED) + 1:]:
            _RUN[name](state)
        state.manifest["build"]["seconds"] = round(time.time() - t0, 1)
        write_json_atomic(tmp / MANIFEST, state.manifest)
    return Path(cfg.out) / state.name
