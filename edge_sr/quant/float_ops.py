"""Ops the int8 quantizer has no integer form for run in float32 between quantized tensors.

A node of the traced graph that is not a conv, a homogeneous activation (PReLU, ReLU,
clipped ReLU), an add, a concat or a data move (a Tanh or Sigmoid, a LeakyReLU, a
multiply by an attention map, a channel split, a mean) is computed in float32: its
quantized inputs are dequantized, the op runs, and its output is quantized again,
calibrated like any activation, for the integer layers that read it. In the compiled
module the dequantize/op/quantize chain is elementwise, so it fuses into the kernel of
the conv that produces its input.

The Relax for such an op is what TVM's own PyTorch FX importer emits for it (its
converter for that module, function or method), so an op TVM imports for a float build
works in an int8 one; an op it does not import is refused in one line naming the op and
its node (``plan.check_supported``).
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch
import torch.fx as fx
from torch import nn
from tvm import relax

CALLS = ("call_module", "call_function", "call_method")


@functools.cache
def _converters() -> dict:
    from tvm.relax.frontend.torch.fx_translator import TorchFXImporter

    return TorchFXImporter().convert_map


def _key(gm: fx.GraphModule, node: fx.Node):
    if node.op == "call_module":
        return type(gm.get_submodule(node.target))
    if node.op == "call_function":
        return getattr(node.target, "__name__", None)
    return node.target  # call_method: the method's name


def is_float_op(gm: fx.GraphModule, node: fx.Node) -> bool:
    """Whether ``node`` is a call TVM's FX importer can emit in float32."""
    return node.op in CALLS and _key(gm, node) in _converters()


def op_label(gm: fx.GraphModule, node: fx.Node) -> str:
    """The op's name for reports and errors (``Tanh``, ``sigmoid``, ``mean``)."""
    key = _key(gm, node)
    if key is None:  # a callable without a name
        return str(node.target)
    return key.__name__ if isinstance(key, type) else str(key)


def run(gm: fx.GraphModule, node: fx.Node, value: Callable[[fx.Node], object]):
    """Evaluate ``node`` in torch on its inputs (``value`` maps an input node to its
    tensor). A module with parameters runs in their dtype (the simulation runs float64)
    and its output comes back in its input's."""
    args, kwargs = fx.node.map_arg((node.args, node.kwargs), value)
    if node.op == "call_function":
        return node.target(*args, **kwargs)
    if node.op == "call_method":
        return getattr(args[0], node.target)(*args[1:], **kwargs)
    mod = gm.get_submodule(node.target)
    dtype = next((p.dtype for p in mod.parameters()), None)
    tensors = [a for a in args if isinstance(a, torch.Tensor)]
    if dtype is None or not tensors or tensors[0].dtype == dtype:
        return mod(*args, **kwargs)
    back = tensors[0].dtype
    cast = [a.to(dtype) if isinstance(a, torch.Tensor) else a for a in args]
    out = mod(*cast, **kwargs)
    return out.to(back) if isinstance(out, torch.Tensor) else out


def constant(gm: fx.GraphModule, node: fx.Node, dtype: torch.dtype) -> torch.Tensor:
    """The tensor a ``get_attr`` node reads (a learned scalar, a fixed map, an index).

    Args:
        gm: The traced model.
        node: A ``get_attr`` node.
        dtype: Floating dtype a floating tensor is cast to. An integer tensor keeps its
            type: it is an index (GhostSR's channel gather), and ``take`` needs one.
    """
    value = gm
    for atom in node.target.split("."):
        value = getattr(value, atom)
    value = value.detach() if isinstance(value, torch.Tensor) else torch.as_tensor(value)
    return value.to(dtype) if value.is_floating_point() else value


class Emitter:
    """Emits float ops into a Relax ``BlockBuilder`` through TVM's FX importer."""

    def __init__(self, gm: fx.GraphModule, bb: relax.BlockBuilder):
        from tvm.relax.frontend.torch.fx_translator import TorchFXImporter

        self.gm, self.importer = gm, TorchFXImporter()
        self.importer.named_modules = dict(gm.named_modules())
        self.importer.block_builder = bb

    def emit(self, node: fx.Node, inputs: dict[fx.Node, relax.Expr]) -> relax.Expr:
        """The Relax value of ``node`` given its (float32) input values."""
        imp = self.importer
        imp.env = dict(inputs)
        if node.op == "call_module":  # the importer reads parameters from its params map
            mod: nn.Module = self.gm.get_submodule(node.target)
            for p in mod.parameters():
                imp.params[p] = relax.const(p.detach().float().numpy())
        return imp.convert_map[_key(self.gm, node)](node)


def const_expr(gm: fx.GraphModule, node: fx.Node) -> relax.Constant:
    """A ``get_attr`` tensor as a Relax constant: float32, or an index in its integer type."""
    return relax.const(constant(gm, node, torch.float32).numpy())
