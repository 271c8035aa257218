"""evaluate.chunked: a fixed- or ranged-batch runnable on any batch."""

import numpy as np
import pytest

from edgeopt.core.errors import ConfigError
from edgeopt.evaluate import evaluate, measure_latency
from edgeopt.evaluate.chunked import Chunked, batch_sizes, chunked


def _fixed(n):
    """A runnable that refuses any batch but n, and records the batches it saw."""
    seen = []

    def fn(x):
        assert len(x) == n, f"batch {len(x)} != {n}"
        seen.append(len(x))
        return np.stack([x.reshape(len(x), -1).sum(1), -x.reshape(len(x), -1).sum(1)], 1)

    return fn, seen


@pytest.mark.parametrize("n,rows", [(1, 7), (4, 10), (4, 3), (3, 9)])
def test_static_batch_chunks_pad_and_drop(n, rows):
    fn, seen = _fixed(n)
    x = np.random.default_rng(0).standard_normal((rows, 2, 3)).astype(np.float32)
    out = Chunked(fn, min_batch=n, max_batch=n).run(x)
    np.testing.assert_allclose(out[:, 0], x.reshape(rows, -1).sum(1), rtol=1e-6)
    assert out.shape == (rows, 2) and seen == [n] * -(-rows // n)


def test_a_range_chunks_to_its_max_and_pads_to_its_min():
    seen = []

    def fn(x):
        assert 2 <= len(x) <= 5
        seen.append(len(x))
        return x[:, :1]

    out = Chunked(fn, min_batch=2, max_batch=5).run(np.arange(11, dtype=np.float32)[:, None])
    assert seen == [5, 5, 2] and out[:, 0].tolist() == list(range(11))


def test_evaluate_and_latency_run_a_static_batch_model():
    fn, seen = _fixed(4)
    x = np.random.default_rng(1).standard_normal((10, 1, 2, 2)).astype(np.float32)
    y = (x.reshape(10, -1).sum(1) < 0).astype(np.int64)
    res = evaluate(chunked(fn, (4, 4)), x, y, progress=False)
    assert res.top1 == 100.0 and res.logits.shape == (10, 2)
    lat = measure_latency(chunked(fn, (4, 4)), (1, 2, 2), batch=4, warmup=0, repeats=2)
    assert lat.batch == 4 and set(seen) == {4}


def test_unrestricted_ranges_are_not_wrapped_and_sizes_move_into_range():
    fn = lambda x: x  # noqa: E731
    assert chunked(fn, None) is fn and chunked(fn, (1, None)) is fn
    assert chunked(fn, (1, 4096), largest=256) is fn
    assert isinstance(chunked(fn, (1, 100), largest=256), Chunked)
    assert batch_sizes([1, 32], (1, 1)) == [1]
    assert batch_sizes([1, 32], (2, 100)) == [2, 32]
    assert batch_sizes([1, 32], (8, None)) == [8, 32]
    with pytest.raises(ConfigError, match="1 <= min <= max"):
        Chunked(fn, min_batch=5, max_batch=2)
