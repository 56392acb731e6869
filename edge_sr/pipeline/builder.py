"""``build``: a registered model -> a deployable artifact folder for one target.

Phases (each a small function): load -> export -> import -> passes -> tuning database ->
compile -> export library (+ a host twin for reference) -> reference quality -> manifest.
The artifact folder is written atomically: a failed build leaves no folder that looks valid.
"""

from __future__ import annotations

import json
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import tvm
from tvm import relax
from tvm.relax.frontend.torch import from_exported_program
from tvm.tirx import PrimFunc

import targets as target_registry
from runtime.artifact import FORMAT_VERSION, MANIFEST, atomic_dir, sha256_file, write_json_atomic

from ..errors import EdgeSRError
from ..models import ModelSpec, get_spec, load_model
from ..models.analysis import receptive_radius
from ..models.torch_passes import DEFAULT_TORCH_PASSES, run_torch_passes
from ..quant.lower import lower_to_relax
from .cuda import check_cuda_kernels
from .default_schedule import default_schedule, is_scheduled
from .passes import LAYOUTS, passes_for, run_passes, uint8_io
from .provenance import (
    RECORDS,
    WORKLOAD,
    cpu_records,
    foreign_note,
    provenance,
    record_cpus,
    target_cpu,
)

TUNING_DIR = Path(target_registry.__file__).resolve().parent / "tuning"
DEFAULT_MODEL = "ecbsr_m4c16_x2"
DEFAULT_SIZE = (128, 128)


class BuildError(EdgeSRError):
    """A build that cannot proceed, with a one-line reason."""


@dataclass
class BuildConfig:
    """Arguments of ``build``.

    Attributes:
        model: Registry name.
        target: Target name or alias (``arm`` = ``rpi4``).
        size: LR input (H, W) of the static module; images of any size are tiled.
        dynamic: Export dynamic H/W (bounded by ``size``) instead of a static shape.
        dtype: ``float32`` (``int8`` arrives with the quantization pipeline).
        tuning_db: MetaSchedule database folder; default ``targets/tuning/<key>`` if present.
        out: Parent folder; the artifact is ``out/MODEL-TARGET-DTYPE``.
        dump_ir: Folder for the IR after each pass.
        weights: Checkpoint (default: the committed one).
        reference_dataset: Dataset for the reference PSNR in the manifest ('' to skip).
        passes: Relax pass names (default: the target's default list).
        observer: int8 calibration observer (minmax, percentile, mse).
        calib_images: int8 calibration crops from the training sets.
        max_psnr_drop: int8 guard: largest allowed Set5 PSNR drop vs float32 (dB).
        fallback: Let sensitive layers stay float (False: full int8).
        enforce_guard: Fail an int8 build past ``max_psnr_drop`` (False: record only).
        use_tuning: Apply the tuning database (False: the default schedules alone).
        default_schedule: Give the kernels no database covers a default CPU schedule
            (``default_schedule``; False: TVM's unscheduled kernels, the benchmark's
            "untuned" baseline).
        layout: Conv layout inside the module, ``NCHW`` or ``NHWC`` (default: the
            target's choice for the dtype, ``TargetSpec.layouts``); input and output
            stay NCHW either way.
        io: Image tensors in and out of the module: ``float32`` on [0, 1] (default) or
            ``uint8`` on [0, 255] (the image's own pixels, the ``uint8_io`` pass).
    """

    model: str = DEFAULT_MODEL
    target: str = "arm"
    size: tuple[int, int] = DEFAULT_SIZE
    dynamic: bool = False
    dtype: str = "float32"
    tuning_db: str | None = None
    out: str = "artifacts"
    dump_ir: str | None = None
    weights: str | None = None
    reference_dataset: str = "set5"
    passes: list[str] = field(default_factory=list)
    observer: str = "mse"
    calib_images: int = 64
    max_psnr_drop: float = 0.1
    fallback: bool = True
    enforce_guard: bool = True
    use_tuning: bool = True
    default_schedule: bool = True
    layout: str | None = None
    io: str = "float32"


