"""Artifacts sent to a device: a library is sent once per session."""

from __future__ import annotations

import json

import numpy as np
import pytest

from edge_sr.harness import remote
from edge_sr.pipeline import BuildConfig, build


class _Session:
    """Records uploads; answers ``device_info`` as an x86 machine would."""

    def __init__(self):
        self.uploads = []

    def upload(self, path, target):
        self.uploads.append(target)


@pytest.fixture(scope="module")
def twins(tmp_path_factory):
    """Two artifacts with the same library (a deterministic build, twice)."""
    root = tmp_path_factory.mktemp("twins")
    return [build(BuildConfig(model="fsrcnn_tiny_x2", target="host", size=(16, 16),
                              out=str(root / name), reference_dataset=""))
            for name in ("a", "b")]


def test_a_library_is_sent_once_per_session(twins):
    first, second = (json.loads((a / "manifest.json").read_text()) for a in twins)
    assert first["library"]["sha256"] == second["library"]["sha256"]
    info = {"machine": first["target"]["arch"]}
    one, other = _Session(), _Session()
    names = [remote.upload_library(one, a, m, info) for a, m in zip(twins, (first, second))]
    assert names[0] == names[1] and one.uploads == [names[0]]
    # another session has its own files
    remote.upload_library(other, twins[0], first, info)
    assert other.uploads == [names[0]]


@pytest.mark.device
def test_two_artifacts_with_one_library_run_in_one_session(tmp_path):
    from edge_sr.device.rpc import connect

    arts = [build(BuildConfig(model="fsrcnn_tiny_x2", target="qemu-aarch64", size=(16, 16),
                              out=str(tmp_path / name), reference_dataset=""))
            for name in ("a", "b")]
    sess = connect("127.0.0.1:9090")
    engines = [remote.remote_engine(sess, a) for a in arts]
    x = np.random.default_rng(0).random((1, 1, 16, 16), dtype=np.float32)
    outs = [np.asarray(e(x)) for e in engines]
    assert outs[0].shape == (1, 1, 32, 32) and np.array_equal(outs[0], outs[1])
