"""A tiny transformers folder for tests and benches: what ``hf:PATH`` reads, in seconds.

Shared by tests/conftest.py and bench/runtime_footprint.py (the text artifact that the
edgeopt-runtime venv must run); needs transformers and tokenizers (the `text` extra).
"""

from __future__ import annotations

import json

import torch

TINY_VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *"abcdefghijklmnopqrstuvwxyz",
              "the", "cat", "dog", "sat", "on", "mat", "a", "fortune", "day", "is", "good",
              ".", ",", "!", "?", "##s", "##ed", "##ing"]


def write_tiny_hf(path, *, pooling: str = "mean", normalize: bool = True,
                  classification: bool = False):
    """A 2-layer, 32-wide random BERT folder with a word-piece tokenizer.json and
    sentence-transformers' modules.json / 1_Pooling config: what hf:PATH reads."""
    import tokenizers
    import transformers
    from tokenizers import models, normalizers, pre_tokenizers, processors

    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=len(TINY_VOCAB), hidden_size=32,
                                     num_hidden_layers=2, num_attention_heads=4,
                                     intermediate_size=64, max_position_embeddings=64,
                                     num_labels=3)
    cls = (transformers.BertForSequenceClassification if classification
           else transformers.BertModel)
    cls(config).save_pretrained(path)
    vocab = {t: i for i, t in enumerate(TINY_VOCAB)}
    tok = tokenizers.Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])])
    tok.enable_padding(pad_id=0, pad_token="[PAD]")
    tok.save(str(path / "tokenizer.json"))
    modules = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
               {"idx": 1, "name": "1", "path": "1_Pooling",
                "type": "sentence_transformers.models.Pooling"}]
    if normalize:
        modules.append({"idx": 2, "name": "2", "path": "2_Normalize",
                        "type": "sentence_transformers.models.Normalize"})
    (path / "modules.json").write_text(json.dumps(modules))
    (path / "1_Pooling").mkdir(exist_ok=True)
    (path / "1_Pooling" / "config.json").write_text(json.dumps({
        "word_embedding_dimension": 32, "pooling_mode_cls_token": pooling == "cls",
        "pooling_mode_mean_tokens": pooling == "mean"}))
    return path
