"""``conv_chain``: fuse a cheap conv into the 1x1 conv that reads it, one kernel for both.

FSRCNN's first conv (5x5, 1 -> 56 channels) writes a 56-channel image that its 1x1
"shrink" conv reads straight back: 2 x 52 MB of memory traffic at 360x640 for 0.48 GMAC
of work, so both kernels are memory-bound (20.5% + 10.3% of the tuned model's time).
A 1x1 consumer needs exactly the producer's pixels, so the producer can be computed
tile by tile inside the consumer's loops without any recomputation, and the 56-channel
image never leaves the cache.

MetaSchedule's own rules never move a tiled reduction into another block's loops, so the
first version of this rewrite wrote the producer as one spatial block whose value was
the whole ``cin*kh*kw``-term sum; tuning then placed it in the 1x1 conv's tiles, but
each 8-pixel vector of it was one chain of 25 dependent FMAs (a quarter of the FMA
units' rate). The producer is now a conv (a reduction, at most ``MAX_TERMS`` terms per
output) and an activation block, and ``templates.ConvTemplate`` computes both inside
the 1x1 conv's tiles with a register tile of independent sums (host x86, 360x640:
10 ms -> 5.1 ms for the kernel). The sums run in the two-kernel form's order (taps,
then bias), so the result matches that form to float tolerance.

1x1 consumers no wider than their producer are fused: FSRCNN's 56 -> 12 shrink, and
XLSR's 3x3 head -> 1x1 and its GBlocks' grouped 3x3 -> 1x1 (32 -> 32); there the
intermediate is at least as wide as the output, so its round trip dominates. A producer
has at most ``MAX_TERMS`` terms per output (XLSR's grouped 3x3 over 8 channels: 72;
ECBSR's 16 -> 16 3x3, 144, is not fused). On xlsr_x3 at 360x640 with the default
schedules (one process, 5 alternated rounds of 10 calls): host x86 Intel EMR (AVX-512)
118.7 -> 107.2 ms, the same host building for ``-mcpu=haswell`` (AVX2) 174.4 -> 132.6 ms;
on the emulated Pi (rpi4, 128x128, both builds tuned, 6 alternated rounds of 3 calls) 1897
unfused against 1935 ms fused, level within the rounds' spread (1712-2070 ms): under QEMU
the emulated arithmetic, not the memory traffic, sets the time.

A consumer with a halo (FSRCNN's 1x1 expand feeding the 5x5 sub-pixel conv) was tried:
the producer is then recomputed on the overlap of neighbouring tiles, and after 128
trials the fused kernel took 30.5 ms against 22.4 ms for the two kernels (host x86,
360x640), so consumers are 1x1 only.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import tvm
from tvm import relax, te, topi

MAX_TERMS = 72  # XLSR's grouped 3x3 (8 channels x 9 taps); see the docstring
KERNEL_NAME = "fused_conv2d_conv2d_chain"  # two "conv2d"s: the profiler maps two layers


@dataclass(frozen=True)
class Epilogue:
    """What follows a conv: optional per-channel bias, then PReLU, ReLU or nothing."""

    bias: tvm.ir.expr.Constant | None
    slope: tvm.ir.expr.Constant | None
    relu: bool
    last: relax.Var
    inner: tuple[relax.Var, ...]


def _const(e: relax.Expr, channels: int) -> bool:
    """A float32 constant of one value per channel: (C,), (C,1,1) or (1,C,1,1)."""
    if not isinstance(e, tvm.ir.expr.Constant) or e.value.dtype != "float32":
        return False
    shape = tuple(int(s) for s in e.value.shape)
    return shape in ((channels,), (channels, 1, 1), (1, channels, 1, 1))


def _scalar_zero(e: relax.Expr) -> bool:
    return isinstance(e, tvm.ir.expr.Constant) and e.value.numpy().size == 1 \
        and float(e.value.numpy().reshape(-1)[0]) == 0.0


class _Graph:
    """Bindings of one dataflow block, by variable, with their users."""

    def __init__(self, block: relax.DataflowBlock):
        self.value = {b.var: b.value for b in block.bindings}
        self.users: dict[relax.Var, list[relax.Var]] = {v: [] for v in self.value}
        for b in block.bindings:
            for arg in _args(b.value):
                if isinstance(arg, relax.Var) and arg in self.users:
                    self.users[arg].append(b.var)

    def only_user(self, v: relax.Var) -> relax.Var | None:
        users = self.users.get(v, [])
        return users[0] if len(users) == 1 and isinstance(v, relax.DataflowVar) else None

    def op(self, v: relax.Var, name: str) -> relax.Call | None:
        call = self.value.get(v)
        if isinstance(call, relax.Call) and isinstance(call.op, tvm.ir.Op) \
                and call.op.name == name:
            return call
        return None


def _args(value: relax.Expr) -> list[relax.Expr]:
    return list(value.args) if isinstance(value, relax.Call) else []


def _epilogue(g: _Graph, conv: relax.Var, channels: int) -> Epilogue:
    """Follow ``conv``'s single-use chain through bias and activation."""
    cur, inner, bias = conv, [], None
    nxt = g.only_user(cur)
    add = g.op(nxt, "relax.add") if nxt is not None else None
    if add is not None:
        other = [a for a in add.args if not a.same_as(cur)]
        if len(other) == 1 and _const(other[0], channels):
            inner.append(cur)
            cur, bias = nxt, other[0]
    nxt = g.only_user(cur)
    if nxt is not None and g.op(nxt, "relax.nn.relu") is not None:
        return Epilogue(bias, None, True, nxt, (*inner, cur))
    prelu = _prelu(g, cur, channels)
    if prelu is not None:
        slope, where, helpers = prelu
        return Epilogue(bias, slope, False, where, (*inner, cur, *helpers))
    return Epilogue(bias, None, False, cur, tuple(inner))


