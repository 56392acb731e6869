"""Models from outside the registry: ``package.module:factory`` or a ``torch.export`` file.

Every command that takes ``--model`` takes these too (``get_spec``/``load_model`` resolve
them). What the registry states about its models is read from the model itself: one
probe call on an image finds the channels (1: luma, 3: RGB) and the scale (output over
input size); the receptive radius is measured by back-propagation as for every model.

- ``package.module:factory``: a callable returning an ``nn.Module`` in its inference
  form, importable from the current folder or the installed packages; ``--weights`` loads
  a state dict into it (plain, ``state_dict``, or BasicSR's ``params_ema``/``params``).
- ``file.pt2``: a ``torch.export`` program (``torch.export.save``) exported with dynamic
  height and width (``torch.export.Dim``), since builds and tiles choose their own sizes.
"""

from __future__ import annotations

import importlib
import os
import re
import sys
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

PROBE = (24, 32)  # LR probe size: small, not square, so that H and W scale separately
PT2 = ".pt2"


class Exported(nn.Module):
    """A ``torch.export`` program as a module in inference form. The program's own module
    refuses ``eval()``/``train()``, so it is held outside the module tree; it computes in
    float32 whatever the input's dtype (the receptive-radius probe runs in float64)."""

    def __init__(self, program: torch.export.ExportedProgram):
        super().__init__()
        object.__setattr__(self, "_program", program.module())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._program(x.float()).to(x.dtype)


def is_external(ref: str) -> bool:
    """Whether ``--model`` names a model outside the registry."""
    return ref.endswith(PT2) or ":" in ref


def first_line(exc: BaseException) -> str:
    """An exception's first line of text (its type's name when it has none)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def factory(ref: str, error: type[Exception]) -> Callable[[], nn.Module]:
    """The callable that builds the referenced model, checked now (one-line ``error``)."""
    if ref.endswith(PT2):
        path = Path(ref)
        if not path.is_file():
            raise error(f"no torch.export file {ref}")

        def load() -> nn.Module:
            return Exported(torch.export.load(str(path)))

        return load
    module_name, _, attr = ref.partition(":")
    if os.getcwd() not in sys.path:  # as `python -m` would: the user's own package here
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # noqa: BLE001 - any failure to import is the user's to fix
        raise error(f"--model {ref}: cannot import {module_name}: {first_line(exc)}") from None
    make = getattr(module, attr, None)
    if not callable(make):
        raise error(f"--model {ref}: {module_name} has no callable {attr!r} "
                    "(expected MODULE:FACTORY)")

    def build() -> nn.Module:
        model = make()
        if not isinstance(model, nn.Module):
            raise error(f"--model {ref} returned a {type(model).__name__}, not an nn.Module")
        return model

    return build


COLOUR_CHANNELS = {"y": 1, "rgb": 3}


def probe(make: Callable[[], nn.Module], ref: str, error: type[Exception],
          scale: int | None = None, colour: str | None = None) -> tuple[int, str]:
    """(scale, colour) of a model, from one call on a 1- and then a 3-channel image.

    ``colour`` (``--colour``) probes only that channel count, for a model that takes
    both; ``scale`` (``--scale``) must be what the model does (one line if not)."""
    model, stated = make().eval(), scale
    h, w = PROBE
    why = "no output"
    for channels in (COLOUR_CHANNELS[colour],) if colour else (1, 3):
        try:
            with torch.no_grad():
                y = model(torch.rand(1, channels, h, w))
        except Exception as exc:  # noqa: BLE001 - the wrong channel count fails in any way
            why = first_line(exc)
            continue
        y = y[0] if isinstance(y, (tuple, list)) else y
        found = y.shape[-1] // w
        if (y.ndim != 4 or y.shape[1] != channels or found < 1
                or tuple(y.shape[2:]) != (h * found, w * found)):
            raise error(f"--model {ref}: a (1, {channels}, {h}, {w}) input gave "
                        f"{tuple(y.shape)}; expected (1, {channels}, {h}*s, {w}*s)")
        if stated is not None and stated != found:
            raise error(f"--model {ref} upscales {found}x, not --scale {stated}")
        return found, "y" if channels == 1 else "rgb"
    hint = (" (export it with dynamic height and width: torch.export.Dim)"
            if ref.endswith(PT2) else "")
    what = f"a {COLOUR_CHANNELS[colour]}-channel" if colour else "neither a 1- nor a 3-channel"
    raise error(f"--model {ref} takes {what} {h}x{w} image{hint}: {why}")


def safe_name(ref: str, taken: set[str]) -> str:
    """A file-name-safe model name for artifacts and tuning databases: the file's stem or
    the factory's name (``ext_`` in front when a registry model has it)."""
    stem = Path(ref).stem if ref.endswith(PT2) else ref.partition(":")[2]
    name = re.sub(r"[^A-Za-z0-9_]+", "_", stem).strip("_") or "model"
    return f"ext_{name}" if name in taken else name


def state_dict(ckpt: dict) -> dict:
    """The weights of a checkpoint: ours (``state_dict``), BasicSR's (``params_ema``, else
    ``params``) or a plain state dict."""
    for key in ("state_dict", "params_ema", "params"):
        if isinstance(ckpt.get(key), dict):
            return ckpt[key]
    return ckpt
