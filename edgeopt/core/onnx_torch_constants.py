"""onnx2torch's modules made traceable by torch.export: the integer initializers they
read at run time (shapes, axes, pads, indices) baked in as Python constants."""

from __future__ import annotations

import torch
import torch.fx as fx
from torch import nn

from edgeopt.core.graph.rebuild import get_path


class _WithConstants(nn.Module):
    """An onnx2torch module called with its integer initializers (shapes, axes, pads,
    indices) inserted as plain tensors.

    onnx2torch's modules read those with ``.tolist()`` at run time. Passed in as graph
    buffers, torch.export fakes them, and the read becomes a data-dependent value it
    cannot trace; a plain attribute read in ``forward`` it bakes in as a constant.
    """

    def __init__(self, op: nn.Module, consts: dict[int, torch.Tensor], n_args: int) -> None:
        super().__init__()
        self.op = op
        self.consts = consts  # a dict, not buffers: see the class doc
        self.n_args = n_args

    def forward(self, *args, **kwargs):
        rest = iter(args)
        full = [self.consts[i] if i in self.consts else next(rest) for i in range(self.n_args)]
        return self.op(*full, **kwargs)


class _StaticReshape(nn.Module):
    """ONNX Reshape (allowzero=0) to a constant shape held as Python ints: onnx2torch's
    tests ``torch.any(shape == 0)``, a data-dependent branch torch.export cannot trace."""

    def __init__(self, shape: list[int]) -> None:
        super().__init__()
        self.shape = shape

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.reshape(x, [x.shape[i] if d == 0 else d for i, d in enumerate(self.shape)])


class _StaticSlice(nn.Module):
    """ONNX Slice with constant starts/ends/axes/steps as Python slices: onnx2torch's calls
    ``.numpy()`` on them at run time, which torch.export's fake tensors refuse."""

    def __init__(self, consts: dict[int, torch.Tensor]) -> None:
        super().__init__()
        from onnx2torch.node_converters.slice import _get_slices

        ints = {i: [int(v) for v in t.tolist()] for i, t in consts.items()}
        axes = torch.tensor(ints[3]) if 3 in ints else None
        steps = torch.tensor(ints[4]) if 4 in ints else None
        flip, pos, neg = _get_slices(ints[1], ints[2], axes, steps)
        self.flip = [int(d) for d in flip]
        self.pos = [_int_slice(s) for s in pos]
        self.neg = [s if s is Ellipsis else _int_slice(s) for s in neg]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from onnx2torch.node_converters.slice import _do_slice

        return _do_slice(x, self.flip, self.pos, self.neg)


def _int_slice(s: slice) -> slice:
    def py(v):
        return None if v is None else int(v)

    return slice(py(s.start), py(s.stop), py(s.step))


def _static(op: nn.Module, consts: dict[int, torch.Tensor], n_args: int) -> nn.Module:
    name = type(op).__name__
    if name == "OnnxReshape" and set(consts) == {1} and n_args == 2:
        return _StaticReshape([int(d) for d in consts[1].tolist()])
    if name == "OnnxSlice" and set(consts) == set(range(1, n_args)):
        return _StaticSlice(consts)
    return _WithConstants(op, consts, n_args)


def _is_int_const(arg, gm: fx.GraphModule) -> bool:
    if not isinstance(arg, fx.Node) or arg.op != "get_attr":
        return False
    t = get_path(gm, arg.target)
    return isinstance(t, torch.Tensor) and not t.is_floating_point() and not t.is_complex()


def bake_integer_constants(gm: fx.GraphModule) -> None:
    """Wrap each module that reads integer initializers in ``_WithConstants``."""
    for node in list(gm.graph.nodes):
        if node.op != "call_module":
            continue
        consts = {i: get_path(gm, a.target).clone() for i, a in enumerate(node.args)
                  if _is_int_const(a, gm)}
        if not consts:
            continue
        owner_path, _, name = node.target.rpartition(".")
        owner = gm.get_submodule(owner_path) if owner_path else gm
        setattr(owner, name, _static(getattr(owner, name), consts, len(node.args)))
        node.args = tuple(a for i, a in enumerate(node.args) if i not in consts)
    gm.graph.eliminate_dead_code()
    gm.delete_all_unused_submodules()
    gm.recompile()