def _prelu(g: _Graph, t: relax.Var, channels: int):
    """PyTorch's PReLU as imported: ``where(t > 0, t, slope * t)``; (slope, where, helpers)."""
    users = g.users.get(t, [])
    if len(users) != 3 or not isinstance(t, relax.DataflowVar):
        return None
    ops = ("relax.greater", "relax.multiply", "relax.where")
    found = {name: (u, call) for u in users for name in ops
             if (call := g.op(u, name)) is not None}
    if len(found) != len(ops):
        return None
    (gt, gcall), (mul, mcall), (wh, wcall) = (found[name] for name in ops)
    slope = [a for a in mcall.args if not a.same_as(t)]
    if not (gcall.args[0].same_as(t) and _scalar_zero(gcall.args[1]) and len(slope) == 1
            and _const(slope[0], channels) and wcall.args[0].same_as(gt)
            and wcall.args[1].same_as(t) and wcall.args[2].same_as(mul)
            and g.users[gt] == [wh] and g.users[mul] == [wh]):
        return None
    return slope[0], wh, (gt, mul)


def _plain_conv(call: relax.Call | None, producer: bool) -> bool:
    """An NCHW float32 conv, stride/dilation 1, constant weights; a producer (one group,
    or groups as wide in as out) has at most ``MAX_TERMS`` terms per output value, a
    consumer is a 1x1 unpadded conv of one group."""
    if call is None or not isinstance(call.args[1], tvm.ir.expr.Constant):
        return False
    a = call.attrs
    w = call.args[1].value
    ok = (a.data_layout == "NCHW" and a.kernel_layout == "OIHW" and a.out_layout == "NCHW"
          and (producer or int(a.groups) == 1) and all(int(s) == 1 for s in a.strides)
          and all(int(d) == 1 for d in a.dilation) and w.dtype == "float32"
          and call.ty.dtype == "float32")
    if not ok:
        return False
    o, i, kh, kw = (int(s) for s in w.shape)
    if producer:
        # groups as wide in as out only: that is the grouped form the conv templates
        # schedule (``templates._conv_shape``); others would get no default schedule
        return i * kh * kw <= MAX_TERMS and (int(a.groups) == 1 or i * int(a.groups) == o)
    return kh == kw == 1 and all(int(p) == 0 for p in a.padding)


@dataclass(frozen=True)
class Chain:
    """A matched producer conv + epilogue feeding a 1x1 conv + epilogue."""

    x: relax.Expr
    conv1: relax.Call
    epi1: Epilogue
    conv2: relax.Call
    epi2: Epilogue

    def drop(self) -> set[relax.Var]:
        """Bindings the fused kernel replaces (the conv vars are the epilogues' first)."""
        return {*self.epi1.inner, self.epi1.last, *self.epi2.inner}


def find_chains(block: relax.DataflowBlock) -> list[Chain]:
    """Every producer conv whose (activated) output only a 1x1 conv reads."""
    g = _Graph(block)
    chains = []
    for v in g.value:
        c1 = g.op(v, "relax.nn.conv2d")
        if not _plain_conv(c1, producer=True):
            continue
        mid = int(c1.args[1].value.shape[0])
        epi1 = _epilogue(g, v, mid)
        nxt = g.only_user(epi1.last)
        c2 = g.op(nxt, "relax.nn.conv2d") if nxt is not None else None
        if not _plain_conv(c2, producer=False) or not c2.args[0].same_as(epi1.last):
            continue
        if int(c2.args[1].value.shape[0]) > mid:
            continue  # widening 1x1 convs are not fused (the module docstring)
        epi2 = _epilogue(g, nxt, int(c2.args[1].value.shape[0]))
        chains.append(Chain(c1.args[0], c1, epi1, c2, epi2))
    return chains


