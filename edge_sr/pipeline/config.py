"""What a build is asked for (``BuildConfig``) and how it refuses (``BuildError``)."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import EdgeSRError

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
        dtype: ``float32`` or ``int8``.
        tuning_db: MetaSchedule database folder; default ``targets/tuning/<key>`` if present.
        out: Parent folder; the artifact is ``out/MODEL-TARGET-DTYPE``.
        dump_ir: Folder for the IR after each pass.
        weights: Checkpoint (default: the committed one).
        reference_dataset: Dataset for the reference PSNR in the manifest ('' to skip).
        passes: Relax pass names (default: the target's default list).
        observer: int8 calibration observer (minmax, percentile, mse).
        calib_images: int8 calibration crops from the training sets.
        calib: int8 calibration images: a folder or dataset name ('': the training sets).
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
        frame: Also compile ``frame``: one raw ``yuv420p`` or ``rgb24`` video frame of
            ``size`` in, the upscaled frame out, its colour work in the module
            (``frame_io``; ``runtime.stream`` uses it). ``""``: none.
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
    calib: str = ""
    max_psnr_drop: float = 0.1
    fallback: bool = True
    enforce_guard: bool = True
    use_tuning: bool = True
    default_schedule: bool = True
    layout: str | None = None
    io: str = "float32"
    frame: str = ""


IO_DTYPES = ("float32", "uint8")
