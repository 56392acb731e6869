"""Shared fixtures: small artifacts built once per session, device detection."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
import torch

from edge_sr.models import MODELS
from runtime.threads import prepare

# The test session is an entry point like `edge-sr`: TVM's pool as the CLI sets it up,
# before any test starts it (TVM never grows a pool past its first size).
prepare()

DEVICE = ("127.0.0.1", 9090)


def device_answers() -> bool:
    """True when an RPC server listens at the emulated Pi's address."""
    try:
        with socket.create_connection(DEVICE, timeout=2):
            return True
    except OSError:
        return False


def serial_console() -> bool:
    """True when the emulated Pi's serial console PTY exists."""
    cache = Path(os.environ.get("EDGE_SR_CACHE", Path.home() / ".cache/edge-sr"))
    return (cache / "emulated-pi" / "ttyPI0").exists()


def pytest_collection_modifyitems(config, items):
    skips = {}
    if not device_answers():
        skips["device"] = "no device on 127.0.0.1:9090 (run scripts/emulated-pi start)"
    if not serial_console():
        skips["serial"] = "no serial console (run scripts/emulated-pi serial-start)"
    for item in items:
        for marker, reason in skips.items():
            if item.get_closest_marker(marker):
                item.add_marker(pytest.mark.skip(reason=reason))


@pytest.fixture(scope="session")
def random_weights(tmp_path_factory) -> callable:
    """Write a seeded random checkpoint for a model; returns its path."""
    root = tmp_path_factory.mktemp("weights")

    def make(name: str) -> Path:
        torch.manual_seed(0)
        path = root / f"{name}.pt"
        if not path.exists():
            torch.save({"state_dict": MODELS[name].factory().state_dict()}, path)
        return path

    return make


@pytest.fixture(scope="session")
def host_artifact(tmp_path_factory, random_weights) -> Path:
    """fsrcnn_tiny_x2 built for the host at 32x32 (random weights, no reference run)."""
    from edge_sr.pipeline import BuildConfig, build

    out = tmp_path_factory.mktemp("artifacts")
    return build(BuildConfig(model="fsrcnn_tiny_x2", target="host", size=(32, 32),
                             out=str(out), weights=str(random_weights("fsrcnn_tiny_x2")),
                             reference_dataset=""))
