"""Structural facts measured on a model: multiply-accumulates per conv layer."""

from __future__ import annotations

from torch import nn

from edge_sr.models.analysis import count_macs, layer_macs


def test_macs_count_useful_work_of_convs_and_deconvs():
    model = nn.Sequential(nn.Conv2d(1, 8, 5, padding=2), nn.ReLU(),
                          nn.ConvTranspose2d(8, 1, 9, stride=2, padding=4, output_padding=1))
    macs = layer_macs(model, (1, 1, 10, 12))
    assert [m["layer"] for m in macs] == ["0", "2"]
    assert macs[0]["macs"] == 8 * 1 * 25 * 10 * 12
    assert macs[1]["macs"] == 8 * 1 * 81 * 10 * 12  # per input pixel, not zero-inserted
    assert count_macs(model, (1, 1, 10, 12)) == sum(m["macs"] for m in macs)
