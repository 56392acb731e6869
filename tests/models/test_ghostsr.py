"""GhostSR: shifts export as pad/slice (no conv), k-means conversion from a plain model."""

from __future__ import annotations

import torch

from edge_sr.models import MODELS, ghost_from_plain
from edge_sr.models.ghostsr import SHIFTS, GhostModule, GhostSR, shift2d


def _conv_count(program) -> int:
    return sum(1 for n in program.graph.nodes
               if n.op == "call_function" and "conv" in str(n.target))


def test_shift_equals_one_hot_depthwise_conv():
    x = torch.randn(1, 4, 7, 9)
    for k, (dy, dx) in enumerate(SHIFTS):
        kernel = torch.zeros(4, 1, 3, 3)
        kernel.view(4, 9)[:, k] = 1.0
        conv = torch.nn.functional.conv2d(x, kernel.flip(2, 3), padding=1, groups=4)
        assert torch.equal(shift2d(x, dy, dx), conv), (dy, dx)


def test_exported_ghost_model_has_no_conv_for_the_shifts():
    spec = MODELS["ghostsr_x2"]
    model = spec.factory()
    for m in model.modules():  # make every shift a real one (not identity)
        if isinstance(m, GhostModule):
            m.logits.data.zero_()
            m.logits.data[0] = 5.0
    deploy = spec.deploy(model)
    program = torch.export.export(deploy, (torch.rand(1, 1, 16, 16),))
    # head + 2 primaries per block + body tail + tail: shifts add none.
    blocks = len(model.body)
    assert _conv_count(program) == 2 * blocks + 3
    assert any("pad" in str(n.target) for n in program.graph.nodes)


def test_training_mode_mixes_shifts_and_eval_uses_argmax():
    mod = GhostModule(4, 8)
    mod.logits.data[:] = torch.arange(9.0)
    x = torch.randn(1, 4, 6, 6)
    mod.eval()
    intrinsic = mod.primary(x)
    assert torch.equal(mod(x)[:, 4:], shift2d(intrinsic, *SHIFTS[8]))
    mod.train()
    assert mod(x).requires_grad and mod.logits.grad is None


def test_ghost_from_plain_is_exact_for_paired_filters():
    torch.manual_seed(0)
    plain = GhostSR(2, blocks=2, channels=8, ghost=False).eval()
    with torch.no_grad():
        for block in plain.body:
            for conv in (block.conv1, block.conv2):
                half = conv.out_channels // 2
                perm = torch.randperm(conv.out_channels)
                w = torch.randn(half, *conv.weight.shape[1:])
                b = torch.randn(half)
                conv.weight.copy_(torch.cat([w, w])[perm])
                conv.bias.copy_(torch.cat([b, b])[perm])
    ghost = ghost_from_plain(plain).eval()
    x = torch.rand(1, 1, 12, 12)
    assert torch.allclose(plain(x), ghost(x), atol=1e-5)
    assert all(isinstance(b.conv1, GhostModule) for b in ghost.body)


def test_ghost_from_plain_keeps_half_the_filters_and_copies_each_other_one():
    # a generic model: every converted conv computes half its channels exactly (the
    # representatives) and each other channel as a copy of one of those
    torch.manual_seed(0)
    plain = GhostSR(2, blocks=2, channels=8, ghost=False).eval()
    ghost = ghost_from_plain(plain).eval()
    x = torch.rand(1, 8, 12, 12)
    with torch.no_grad():
        for pb, gb in zip(plain.body, ghost.body, strict=True):
            for name in ("conv1", "conv2"):
                want, got = getattr(pb, name)(x), getattr(gb, name)(x)
                exact = [c for c in range(8) if torch.allclose(got[:, c], want[:, c], atol=1e-6)]
                assert len(exact) >= 4, name
                for c in range(8):
                    assert any(torch.allclose(got[:, c], want[:, r], atol=1e-6)
                               for r in exact), (name, c)
    assert ghost(torch.rand(1, 1, 12, 12)).shape == (1, 1, 24, 24)


def test_training_forward_applies_exactly_one_shift_and_learns_the_logits():
    torch.manual_seed(0)
    mod = GhostModule(4, 8).train()
    x = torch.randn(1, 4, 6, 6)
    weights = mod.shift_weights()
    assert torch.allclose(weights, torch.nn.functional.one_hot(weights.argmax(), 9).float())
    mod(x).square().sum().backward()
    assert mod.logits.grad is not None and mod.logits.grad.abs().sum() > 0


def test_at_the_end_of_annealing_training_forward_is_the_deploy_form():
    torch.manual_seed(0)
    model = GhostSR(2, blocks=2, channels=8)
    for m in model.modules():
        if isinstance(m, GhostModule):
            m.logits.data = torch.randn(9)
    x = torch.rand(1, 1, 12, 12)
    model.train()
    model.anneal(0.5)  # mid-schedule: noisy samples differ from the argmax somewhere
    assert any(not torch.allclose(model(x), model.deploy()(x)) for _ in range(5))
    model.anneal(1.0)
    assert all(m.noise == 0 for m in model.modules() if isinstance(m, GhostModule))
    assert torch.allclose(model(x), model.deploy()(x), atol=1e-6)


def test_chosen_shift_has_the_nine_term_sums_gradients():
    from edge_sr.models.ghostsr import _ChosenShift

    torch.manual_seed(0)
    x = torch.randn(2, 3, 5, 6, dtype=torch.float64, requires_grad=True)
    logits = torch.randn(9, dtype=torch.float64, requires_grad=True)
    soft = torch.softmax(logits, 0)
    w = torch.nn.functional.one_hot(soft.argmax(), 9).double() - soft.detach() + soft
    g = torch.randn(2, 3, 5, 6, dtype=torch.float64)
    ref = sum(wj * shift2d(x, dy, dx) for wj, (dy, dx) in zip(w, SHIFTS))
    ref_grads = torch.autograd.grad((ref * g).sum(), (x, logits), retain_graph=True)
    out = _ChosenShift.apply(x, w, int(w.argmax()))
    grads = torch.autograd.grad((out * g).sum(), (x, logits))
    assert torch.allclose(out, ref)
    assert all(torch.allclose(a, b) for a, b in zip(grads, ref_grads))


def test_a_converted_model_loads_into_a_fresh_one(tmp_path):
    from edge_sr.models import load_model

    torch.manual_seed(0)
    ghost = ghost_from_plain(MODELS["edsrlite_x2"].factory()).eval()
    torch.save({"state_dict": ghost.state_dict()}, tmp_path / "km.pt")
    loaded = load_model("ghostsr_km_x2", tmp_path / "km.pt")
    x = torch.rand(1, 1, 12, 12)
    assert torch.allclose(loaded(x), ghost.deploy()(x), atol=1e-6)
