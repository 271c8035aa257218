"""A default CPU schedule for the PrimFuncs relax legalizes a CNN into.

Relax's CPU pipeline leaves every operator as naive loop nests: one thread, no
vectors, 5x slower than PyTorch eager on resnet_small. DLight's CPU rules cover
only GEMV and plain reductions, and MetaSchedule tuning takes minutes per model.
This schedules the one reduction block of each fused function (conv, matmul,
pooling) the way a hand-written NHWC kernel does: the output-channel loop split
into one vector register, a small register tile over the output width, the
reduction loops between them, the outer spatial loops parallel, and the fused
epilogue (bias, residual add, relu) applied to the register tile before it is
stored. Layouts are chosen by the export (NHWC activations, HWIO weights) so
that the innermost loop is the contiguous output-channel axis.
"""

from __future__ import annotations

import tvm
from tvm import s_tir, tirx

# Register tile over the output's second-to-last axis (the width), first fitting one.
_ROW_TILES = (7, 4, 6, 5, 3, 2)


def _const(extent) -> int | None:
    return int(extent) if isinstance(extent, tirx.IntImm) else None


def _vector_width(extent: int | None, lanes: int) -> int:
    if extent is None:
        return 1
    for w in (lanes, lanes // 2, lanes // 4, 2):
        if w >= 2 and extent % w == 0:
            return w
    return 1


def _reduction_block(sch: s_tir.Schedule, blocks) -> s_tir.schedule.SBlockRV | None:
    found = None
    for b in blocks:
        iters = sch.get(b).iter_vars
        if any(iv.iter_type == tirx.IterVar.CommReduce for iv in iters):
            if found is not None:
                return None  # two reductions (softmax, layer norm): left to the fallback
            found = b
    return found


def _inline_producers(sch: s_tir.Schedule, block) -> None:
    # Padding and other injective producers are computed inside the reduction's loops.
    for p in sch.get_producers(block):
        try:
            sch.compute_inline(p)
        except s_tir.ScheduleError:
            pass


def _schedule_reduction(sch: s_tir.Schedule, block, lanes: int) -> None:
    _inline_producers(sch, block)
    iters = sch.get(block).iter_vars
    loops = sch.get_loops(block)
    kinds = [iv.iter_type == tirx.IterVar.CommReduce for iv in iters]
    # Only the common shape: all spatial loops first, then all reduction loops.
    if len(loops) != len(iters) or kinds != sorted(kinds):
        return
    n_spatial = kinds.count(False)
    if n_spatial == 0:
        return
    spatial, reduce = loops[:n_spatial], loops[n_spatial:]
    extents = [_const(sch.get(lp).extent) for lp in spatial]
    vec = _vector_width(extents[-1], lanes)
    fo, fi = sch.split(spatial[-1], [None, vec])
    outer = list(spatial[:-1])
    row_tile = []
    if len(outer) >= 2 and extents[-2] is not None:
        tile = next((t for t in _ROW_TILES if extents[-2] % t == 0), 1)
        xo, xi = sch.split(outer[-1], [None, tile])
        outer, row_tile = outer[:-1] + [xo], [xi]
    sch.reorder(*outer, fo, *reduce, *row_tile, fi)

    # Parallel before the reduction is split into init and update: ``parallel`` needs
    # the loop's subtree to hold a complete reduction block.
    par = sch.fuse(*outer[:-1]) if len(outer) > 1 else outer[0]
    sch.parallel(par)
    if vec > 1:
        sch.vectorize(fi)
    if row_tile:
        sch.unroll(row_tile[0])

    # Accumulate in a local tile; the epilogue reads the tile, not main memory.
    acc = sch.cache_write(block, 0, "local")
    sch.reverse_compute_at(acc, fo, preserve_unit_loops=True)
    for consumer in _consumer_chain(sch, acc):
        sch.reverse_compute_inline(consumer)
    if vec > 1:
        sch.vectorize(sch.get_loops(acc)[-1])
    if reduce:
        sch.decompose_reduction(block, reduce[0])


def _consumer_chain(sch: s_tir.Schedule, block) -> list:
    """Elementwise consumers that can be folded into ``block``'s store, in order."""
    chain = []
    while True:
        consumers = sch.get_consumers(block)
        if len(consumers) != 1:
            return chain
        nxt = consumers[0]
        # A consumer is inlinable when reverse_compute_inline accepts it; try on a copy.
        trial = sch.copy()
        try:
            trial.reverse_compute_inline(nxt)
        except s_tir.ScheduleError:
            return chain
        chain.append(nxt)
        block = nxt


def schedule_func(func: tirx.PrimFunc, lanes: int) -> tirx.PrimFunc:
    sch = s_tir.Schedule(func)
    root = sch.get_sblock("root") if _has_root(sch) else None
    blocks = sch.get_child_blocks(root) if root is not None else []
    red = _reduction_block(sch, blocks)
    try:
        if red is not None:
            _schedule_reduction(sch, red, lanes)
        return sch.mod["main"]
    except s_tir.ScheduleError:
        # A shape this rule does not know stays as naive loops: correct, only slower.
        return func


def _has_root(sch) -> bool:
    try:
        sch.get_sblock("root")
        return True
    except Exception:  # noqa: BLE001 - a func without a root block is left as it is
        return False


def default_schedule(lanes: int) -> tvm.transform.Pass:
    """A module pass scheduling every PrimFunc not already scheduled."""

    @tvm.transform.module_pass(opt_level=0, name="EdgeoptCpuSchedule")
    def _pass(mod: tvm.ir.IRModule, _ctx) -> tvm.ir.IRModule:
        updates = {
            gv: schedule_func(func, lanes)
            for gv, func in mod.functions_items()
            if isinstance(func, tirx.PrimFunc) and not func.attrs.get("tirx.is_scheduled", False)
        }
        for gv, func in updates.items():
            mod[gv] = func
        return mod

    return _pass
