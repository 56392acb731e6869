"""ncnn (Tencent's inference library for phones and boards) as a bench peer, converted by
pnnx, its PyTorch converter.

pnnx traces the deploy-form model with TorchScript and writes ncnn's ``.param`` (graph) and
``.bin`` (weights). Two defaults would make a float32 row compute something else: pnnx
stores the weights in float16 (``fp16=1``: the model then differs from PyTorch by about
2e-3) and ncnn computes in float16 on Arm CPUs that have it (ARMv8.2 ``asimdhp``: a Pi 5,
QEMU's ``max`` CPU). The fp32 row keeps float32 weights and turns both off
(``runtime.profile.ncnn_net``). ncnn has no int8 row: its quantizer is a pair of C++ tools
(``ncnn2table``, ``ncnn2int8``) that its Python wheel does not ship.
"""

from __future__ import annotations

import os
import resource
import shutil
import subprocess
import tempfile
from pathlib import Path

import torch

INPUT, OUTPUT = "in0", "out0"  # the blob names pnnx gives a one-input, one-output model
# pnnx's address space: converting SRResNet-16 at 180x320 it grew past 23 GB and the
# kernel's OOM killer stopped it (and could have stopped anything else); bounded, it fails
# alone with an allocation error.
MEMORY_FRACTION = 0.5


def _bounded_memory() -> None:
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    limit = int(total * MEMORY_FRACTION)
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def available() -> bool:
    """Whether ncnn and pnnx are installed (the ``ncnn`` extra)."""
    try:
        import ncnn  # noqa: F401
        import pnnx  # noqa: F401
    except ImportError:
        return False
    return True


def export_ncnn(model: torch.nn.Module, shape: tuple[int, ...], stem: str | Path) -> Path:
    """Convert a model traced at ``shape`` (1,C,H,W) to ``stem.param`` + ``stem.bin``.

    pnnx runs as a subprocess whose chatter is kept off this process's stdout (``bench
    --json`` prints its result there); a failed conversion raises with its last line.

    Returns:
        The ``.param`` path (the ``.bin`` beside it).
    """
    import pnnx

    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=stem.parent) as tmp:
        pt = Path(tmp) / "model.pt"
        with torch.no_grad():
            torch.jit.trace(model.eval(), torch.rand(*shape)).save(str(pt))
        outs = {k: str(Path(tmp) / f"model.{k}") for k in
                ("pnnxparam", "pnnxbin", "pnnxpy", "pnnxonnx", "ncnnpy")}
        cmd = [pnnx.EXEC_PATH, str(pt), f"inputshape=[{','.join(map(str, shape))}]f32",
               "fp16=0", f"ncnnparam={tmp}/model.param", f"ncnnbin={tmp}/model.bin",
               *(f"{k}={v}" for k, v in outs.items())]
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp,
                              preexec_fn=_bounded_memory)
        param = Path(tmp) / "model.param"
        if proc.returncode or not param.exists():
            raise RuntimeError(f"pnnx could not convert the model at {list(shape)}: "
                               f"{_reason(proc)}")
        shutil.move(str(param), stem.with_suffix(".param"))
        shutil.move(str(Path(tmp) / "model.bin"), stem.with_suffix(".bin"))
    return stem.with_suffix(".param")


def _reason(proc: subprocess.CompletedProcess) -> str:
    """pnnx's last meaningful line, or how it ended."""
    lines = [ln.strip() for ln in (proc.stderr + proc.stdout).splitlines()
             if ln.strip().strip("-")]
    if any("bad_alloc" in ln or "memory" in ln.lower() for ln in lines):
        return f"out of memory (bounded to {MEMORY_FRACTION:.0%} of RAM)"
    if proc.returncode < 0:
        return f"stopped by signal {-proc.returncode}"
    return lines[-1] if lines else f"exit status {proc.returncode}"
