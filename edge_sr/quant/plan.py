"""Quantization plans on the torch.fx graph of a deploy-form model, and their simulation.

Scheme (what the Relax lowering implements, and what ``simulate`` reproduces):
- weights: per-output-channel symmetric int8, ``s_w[c] = max|w_c| / 127``;
- activations: per-tensor uint8. Tensors that calibration saw >= 0 (inputs, ReLU
  outputs) have zero point 0; signed ones (PReLU outputs, residual sums) are asymmetric,
  ``real = (q - zp) * s`` over their calibrated [lo, hi], which spends all 256 levels on
  the range actually used (``symmetric=True`` gives int8 with zp 0 instead);
- conv: uint8/int8 x int8 -> int32 accumulation. Zero padding must be the real 0, so an
  input with zero point ``zp`` is padded with ``zp`` explicitly; then
  ``sum w (q - zp) = sum w q - zp * sum w`` and the correction ``zp * sum(w_c)`` is a
  per-channel constant folded into the int32 bias (at scale ``s_in * s_w``). A
  per-channel float epilogue ``t = acc * s_in * s_w / s_out`` follows, then the activation
  (fused when the conv's only user is one), ``q = clip(floor(t + 0.5) + zp_out)``;
- add, standalone activations: dequantize, compute, requantize (elementwise);
- concat: inputs requantized to the output scale; depth-to-space, shifts: integer moves;
- any other op TVM's FX importer knows (Tanh, Sigmoid, an attention multiply, a split):
  computed in float32 between quantized tensors (``float_ops``).
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np
import torch
import torch.fx as fx
from torch import nn

from ..models.ghostsr import shift2d
from . import float_ops
from .observers import OBSERVERS, Reservoir, asymmetric_range

QMAX = {"int8": 127, "uint8": 255, "sint8": 127, "int16": 32767}
QMIN = {"int8": -127, "uint8": 0, "sint8": -128, "int16": -32767}
# Integer type each activation dtype is stored in. "sint8" is a uint8 tensor stored as
# q - 128 (zero point shifted by -128 too: the same real values, bit for bit): Arm's
# sdot multiplies int8 by int8 only, and the weights are int8. "int16" is the 16x8
# fallback (TFLite's scheme): a sensitive tensor kept in 16 bits, symmetric, consumed by
# int16 x int8 -> int32 convs.
STORAGE = {"int8": "int8", "uint8": "uint8", "sint8": "int8", "int16": "int16"}
INT32_MAX = 2**31 - 1
ACTIVATIONS = (nn.PReLU, nn.ReLU, nn.Hardtanh)
MOVES = (nn.PixelShuffle,)  # pure data movement: output keeps the input's scale
MOVE_FUNCTIONS = (torch.nn.functional.pixel_shuffle, torch.pixel_shuffle)


class QuantError(ValueError):
    """A model the quantizer cannot handle, with a one-line reason."""


@dataclass
class ActQ:
    """Quantization of one tensor: ``real = (q - zero_point) * scale``."""

    scale: float
    dtype: str  # "uint8", "int8", "sint8" (uint8 stored shifted into int8) or "int16"
    zero_point: int = 0

    @property
    def lo(self) -> int:
        """Smallest representable value in steps of ``scale`` (``QMIN - zp``)."""
        return QMIN[self.dtype] - self.zero_point

    @property
    def hi(self) -> int:
        """Largest representable value in steps of ``scale`` (``QMAX - zp``)."""
        return QMAX[self.dtype] - self.zero_point


@dataclass
class QuantPlan:
    """Everything the lowering needs.

    Attributes:
        acts: Node name -> quantization of its output.
        weights: Conv node name -> (int8 weights, per-channel scales).
        float_layers: Conv nodes kept in float32 (mixed precision).
        fused: Conv node -> the activation node fused into its epilogue.
        observer: Observer used for the activations.
        float_out: Nodes of the output tail computed in float32 straight from the int32
            accumulator (the module's output is float: requantizing it to 8 bits would
            only add error on top of the 8-bit evaluation grid).
    """

    acts: dict[str, ActQ]
    weights: dict[str, tuple[np.ndarray, np.ndarray]]
    float_layers: set[str] = field(default_factory=set)
    fused: dict[str, str] = field(default_factory=dict)
    observer: str = "mse"
    float_out: set[str] = field(default_factory=set)


def map_acts(plan: QuantPlan, fn: Callable[[ActQ], ActQ]) -> QuantPlan:
    """A copy of ``plan`` with ``fn`` applied to every activation quantization, once per
    object: moves share their producer's ``ActQ`` and keep sharing the result."""
    memo: dict[int, ActQ] = {}
    acts = {}
    for n, q in plan.acts.items():
        if id(q) not in memo:
            memo[id(q)] = fn(q)
        acts[n] = memo[id(q)]
    return replace(plan, acts=acts)


