"""One mechanism for the passes that replace eligible ``relax.nn.conv2d`` calls by TE
kernels over weights packed at build time (``dot4_conv``, ``vnni_conv``)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import tvm
from tvm import relax


def conv_with_constant_weights(call: relax.Call, data_dtype: str, weight_dtype: str,
                               out_dtype: str, layouts: tuple[str, str]) -> bool:
    """A conv of ``data_dtype`` data with constant ``weight_dtype`` weights and an
    ``out_dtype`` result, stride and dilation 1, no groups, in the (data/out, kernel)
    ``layouts``: what every conv rewrite takes before its own shape conditions."""
    a = call.attrs
    data, weight = call.args
    return (isinstance(weight, tvm.ir.expr.Constant) and weight.value.dtype == weight_dtype
            and data.ty.dtype == data_dtype and call.ty.dtype == out_dtype
            and (a.data_layout, a.kernel_layout, a.out_layout) == (layouts[0], layouts[1],
                                                                  layouts[0])
            and int(a.groups) == 1 and [int(v) for v in a.strides] == [1, 1]
            and [int(v) for v in a.dilation] == [1, 1])


def int8_conv_with_constant_weights(call: relax.Call, data_dtype: str,
                                    layouts: tuple[str, str]) -> bool:
    """An int32-out conv of ``data_dtype`` data with constant int8 weights (see
    ``conv_with_constant_weights``): what both packing rewrites can take before their own
    channel conditions."""
    return conv_with_constant_weights(call, data_dtype, "int8", "int32", layouts)


def spatial_pad(call: relax.Expr, layout: str) -> tuple[tuple[int, ...], float] | None:
    """``((top, left, bottom, right), value)`` of a constant-mode ``relax.nn.pad`` that
    pads only the H and W axes of a ``layout`` tensor; None for anything else."""
    if not (isinstance(call, relax.Call) and call.op == tvm.ir.Op.get("relax.nn.pad")
            and call.attrs.pad_mode == "constant" and len(call.args) == 1):
        return None
    width = [int(v) for v in call.attrs.pad_width]
    axes = {ax: width[2 * i: 2 * i + 2] for i, ax in enumerate(layout)}
    if axes["N"] != [0, 0] or axes["C"] != [0, 0]:
        return None
    return (axes["H"][0], axes["W"][0], axes["H"][1], axes["W"][1]), float(call.attrs.pad_value)


def conv_rewrite_pass(name: str, eligible: Callable[[relax.Call], bool],
                      pack: Callable[[np.ndarray, str], np.ndarray], compute: Callable,
                      kernel: str) -> tvm.transform.Pass:
    """A module pass that replaces every conv2d call ``eligible`` accepts by
    ``compute(data, packed weights, padding, pad_value, (KH, KW))`` (a TE function,
    emitted as kernel ``kernel``), the weights packed by ``pack(weights, data dtype)``;
    other calls are left as they are.

    A quantized conv's input is padded with its zero point by an explicit ``nn.pad``
    (the conv itself pads nothing): that pad is absorbed into the kernel, which packs
    its input per tile anyway, instead of running as a kernel of its own (one more
    parallel region, and a barrier that a preempted thread stretches by a time slice)."""

    @relax.expr_functor.mutator
    class _Rewriter(relax.PyExprMutator):
        def visit_call_(self, call: relax.Call) -> relax.Expr:
            call = self.visit_expr_post_order(call)
            if call.op != tvm.ir.Op.get("relax.nn.conv2d") or not eligible(call):
                return call
            data, weight = call.args
            wp = relax.const(pack(weight.value.numpy(), str(data.ty.dtype)))
            pad = tuple(int(p) for p in call.attrs.padding)
            value = 0.0
            bound = self.lookup_binding(data) if isinstance(data, relax.Var) else None
            absorbed = spatial_pad(bound, str(call.attrs.data_layout))
            if absorbed and not any(pad):
                (pad, value), data = absorbed, bound.args[0]
            hw = (2, 3) if str(call.attrs.kernel_layout) == "OIHW" else (1, 2)
            window = tuple(int(weight.value.shape[i]) for i in hw)
            return self.builder_.call_te(compute, data, wp, pad, value, window,
                                         primfunc_name_hint=kernel)

    def transform(mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        rewriter = _Rewriter(mod)
        for gv, func in mod.functions_items():
            if isinstance(func, relax.Function):
                rewriter.builder_.update_func(gv, rewriter.visit_expr(func))
        return rewriter.builder_.get()

    return tvm.transform.module_pass(transform, opt_level=0, name=name)
