"""Checkpoints written by other projects, mapped onto the zoo's architectures.

A state dict whose keys are not the model's is tried against each format in ``FORMATS``
(a key-renaming rule per source project); the first that renames every key onto exactly
the model's keys is used. A ``module.`` prefix (``DataParallel``) is dropped first.

- ``basicsr-ecbsr``: BasicSR's ``ECBSR`` (``basicsr/archs/ecbsr_arch.py``) with
  ``act_type='prelu'`` and ``with_idt=False`` (its M4C16 configuration). Each of its
  ``backbone`` blocks holds its activation; ours are ``ECB, PReLU`` pairs, so block ``i``
  is our ``backbone.{2i}`` and its ``act`` our ``backbone.{2i+1}``. Its branches keep raw
  ``k0/b0/k1/b1`` tensors where ours are ``k0``/``k1`` convs. ``with_idt=True`` adds an
  identity that has no weights, so a checkpoint cannot show it: such a model loads but
  computes without the identity.
- ``fsrcnn-pytorch``: the widely used PyTorch FSRCNN (``first_part``: conv + PReLU,
  ``mid_part``: shrink, maps, expand with PReLUs, ``last_part``: the deconvolution).
"""

from __future__ import annotations

import re
from collections.abc import Callable

_ECB_BRANCHES = {"conv1x1_3x3": 0, "conv1x1_sbx": 1, "conv1x1_sby": 2, "conv1x1_lpl": 3}
_RAW = {"k0": "k0.weight", "b0": "k0.bias", "k1": "k1.weight", "b1": "k1.bias"}


def _basicsr_ecbsr(key: str) -> str | None:
    m = re.fullmatch(r"backbone\.(\d+)\.(\w+)\.(\w+)", key)
    if not m:
        return None
    block, part, leaf = int(m[1]), m[2], m[3]
    if part == "act" and leaf == "weight":
        return f"backbone.{2 * block + 1}.weight"
    if part == "conv3x3" and leaf in ("weight", "bias"):
        return f"backbone.{2 * block}.conv3x3.{leaf}"
    if part in _ECB_BRANCHES:
        return f"backbone.{2 * block}.branches.{_ECB_BRANCHES[part]}.{_RAW.get(leaf, leaf)}"
    return None


def _fsrcnn_pytorch(key: str) -> str | None:
    m = re.fullmatch(r"(first_part|mid_part)\.(\d+)\.(weight|bias)", key)
    if m:
        return f"body.{int(m[2]) + (0 if m[1] == 'first_part' else 2)}.{m[3]}"
    m = re.fullmatch(r"last_part\.(weight|bias)", key)
    return f"deconv.{m[1]}" if m else None


FORMATS: dict[str, Callable[[str], str | None]] = {
    "basicsr-ecbsr": _basicsr_ecbsr,
    "fsrcnn-pytorch": _fsrcnn_pytorch,
}


def _strip(state: dict, prefix: str) -> dict:
    if state and all(k.startswith(prefix) for k in state):
        return {k[len(prefix):]: v for k, v in state.items()}
    return state


def to_model_keys(state: dict, model_keys: set[str]) -> tuple[dict, str | None]:
    """``state`` under the model's own key names, and the format that renamed it.

    Returns the state unchanged (format None) when its keys are already the model's or
    no format maps them exactly: loading then names the missing and unexpected keys.
    """
    state = _strip(state, "module.")
    if set(state) == model_keys:
        return state, None
    for name, rename in FORMATS.items():
        mapped = {rename(k): v for k, v in state.items()}
        if None not in mapped and len(mapped) == len(state) and set(mapped) == model_keys:
            return mapped, name
    return state, None


def training_cost(ckpt: dict) -> dict:
    """Steps and seconds of training behind a checkpoint ``train`` exported: its own and,
    after a finishing fine-tune, the ``prior`` schedule's it started from."""
    prior = ckpt.get("prior") or {}
    return {"iter": int(ckpt.get("iter") or 0) + prior.get("iter", 0),
            "elapsed_s": float(ckpt.get("elapsed_s") or 0.0) + prior.get("elapsed_s", 0.0)}
