"""Every user-facing loader, with its cases and what a successful load must hold.

A loader that returns garbage is as wrong as one that crashes, so each has a ``check``
of its result: a dataset of finite numeric N,C,H,W samples with int64 labels below
``num_classes``, a model that is a torch module, a Predictor whose inputs it can feed,
a recipe of step configs. A failed check counts as ``unhandled``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgeopt.fuzz import data_cases, file_cases, onnx_cases
from edgeopt.fuzz.harness import Loader


def _check_labels(y: np.ndarray, n: int, num_classes: int | None) -> None:
    assert y.dtype == np.int64 and y.shape == (n,), (y.dtype, y.shape)
    if n and num_classes is not None:
        assert 0 <= y.min() and y.max() < num_classes, (y.min(), y.max(), num_classes)


def check_dataset(ds) -> None:
    from edgeopt.core.data import Dataset

    assert isinstance(ds, Dataset)
    for split in (ds.train, ds.test):
        x = split.x
        assert len(split) > 0 and x.ndim == 4, x.shape
        assert x.dtype.kind in "buif", f"samples of dtype {x.dtype}"
        assert x.dtype.kind != "f" or np.isfinite(x).all(), "non-finite samples"
        assert x.shape[1:] == ds.train.x.shape[1:]
        _check_labels(split.y, len(x), ds.num_classes)


def check_text(ds) -> None:
    from edgeopt.core.data import TextDataset

    assert isinstance(ds, TextDataset)
    for split in (ds.train, ds.test):
        assert len(split) > 0
        assert all(isinstance(t, str) and t.strip() for t in split.texts)
        if ds.num_classes is not None:
            _check_labels(split.y, len(split), ds.num_classes)
        else:
            assert split.y is None


def check_inputs(ds) -> None:
    from edgeopt.core.inputs import InputDataset

    assert isinstance(ds, InputDataset)
    for split in (ds.train, ds.test):
        assert len(split) > 0
        for name, array in split.inputs.items():
            # uint8 is allowed for a float input: raw pixels, preprocessed when fed.
            assert array.dtype.kind in "buif" and name in INPUTS, (name, array.dtype)
            assert len(array) == len(split)
            assert array.dtype.kind != "f" or np.isfinite(array).all(), name
        if split.y is not None:
            _check_labels(split.y, len(split), ds.num_classes)


def check_model(handle) -> None:
    from torch import nn

    assert isinstance(handle.module, nn.Module)


def check_predictor(pred) -> None:
    from edgeopt.runtime import Predictor

    assert isinstance(pred, Predictor)
    for spec in pred.inputs:
        np.dtype(spec.get("dtype", "float32"))
        assert isinstance(spec["name"], str) and isinstance(spec["shape"], list)
        assert all(isinstance(d, int | str) for d in spec["shape"]), spec["shape"]


def check_recipe(recipe) -> None:
    from edgeopt.core.config import Config
    from edgeopt.recipes import Recipe

    assert isinstance(recipe, Recipe)
    assert all(isinstance(step, Config) for step in recipe.steps)
    recipe.to_dict()  # what `edgeopt recipes` and the manifest print


def _load_dataset(path: Path):
    from edgeopt.core.data import load_dataset

    return load_dataset(str(path))


def _inputs():
    from edgeopt.core.inputs.specs import TensorSpec

    # An image and token ids with a sample axis, and a scalar (a sample rate) without.
    return {spec.name: spec for spec in (TensorSpec("image", "float32", ["N", 1, 4, 4]),
                                         TensorSpec("ids", "int64", ["N", 3]),
                                         TensorSpec("rate", "int64", []))}


INPUTS = _inputs()


def _load_inputs(path: Path):
    from edgeopt.core.inputs import load_inputs

    return load_inputs(str(path), list(INPUTS.values()))


def _load_model(path: Path):
    from edgeopt.core.model import load_model

    return load_model(str(path))


def _load_artifact(path: Path):
    from edgeopt.runtime import load

    return load(path)


def _load_recipe(path: Path):
    from edgeopt.recipes import load_recipe

    return load_recipe(path)


def _load_text(path: Path):
    from edgeopt.core.data import load_text_dataset

    return load_text_dataset(str(path))


def warm_up() -> None:
    """Import what the loaders import lazily, before the first sandbox: onnxruntime writes
    ``$TMPDIR/.ses`` (a session id) once, when it is imported, which would otherwise count
    as a stray file of whichever case imported it first."""
    import onnxruntime  # noqa: F401
    import onnxslim  # noqa: F401
    import PIL.Image  # noqa: F401
    import torch  # noqa: F401
    import yaml  # noqa: F401

    import edgeopt.recipes  # noqa: F401
    import edgeopt.runtime  # noqa: F401
    from edgeopt.core.onnx_torch import onnx2torch as converter

    converter()


LOADERS = {
    loader.name: loader
    for loader in [
        Loader("npz", data_cases.npz_cases, _load_dataset, check_dataset),
        Loader("inputs", data_cases.inputs_cases, _load_inputs, check_inputs),
        Loader("idx", data_cases.idx_cases, _load_dataset, check_dataset),
        Loader("images", data_cases.image_cases, _load_dataset, check_dataset),
        Loader("onnx", onnx_cases.onnx_cases, _load_model, check_model),
        Loader("pt2", file_cases.pt2_cases, _load_model, check_model),
        Loader("torchscript", file_cases.torchscript_cases, _load_model, check_model),
        Loader("manifest", file_cases.manifest_cases, _load_artifact, check_predictor),
        Loader("recipe", file_cases.recipe_cases, _load_recipe, check_recipe),
        Loader("text", data_cases.text_cases, _load_text, check_text),
    ]
}
