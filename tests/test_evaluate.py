"""Evaluation CLI and the committed checkpoints' quality."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from edge_sr.evaluate import EvalConfig, evaluate
from edge_sr.models import MODELS

# The checkpoints the foundation issue requires to be committed.
REQUIRED = ["fsrcnn_x2", "fsrcnn_s_x2", "fsrcnn_tiny_x2", "ecbsr_m4c16_x2", "xlsr_x3",
            "ghostsr_x2", "srresnet_b16_x4", "srresnet_b4_x4"]


@pytest.mark.parametrize("name", REQUIRED)
def test_required_checkpoint_is_committed(name):
    assert MODELS[name].weights_path.exists()


@pytest.mark.slow
@pytest.mark.parametrize("dataset", ["set5", "set14"])
@pytest.mark.parametrize("name", REQUIRED)
def test_committed_weights_beat_bicubic(name, dataset):
    if not MODELS[name].weights_path.exists():
        pytest.fail(f"{name} has no committed checkpoint")
    result = evaluate(EvalConfig(name, dataset))
    assert result["mean"]["psnr"] > result["bicubic"]["psnr"] + 0.1
    assert result["mean"]["ssim"] > result["bicubic"]["ssim"]


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edge_sr", *args], capture_output=True,
                          text=True)


@pytest.mark.slow
def test_eval_json_layout():
    proc = _cli("eval", "--model", "fsrcnn_tiny_x2", "--dataset", "set5", "--limit", "2",
                "--json")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert set(out) == {"model", "dataset", "scale", "colour", "mean", "bicubic", "images"}
    assert set(out["mean"]) == {"psnr", "ssim"} and len(out["images"]) == 2


@pytest.mark.slow
def test_eval_table_on_any_folder(tmp_path):
    import numpy as np
    from PIL import Image

    Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 40, 3), dtype=np.uint8)
                    ).save(tmp_path / "a.png")
    proc = _cli("eval", "--model", "fsrcnn_tiny_x2", "--dataset", str(tmp_path))
    assert proc.returncode == 0 and "mean" in proc.stdout


@pytest.mark.parametrize("args,needle", [
    (("eval", "--model", "nope"), "unknown model"),
    (("eval", "--model", "fsrcnn_tiny_x2", "--dataset", "nope"), "no dataset"),
])
def test_cli_errors_are_one_line(args, needle):
    proc = _cli(*args)
    assert proc.returncode == 2
    assert needle in proc.stderr and proc.stderr.strip().count("\n") == 0


def test_eval_without_a_checkpoint_is_one_line():
    # Which variants lack a checkpoint changes as the zoo trains: ask the registry.
    missing = [n for n, s in MODELS.items() if not s.weights_path.exists()]
    if not missing:
        pytest.skip("every registered model has a committed checkpoint")
    proc = _cli("eval", "--model", missing[0])
    assert proc.returncode == 2
    assert f"no checkpoint for model {missing[0]}" in proc.stderr
    assert proc.stderr.strip().count("\n") == 0


def test_self_ensemble_is_the_mean_over_the_eight_flips_and_rotations():
    from edge_sr.evaluate import self_ensemble

    torch.manual_seed(0)
    x = torch.rand(1, 1, 5, 7)
    # a pointwise model commutes with every flip and rotation: the ensemble is one pass
    assert torch.allclose(self_ensemble(lambda t: t * 0.5, x), x * 0.5)
    # a model that keeps the top-left pixel only does not: the eight passes map it back to
    # the four corners, each twice

    def corner(t):
        out = torch.zeros_like(t)
        out[..., 0, 0] = t[..., 0, 0]
        return out

    want = torch.zeros_like(x)
    for i, j in ((0, 0), (0, 6), (4, 0), (4, 6)):
        want[0, 0, i, j] = x[0, 0, i, j] * 2 / 8
    assert torch.allclose(self_ensemble(corner, x), want)
