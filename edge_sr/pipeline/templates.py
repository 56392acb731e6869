"""Hand-written MetaSchedule design spaces for the direct convolutions of SR networks (CPU).

MetaSchedule's generic CPU space (multi-level tiling) tiles every conv well enough, but
three things it does not sample cost FSRCNN a third of its time on the host:

- the zero-padding of a conv's input stays a separate pass over the whole image (its
  ``if_then_else`` keeps it from being inlined, and the sampled compute-at locations put
  it at the root in the tuned records), so every 3x3 conv reads and writes its input
  twice more than it needs;
- the register tile (output channels x rows x vectors of columns held in registers while
  the taps stream by) is reached only by chance through nested random splits;
- a reduction is never computed inside another block's tiles, so ``conv_chain``'s cheap
  producer conv had to be written as one spatial block: a 25-term sum in a single
  dependency chain, which runs at a quarter of the FMA units' rate.

``ConvTemplate`` is a schedule rule placed before the target's default rules. On a
stride-1 float32 NCHW conv (grouped too, with the register tile's channels inside one
group so that each input load serves all of them) it adds one design space per promising register
tile: the image is cut into tiles (tile sizes sampled, so tuning still searches), the
tiles run in parallel, the input's padding is computed per tile, the taps run outside the
unrolled register tile, and the bias/activation epilogue is applied to each register
tile while it is in registers. A conv that reads a ``conv_chain`` producer also computes
that producer conv (register-tiled, a reduction again) inside each tile. The default
spaces stay: tuning keeps whichever measures fastest, and the workloads are unchanged,
so existing databases still apply (``edge-sr tune --kernel`` adds template candidates).

On x86 CPUs the same template schedules ``vnni_conv``'s int8 kernels
(``schedule_vnni``): the tiles and register tile as above, the input packed per tile
into groups of four channels, and ``vpdpbusd`` on 8 pixels x 4 channels as the
innermost step (the mixed build's int16 tensors: pairs of channels and ``vpdpwssd``);
without VNNI, pairs of channels widened to int16 and ``vpmaddwd``.

Register budgets: 32 vector registers on AVX-512 (AVX-512VL gives 32 ymm registers) and
AArch64 NEON, 16 on AVX2; vectors of 8 floats on x86 (and 16 where AVX-512 is there: the
same FLOPs on AMD's double-pumped units, half the instructions on Intel's), 4 on NEON.
"""

from __future__ import annotations

from dataclasses import dataclass

import tvm
from tvm.ir.utils import derived_object
from tvm.s_tir import ScheduleError
from tvm.s_tir import meta_schedule as ms
from tvm.s_tir.meta_schedule.schedule_rule import PyScheduleRule

from . import vnni, winograd
from .vnni import int8_form

# Blocks this rule has scheduled carry this annotation; MetaSchedule's other rules skip
# any block with a "schedule_rule" annotation, and ApplyCustomRule ignores "None".
DONE = ("schedule_rule", "None")
MAX_TILES = 3  # register tiles (design spaces) per vector width
CHAIN_ACC = "chain_acc"  # conv_chain's producer conv (a reduction) and its activation
CHAIN_ACT = "chain_producer"


@dataclass(frozen=True)
class Cpu:
    """Vector widths (floats) to try and the vector register count of a CPU target."""

    lanes: tuple[int, ...]
    registers: int
    int8: str | None = None  # x86 int8 form (``vnni``/``avx2``) of ``vnni_conv``'s kernels


def is_aarch64(target: tvm.target.Target) -> bool:
    """An LLVM target whose triple is aarch64."""
    triple = str(target.attrs.get("mtriple", "") or "")
    return target.kind.name == "llvm" and triple.startswith("aarch64")


def cpu_of(target: tvm.target.Target) -> Cpu | None:
    """The vector shape of an LLVM target, or None for targets this rule leaves alone."""
    from tvm.target import codegen

    if target.kind.name != "llvm":
        return None
    if is_aarch64(target):
        return Cpu((4,), 32)
    if codegen.target_has_features("avx512f", target):
        return Cpu((8, 16), 32, int8_form(target))
    if codegen.target_has_features("avx2", target):
        return Cpu((8,), 16, int8_form(target))
    return None