def signed_storage(plan: QuantPlan) -> QuantPlan:
    """The same plan with every uint8 tensor stored as int8 (``q - 128``, ``zp - 128``).

    Real values, and so the module's output, are unchanged; every conv then multiplies
    int8 by int8, which LLVM turns into ``sdot`` on Arm dotprod targets (uint8 x int8
    would need ``usdot``, an Armv8.6 i8mm instruction the Pi 5's Cortex-A76 lacks).
    """
    return map_acts(plan, lambda q: ActQ(q.scale, "sint8", q.zero_point - 128)
                    if q.dtype == "uint8" else q)


def output_tail(gm: fx.GraphModule) -> set[str]:
    """The output's producers back through moves/activations to the first conv/add/cat."""
    out = next(n for n in gm.graph.nodes if n.op == "output")
    node, tail = out.args[0], set()
    while isinstance(node, fx.Node):
        tail.add(node.name)
        k = kind(gm, node)
        if k not in ("move", "shift", "act", "float") or (
                k == "float" and len(node.all_input_nodes) != 1):
            break
        node = node.args[0]
    return tail


def float_tensors(gm: fx.GraphModule, plan: QuantPlan) -> set[str]:
    """Nodes whose output stays float32: float layers (and their fused activations), the
    output tail, and whatever only rearranges or combines a float tensor."""
    out = set(plan.float_out)
    for node in gm.graph.nodes:
        k = kind(gm, node)
        if k == "conv" and node.name in plan.float_layers:
            out.add(node.name)
            if node.name in plan.fused:
                out.add(plan.fused[node.name])
        elif k in ("move", "shift", "act", "add", "cat"):
            inputs = node.args[0] if k == "cat" else node.args[:2] if k == "add" else node.args[:1]
            if any(isinstance(a, fx.Node) and a.name in out for a in inputs):
                out.add(node.name)
        elif k == "const" or (k == "float" and (
                node.name not in plan.acts  # not a tensor (a split's tuple)
                or any(a.name in out for a in node.all_input_nodes))):
            out.add(node.name)
    return out


def trace(model: nn.Module) -> fx.GraphModule:
    """Symbolically trace a deploy-form model (``shift2d`` stays one leaf call)."""
    tracer = fx.Tracer(autowrap_functions=(shift2d,))
    graph = tracer.trace(model)
    return fx.GraphModule(tracer.root, graph)


def module_of(gm: fx.GraphModule, node: fx.Node) -> nn.Module | None:
    """The submodule a ``call_module`` node calls, else None."""
    return gm.get_submodule(node.target) if node.op == "call_module" else None


def kind(gm: fx.GraphModule, node: fx.Node) -> str:
    """Classify a node: input, output, conv, act, move, add, cat, shift, float (an op run
    in float32, see ``float_ops``), const (a ``get_attr`` tensor), or unsupported."""
    if node.op in ("placeholder", "output"):
        return "input" if node.op == "placeholder" else "output"
    if node.op == "get_attr":
        return "const"
    mod = module_of(gm, node)
    if isinstance(mod, nn.Conv2d):
        return "conv"
    if isinstance(mod, ACTIVATIONS):
        return "act"
    if isinstance(mod, MOVES):
        return "move"
    if node.op == "call_function":
        if node.target in (operator.add, torch.add):
            return "add"
        if node.target is torch.cat:
            return "cat"
        if node.target is shift2d:
            return "shift"
        if node.target in MOVE_FUNCTIONS:
            return "move"
    return "float" if float_ops.is_float_op(gm, node) else "unsupported"


def upscale_factor(gm: fx.GraphModule, node: fx.Node) -> int:
    """The factor of a depth-to-space move (module or function)."""
    mod = module_of(gm, node)
    return mod.upscale_factor if mod is not None else int(node.args[1])


def move(gm: fx.GraphModule, node: fx.Node, x: torch.Tensor) -> torch.Tensor:
    """A depth-to-space move applied to ``x``."""
    return torch.nn.functional.pixel_shuffle(x, upscale_factor(gm, node))


