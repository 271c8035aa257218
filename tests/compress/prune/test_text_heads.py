"""The text_heads step on the tiny BERT (2 layers x 4 heads of 8): the cut, the ranking."""

import pytest

torch = pytest.importorskip("torch")

from edgeopt.compress.distill.text_distill import pool  # noqa: E402
from edgeopt.compress.prune.text_heads import (  # noqa: E402
    TextHeadsConfig,
    head_importance,
    heads_to_keep,
    prune_heads,
    text_heads,
)
from edgeopt.core.errors import ConfigError  # noqa: E402
from edgeopt.core.step import StepContext  # noqa: E402


def _embed(model, batches):
    cfg = TextHeadsConfig()
    with torch.no_grad():
        return [pool(model(**{k: torch.as_tensor(v) for k, v in b.items()}),
                     torch.as_tensor(b["attention_mask"]), cfg) for b in batches]


def test_cut_heads_compute_what_zeroed_heads_do(tiny_hf_batches):
    import copy

    model, batches = tiny_hf_batches
    keep = [[0, 2], [3]]
    # Zeroing a head's value rows zeroes its output: the model with those heads silenced
    zeroed = copy.deepcopy(model)
    for layer, heads in zip(zeroed.encoder.layer, keep):
        v = layer.attention.self.value
        for h in set(range(4)) - set(heads):
            v.weight.data[h * 8:(h + 1) * 8] = 0
            v.bias.data[h * 8:(h + 1) * 8] = 0
    cut = copy.deepcopy(model)
    prune_heads(cut, keep)
    att = cut.encoder.layer[1].attention
    assert att.self.query.out_features == 8 and att.output.dense.in_features == 8
    assert cut.encoder.layer[0].attention.self.key.weight.shape == (16, 32)
    for a, b in zip(_embed(cut, batches), _embed(zeroed, batches)):
        assert torch.allclose(a, b, atol=1e-5)


def test_a_silenced_head_ranks_last(tiny_hf_batches):
    import copy

    model, batches = tiny_hf_batches
    model = copy.deepcopy(model)
    model.encoder.layer[1].attention.self.value.weight.data[16:24] = 0
    model.encoder.layer[1].attention.self.value.bias.data[16:24] = 0
    score = head_importance(model, [{k: torch.as_tensor(v) for k, v in b.items()}
                                    for b in batches], TextHeadsConfig(importance_batches=4))
    assert score.shape == (2, 4) and score[1, 2] < 1e-6 < float(score[0].min())
    assert torch.allclose(score.norm(dim=1), torch.ones(2))  # normalised per layer
    assert heads_to_keep(score, 1 / 8)[1] == [0, 1, 3]


def test_heads_to_keep_leaves_a_head_in_every_layer():
    score = torch.tensor([[0.1, 0.2, 0.3], [0.9, 0.8, 0.7]])
    assert heads_to_keep(score, 0.5) == [[2], [0, 1]]
    assert heads_to_keep(score, 0.99) == [[2], [0]]
    assert heads_to_keep(score, 0.0) == [[0, 1, 2], [0, 1, 2]]


def test_text_heads_prunes_and_distils(tiny_hf_batches):
    model, batches = tiny_hf_batches
    before = _embed(model, batches)
    cfg = TextHeadsConfig(fraction=0.5, steps=60, importance_batches=2)
    result = text_heads(model, cfg, StepContext(calibration=batches))
    d = result.record.details
    assert d["heads"] == 8 and d["heads_kept"] == 4 and sum(d["per_layer"]) == 4
    assert 1 - d["cos_last"] < 1 - d["cos_first"]  # distillation recovered some fidelity
    assert all(torch.allclose(a, b) for a, b in zip(before, _embed(model, batches)))
    assert "4 of 8 kept" in result.record.summary()[0]


def test_bad_heads_config_is_one_line():
    with pytest.raises(ConfigError, match="fraction"):
        TextHeadsConfig(fraction=1.0)
    with pytest.raises(ConfigError, match="ranking"):
        TextHeadsConfig(ranking="l1")
