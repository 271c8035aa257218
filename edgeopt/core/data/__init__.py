"""Datasets and preprocessing.

A dataset is raw samples (``N,C,H,W``, uint8 where the source is pixels) plus
int64 labels, split into train and test (``splits``). ``Preprocess`` turns raw
samples into the float32 tensors a model sees; the same object is recorded in
artifacts so that evaluation and deployment preprocess identically.

``load_dataset`` accepts a built-in name (``fashion-mnist``, ``digits``), a
folder of IDX files (MNIST naming, ``idx``), an ``.npz`` with ``x``/``y`` or
``x_train``/``y_train``/``x_test``/``y_test`` (``npz``), or a class-per-folder
image tree (``images``).
"""

from edgeopt.core.data.idx import read_idx
from edgeopt.core.data.images import IMAGE_SUFFIXES
from edgeopt.core.data.load import BUILTINS, FASHION_MNIST_DIR, dataset_name, load_dataset
from edgeopt.core.data.preprocess import Preprocess
from edgeopt.core.data.splits import Dataset, Split, iter_batches, subset_indices

__all__ = [
    "BUILTINS",
    "FASHION_MNIST_DIR",
    "IMAGE_SUFFIXES",
    "Dataset",
    "Preprocess",
    "Split",
    "dataset_name",
    "iter_batches",
    "load_dataset",
    "read_idx",
    "subset_indices",
]
