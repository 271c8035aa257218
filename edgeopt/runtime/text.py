"""Texts to token-id feeds for text artifacts, with the `tokenizers` library alone (no torch,
no transformers on the device).

The artifact ships the model's ``tokenizer.json``; its manifest's ``text`` section says the
maximum length, the padding and which inputs the model takes. Texts are cut at the maximum
length (the first cut is said once, with a warning) and padded to it (``padding:
max_length``, the default: every call runs the shape that was measured) or to the longest
text of the batch (``padding: longest``: the graph's sequence axis is dynamic, so short
texts then cost less).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from edgeopt.core.errors import ArtifactError, DataError

PADDINGS = ("max_length", "longest")


class TextTokenizer:
    """``tokenizer(["text", ...]) -> {input_ids, attention_mask[, token_type_ids]}``."""

    def __init__(self, path: str | Path, *, max_length: int, inputs: list[str],
                 padding: str = "max_length"):
        if padding not in PADDINGS:
            raise ArtifactError(f"text padding {padding!r} unknown (valid: {', '.join(PADDINGS)})")
        self.padding = padding
        try:
            from tokenizers import Tokenizer
        except ImportError:
            raise ArtifactError("this text artifact needs the `tokenizers` package "
                                "(pip install tokenizers)") from None
        path = Path(path)
        if not path.is_file():
            raise ArtifactError(f"text artifact has no tokenizer file {path.name}")
        try:
            self.tokenizer = Tokenizer.from_file(str(path))
        except Exception as exc:  # the library raises a bare Exception for a bad file
            raise ArtifactError(f"{path}: not a tokenizers file ({exc})") from None
        self.max_length = int(max_length)
        self.inputs = list(inputs)
        pad = self.tokenizer.padding or {}
        self.pad_id = int(pad.get("pad_id", 0))
        self.tokenizer.no_padding()
        # The library truncates (keeping [CLS] ... [SEP]); a cut text has ``overflowing``.
        self.tokenizer.enable_truncation(self.max_length)
        self.warned = False

    def count_cut(self, texts) -> int:
        """How many of ``texts`` the maximum length cuts (for a caller that says so itself,
        once for a whole dataset, and sets ``warned``)."""
        return sum(1 for e in self.tokenizer.encode_batch(list(texts)) if e.overflowing)

    def __call__(self, texts) -> dict[str, np.ndarray]:
        if isinstance(texts, str):
            texts = [texts]
        texts = list(texts)
        if not texts or not all(isinstance(t, str) for t in texts):
            raise DataError("predict on a text artifact takes a list of strings")
        encodings = self.tokenizer.encode_batch(texts)
        cut = sum(1 for e in encodings if e.overflowing)
        if cut and not self.warned:
            self.warned = True
            warnings.warn(f"{cut} of {len(texts)} texts are longer than the maximum length "
                          f"({self.max_length} tokens): truncated (said once)", stacklevel=3)
        width = (self.max_length if self.padding == "max_length"
                 else max(len(e.ids) for e in encodings))
        ids = np.full((len(texts), width), self.pad_id, dtype=np.int64)
        mask = np.zeros((len(texts), width), dtype=np.int64)
        types = np.zeros((len(texts), width), dtype=np.int64)
        for row, e in enumerate(encodings):
            n = len(e.ids)
            ids[row, :n] = e.ids
            mask[row, :n] = e.attention_mask
            types[row, :n] = e.type_ids
        feed = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
        return {k: feed[k] for k in self.inputs}