def _chain_te(x, w1, *consts, pad, epi1, epi2):
    """TE of producer conv + epilogue (one spatial block) -> 1x1 conv + epilogue."""
    it = iter(consts)
    b1 = next(it) if epi1[0] else None
    s1 = next(it) if epi1[1] else None
    w2 = next(it)
    b2 = next(it) if epi2[0] else None
    s2 = next(it) if epi2[1] else None
    n, _, h, w = x.shape
    mid, cin, kh, kw = (int(s) for s in w1.shape)
    groups = int(x.shape[1]) // cin
    top, left, bottom, right = pad
    xp = topi.nn.pad(x, [0, 0, top, left], [0, 0, bottom, right]) if any(pad) else x
    oh, ow = h + top + bottom - kh + 1, w + left + right - kw + 1

    def chan(c_tensor, c):
        # per-channel constants arrive as (1,C,1,1), (C,1,1) or (C,)
        return c_tensor[(0,) * (len(c_tensor.shape) - 3) + (c, 0, 0)] \
            if len(c_tensor.shape) >= 3 else c_tensor[c]

    def act(v, c, bias, slope, relu):
        if bias is not None:
            v = v + chan(bias, c)
        if slope is not None:
            return tvm.tirx.Select(v > tvm.tirx.const(0.0, "float32"), v, chan(slope, c) * v)
        if relu:
            return tvm.tirx.max(v, tvm.tirx.const(0.0, "float32"))
        return v

    # The producer conv is a reduction (the sums run in the two-kernel form's order: taps,
    # then bias), so that a schedule can hold a register tile of independent sums; its
    # activation is a block of its own, computed per register tile (see templates.py).
    ci, ry, rx = (te.reduce_axis((0, extent), name=axis)
                  for extent, axis in ((cin, "ci"), (kh, "ry"), (kw, "rx")))

    def channel(c, ci):  # a grouped conv's input channel (the form templates.py matches)
        return ci if groups == 1 else c // (mid // groups) * cin + ci

    acc = te.compute((n, mid, oh, ow), lambda b, c, y, xx: te.sum(
        xp[b, channel(c, ci), y + ry, xx + rx] * w1[c, ci, ry, rx], axis=[ci, ry, rx]),
        name="chain_acc")
    inner = te.compute((n, mid, oh, ow),
                       lambda b, c, y, xx: act(acc[b, c, y, xx], c, b1, s1, epi1[2]),
                       name="chain_producer", attrs={"meta_schedule.inline_rule": "disable"})
    rc = te.reduce_axis((0, mid), name="rc")
    out_c = int(w2.shape[0])
    shape = (n, out_c, oh, ow)
    pw = te.compute(shape, lambda b, c, y, xx: te.sum(inner[b, rc, y, xx] * w2[c, rc, 0, 0],
                                                      axis=rc),
                    name="chain_pointwise")
    return te.compute(shape, lambda b, c, y, xx: act(pw[b, c, y, xx], c, b2, s2, epi2[2]),
                      name="chain_epilogue")


@relax.expr_functor.mutator
class _Rewriter(relax.PyExprMutator):
    def __init__(self, mod: tvm.IRModule, chains: list[Chain]):
        super().__init__(mod)
        self.by_last = {c.epi2.last: c for c in chains}
        self.dropped = set().union(*(c.drop() for c in chains))

    def visit_var_binding_(self, binding: relax.VarBinding) -> None:
        chain = self.by_last.get(binding.var)
        if chain is not None:
            self._emit_chain(binding.var, chain)
        elif binding.var not in self.dropped:
            super().visit_var_binding_(binding)

    def _emit_chain(self, var: relax.Var, c: Chain) -> None:
        consts = [k for k in (c.epi1.bias, c.epi1.slope) if k is not None]
        consts.append(c.conv2.args[1])
        consts += [k for k in (c.epi2.bias, c.epi2.slope) if k is not None]
        pad = tuple(int(p) for p in c.conv1.attrs.padding)
        fn = functools.partial(
            _chain_te, pad=pad,
            epi1=(c.epi1.bias is not None, c.epi1.slope is not None, c.epi1.relu),
            epi2=(c.epi2.bias is not None, c.epi2.slope is not None, c.epi2.relu))
        x = self.visit_expr(c.x)
        new = self.builder_.emit_te(fn, x, c.conv1.args[1], *consts,
                                    primfunc_name_hint=KERNEL_NAME)
        self.set_var_remap(var, new)


@tvm.transform.module_pass(opt_level=0, name="ConvChain")
def conv_chain(mod: tvm.IRModule, _ctx) -> tvm.IRModule:
    """Fuse every cheap conv (+bias+activation) into the 1x1 conv (+epilogue) reading it."""
    main = mod["main"]
    chains = [c for block in main.body.blocks if isinstance(block, relax.DataflowBlock)
              for c in find_chains(block)]
    if not chains:
        return mod
    rewriter = _Rewriter(mod, chains)
    rewriter.builder_.update_func(mod.get_global_var("main"), rewriter.visit_expr(main))
    return relax.transform.DeadCodeElimination()(rewriter.builder_.get())
