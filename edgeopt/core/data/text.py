"""Text datasets: ``TextSplit`` and ``TextDataset``, and ``load_text_dataset``.

A sibling of ``load_dataset`` rather than one more of its formats: ``load_dataset`` returns
``Dataset``, whose samples are N,C,H,W pixel arrays that every caller preprocesses
(``Preprocess``) and whose ``sample_shape`` fixes the model's input shape. Texts have
neither until a model's tokenizer turns them into token ids, so a text dataset mixed into
that type would break each of those callers at a distance. ``load_dataset`` recognises text
specs (``is_text_spec``) and refuses them in one line naming this loader.

Sources: ``.jsonl``, ``.csv``, ``.tsv`` (a ``text`` column, optional ``label`` and
``split``) and ``.txt`` (one text per line, no labels), read by ``text_files``; the
built-in ``fortunes`` (``fortunes.py``). Integer labels are class indices as they are;
string labels are class names, numbered in sorted order (``classes`` keeps the names). A
file whose rows say ``split`` (train/test) keeps that split; otherwise the texts are split
by ``seed``, per label where there are labels so that every class is in both splits.

Pure numpy, no torch: the runtime side reads text data too.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgeopt.core.data.splits import check_fraction, subset_indices, train_test_indices
from edgeopt.core.data.text_files import TEXT_SUFFIXES, Row, read_text_file
from edgeopt.core.errors import DataError

TEXT_BUILTINS = ("fortunes",)


@dataclass
class TextSplit:
    texts: list[str]
    y: np.ndarray | None = None  # int64 labels, one per text; None for unlabelled data

    def __post_init__(self) -> None:
        if self.y is not None and len(self.y) != len(self.texts):
            raise DataError(f"{len(self.texts)} texts but {len(self.y)} labels")

    def __len__(self) -> int:
        return len(self.texts)

    def subset(self, n: int | None, *, seed: int = 0) -> TextSplit:
        """Same draw as ``data.Split.subset`` (``subset_indices``)."""
        idx = subset_indices(len(self), n, seed)
        return self if idx is None else self.take(idx)

    def take(self, idx: np.ndarray) -> TextSplit:
        return TextSplit([self.texts[i] for i in idx], None if self.y is None else self.y[idx])


@dataclass
class TextDataset:
    name: str
    train: TextSplit
    test: TextSplit
    num_classes: int | None  # None without labels
    classes: tuple[str, ...] | None = None  # class names where labels were names


def is_text_spec(spec: str) -> bool:
    """Whether ``spec`` names text data: a built-in text set or a text file by suffix."""
    spec = str(spec)
    return spec in TEXT_BUILTINS or Path(spec).suffix.lower() in TEXT_SUFFIXES


def load_text_dataset(spec: str, *, seed: int = 0, test_fraction: float = 0.2) -> TextDataset:
    """A text file or ``fortunes`` (with its default options: ``load_fortunes`` takes the
    rest) as a train/test ``TextDataset``."""
    spec = str(spec)
    if spec == "fortunes":
        from edgeopt.core.data.fortunes import load_fortunes

        return load_fortunes(seed=seed, test_fraction=test_fraction)
    check_fraction(test_fraction)
    path = Path(spec).expanduser()
    if path.suffix.lower() not in TEXT_SUFFIXES:
        raise DataError(
            f"{spec}: not a text dataset (expected a .jsonl, .csv, .tsv or .txt file, "
            f"or one of: {', '.join(TEXT_BUILTINS)})"
        )
    if not path.is_file():
        raise DataError(f"text data not found: {spec}")
    rows = read_text_file(path)
    texts = [r.text for r in rows]
    y, classes = _labels(path, rows)
    # resolve() so a relative path names its file, as dataset_name does for .npz.
    name = path.resolve().stem
    own = _own_split(path, rows)
    if own is None:
        return text_dataset(name, texts, y, classes, seed=seed, test_fraction=test_fraction,
                            where=str(path))
    whole = TextSplit(texts, y)
    return _dataset(name, whole.take(own[0]), whole.take(own[1]), y, classes, where=str(path))


def text_dataset(name: str, texts: list[str], y: np.ndarray | None,
                 classes: tuple[str, ...] | None, *, seed: int, test_fraction: float,
                 where: str) -> TextDataset:
    """Texts without a split of their own, split by ``seed`` (``split_indices``);
    ``test_fraction`` already checked (``check_fraction``)."""
    whole = TextSplit(texts, y)
    train, test = split_indices(y, len(texts), seed, test_fraction, classes, where)
    return _dataset(name, whole.take(train), whole.take(test), y, classes, where=where)


def split_indices(y: np.ndarray | None, n: int, seed: int, test_fraction: float,
                  classes: tuple[str, ...] | None = None,
                  where: str = "text data") -> tuple[np.ndarray, np.ndarray]:
    """(train, test) indices. Unlabelled texts split as image data does
    (``train_test_indices``); labelled ones per class, each class's share of the test split
    rounded but at least one text in each split, so that no class is missing from either."""
    if y is None:
        return train_test_indices(n, seed, test_fraction, where)
    rng = np.random.default_rng(seed)
    train, test = [], []
    for label in np.unique(y):
        members = np.flatnonzero(y == label)
        if len(members) < 2:
            name = classes[label] if classes else str(label)
            raise DataError(
                f"{where}: class {name} has {len(members)} text; each class needs at least "
                "2 so that it is in both the train and the test split"
            )
        members = rng.permutation(members)
        n_test = min(len(members) - 1, max(1, round(len(members) * test_fraction)))
        test.append(members[:n_test])
        train.append(members[n_test:])
    # Shuffled across classes, so neither split is sorted by label.
    return rng.permutation(np.concatenate(train)), rng.permutation(np.concatenate(test))


def _labels(path: Path, rows: list[Row]) -> tuple[np.ndarray | None, tuple[str, ...] | None]:
    labelled = [r for r in rows if r.label is not None]
    if not labelled:
        return None, None
    if len(labelled) != len(rows):
        row = next(r for r in rows if r.label is None)
        raise DataError(f"{path}:{row.line}: no label, but other rows have one")
    if all(isinstance(r.label, int) for r in rows):
        negative = next((r for r in rows if r.label < 0), None)
        if negative is not None:
            raise DataError(f"{path}:{negative.line}: labels must be >= 0, got {negative.label}")
        return np.array([r.label for r in rows], dtype=np.int64), None
    if not all(isinstance(r.label, str) for r in rows):
        first = rows[0].label
        row = next(r for r in rows if type(r.label) is not type(first))
        raise DataError(
            f"{path}:{row.line}: label {row.label!r} mixes integer and string labels "
            f"(line {rows[0].line} has {first!r})"
        )
    classes = tuple(sorted({r.label for r in rows}))
    index = {name: i for i, name in enumerate(classes)}
    return np.array([index[r.label] for r in rows], dtype=np.int64), classes


def _own_split(path: Path, rows: list[Row]) -> tuple[np.ndarray, np.ndarray] | None:
    """The file's split where its rows give one (all of them or none)."""
    marked = [r.split is not None for r in rows]
    if not any(marked):
        return None
    if not all(marked):
        row = rows[marked.index(False)]
        raise DataError(f"{path}:{row.line}: no split, but other rows have one")
    splits = np.array([r.split for r in rows])
    return np.flatnonzero(splits == "train"), np.flatnonzero(splits == "test")


def _dataset(name: str, train: TextSplit, test: TextSplit, y: np.ndarray | None,
             classes: tuple[str, ...] | None, *, where: str) -> TextDataset:
    for label, split in (("train", train), ("test", test)):
        if len(split) == 0:
            raise DataError(f"{where}: the {label} split is empty")
    if y is None:
        return TextDataset(name, train, test, None, None)
    num_classes = len(classes) if classes else int(y.max()) + 1
    return TextDataset(name, train, test, num_classes, classes)