def fusable(gm: fx.GraphModule) -> dict[str, str]:
    """Conv nodes whose only user is an activation module: conv -> activation."""
    out = {}
    for node in gm.graph.nodes:
        if kind(gm, node) == "conv" and len(node.users) == 1:
            (user,) = node.users
            if kind(gm, user) == "act":
                out[node.name] = user.name
    return out


def check_supported(gm: fx.GraphModule) -> None:
    """Raise ``QuantError`` naming the first op the quantizer does not support."""
    for node in gm.graph.nodes:
        if kind(gm, node) == "unsupported":
            what = float_ops.op_label(gm, node)
            raise QuantError(f"int8: unsupported op {what} at node {node.name} (no integer "
                             "form, and TVM's FX importer cannot run it in float32)")


def float_nodes(gm: fx.GraphModule) -> list[str]:
    """``node (op)`` for every op the int8 module runs in float32, for reports."""
    out = []
    for n in gm.graph.nodes:
        if kind(gm, n) == "float":
            where = n.target if n.op == "call_module" else n.name
            label = float_ops.op_label(gm, n)
            out.append(where if where.startswith(label) else f"{where} ({label})")
    return out


def calibrate(gm: fx.GraphModule, batches: list[torch.Tensor]) -> dict[str, Reservoir]:
    """Run calibration batches and sample every node's output values."""
    stats: dict[str, Reservoir] = {}

    class Recorder(fx.Interpreter):
        def run_node(self, n):
            result = super().run_node(n)
            if isinstance(result, torch.Tensor) and n.op != "output":
                stats.setdefault(n.name, Reservoir(len(stats))).add(result.detach().numpy())
            return result

    with torch.no_grad():
        for batch in batches:
            Recorder(gm).run(batch)
    return stats


def _weight_q(conv: nn.Conv2d) -> tuple[np.ndarray, np.ndarray]:
    w = conv.weight.detach().double().numpy()
    scale = np.abs(w).reshape(w.shape[0], -1).max(1) / 127.0
    scale[scale == 0] = 1.0
    q = np.clip(np.round(w / scale[:, None, None, None]), -127, 127).astype(np.int8)
    return q, scale


def act_quant(res: Reservoir, observer: str, symmetric: bool) -> ActQ:
    """The quantization of one calibrated tensor (see the module docstring)."""
    if res.signed and not symmetric:
        lo, hi = asymmetric_range(res, observer)
        scale = (hi - lo) / 255.0
        return ActQ(scale, "uint8", int(np.clip(round(-lo / scale), 0, 255)))
    dtype = "int8" if res.signed else "uint8"
    return ActQ(OBSERVERS[observer](res, QMAX[dtype]) / QMAX[dtype], dtype)


def make_plan(gm: fx.GraphModule, stats: dict[str, Reservoir], observer: str = "mse",
              float_layers: set[str] | None = None, symmetric: bool = False) -> QuantPlan:
    """Choose scales (and zero points) for every tensor and quantize the conv weights."""
    if observer not in OBSERVERS:
        raise QuantError(f"unknown observer {observer!r}; choose from {sorted(OBSERVERS)}")
    check_supported(gm)
    acts, weights = {}, {}
    for node in gm.graph.nodes:
        k = kind(gm, node)
        if k == "output":
            continue
        if k in ("move", "shift"):  # same values, rearranged: keep the producer's scale
            acts[node.name] = acts[node.args[0].name]
            continue
        if k == "input":  # 8-bit images in [0, 1]: the 1/255 grid quantizes them losslessly
            acts[node.name] = ActQ(1.0 / 255.0, "uint8")
            continue
        if k == "const" or node.name not in stats:  # float: constants, tuples
            continue
        acts[node.name] = act_quant(stats[node.name], observer, symmetric)
        if k == "conv":
            weights[node.name] = _weight_q(module_of(gm, node))
    tail = output_tail(gm)
    fused = {c: a for c, a in fusable(gm).items() if c not in tail and a not in tail}
    return QuantPlan(acts, weights, set(float_layers or ()), fused, observer, tail)


def act_quant16(res: Reservoir) -> ActQ:
    """16-bit symmetric quantization of a calibrated tensor over its whole range (at 16
    bits clipping buys nothing: the step is already 1/32767 of the range)."""
    m = max(abs(res.min), abs(res.max))
    return ActQ((m if m > 0 else 1.0) / QMAX["int16"], "int16")


