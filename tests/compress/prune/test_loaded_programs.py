"""Pruning applied directly to loaded programs: the canonical copy is what is cut."""

import pytest
import torch

from edgeopt.compress import apply
from edgeopt.compress.prune import MagnitudePruneConfig, StructuredPruneConfig
from edgeopt.core.canonical import is_canonical
from edgeopt.core.errors import DataError


def _forms(model, x):
    ep = torch.export.export(model, (x,), dynamic_shapes=(
        {0: torch.export.Dim("batch", min=1, max=4096)},))
    return {"pt2": ep.module(), "traced": torch.jit.trace(model, x),
            "scripted": torch.jit.script(model)}


@pytest.mark.parametrize("form", ["pt2", "traced", "scripted"])
def test_structured_prune_cuts_a_loaded_program(form, make_cnn, calib):
    model = make_cnn(width=8, hidden=32)
    program = _forms(model, calib[:2])[form]
    pruned = apply(program, StructuredPruneConfig(ratio=0.5), data=calib, progress=False)
    info = pruned.meta["edgeopt"]["prune"]
    assert info["macs_after"] < 0.7 * info["macs_before"]
    assert info["channels"]["features.0"] == [8, 4]
    # Its recorded shapes are stale: the next canonical_copy traces it again.
    assert not is_canonical(pruned)
    assert pruned(calib[:5]).shape == (5, 10)


@pytest.mark.parametrize("form", ["pt2", "traced"])
def test_sparsify_masks_a_loaded_program(form, make_cnn, calib):
    program = _forms(make_cnn(width=8, hidden=32), calib[:2])[form]
    sparse = apply(program, MagnitudePruneConfig(sparsity=0.5), data=calib, progress=False)
    assert sparse.meta["edgeopt"]["sparsify"]["sparsity"] == pytest.approx(0.5, abs=0.02)
    w = sparse.get_submodule("head.0").weight
    assert 0.3 < float((w == 0).float().mean()) < 0.7


def test_a_program_without_data_is_refused_in_one_line(make_cnn, calib):
    program = torch.jit.trace(make_cnn(), calib[:2])
    with pytest.raises(DataError, match="sparsify: a loaded TorchScript model is traced"):
        apply(program, MagnitudePruneConfig(sparsity=0.5), data=None, progress=False)
