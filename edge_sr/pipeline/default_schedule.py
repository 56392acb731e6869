"""Default CPU schedules: every kernel parallel and vectorized without a tuning database.

TVM's legalized kernels carry no schedule: one thread, scalar loops (fsrcnn_x2 at
360x640 on the host takes seconds where the tuned module takes tens of milliseconds).
Like ``dlight`` does for GPUs, ``default_schedule`` gives each kernel that no database
covers a fixed schedule chosen from the target alone, in this order of rules:

0. ``winograd_rule``: a Winograd conv (``winograd.conv2d_winograd``, Arm float32) gets
   ``winograd.schedule_winograd``.
1. ``conv_template``: a float32 NCHW conv (with its ``conv_chain`` producer) or a VNNI
   int8 conv gets the tuning template (``templates.schedule_conv`` /
   ``schedule_vnni``) with its best register tile (FMAs per load, from the target's
   vector width and register count) and tile sizes fixed by ``image_tile``.
2. ``reduction``: any other kernel with one reduction block (grouped, strided, int8,
   NHWC, ``dot4`` convs): its two innermost output loops form a register tile (rows x
   vectors) inside the reduction loops, the outer loops run in parallel, the
   elementwise epilogue is applied per tile.
3. ``elementwise``: kernels without reductions (pad, concat, depth-to-space, casts):
   producers inlined where they can be, each remaining block's loops fused, split into
   vectors, run in parallel.

A kernel none of them can schedule keeps TVM's default. The schedules use no sampling,
so a build is deterministic; tuning's design spaces contain the template choices, so a
tuned database starts from the same kernels and keeps whatever measures faster.
"""

from __future__ import annotations

import tvm
from tvm import s_tir
from tvm.s_tir import ScheduleError
from tvm.tirx import PrimFunc

from . import vnni, winograd
from .templates import (
    Conv,
    Cpu,
    cpu_of,
    match_conv,
    match_vnni,
    producer_fits,
    register_tiles,
    schedule_conv,
    schedule_vnni,
)

TILE_COLUMNS = 128  # widest image tile: its input rows stay in L1/L2 while taps stream
TILE_ROWS = 8
TILES_PER_CORE = 4  # enough tiles that a slow core does not hold up the others


def _largest_divisor(n: int, step: int, limit: int) -> int:
    """The largest multiple of ``step`` that divides ``n`` and is at most ``limit``
    (``step`` itself if none is)."""
    best = step
    for d in range(step, min(n, limit) + 1, step):
        if n % d == 0:
            best = d
    return best


