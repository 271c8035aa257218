"""Datasets and preprocessing.

A dataset is raw samples (``N,C,H,W``, uint8 where the source is pixels) plus
int64 labels, split into train and test (``splits``). ``Preprocess`` turns raw
samples into the float32 tensors a model sees; the same object is recorded in
artifacts so that evaluation and deployment preprocess identically.

``load_dataset`` accepts a built-in name (``fashion-mnist``, ``digits``), a
folder of IDX files (MNIST naming, ``idx``), an ``.npz`` with ``x``/``y`` or
``x_train``/``y_train``/``x_test``/``y_test`` (``npz``), or a class-per-folder
image tree (``images``).

Text (``.jsonl``/``.csv``/``.tsv``/``.txt``, the built-in ``fortunes``) has its own type
and loader, ``TextDataset`` and ``load_text_dataset`` (``text``; ``fortunes``).
"""

from edgeopt.core.data.fortunes import FORTUNES_DIR, load_fortunes
from edgeopt.core.data.idx import read_idx
from edgeopt.core.data.images import IMAGE_SUFFIXES
from edgeopt.core.data.load import BUILTINS, FASHION_MNIST_DIR, dataset_name, load_dataset
from edgeopt.core.data.preprocess import Preprocess
from edgeopt.core.data.splits import Dataset, Split, iter_batches, subset_indices
from edgeopt.core.data.text import (
    TEXT_BUILTINS,
    TEXT_SUFFIXES,
    TextDataset,
    TextSplit,
    is_text_spec,
    load_text_dataset,
)

__all__ = [
    "BUILTINS",
    "FASHION_MNIST_DIR",
    "FORTUNES_DIR",
    "IMAGE_SUFFIXES",
    "Dataset",
    "Preprocess",
    "Split",
    "TEXT_BUILTINS",
    "TEXT_SUFFIXES",
    "TextDataset",
    "TextSplit",
    "dataset_name",
    "is_text_spec",
    "iter_batches",
    "load_dataset",
    "load_fortunes",
    "load_text_dataset",
    "read_idx",
    "subset_indices",
]