def conv_consumers(gm: fx.GraphModule, name: str) -> list[fx.Node]:
    """Convs that read tensor ``name`` in its integer form (through moves and shifts)."""
    node = next(n for n in gm.graph.nodes if n.name == name)
    out, stack = [], list(node.users)
    while stack:
        user = stack.pop()
        k = kind(gm, user)
        if k == "conv":
            out.append(user)
        elif k in ("move", "shift"):
            stack.extend(user.users)
    return out


def int16_candidates(gm: fx.GraphModule, plan: QuantPlan) -> list[str]:
    """Quantized tensors that may go to 16 bits: materialized (not an activation fused
    away, not a move sharing its producer's grid, not the 8-bit input image, not float),
    and no consumer's int32 accumulator can overflow with 16-bit inputs."""
    floats = float_tensors(gm, plan)
    names = []
    for node in gm.graph.nodes:
        if kind(gm, node) in ("input", "output", "move", "shift") or node.name in plan.fused \
                or node.name in floats or plan.acts[node.name].dtype == "int16":
            continue
        if _int16_fits(gm, plan, node.name):
            names.append(node.name)
    return names


def _int16_fits(gm: fx.GraphModule, plan: QuantPlan, name: str) -> bool:
    # Worst case |acc| = 32767 * sum|w_q| + |bias_q| per output channel, must fit int32.
    # The 16-bit grid spans at least the 8-bit one's clipped range: a smaller scale than
    # this only if calibration saw less, so the bias bound below is conservative.
    q = plan.acts[name]
    scale = max(abs(q.lo), abs(q.hi)) * q.scale / QMAX["int16"]
    for conv in conv_consumers(gm, name):
        if conv.name in plan.float_layers:
            continue
        wq, ws = plan.weights[conv.name]
        bound = np.abs(wq.astype(np.int64)).reshape(len(wq), -1).sum(1) * QMAX["int16"]
        try:
            bq = bias_q(module_of(gm, conv), scale, ws)
        except QuantError:
            return False
        if bq is not None:
            bound = bound + np.abs(bq.astype(np.int64))
        if bound.max() > INT32_MAX:
            return False
    return True


def with_int16(plan: QuantPlan, stats: dict[str, Reservoir], names: list[str]) -> QuantPlan:
    """A copy of ``plan`` with the tensors ``names`` (and the moves sharing their grid)
    quantized to 16 bits."""
    new = {id(plan.acts[n]): act_quant16(stats[n]) for n in names}
    return replace(plan, acts={k: new.get(id(q), q) for k, q in plan.acts.items()})


def fake_quant(x: torch.Tensor, q: ActQ) -> torch.Tensor:
    """Quantize-dequantize with the lowering's rounding (floor(x/s + 0.5), clipped)."""
    return torch.clamp(torch.floor(x / q.scale + 0.5), q.lo, q.hi) * q.scale


def bias_q(conv: nn.Conv2d, s_in: float, w_scale: np.ndarray) -> np.ndarray | None:
    """The conv bias on the accumulator's grid (scale ``s_in * s_w[c]``), as int32."""
    if conv.bias is None:
        return None
    b = np.round(conv.bias.detach().double().numpy() / (s_in * w_scale))
    if np.abs(b).max() > INT32_MAX:  # a tiny input scale: the bias no longer fits int32
        raise QuantError(f"conv bias overflows int32 at input scale {s_in:.3g}")
    return b.astype(np.int32)


def interpret(gm: fx.GraphModule, plan: QuantPlan, x: torch.Tensor,
              conv_fn: Callable[[fx.Node, nn.Conv2d, torch.Tensor], torch.Tensor],
              quant_fn: Callable[[torch.Tensor, ActQ], torch.Tensor]) -> torch.Tensor:
    """Walk the graph, quantizing each tensor where the int8 module quantizes it.

    ``conv_fn(node, conv, x)`` computes a convolution, ``quant_fn(v, q)`` fake-quantizes
    a tensor: the simulation and QAT differ only in these two.
    """
    env: dict[str, torch.Tensor] = {}
    floats = float_tensors(gm, plan)

    def arg(a):
        return env[a.name] if isinstance(a, fx.Node) else a

    def value(a: fx.Node):
        return env[a.name]

    for node in gm.graph.nodes:
        k = kind(gm, node)
        if k == "output":
            return arg(node.args[0])
        if k == "input":
            v = x
        elif k == "conv":
            v = conv_fn(node, module_of(gm, node), arg(node.args[0]))
        elif k == "act":
            v = apply_act(module_of(gm, node), arg(node.args[0]))
        elif k == "move":
            v = move(gm, node, arg(node.args[0]))
        elif k == "float":
            v = float_ops.run(gm, node, value)
        elif k == "const":
            v = float_ops.constant(gm, node, x.dtype)
        elif k == "shift":
            v = shift2d(arg(node.args[0]), *node.args[1:])
        elif k == "add":
            v = arg(node.args[0]) + arg(node.args[1])
        else:  # cat
            v = torch.cat([arg(a) for a in node.args[0]], dim=cat_dim(node))
        if node.name not in plan.fused and node.name not in floats \
                and k not in ("move", "shift"):
            v = quant_fn(v, plan.acts[node.name])
        env[node.name] = v
    raise QuantError("graph has no output")


