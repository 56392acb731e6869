"""Lower a quantization plan to a Relax module with integer kernels.

Each quantized conv is ``R.nn.conv2d(uint8|int8, int8, out_dtype="int32")`` plus an int32
bias add and a per-channel float epilogue (requantize, activation, round, clip, cast)
that FuseOps merges into the conv's kernel. The requantization multiplies by a float
scale rather than a fixed-point multiplier + shift: on the CPUs we target (NEON, x86)
a float multiply per output is as cheap as the integer route and avoids 32x32->64-bit
products; the scale is exact to float32 precision (24 bits, vs 31 for fixed point), far
below int8's resolution. Input and output of the module stay float32.
"""

from __future__ import annotations

import numpy as np
import torch.fx as fx
from torch import nn
from tvm import relax

from . import float_ops
from .plan import (
    QMAX,
    QMIN,
    STORAGE,
    ActQ,
    QuantPlan,
    bias_q,
    cat_dim,
    float_tensors,
    kind,
    module_of,
    signed_storage,
    upscale_factor,
)

R = relax.op
# Activation dtypes quantized in uint8's form (see ``quantize``), with the offset from
# uint8's codes to theirs.
UNSIGNED_FORM = {"uint8": 0, "sint8": 128}


def _const(value, dtype: str = "float32") -> relax.Constant:
    return relax.const(np.asarray(value, dtype=dtype))