def image_tile(conv: Conv, tile: tuple[int, int, int], lanes: int,
               cores: int) -> tuple[int, int, int]:
    """(channels, rows, columns) of the parallel image tile for register tile ``tile``.

    All output channels share one input tile (it is read once per tile); columns up to
    ``TILE_COLUMNS``, rows up to ``TILE_ROWS``, fewer rows when the image would give
    fewer than ``TILES_PER_CORE`` tiles per core.
    """
    cr, yr, xr = tile
    cols = _largest_divisor(conv.width, xr * lanes, TILE_COLUMNS)
    rows = _largest_divisor(conv.height, yr, TILE_ROWS)
    while rows > yr and (conv.height // rows) * (conv.width // cols) < TILES_PER_CORE * cores:
        rows = _largest_divisor(conv.height, yr, rows - 1)
    return conv.channels, rows, cols


def _cores(target: tvm.target.Target) -> int:
    return int(target.attrs.get("num-cores", 0) or 1)


def conv_template(sch: s_tir.Schedule, cpu: Cpu, cores: int) -> bool:
    """Rule 1: the tuning template with fixed tiles on the kernel's conv, if it has one."""
    for rv in sch.get_child_blocks(sch.get_sblock("root")):
        if cpu.int8 and sch.get(rv).name_hint == vnni.CONV:
            conv = match_vnni(sch, rv)
            tiles = register_tiles(conv, vnni.LANES, cpu.registers, 1) if conv else []
            if tiles:
                schedule_vnni(sch, conv, tiles[0],
                              image_tile(conv, tiles[0], vnni.LANES, cores), cpu.int8)
                return True
            return False
        conv = match_conv(sch, rv)
        if conv is None:
            continue
        for lanes in sorted(cpu.lanes, reverse=True):
            tiles = register_tiles(conv, lanes, cpu.registers, 1)
            ptile = (4, 2)
            if not tiles or (conv.chain and not producer_fits(sch, conv, ptile, lanes, cpu)):
                continue
            schedule_conv(sch, conv, tiles[0], lanes, ptile,
                          image_tile(conv, tiles[0], lanes, cores))
            return True
        return False
    return False


def winograd_rule(sch: s_tir.Schedule) -> bool:
    """Rule 0: the Winograd schedule, if the kernel is a Winograd conv."""
    if not any(sch.get(rv).name_hint == winograd.OUT for rv in _root_blocks(sch)):
        return False
    winograd.schedule_winograd(sch)
    return True


def _root_blocks(sch: s_tir.Schedule) -> list:
    return list(sch.get_child_blocks(sch.get_sblock("root")))


def _is_reduction(sch: s_tir.Schedule, rv) -> bool:
    return any(iv.iter_type != 0 for iv in sch.get(rv).iter_vars)


def _inline_spatial(sch: s_tir.Schedule) -> None:
    """Inline every spatial block into its consumers where TVM allows it (the last
    block of the function stays)."""
    for rv in _root_blocks(sch)[:-1]:
        if _is_reduction(sch, rv):
            continue
        try:
            sch.compute_inline(rv)
        except ScheduleError:
            pass


def _vector_width(extent: int, lanes: int) -> int:
    """The widest vector (a power of two up to ``lanes``) that divides ``extent``."""
    width = lanes
    while width > 1 and extent % width:
        width //= 2
    return width


def _parallel_vector(sch: s_tir.Schedule, rv, lanes: int) -> None:
    """A spatial block: its outer loops fused and run in parallel, the innermost loop
    vectorized. (All loops fused into one would cost a division and a modulo per
    element to recover the indices: a pad took 20 ms instead of 1.)"""
    *outer, last = sch.get_loops(rv)
    if outer:
        sch.parallel(sch.fuse(*outer) if len(outer) > 1 else outer[0])
    width = _vector_width(int(sch.get(last).extent), lanes)
    if width > 1:
        sch.vectorize(sch.split(last, [None, width])[1])
    elif not outer:
        sch.parallel(last)


def elementwise(sch: s_tir.Schedule, lanes: int) -> bool:
    """Rule 3: a kernel without reductions."""
    if any(_is_reduction(sch, rv) for rv in _root_blocks(sch)):
        return False
    _inline_spatial(sch)
    for rv in _root_blocks(sch):
        _parallel_vector(sch, rv, lanes)
    return True


def _group(block, var) -> int:
    """Channels per group when ``block`` reads an input at ``var // G * G + ...`` (a
    grouped conv with ``var`` its output channel), else 1."""
    found = []

    def visit(node) -> None:
        if (isinstance(node, tvm.tirx.FloorDiv) and node.a.same_as(var)
                and isinstance(node.b, tvm.tirx.IntImm)):
            found.append(int(node.b.value))
        for field in ("a", "b", "value"):
            child = getattr(node, field, None)
            if isinstance(child, tvm.ir.expr.Expr):
                visit(child)
        for child in [*getattr(node, "indices", []), *getattr(node, "args", [])]:
            visit(child)

    visit(block.body)
    return max(found, default=1)


def _reduction_tile(sch: s_tir.Schedule, chan, row, col, width: int, registers: int,
                    group: int = 1) -> tuple[int, int, int]:
    """(channels, rows, vectors) of the register tile: the template's ranking (FMAs per
    load) over the loop outside the rows, the rows and the vectors of the innermost loop;
    rows x vectors alone when that ranking finds nothing."""
    ext = lambda lp: int(sch.get(lp).extent)  # noqa: E731
    if chan is not None and width > 1:
        conv = Conv("r", ext(chan), ext(row), ext(col), None, None, None, ())
        # a tile of whole groups: one input load serves every channel of it
        tiles = [t for t in register_tiles(conv, width, registers) if t[0] % group == 0]
        if tiles:
            return tiles[0]
    rows = _largest_divisor(ext(row), 1, 4)
    return 1, rows, _largest_divisor(ext(col) // width, 1, max(1, 16 // rows))


def reduction(sch: s_tir.Schedule, lanes: int, registers: int = 32,
              dot: bool = False) -> bool:
    """Rule 2: a kernel whose one reduction block is followed by elementwise blocks.

    ``dot``: the target has 4-way int8 dot products (Arm ``sdot``); an 8-bit kernel
    then keeps its loop nest, with the reduction innermost as LLVM's vectorizer needs it
    to emit ``sdot``, and only its outer output loops run in parallel."""
    blocks = _root_blocks(sch)
    at = [i for i, rv in enumerate(blocks) if _is_reduction(sch, rv)]
    if len(at) != 1:
        return False
    red, before, after = blocks[at[0]], blocks[:at[0]], blocks[at[0] + 1:]
    loops = sch.get_loops(red)
    kinds = [iv.iter_type for iv in sch.get(red).iter_vars]
    if len(loops) != len(kinds) or kinds != sorted(kinds) or kinds.count(0) < 2:
        return False
    spatial, reduce_ = loops[:kinds.count(0)], loops[kinds.count(0):]
    # Producers (pads, packs) stay passes of their own: inlined, their conditions would
    # run once per multiply-add.
    for rv in before:
        _parallel_vector(sch, rv, lanes)
    if dot and _reads_8bit(sch.get(red)):
        sch.parallel(sch.fuse(*spatial[:-2]) if len(spatial) > 3 else spatial[0])
        for rv in after:
            _parallel_vector(sch, rv, lanes)
        return True
    tail = _fold_epilogue(sch, after)
    *outer, row, col = spatial
    width = _vector_width(int(sch.get(col).extent), lanes)
    block = sch.get(red)
    group = _group(block, block.iter_vars[len(outer) - 1].var) if outer else 1
    cr, rows, vecs = _reduction_tile(sch, outer[-1] if outer else None, row, col, width,
                                     registers, group)
    ro, ri = sch.split(row, [None, rows])
    co, cx, cv = sch.split(col, [None, vecs, width])
    if cr > 1:  # a channel-like loop outside the rows: its values share every input load
        po, pi = sch.split(outer[-1], [None, cr])
        # channel blocks innermost of the parallel loop: consecutive iterations read the
        # same input patch while it is in cache
        blocks = [*outer[:-1], ro, co, po]
        sch.reorder(*blocks, *reduce_, pi, ri, cx, cv)
        sch.unroll(pi)
    else:
        blocks = [*outer, ro, co]
        sch.reorder(*blocks, *reduce_, ri, cx, cv)
    par = sch.fuse(*blocks)
    sch.parallel(par)
    sch.unroll(ri)
    sch.unroll(cx)
    if width > 1:
        sch.vectorize(cv)
    if tail is not None:
        sch.reverse_compute_at(tail, par, preserve_unit_loops=True)
        inner = sch.get_loops(tail)[-1]
        w = _vector_width(int(sch.get(inner).extent), lanes)
        if w > 1:
            sch.vectorize(sch.split(inner, [None, w])[1])
    if reduce_:
        sch.decompose_reduction(red, reduce_[0])
    return True


def _reads_8bit(block) -> bool:
    return any(str(getattr(r.source, "dtype", "")) in ("int8", "uint8") for r in block.reads)


def _fold_epilogue(sch: s_tir.Schedule, after: list):
    """Inline an elementwise epilogue into its last block; that block (or None)."""
    if not after:
        return None
    names = [sch.get(rv).name_hint for rv in after]
    for name in names[:-1]:
        sch.compute_inline(sch.get_sblock(name))
    return sch.get_sblock(names[-1])


def default_trace(mod: tvm.IRModule, target: tvm.target.Target) -> s_tir.Schedule | None:
    """The default schedule of a one-kernel module (``main``) as a traced ``Schedule``
    (tuning commits its trace as a measured record), or None when no rule applies."""
    cpu = cpu_of(target) or _scalar_cpu(target)
    if cpu is None or not _static(mod["main"]):
        return None
    lanes = max(cpu.lanes)
    rules = [winograd_rule,
             lambda s: conv_template(s, cpu, _cores(target)),
             lambda s: reduction(s, lanes, cpu.registers, _has_dot(target)),
             lambda s: elementwise(s, lanes)]
    for rule in rules:
        sch = s_tir.Schedule(mod)
        try:
            if rule(sch):
                return sch
        except ScheduleError:
            continue
    return None


def _has_dot(target: tvm.target.Target) -> bool:
    return bool(target.attrs.get("feature.has_dotprod", False))


def _static(func: PrimFunc) -> bool:
    """Every buffer shape is a constant (a ``--dynamic`` build's kernels are not: they
    keep TVM's default)."""
    return all(isinstance(d, tvm.tirx.IntImm) for p in func.params
               for d in getattr(p, "shape", ()) or ())


def schedule_func(func: PrimFunc, target: tvm.target.Target) -> PrimFunc | None:
    """The default schedule of one kernel, or None when no rule applies."""
    sch = default_trace(tvm.IRModule({"main": func}), target)
    return None if sch is None else sch.mod["main"].with_attr("tirx.is_scheduled", True)


def _scalar_cpu(target: tvm.target.Target) -> Cpu | None:
    """LLVM targets without a known vector unit: parallel loops, 4-wide vectors."""
    return Cpu((4,), 16) if target.kind.name == "llvm" else None


def is_scheduled(func) -> bool:
    """A PrimFunc that carries a schedule (TVM 0.27 spells the attribute tirx.)."""
    if not isinstance(func, PrimFunc) or func.attrs is None:
        return False
    return any(bool(func.attrs.get(k, False)) for k in ("tirx.is_scheduled", "tir.is_scheduled"))


def default_schedule(mod: tvm.IRModule, target: tvm.target.Target) -> tuple[tvm.IRModule, int]:
    """Schedule every unscheduled kernel of ``mod`` for a CPU ``target``.

    Returns:
        The module and how many kernels got a default schedule.
    """
    mod, done = mod.clone(), 0  # the caller's module stays as it is
    for gv, func in list(mod.functions_items()):
        if not isinstance(func, PrimFunc) or is_scheduled(func):
            continue
        new = schedule_func(func, target)
        if new is not None:
            mod[gv] = new
            done += 1
    return mod, done