IO_DTYPES = ("float32", "uint8")


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


# The two files of a MetaSchedule JSON database.


def tuning_key(model: str, target: str, size: tuple[int, int], dtype: str) -> str:
    """Folder name of the tuning database for one (model, target, shape, dtype)."""
    return f"{model}-{target}-{size[0]}x{size[1]}-{dtype}"


def tuning_dir(cfg: BuildConfig, target: str) -> Path:
    """The database folder of a build: ``cfg.tuning_db``, else the committed one."""
    key = tuning_key(cfg.model, target, cfg.size, cfg.dtype)
    return Path(cfg.tuning_db) if cfg.tuning_db else TUNING_DIR / key


def open_database(work: Path, allow_missing: bool = True):
    """MetaSchedule's JSON database in folder ``work``, tensor intrinsics registered first.

    A tensorized schedule names its intrinsic, which must be registered first: ours
    (``vnni.DOTS``) cost nothing; TVM's (sdot) exist only once ``tvm.s_tir.tensor_intrin``
    is imported, which parses hundreds of TVMScript functions (seconds), so that import
    happens only for databases that name one of them.
    """
    from tvm.s_tir import meta_schedule as ms

    records = work / RECORDS
    text = records.read_text() if records.is_file() else ""
    if '"Tensorize"' in text:
        from .vnni import DOTS, register_intrinsic

        register_intrinsic()  # ours: two functions, little parsing to speak of
        if text.count('"Tensorize"') > sum(text.count(f'"{d.intrin}"') for d in DOTS.values()):
            import tvm.s_tir.tensor_intrin  # noqa: F401 - TVM's (sdot)
    return ms.database.JSONDatabase(str(work / WORKLOAD), str(records),
                                    allow_missing=allow_missing)


def apply_tuning(mod: tvm.IRModule, target: tvm.target.Target,
                 db_path: Path | None, cpu: str | None = None) -> tuple[tvm.IRModule, dict]:
    """Replace kernels by their tuned schedules from a MetaSchedule JSON database.

    Args:
        cpu: Apply only the records tuned for this ``mcpu`` (None: every record).
            MetaSchedule itself takes a workload's fastest record whatever CPU measured it.

    Returns:
        The module and a tuning record: ``state`` (untuned/partial/tuned), kernel counts.
    """
    kernels = [gv.name_hint for gv, f in mod.functions.items() if isinstance(f, PrimFunc)]
    if db_path is None:
        return mod, {"state": "untuned", "database": None, "kernels": len(kernels), "tuned": 0}
    work = Path(db_path)
    files = [work / WORKLOAD, work / RECORDS]
    if not all(f.is_file() for f in files):
        raise BuildError(f"tuning database {work} lacks {files[0].name}/{files[1].name}")
    with tempfile.TemporaryDirectory(prefix="edge-sr-db-") as tmp:
        source = work
        if cpu is not None:
            cpu_records(work, cpu, Path(tmp))
            source = Path(tmp)
        try:
            db = open_database(source, allow_missing=False)
            # opt_level 3: below it the pass is skipped without a word.
            with target, db, tvm.transform.PassContext(opt_level=3):
                mod = relax.transform.MetaScheduleApplyDatabase(enable_warning=False)(mod)
        except Exception as exc:  # noqa: BLE001 - TVM raises plain errors for bad JSON
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[-1]
            raise BuildError(f"tuning database {work} is unreadable: {first}") from None
    tuned = sum(1 for f in mod.functions.values() if is_scheduled(f))
    state = "tuned" if tuned == len(kernels) else ("partial" if tuned else "untuned")
    return mod, {"state": state, "database": str(work), "kernels": len(kernels), "tuned": tuned,
                 "records_for": cpu}


def tune_command(cfg: BuildConfig, tspec: target_registry.TargetSpec) -> str:
    """The command that tunes this build's database (on the board, for device targets)."""
    return (f"edge-sr tune --target {tspec.name} --model {cfg.model} --size "
            f"{cfg.size[0]}x{cfg.size[1]} --dtype {cfg.dtype}"
            + (" --device HOST:PORT" if tspec.is_remote else "") + " --minutes 30")


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