class _Lowerer:
    """Emits one Relax dataflow block for a traced, planned model."""

    def __init__(self, gm: fx.GraphModule, plan: QuantPlan, bb: relax.BlockBuilder):
        self.gm, self.plan, self.bb = gm, plan, bb
        self.env: dict[str, relax.Expr] = {}
        self.floats = float_tensors(gm, plan)
        self.float_emitter: float_ops.Emitter | None = None

    def emit(self, expr: relax.Expr) -> relax.Var:
        return self.bb.emit(expr)

    # Quantize/dequantize helpers: q = clip(floor(x / s + 0.5) + zp); x = (q - zp) * s.
    def quantize(self, x: relax.Expr, q: ActQ, prescaled: bool = False) -> relax.Var:
        t = x if prescaled else self.emit(R.multiply(x, _const(1.0 / q.scale)))
        lo, hi = _const(QMIN[q.dtype]), _const(QMAX[q.dtype])
        if q.dtype in UNSIGNED_FORM:
            # clip(floor(v), 0, 255) == trunc(clip(v, 0, 255)) for v = t + 0.5 + zp: the
            # clip bounds are integers and truncation is floor on non-negative values, so
            # the epilogue needs no floor and one add (the zero point is added before
            # rounding: a value within ~1e-5 of a half step may round the other way).
            # "sint8" (uint8 stored as q - 128) computes the same v, so it stays uint8's
            # bits minus 128.
            shift = UNSIGNED_FORM[q.dtype]
            t = self.emit(R.add(t, _const(0.5 + q.zero_point + shift)))
            if shift:
                t = self.emit(R.add(R.floor(t), _const(-float(shift))))
            t = self.emit(R.minimum(R.maximum(t, lo), hi))
            return self.emit(R.astype(t, STORAGE[q.dtype]))
        t = self.emit(R.floor(R.add(t, _const(0.5))))
        if q.zero_point:  # added after rounding: exact, where adding before costs bits
            t = self.emit(R.add(t, _const(float(q.zero_point))))
        t = self.emit(R.minimum(R.maximum(t, lo), hi))
        return self.emit(R.astype(t, STORAGE[q.dtype]))

    def dequantize(self, name: str) -> relax.Var:
        if name in self.floats:  # already float32
            return self.env[name]
        q = self.plan.acts[name]
        t = self.emit(R.astype(self.env[name], "float32"))
        if q.zero_point:
            t = self.emit(R.subtract(t, _const(float(q.zero_point))))
        return self.emit(R.multiply(t, _const(q.scale)))

    def activation(self, mod: nn.Module, t: relax.Expr, unit: float) -> relax.Expr:
        """Apply an activation to ``t`` expressed in units of ``unit`` (positive)."""
        if isinstance(mod, nn.PReLU):
            slope = mod.weight.detach().numpy().reshape(1, -1, 1, 1)
            # max(t, 0) + slope * min(t, 0): the same float32 result as where(t > 0,
            # t, slope * t), bit for bit, but from binary ops that ConvertLayout moves
            # to NHWC; `where` made it wrap each epilogue in transposes (rpi5 int8).
            zero = _const(0.0)
            return self.emit(R.add(R.maximum(t, zero),
                                   R.multiply(R.minimum(t, zero), _const(slope))))
        if isinstance(mod, nn.ReLU):
            return self.emit(R.maximum(t, _const(0.0)))
        lo, hi = mod.min_val / unit, mod.max_val / unit
        return self.emit(R.minimum(R.maximum(t, _const(lo)), _const(hi)))

    def conv(self, node: fx.Node) -> relax.Var:
        conv = module_of(self.gm, node)
        src = node.args[0].name
        out_name = self.plan.fused.get(node.name, node.name)
        out_q = self.plan.acts[out_name]
        pad = [int(p) for p in conv.padding] * 2
        attrs = dict(strides=conv.stride, padding=pad, dilation=conv.dilation,
                     groups=conv.groups)
        float_out = node.name in self.floats
        if node.name in self.plan.float_layers:  # mixed precision: float conv in between
            w = conv.weight.detach().numpy()
            y = self.emit(R.nn.conv2d(self.dequantize(src), _const(w), **attrs))
            if conv.bias is not None:
                y = self.emit(R.add(y, _const(conv.bias.detach().numpy().reshape(1, -1, 1, 1))))
            unit = 1.0
        else:
            wq, ws = self.plan.weights[node.name]
            q_in = self.plan.acts[src]
            s_in, data = q_in.scale, self.as_quant(src)
            bq = bias_q(conv, s_in, ws)
            if q_in.zero_point:  # pad with zp (the real 0), fold -zp * sum(w) into the bias
                data = self.emit(R.nn.pad(data, [0, 0, 0, 0, pad[0], pad[2], pad[1], pad[3]],
                                          pad_value=float(q_in.zero_point)))
                attrs["padding"] = [0, 0, 0, 0]
                corr = -q_in.zero_point * wq.astype(np.int64).reshape(len(wq), -1).sum(1)
                bq = (corr if bq is None else bq + corr).astype(np.int32)
            acc = self.emit(R.nn.conv2d(data, _const(wq, "int8"), out_dtype="int32", **attrs))
            if bq is not None:
                acc = self.emit(R.add(acc, _const(bq.reshape(1, -1, 1, 1), "int32")))
            unit = 1.0 if float_out else out_q.scale  # y in real or in output units
            mult = (s_in * ws / unit).reshape(1, -1, 1, 1)
            y = self.emit(R.multiply(R.astype(acc, "float32"), _const(mult)))
        if node.name in self.plan.fused:
            act_node = self.plan.fused[node.name]
            act = self.gm.get_submodule(self._node(act_node).target)
            y = self.activation(act, y, unit)
            self.env[act_node] = None  # produced here
        if float_out:
            return y
        return self.quantize(y, out_q, prescaled=unit != 1.0)

    def _node(self, name: str) -> fx.Node:
        return next(n for n in self.gm.graph.nodes if n.name == name)

    def lower(self, x: relax.Var) -> relax.Expr:
        for node in self.gm.graph.nodes:
            k = kind(self.gm, node)
            if k == "output":
                return self.dequantize(node.args[0].name)
            if self.env.get(node.name, 0) is None:  # an activation fused into its conv
                self.env[node.name] = self.env[node.args[0].name]
                continue
            self.env[node.name] = self.node(node, k, x)
        raise ValueError("graph has no output")

    def node(self, node: fx.Node, k: str, x: relax.Var) -> relax.Var:
        q = self.plan.acts.get(node.name)
        if k == "input":
            return self.quantize(x, q)
        if k == "conv":
            return self.conv(node)
        if k == "act":
            mod = module_of(self.gm, node)
            return self.finish(node, self.activation(mod, self.dequantize(node.args[0].name),
                                                     1.0))
        if k == "add":
            a, b = (self.dequantize(a.name) for a in node.args[:2])
            return self.finish(node, self.emit(R.add(a, b)))
        if k == "cat":
            if node.name in self.floats:
                parts = [self.dequantize(a.name) for a in node.args[0]]
            else:
                parts = [self.requantize(a.name, q) for a in node.args[0]]
            return self.emit(R.concat(parts, axis=cat_dim(node)))
        if k == "move":
            return self.depth_to_space(self.env[node.args[0].name],
                                       upscale_factor(self.gm, node))
        if k == "float":
            return self.float_op(node)
        if k == "const":
            return float_ops.const_expr(self.gm, node)
        if k == "shift":
            src = node.args[0].name  # shifted-in pixels are the real 0
            zp = 0 if src in self.floats else self.plan.acts[src].zero_point
            return self.shift(self.env[src], *node.args[1:], pad_value=float(zp))
        raise ValueError(f"cannot lower node {node.name}")

    def float_op(self, node: fx.Node) -> relax.Expr:
        """An op without an integer form, in float32 on its dequantized inputs."""
        if self.float_emitter is None:
            self.float_emitter = float_ops.Emitter(self.gm, self.bb)
        inputs = {a: self.dequantize(a.name) for a in node.all_input_nodes}
        return self.finish(node, self.float_emitter.emit(node, inputs))

    def as_quant(self, name: str) -> relax.Expr:
        """A tensor in its integer form (float tensors are quantized at this boundary)."""
        if name in self.floats:
            return self.quantize(self.env[name], self.plan.acts[name])
        return self.env[name]

    def finish(self, node: fx.Node, value: relax.Expr) -> relax.Expr:
        """Quantize a float result, unless the plan keeps this tensor float."""
        if node.name in self.floats:
            return value
        return self.quantize(value, self.plan.acts[node.name])

    def requantize(self, name: str, q: ActQ) -> relax.Var:
        src = self.plan.acts[name]
        if name in self.floats:
            return self.quantize(self.env[name], q)
        if src == q:
            return self.env[name]
        t = self.emit(R.astype(self.env[name], "float32"))
        if src.zero_point:
            t = self.emit(R.subtract(t, _const(float(src.zero_point))))
        t = self.emit(R.multiply(t, _const(src.scale / q.scale)))
        return self.quantize(t, q, prescaled=True)

    def depth_to_space(self, x: relax.Expr, s: int) -> relax.Var:
        n, c, h, w = (int(d) for d in x.ty.shape)
        t = self.emit(R.reshape(x, (n, c // (s * s), s, s, h, w)))
        t = self.emit(R.permute_dims(t, (0, 1, 4, 2, 5, 3)))
        return self.emit(R.reshape(t, (n, c // (s * s), h * s, w * s)))

    def shift(self, x: relax.Expr, dy: int, dx: int, pad_value: float = 0.0) -> relax.Var:
        if dy == 0 and dx == 0:
            return x
        h, w = (int(d) for d in list(x.ty.shape)[2:])
        t = self.emit(R.nn.pad(x, [0, 0, 0, 0, 1, 1, 1, 1], pad_value=pad_value))
        return self.emit(R.strided_slice(t, axes=[2, 3], begin=[1 - dy, 1 - dx],
                                         end=[1 - dy + h, 1 - dx + w]))


def lower_to_relax(gm: fx.GraphModule, plan: QuantPlan, shape: tuple[int, ...],
                   signed: bool = False):
    """Build ``main(x: float32[shape]) -> float32`` computing the planned int8 model.

    Args:
        gm: The traced deploy model.
        plan: Its quantization plan.
        shape: The static input shape (NCHW).
        signed: Store uint8 activations as int8 (``signed_storage``): bit-identical
            output, int8 x int8 convolutions for Arm's ``sdot``.
    """
    import tvm

    if signed:
        plan = signed_storage(plan)

    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType(shape, "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            out = _Lowerer(gm, plan, bb).lower(x)
            out = bb.emit_output(out)
        bb.emit_func_output(out)
    mod = bb.get()
    assert isinstance(mod, tvm.IRModule)
    return mod
