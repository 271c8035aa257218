"""The data as the model takes it: model-keyed samples in batches, moved to each input's
batch axis, a static batch padded; and the batch size a model's inputs fix."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgeopt.core.data import BUILTINS, Dataset, load_dataset
from edgeopt.core.errors import DataError
from edgeopt.core.inputs import InputDataset, InputSplit, batch_axis, load_inputs, prepare


def static_batch(inputs) -> int | None:
    """A model whose every batched input has a fixed batch size runs at that size."""
    sizes = set()
    for info in inputs:
        axis = batch_axis(list(info.shape))
        if axis is None:
            continue
        d = info.shape[axis]
        if not isinstance(d, int):
            return None
        sizes.add(d)
    return sizes.pop() if len(sizes) == 1 else None


def to_model_layout(feed: dict[str, np.ndarray], inputs, constants: set[str]) -> dict:
    """Data keeps samples on axis 0; the model may batch elsewhere (axis 1 for silero's
    state): move each batched input's sample axis to the model's batch axis."""
    out = {}
    for info in inputs:
        if info.name not in feed:
            continue
        value = feed[info.name]
        axis = batch_axis(list(info.shape))
        if info.name in constants or axis in (None, 0):
            out[info.name] = value
        else:
            out[info.name] = np.moveaxis(value, 0, axis)
    return out


def load_data(data, inputs):
    """Model-keyed data (``core.inputs``), or an image dataset (``core.data``: a built-in
    name, IDX or class folders, an x/y .npz) for a single-input model."""
    if isinstance(data, InputDataset):
        return data
    if not isinstance(data, Dataset):
        spec = Path(str(data)).expanduser()
        keyed = (spec.suffix.lower() == ".npz" and spec.is_file()) or (
            spec.is_dir() and any(spec.rglob("*.npy")))
        if keyed or str(data) not in BUILTINS and not spec.is_dir():
            return load_inputs(str(data), inputs)
        data = load_dataset(str(data))
    if len(inputs) != 1:
        raise DataError(f"dataset {data.name} has one input per sample but the model takes "
                        f"{len(inputs)} ({', '.join(i.name for i in inputs)}): give an .npz "
                        f"keyed by input name")
    name = inputs[0].name
    return InputDataset(data.name, InputSplit({name: data.train.x}, {}, data.train.y),
                        InputSplit({name: data.test.x}, {}, data.test.y), data.num_classes)


def model_feeds(split, size: int, fixed: int | None, preprocess, inputs
                ) -> list[tuple[dict, int, int]]:
    """(model feed, batch, real samples) of ``split``: chunked (``_batches``), uint8 images
    preprocessed, each input's samples moved to the model's batch axis."""
    constants = set(split.constants)
    return [(to_model_layout(prepare(f, preprocess, inputs=inputs), inputs, constants), b, n)
            for f, b, n in _batches(split, size, fixed)]


def _batches(split, size: int, fixed: int | None) -> list[tuple[dict, int, int]]:
    """(feed, batch, real samples) of ``size`` samples each; a static-batch model gets exactly
    its batch (the last chunk padded by repeating its final sample; collect() drops
    the padded rows' outputs)."""
    feeds = []
    const = set(split.constants)
    for feed in split.batches(size):
        n = _feed_batch(feed, const)
        if fixed and n < fixed:
            feed = {k: v if k in const or np.asarray(v).ndim == 0 else
                    np.concatenate([v, np.repeat(v[-1:], fixed - n, axis=0)])
                    for k, v in feed.items()}
        feeds.append((feed, max(n, fixed or 0), n))
    return feeds


def _feed_batch(feed: dict, constants=()) -> int:
    """Samples in a feed in data layout (samples on axis 0; constants do not count)."""
    sizes = [np.asarray(v).shape[0] for k, v in feed.items()
             if np.asarray(v).ndim and k not in constants]
    return max(sizes) if sizes else 1


def timing_feed(split, n: int) -> dict:
    """A feed of ``n`` samples for timing (repeated when the split has fewer)."""
    feed = next(iter(split.batches(n)))
    const = set(split.constants)
    have = _feed_batch(feed, const)
    if have >= n:
        return feed
    reps = -(-n // have)
    return {k: v if k in const or np.asarray(v).ndim == 0 else
            np.concatenate([v] * reps)[:n] for k, v in feed.items()}