@dataclass(frozen=True)
class Conv:
    """A matched conv block: its output shape, taps and the blocks around it."""

    name: str
    channels: int
    height: int
    width: int
    pad: str | None  # the block padding its input, computed per tile
    copy: str | None  # a plain copy of its input (topi's unpadded pad_temp), inlined
    chain: tuple[str, str, str | None] | None  # (producer conv, its activation, its pad)
    epilogue: tuple[str, ...]  # elementwise blocks after the conv, in program order
    pack: str | None = None  # vnni_conv's per-tile repacking of the input
    group: int = 1  # output channels per group of a grouped conv (1: not grouped)


def divisors(n: int, limit: int) -> list[int]:
    """The divisors of ``n`` up to ``limit``, ascending."""
    return [d for d in range(1, min(n, limit) + 1) if n % d == 0]


def register_tiles(conv: Conv, lanes: int, registers: int,
                   limit: int = MAX_TILES) -> list[tuple[int, int, int]]:
    """(channels, rows, vectors) register tiles, best first by FMAs per load.

    Each tap loads ``rows x vectors`` input vectors and broadcasts ``channels`` weights
    for ``channels x rows x vectors`` FMAs; four registers stay free for those loads.
    """
    if conv.width % lanes:
        return []
    found = []
    # a grouped conv's channel tile stays in one group: one input load serves all of it
    for cr in divisors(conv.group if conv.group > 1 else conv.channels, 16):
        for yr in divisors(conv.height, 8):
            for xr in divisors(conv.width // lanes, 4):
                acc = cr * yr * xr
                if acc <= registers - 4:
                    found.append((acc / (cr + yr * xr), acc, (cr, yr, xr)))
    found.sort(key=lambda t: (t[0], t[1]), reverse=True)
    return [tile for _, _, tile in found[:limit]]


def _block(sch, rv):
    return sch.get(rv)


def _spatial(sch, rv) -> bool:
    blk = _block(sch, rv)
    return blk.init is None and all(iv.iter_type == 0 for iv in blk.iter_vars)


def _is_pad(sch, rv) -> bool:
    """A spatial block whose value is an ``if_then_else`` (topi's pad)."""
    blk = _block(sch, rv)
    return (_spatial(sch, rv) and isinstance(blk.body, tvm.tirx.BufferStore)
            and isinstance(blk.body.value, tvm.ir.expr.Call)
            and blk.body.value.op.name.endswith("if_then_else"))


def _is_copy(sch, rv) -> bool:
    """A spatial block that copies a function input (topi's pad_temp of an unpadded conv)."""
    blk = _block(sch, rv)
    return (_spatial(sch, rv) and not sch.get_producers(rv)
            and isinstance(blk.body, tvm.tirx.BufferStore)
            and isinstance(blk.body.value, tvm.ir.expr.TensorLoad))


def _conv_shape(sch, rv) -> tuple[int, int, int, int, int] | None:
    """(channels, height, width, reductions: 1 or 3, group) of a float32 stride-1 NCHW
    conv; ``group`` > 1 for a grouped conv, whose input channel is ``c // group * group +
    rc``."""
    blk = _block(sch, rv)
    ivs = list(blk.iter_vars)
    kinds = [iv.iter_type for iv in ivs]
    if blk.init is None or kinds[:4] != [0, 0, 0, 0] or kinds[4:] not in ([2], [2, 2, 2]):
        return None
    if not all(isinstance(iv.dom.extent, tvm.tirx.IntImm) for iv in ivs):
        return None  # a symbolic (dynamic) shape: no fixed register tile fits it
    store = blk.body
    if not isinstance(store, tvm.tirx.BufferStore) or store.buffer.dtype != "float32":
        return None
    value = store.value
    if not (isinstance(value, tvm.tirx.Add) and isinstance(value.b, tvm.tirx.Mul)):
        return None
    src, wgt = value.b.a, value.b.b
    if not (isinstance(src, tvm.ir.expr.TensorLoad) and isinstance(wgt, tvm.ir.expr.TensorLoad)):
        return None
    v = [iv.var for iv in ivs]
    n, c, y, x = v[:4]
    rc, ry, rx = (v[4], v[5], v[6]) if len(v) == 7 else (v[4], None, None)
    want_src = [n, rc, y if ry is None else y + ry, x if rx is None else x + rx]
    want_w = [c, rc] + ([ry, rx] if ry is not None else [])
    ana = tvm.sym.Analyzer()
    same = lambda got, want: len(got) >= len(want) and all(  # noqa: E731
        ana.can_prove_equal(a, b) for a, b in zip(got, want))
    group = _group_of(src.indices[1], c) if len(src.indices) == 4 else 1
    if group > 1:
        want_src[1] = c // group * group + rc
    if len(src.indices) != 4 or not same(list(src.indices), want_src):
        return None
    if not same(list(wgt.indices), want_w):
        return None
    ext = [int(iv.dom.extent) for iv in ivs]
    return ext[1], ext[2], ext[3], len(kinds) - 4, group


def _group_of(index, c) -> int:
    """G when ``index`` is ``c // G * G + ...`` (a grouped conv's input channel), else 1."""
    node = index.a if isinstance(index, tvm.tirx.Add) else index
    if isinstance(node, tvm.tirx.Mul) and isinstance(node.a, tvm.tirx.FloorDiv) \
            and node.a.a.same_as(c) and isinstance(node.b, tvm.tirx.IntImm):
        return int(node.b.value)
    return 1


def match_conv(sch, rv) -> Conv | None:
    """The conv at ``rv`` with its pad, conv_chain producer and epilogue, or None."""
    shape = _conv_shape(sch, rv)
    if shape is None:
        return None
    name = _block(sch, rv).name_hint
    pad = copy = chain = None
    for p in sch.get_producers(rv):
        pname = _block(sch, p).name_hint
        if pname == CHAIN_ACT:
            acc = [a for a in sch.get_producers(p) if _block(sch, a).name_hint == CHAIN_ACC]
            if not acc or _conv_shape(sch, acc[0]) is None or shape[3] != 1:
                return None
            inner = [_block(sch, q).name_hint for q in sch.get_producers(acc[0])
                     if _is_pad(sch, q)]
            chain = (CHAIN_ACC, CHAIN_ACT, inner[0] if inner else None)
        elif _is_pad(sch, p) and not sch.get_producers(p):
            pad = pname
        elif _is_copy(sch, p):
            copy = pname
        else:
            return None  # an unexpected producer (an inlined computation, a cast)
    epilogue = _epilogue(sch, name)
    if epilogue is None:
        return None
    return Conv(name, *shape[:3], pad, copy, chain, epilogue, group=shape[4])


def _epilogue(sch, name: str) -> tuple[str, ...] | None:
    """The blocks after ``name``, if all are elementwise (None if another reduction
    follows: conv_chain's producer conv, for one)."""
    blocks = sch.get_child_blocks(sch.get_sblock("root"))
    names = [_block(sch, b).name_hint for b in blocks]
    after = blocks[names.index(name) + 1:]
    if any(not _spatial(sch, b) for b in after):
        return None
    return tuple(_block(sch, b).name_hint for b in after)


# Every compute-at below keeps unit loops: tuning replays a space's trace with other tile
# sizes, and a loop count that changed with them (a tile one row high) fails the replay
# of the next get_loops and stops the whole tuning run.


def _tile_split(sch, loop, inner: int, sample: bool = True, extent: int | None = None):
    """Split ``loop`` into (outer, middle, inner) with ``inner`` fixed and the outer two
    sampled (a perfect tiling, so no predicates), or fixed by the tile's ``extent`` (a
    multiple of ``inner`` dividing the loop: the default schedule's choice)."""
    rest, fixed = sch.split(loop, [None, inner])
    if not sample:
        return None, rest, fixed
    if extent is not None:
        factors = [None, extent // inner]
    else:
        factors = sch.sample_perfect_tile(rest, n=2, max_innermost_factor=16)
    outer, middle = sch.split(rest, factors)
    return outer, middle, fixed


def _vectorize_last(sch, rv, lanes: int) -> None:
    loops = sch.get_loops(rv)
    _, vec = sch.split(loops[-1], [None, lanes])
    sch.vectorize(vec)


def _schedule_producer(sch, chain, outer, lanes: int, tile: tuple[int, int]) -> None:
    """conv_chain's producer conv, register-tiled inside the consumer's tile, with its
    activation applied to each register tile."""
    acc_name, act_name, pad_name = chain
    act, acc = sch.get_sblock(act_name), sch.get_sblock(acc_name)
    sch.compute_at(act, outer, preserve_unit_loops=True)
    sch.compute_at(acc, outer, preserve_unit_loops=True)
    if pad_name:
        sch.compute_at(sch.get_sblock(pad_name), outer, preserve_unit_loops=True)
    # below the tile loop: n, c, y, x, then the reductions (unit loops kept)
    _, c, y, x, *red = sch.get_loops(acc)[-len(_block(sch, acc).iter_vars):]
    pc, px = tile
    co, ci = sch.split(c, [None, pc])
    xo, xr, xv = sch.split(x, [None, px, lanes])
    sch.reorder(co, y, xo, *red, ci, xr, xv)
    sch.unroll(ci)
    sch.unroll(xr)
    sch.vectorize(xv)
    sch.reverse_compute_at(act, xo, preserve_unit_loops=True)
    _vectorize_last(sch, act, lanes)
    sch.decompose_reduction(acc, red[0])


def _inline_epilogue(sch, names: tuple[str, ...]) -> str | None:
    """Inline the elementwise epilogue into its last block (or the one before a trailing
    pad, which stays a pass of its own: its border is no tile's); returns that block."""
    names = list(names)
    if names and _is_pad(sch, sch.get_sblock(names[-1])):
        names.pop()
    *epi, last = names or [None]
    for name in epi:
        sch.compute_inline(sch.get_sblock(name))
    return last


def _place_epilogue(sch, last: str | None, loop, lanes: int) -> None:
    if last is not None:
        tail = sch.get_sblock(last)
        sch.reverse_compute_at(tail, loop, preserve_unit_loops=True)
        _vectorize_last(sch, tail, lanes)


def schedule_conv(sch, conv: Conv, tile: tuple[int, int, int], lanes: int,
                  producer_tile: tuple[int, int] | None = None,
                  extents: tuple[int, int, int] | None = None) -> None:
    """Apply the template to ``conv`` in ``sch`` (see the module docstring).

    ``extents`` (channels, rows, columns of an image tile) fixes the tile sizes that
    tuning samples otherwise: the default schedule (``default_schedule``)."""
    ce, ye, xe = extents or (None, None, None)
    block = sch.get_sblock(conv.name)
    if conv.copy:
        sch.compute_inline(sch.get_sblock(conv.copy))
    last = _inline_epilogue(sch, conv.epilogue)
    n, c, y, x, *red = sch.get_loops(block)
    cr, yr, xr = tile
    co, cm, cr_ = _tile_split(sch, c, cr, sample=conv.chain is None, extent=ce)
    yo, ym, yr_ = _tile_split(sch, y, yr, extent=ye)
    xo, xm, xv_ = _tile_split(sch, x, xr * lanes, extent=xe)
    xr_, xv = sch.split(xv_, [xr, lanes])
    order = [n, yo, xo] + ([co] if co is not None else [])
    sch.reorder(*order, ym, xm, cm, *red, cr_, yr_, xr_, xv)
    outer = sch.fuse(*order)
    sch.parallel(outer)
    sch.unroll(cr_)
    sch.unroll(yr_)
    sch.unroll(xr_)
    sch.vectorize(xv)
    _place_epilogue(sch, last, cm, lanes)
    if conv.pad:
        sch.compute_at(sch.get_sblock(conv.pad), outer, preserve_unit_loops=True)
    if conv.chain:
        _schedule_producer(sch, conv.chain, outer, lanes, producer_tile or (4, 2))
    sch.decompose_reduction(block, red[0])


def _mark_done(sch) -> None:
    root = sch.get_sblock("root")
    for rv in [root, *_all_blocks(sch)]:
        sch.annotate(rv, *DONE)


def _all_blocks(sch) -> list:
    out, todo = [], [sch.get_sblock("root")]
    while todo:
        kids = sch.get_child_blocks(todo.pop())
        out += kids
        todo += kids
    return out


def template_spaces(sch, rv, cpu: Cpu) -> list:
    """The template's design spaces for the block at ``rv`` (empty if it is not a conv
    this template handles); ``sch`` itself is left as it is."""
    if cpu.int8 and _block(sch, rv).name_hint == vnni.CONV:
        return _vnni_spaces(sch, rv, cpu)
    if any(_block(sch, b).name_hint == winograd.OUT for b in _all_blocks(sch)):
        # a Winograd conv: its fixed schedule, with register tiles of 4 to 16 channels
        return [space for co in (4, 8, 16)
                for space in _space(sch, winograd.schedule_winograd, co)]
    conv = match_conv(sch, rv)
    if conv is None:
        return []
    spaces = []
    for lanes in cpu.lanes:
        for tile in register_tiles(conv, lanes, cpu.registers):
            for ptile in ((4, 4), (4, 2)) if conv.chain else (None,):
                if conv.chain and not producer_fits(sch, conv, ptile, lanes, cpu):
                    continue
                spaces += _space(sch, schedule_conv, conv, tile, lanes, ptile)
    return spaces


def _space(sch, schedule, *args) -> list:
    """``[a copy of sch with schedule(copy, *args) applied]``, or ``[]`` when a block
    cannot be placed (an odd epilogue); the copy's blocks are marked done."""
    space = sch.copy()
    try:
        schedule(space, *args)
    except ScheduleError:
        return []
    _mark_done(space)
    return [space]


def _vnni_spaces(sch, rv, cpu: Cpu) -> list:
    conv = match_vnni(sch, rv)
    if conv is None:
        return []
    return [space for tile in register_tiles(conv, vnni.LANES, cpu.registers)
            for space in _space(sch, schedule_vnni, conv, tile, None, cpu.int8)]


def producer_fits(sch, conv: Conv, ptile: tuple[int, int], lanes: int, cpu: Cpu) -> bool:
    acc = _block(sch, sch.get_sblock(conv.chain[0]))
    channels = int(acc.iter_vars[1].dom.extent)
    pc, px = ptile
    return channels % pc == 0 and conv.width % (px * lanes) == 0 \
        and pc * px <= cpu.registers - 4


@derived_object
class ConvTemplate(PyScheduleRule):
    """Schedule rule: the template's spaces for each matching conv, plus the untouched
    schedule for the target's default rules (see the module docstring)."""

    def __init__(self, cpu: Cpu | None = None) -> None:
        super().__init__()
        self.cpu = cpu

    def _initialize_with_tune_context(self, context) -> None:
        if self.cpu is None and context.target is not None:
            self.cpu = cpu_of(context.target)

    def apply(self, sch, block):
        if self.cpu is None:
            return [sch]
        return [*template_spaces(sch, block, self.cpu), sch]

    def clone(self):
        return ConvTemplate(self.cpu)


def space_generator(target: tvm.target.Target) -> ms.space_generator.PostOrderApply | str:
    """The tuner's design spaces for ``target``: ``ConvTemplate`` before the target's own
    rules (the ones TVM picks by itself: VNNI/dot-product intrinsics included), with the
    target's postprocessors and mutators; TVM's default for targets it does not know."""
    cpu = cpu_of(target)
    if cpu is None:
        return "post-order-apply"
    probe = ms.TuneContext(mod=_probe_module(), target=target,
                           space_generator=ms.space_generator.PostOrderApply(), task_name="probe")
    gen = probe.space_generator
    return ms.space_generator.PostOrderApply(
        sch_rules=[ConvTemplate(cpu), *gen.sch_rules], postprocs=list(gen.postprocs),
        mutator_probs=dict(gen.mutator_probs))


def _probe_module() -> tvm.IRModule:
    from tvm import te

    a = te.placeholder((4,), name="a")
    b = te.compute((4,), lambda i: a[i] + 1.0, name="b")
    return tvm.IRModule({"main": te.create_prim_func([a, b])})


def match_vnni(sch, rv) -> Conv | None:
    """``vnni_conv``'s conv block with its input pack (and the pad feeding it) and its
    elementwise epilogue, or None."""
    blk = _block(sch, rv)
    ext = [int(iv.dom.extent) for iv in blk.iter_vars]
    packs = [p for p in sch.get_producers(rv) if _block(sch, p).name_hint == vnni.PACK]
    if blk.name_hint != vnni.CONV or len(ext) != 8 or len(packs) != 1:
        return None
    pads = [_block(sch, p).name_hint for p in sch.get_producers(packs[0])]
    epilogue = _epilogue(sch, blk.name_hint)
    if len(pads) > 1 or epilogue is None:
        return None
    return Conv(blk.name_hint, ext[1], ext[2], ext[3], pads[0] if pads else None, None,
                None, epilogue, vnni.PACK)


def schedule_vnni(sch, conv: Conv, tile: tuple[int, int, int],
                  extents: tuple[int, int, int] | None = None, form: str = "vnni") -> None:
    """The template for ``vnni_conv``'s kernel: the same tiles and register tile as
    ``schedule_conv``, the input packed per tile, ``vpdpbusd`` on 8 pixels x 4 channels
    (int16 data: ``vpdpwssd`` on 2; the ``avx2`` form: ``vpmaddwd`` on 2) (``extents``:
    fixed tile sizes, as in ``schedule_conv``)."""
    lanes = vnni.LANES
    _, ye, xe = extents or (None, None, None)
    block = sch.get_sblock(conv.name)
    last = _inline_epilogue(sch, conv.epilogue)
    n, f, y, x, g, ry, rx, j = sch.get_loops(block)
    dot = int(sch.get(j).extent)  # 4: uint8 data, 2: int16
    cr, yr, xr = tile
    _, cm, cr_ = _tile_split(sch, f, cr, sample=False)  # every channel per tile: one pack
    yo, ym, yr_ = _tile_split(sch, y, yr, extent=ye)
    xo, xm, xv_ = _tile_split(sch, x, xr * lanes, extent=xe)
    xr_, xv = sch.split(xv_, [xr, lanes])
    sch.reorder(n, yo, xo, ym, xm, cm, g, ry, rx, cr_, yr_, xr_, xv, j)
    outer = sch.fuse(n, yo, xo)
    sch.parallel(outer)
    _place_epilogue(sch, last, cm, lanes)
    pack = sch.get_sblock(conv.pack)
    sch.compute_at(pack, outer, preserve_unit_loops=True)
    sch.unroll(sch.get_loops(pack)[-1])
    if conv.pad:
        # padded per tile ahead of the pack: inlined into it, the border checks split
        # each packed row into branches LLVM leaves mostly scalar (FSRCNN's int8 5x5
        # sub-pixel conv, host x86, default schedule: 4.8 ms inlined, 4.2 apart)
        sch.compute_at(sch.get_sblock(conv.pad), outer, preserve_unit_loops=True)
    sch.decompose_reduction(block, g)
    sch.unroll(cr_)
    sch.unroll(yr_)
    sch.unroll(xr_)
    vnni.register_intrinsic()
    sch.tensorize(xv, next(d.intrin for d in vnni.FORMS[form].values() if d.dot == dot))
