"""The reference models as the rest of edgeopt starts from them: cached weights, trained
first where asked (``zoo.train``)."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from edgeopt.core.data import dataset_name
from edgeopt.core.errors import ModelLoadError
from edgeopt.zoo import build
from edgeopt.zoo.cache import read_info, reference_weights_path
from edgeopt.zoo.train import DEFAULT_EPOCHS, TrainConfig, train


def train_reference(
    arch: str,
    data: str = "fashion-mnist",
    *,
    epochs: int | None = None,
    limit: int | None = None,
    out: Path | None = None,
    threads: int | None = None,
    progress: bool = True,
    **options,
) -> tuple[nn.Module, float]:
    """Train ``arch`` on ``data``; ``options`` are further ``TrainConfig`` fields."""
    epochs = epochs or DEFAULT_EPOCHS.get(arch, 8)
    config = TrainConfig(arch=arch, data=data, epochs=epochs, limit=limit, **options)
    return train(config, out=out, threads=threads, progress=progress)


def load_reference(
    arch: str,
    data: str = "fashion-mnist",
    *,
    train_if_missing: bool = True,
    epochs: int | None = None,
    **train_options,
) -> tuple[nn.Module, float | None]:
    """The cached reference model in eval mode and its recorded test accuracy.

    Trains (and caches) it first when missing and ``train_if_missing`` is set.
    """
    path = reference_weights_path(arch, dataset_name(data))
    if not path.is_file():
        if not train_if_missing:
            raise ModelLoadError(
                f"no reference weights at {path}; train them with: "
                f"python -m edgeopt.zoo.train --arch {arch} --data {data}"
            )
        return train_reference(arch, data, epochs=epochs, **train_options)
    info = read_info(path) or {}
    model = build(
        arch,
        num_classes=info.get("num_classes", 10),
        in_channels=info.get("in_channels", 1),
        width_mult=info.get("config", {}).get("width_mult", 1.0),
    )
    try:
        model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    except Exception as exc:  # unpickling and shape mismatches raise many types
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelLoadError(f"{path}: cannot load reference weights ({first_line})") from None
    return model.eval(), info.get("accuracy")


def reference_model(arch: str, data: str, *, tiny: bool, out: Path, epochs: int = 1,
                    limit: int | None = 256, **train_options) -> nn.Module:
    """What a bench script starts from: the cached reference weights for a full run (never
    trained here, so a figure is always of the published reference model), or for
    ``--tiny`` smoke runs a model trained for ``epochs`` on ``limit`` samples into
    ``out/<arch>.pt`` (``train_options``: further ``TrainConfig`` fields)."""
    if tiny:
        model, _ = train_reference(arch, data, epochs=epochs, limit=limit,
                                   out=Path(out) / f"{arch}.pt", progress=False, **train_options)
    else:
        model, _ = load_reference(arch, data, train_if_missing=False)
    return model.eval()