def quantize_for_build(model: torch.nn.Module, spec: ModelSpec, cfg: BuildConfig) -> tuple:
    """Calibrate and plan the int8 model; one-line BuildError for unsupported graphs."""
    from ..quant import QuantConfig, QuantError, quantize

    try:
        return quantize(model, spec, QuantConfig(observer=cfg.observer,
                                                 calib_images=cfg.calib_images,
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


def _host_spec() -> target_registry.TargetSpec:
    return target_registry.TARGETS["host"]


@dataclass
class Lowered:
    """A model imported, planned and passed through the target's pass list: what
    ``build`` compiles and ``tune`` tunes (the same module, so tuned workloads match)."""

    spec: ModelSpec
    tspec: target_registry.TargetSpec
    target: tvm.target.Target
    model: torch.nn.Module
    radius: int
    raw: tvm.IRModule
    quant: tuple | None
    passes: list[str]
    mod: tvm.IRModule


# The largest module input: bigger images run through it in tiles, so a bigger module
# only costs memory (a 4096x4096 float32 FSRCNN build holds ~3.7 GB of activations).
MAX_SIDE = 4096


def check_size(size: tuple[int, int]) -> None:
    """Refuse a module input that is not positive or over ``MAX_SIDE`` on a side."""
    if min(size) < 1 or max(size) > MAX_SIDE:
        raise BuildError(f"--size {size[0]}x{size[1]} is outside 1..{MAX_SIDE} per side: "
                         "images larger than the module run through it in tiles, so build "
                         "at a tile size (e.g. 360x640)")


def lower(cfg: BuildConfig) -> Lowered:
    """Phases load -> (quantize | export -> import) -> named passes, with one-line errors."""
    spec = get_spec(cfg.model)
    tspec = target_registry.get_target(cfg.target)
    target_registry.check_toolchain(tspec)
    if cfg.dtype not in ("float32", "int8"):
        raise BuildError(f"unknown dtype {cfg.dtype}: choose float32 or int8")
    if cfg.io not in IO_DTYPES:
        raise BuildError(f"unknown --io {cfg.io}: choose {' or '.join(IO_DTYPES)}")
    if cfg.dtype == "int8" and cfg.dynamic:
        raise BuildError("int8 builds need a static --size (the plan is per shape)")
    target = target_registry.tvm_target(tspec)
    model = load_model(cfg.model, cfg.weights)
    radius = receptive_radius(spec)
    check_size(cfg.size)
    if min(cfg.size) <= 2 * radius:
        raise BuildError(f"--size {cfg.size[0]}x{cfg.size[1]} is too small for {cfg.model}: "
                         f"tiles need more than twice the receptive radius ({radius} px)")
    quant = None
    if cfg.dtype == "int8":
        quant = quantize_for_build(model, spec, cfg)
        raw = lower_to_relax(quant[0], quant[1], (1, spec.channels, *cfg.size),
                             signed=tspec.signed_int8)
    else:
        rewritten = run_torch_passes(model, DEFAULT_TORCH_PASSES)
        raw = import_relax(export_program(rewritten, spec, cfg.size, cfg.dynamic))
    if cfg.io == "uint8":
        raw = uint8_io(raw)
    layout = cfg.layout or tspec.layout(cfg.dtype)
    if layout not in LAYOUTS:
        raise BuildError(f"unknown --layout {layout}: choose NCHW or NHWC")
    names = cfg.passes or passes_for(target, layout, cfg.dtype)
    dump = Path(cfg.dump_ir) if cfg.dump_ir else None
    mod = run_passes(raw, target, names, dump / tspec.name if dump else None)
    return Lowered(spec, tspec, target, model, radius, raw, quant, names, mod)


def build(cfg: BuildConfig) -> Path:
    """Build a model for a target and write its artifact folder.

    Returns:
        The artifact folder ``cfg.out/MODEL-TARGET-DTYPE`` (``-uint8io`` appended for
        ``io="uint8"``).

    Raises:
        BuildError, ModelError, TargetError: one-line reasons (unknown names, missing
        cross compiler, unreadable tuning database, unsupported dtype).
    """
    t0 = time.time()
    low = lower(cfg)
    spec, tspec, target, model, radius = low.spec, low.tspec, low.target, low.model, low.radius
    raw, quant, names, mod = low.raw, low.quant, low.passes, low.mod
    db = tuning_dir(cfg, tspec.name)
    use_db = cfg.use_tuning and (cfg.tuning_db or db.is_dir())
    mcpu = target_cpu(target)
    # This CPU's records only, unless the user named a database that has none for it.
    own_only = bool(use_db) and tspec.kind == "llvm" and (
        not cfg.tuning_db or record_cpus(db).get(mcpu, 0) > 0)
    mod, tuning = apply_tuning(mod, target, db if use_db else None, mcpu if own_only else None)
    if use_db:
        tuning.update(provenance(db), warning=foreign_note(
            db, mcpu, tune_command(cfg, tspec), own_only=own_only))
    if cfg.default_schedule and tspec.kind == "llvm":
        mod, tuning["default_scheduled"] = default_schedule(mod, target)
    ex = compile_module(mod, target)
    cuda = check_cuda_kernels(ex, target) if tspec.kind == "cuda" else None
    name = f"{cfg.model}-{tspec.name}-{cfg.dtype}" + ("-uint8io" if cfg.io == "uint8" else "")
    with atomic_dir(Path(cfg.out) / name) as tmp:
        export_library(ex, tmp / "model.so", tspec)
        manifest = {
            "format": FORMAT_VERSION, "model": cfg.model, "scale": spec.scale,
            "colour": spec.colour, "dtype": cfg.dtype, "receptive_radius": radius,
            "input": {"shape": [1, spec.channels, *cfg.size], "dynamic": cfg.dynamic,
                      "layout": "NCHW", "dtype": cfg.io,
                      "range": [0.0, 255.0] if cfg.io == "uint8" else [0.0, 1.0]},
            "output": {"dtype": cfg.io},
            "target": {"name": tspec.name, "tvm": json.loads(str(target)),
                       "arch": tspec.arch, "kind": tspec.kind},
            "tvm_version": tvm.__version__, "tuning": tuning,
            "conv_layout": "NHWC" if "layout_nhwc" in names else "NCHW",
            "int8_storage": (None if quant is None else
                             "int8 (uint8 shifted by -128)" if tspec.signed_int8 else "uint8"),
            "torch_passes": DEFAULT_TORCH_PASSES if quant is None else ["subpixel_deconv",
                                                                        "quantize_int8"],
            "passes": names,
            "library": {"file": "model.so", "sha256": sha256_file(tmp / "model.so")},
            "build": {"config": {k: v for k, v in asdict(cfg).items() if k != "passes"},
                      "seconds": None, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")},
        }
        host_lib = tmp / "model.so"
        if tspec.name != "host":
            host_target = target_registry.tvm_target(_host_spec())
            host_mod = run_passes(raw, host_target, passes_for(host_target))
            host_lib = tmp / "host.so"
            export_library(compile_module(host_mod, host_target), host_lib, _host_spec())
            manifest["host_library"] = {"file": "host.so", "sha256": sha256_file(host_lib),
                                        "note": "untuned host twin, the reference for device "
                                                "outputs"}
        if cuda is not None:
            manifest["cuda"] = cuda
        if quant is not None:
            manifest["quantization"] = quant[2]
        # int8 builds always measure quality: the guard is not optional.
        ref_dataset = cfg.reference_dataset or ("set5" if quant is not None else "")
        if ref_dataset:
            manifest["reference"] = reference_quality(model, spec, host_lib, manifest,
                                                      ref_dataset)
        if quant is not None:
            manifest["quality"] = int8_guard(manifest, cfg, quant[2], original_psnr(
                model, spec, manifest["reference"]["dataset"]))
        manifest["build"]["seconds"] = round(time.time() - t0, 1)
        write_json_atomic(tmp / MANIFEST, manifest)
    return Path(cfg.out) / name
