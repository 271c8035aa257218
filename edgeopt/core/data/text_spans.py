"""More distillation inputs from the same texts: random contiguous word spans.

Distilling a 3-layer student of MiniLM on the 12,173 fortunes training texts, the training
cosine reaches 0.977 at 3,000 steps (8 epochs) while held-out texts stay at 0.922: the
student learns the texts, not the teacher. A distillation target needs no label, so any
text the teacher can embed is a training example; spans of 30-90% of a text's words are
still the user's kind of text (same words, same style) and several differ per text.
"""

from __future__ import annotations

import random


def word_spans(texts: list[str], per_text: int, *, seed: int = 0, low: float = 0.3,
               high: float = 0.9) -> list[str]:
    """``per_text`` random spans of each text of 4 words or more: one round over the texts per span."""
    rng, spans = random.Random(seed), []
    for _ in range(per_text):
        for text in texts:
            words = text.split()
            if len(words) < 4:
                continue
            n = max(2, int(len(words) * rng.uniform(low, high)))
            start = rng.randrange(0, len(words) - n + 1)
            spans.append(" ".join(words[start:start + n]))
    return spans