def simulate(gm: fx.GraphModule, plan: QuantPlan, x: torch.Tensor) -> torch.Tensor:
    """Run the model as the int8 module computes it (in float64).

    Integer accumulation is exact in float64 for our sizes, so this equals the compiled
    module up to the float32 rounding of its epilogue (an occasional 1-step difference).

    Args:
        gm: The traced deploy model.
        plan: Scales, weights and float layers.
        x: Input batch (float).

    Returns:
        The output, float64.
    """

    def conv_fn(node: fx.Node, conv: nn.Conv2d, v: torch.Tensor) -> torch.Tensor:
        return _sim_conv(node, conv, v, plan)

    return interpret(gm, plan, x.double(), conv_fn, fake_quant)


def apply_act(mod: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """An activation module applied functionally (no dtype change of the module)."""
    if isinstance(mod, nn.PReLU):
        weight = mod.weight if x.dtype == mod.weight.dtype else mod.weight.detach().to(x.dtype)
        return torch.nn.functional.prelu(x, weight)
    if isinstance(mod, nn.ReLU):
        return torch.relu(x)
    return torch.clamp(x, mod.min_val, mod.max_val)


def cat_dim(node: fx.Node) -> int:
    """The concat axis of a ``torch.cat`` node."""
    return node.args[1] if len(node.args) > 1 else node.kwargs.get("dim", 0)


def _sim_conv(node: fx.Node, conv: nn.Conv2d, x: torch.Tensor,
              plan: QuantPlan) -> torch.Tensor:
    w = conv.weight.detach().double()
    b = conv.bias.detach().double() if conv.bias is not None else None
    if node.name not in plan.float_layers:
        wq, ws = plan.weights[node.name]
        q_in = plan.acts[node.args[0].name]
        s_in = q_in.scale
        x = fake_quant(x, q_in)  # a float input is quantized at the int8 conv (idempotent)
        w = torch.from_numpy(wq.astype(np.float64) * ws[:, None, None, None])
        bq = bias_q(conv, s_in, ws)
        if bq is not None:
            b = torch.from_numpy(bq.astype(np.float64) * s_in * ws)
    return conv2d_banded(x, w, b, conv.stride, conv.padding, conv.dilation, conv.groups)


# float64 elements of one unfolded (im2col) band: 512 MiB
IM2COL_LIMIT = 1 << 26


def conv2d_banded(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None,
                  stride: tuple[int, int], padding: tuple[int, int],
                  dilation: tuple[int, int], groups: int) -> torch.Tensor:
    """``conv2d`` (zero padding) computed in bands of output rows, equal to the whole one.

    PyTorch's float64 conv on a CPU unfolds its whole input first: in/groups x kh x kw x
    output pixels, 17 GB for SRResNet's 9x9 tail on a 720x576 Set14 image. Each band
    unfolds at most ``IM2COL_LIMIT`` elements; every output is the same sum.
    """
    conv = torch.nn.functional.conv2d
    if isinstance(padding, str):  # "same"/"valid": no band arithmetic needed by our models
        return conv(x, w, b, stride, padding, dilation, groups)
    (sh, sw), (ph, pw), (dh, dw) = stride, padding, dilation
    kh, kw = (int(k) for k in w.shape[2:])
    hout = (x.shape[2] + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    wout = (x.shape[3] + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    per_row = x.shape[0] * x.shape[1] // groups * kh * kw * max(wout, 1)
    rows = max(1, IM2COL_LIMIT // per_row)
    if rows >= hout:
        return conv(x, w, b, stride, padding, dilation, groups)
    xp = torch.nn.functional.pad(x, (0, 0, ph, ph))
    bands = [conv(xp[:, :, r0 * sh:(min(r0 + rows, hout) - 1) * sh + dh * (kh - 1) + 1],
                  w, b, stride, (0, pw), dilation, groups) for r0 in range(0, hout, rows)]
    return torch.cat(bands, 2)
