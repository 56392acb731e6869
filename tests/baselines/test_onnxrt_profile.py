"""ONNX Runtime's own per-node profile of an artifact's model, beside ours."""

from __future__ import annotations

import pytest


def test_onnxruntime_profile_lists_its_conv_nodes(host_artifact, capsys):
    pytest.importorskip("onnxruntime", reason="needs the bench extra (onnxruntime)")
    from edge_sr.baselines.onnxrt_profile import format_ort_profile, profile_onnxruntime
    from edge_sr.cli import main

    prof = profile_onnxruntime(host_artifact, repeat=2)
    ops = [r["op"] for r in prof["rows"]]
    assert any("Conv" in op for op in ops), ops
    assert all(r["ms"] >= 0 for r in prof["rows"]) and prof["total_ms"] > 0
    assert sum(r["share"] for r in prof["rows"]) == pytest.approx(1.0)
    assert "| **total** |" in format_ort_profile(prof)
    assert main(["profile", "--artifact", str(host_artifact), "--repeat", "1",
                 "--onnxruntime"]) == 0
    out = capsys.readouterr().out
    assert "in ONNX Runtime (float32)" in out and out.count("| **total** |") == 2
