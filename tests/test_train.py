"""Training: determinism, resume, logging, adversarial step."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch
from PIL import Image

from edge_sr.train import LOG_FIELDS, TrainConfig, train


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("train")
    rng = np.random.default_rng(0)
    for i in range(4):
        img = rng.integers(0, 256, (64, 72, 3), dtype=np.uint8)
        Image.fromarray(img).save(root / f"{i}.png")
    return str(root)


def _cfg(tmp_path, data, name, **kw) -> TrainConfig:
    base = dict(model="fsrcnn_tiny_x2", iters=6, batch=2, patch=32, val_every=3,
                datasets=[data], val_dataset=data, out=str(tmp_path / name),
                export=str(tmp_path / f"{name}.pt"))
    base.update(kw)
    return TrainConfig(**base)


def _weights(path):
    return torch.load(path, weights_only=True)["state_dict"]


def test_same_seed_same_weights(tmp_path, tiny_data):
    train(_cfg(tmp_path, tiny_data, "a"))
    train(_cfg(tmp_path, tiny_data, "b"))
    wa, wb = _weights(tmp_path / "a.pt"), _weights(tmp_path / "b.pt")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_resume_continues_exactly(tmp_path, tiny_data):
    train(_cfg(tmp_path, tiny_data, "straight"))
    first = train(_cfg(tmp_path, tiny_data, "resumed", stop_after=4))  # "interrupted"
    assert first["stopped_at"] == 4 and not (tmp_path / "resumed.pt").exists()
    train(_cfg(tmp_path, tiny_data, "resumed"))  # picks up resumed/last.pt
    ws, wr = _weights(tmp_path / "straight.pt"), _weights(tmp_path / "resumed.pt")
    assert all(torch.allclose(ws[k], wr[k]) for k in ws)
    rows = list(csv.DictReader(open(tmp_path / "resumed" / "log.csv")))
    assert [int(r["iter"]) for r in rows] == [3, 6]


def test_log_has_loss_and_validation(tmp_path, tiny_data):
    result = train(_cfg(tmp_path, tiny_data, "log"))
    rows = list(csv.DictReader(open(result["log"])))
    assert list(rows[0]) == LOG_FIELDS
    assert all(float(r["val_psnr"]) > 0 for r in rows)


def test_adversarial_fine_tuning_runs(tmp_path, tiny_data):
    result = train(_cfg(tmp_path, tiny_data, "gan", model="srresnet_b2_x4", iters=2,
                        val_every=2, adversarial=True))
    state = torch.load(tmp_path / "gan" / "last.pt", weights_only=False)
    assert "disc" in state and np.isfinite(result["val"]["psnr"])


def test_adversarial_needs_rgb(tmp_path, tiny_data):
    with pytest.raises(ValueError, match="RGB"):
        train(_cfg(tmp_path, tiny_data, "bad", adversarial=True))
