"""A text classifier through edgeopt: all-MiniLM-L6-v2 plus a linear head, fine-tuned on
fortunes categories, then ``optimize --task classification --recipe int8`` (issue 12, "A
classifier": its int8 artifact lands within 0.5 points top-1 of fp32).

    HF_HUB_OFFLINE=1 python bench/text_classifier.py [--categories computers,definitions,...]
        [--epochs 3] [--max-steps N] [--train-limit N] [--test-limit N] [--seed 0]
        [--work DIR] [--out bench/results/text/classifier.txt] [--tiny]

1. Fine-tune: ``AutoModelForSequenceClassification.from_pretrained(base, num_labels=K)``
   (a fresh head) with AdamW at one torch thread, batches padded to their longest text,
   seeded; saved with ``save_pretrained`` (safetensors) beside the base's tokenizer files,
   ``id2label`` = the category names.
2. The fortunes split (one seed, per category) goes into one jsonl whose rows say their
   split, so that ``optimize`` evaluates on exactly the texts the fine-tuning never saw and
   calibrates on training texts.
3. The real ``edgeopt.optimize`` on ``hf:<fine-tuned folder>``: export, int8 by measurement,
   artifact, and the report's top-1 of the fp32 graph and of the int8 artifact.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from edgeopt.core.data.fortunes import load_fortunes
from edgeopt.core.data.text import TextDataset
from edgeopt.core.errors import ConfigError, EdgeoptError
from edgeopt.runtime.text import TextTokenizer
from edgeopt.zoo.hf_models import hf_model

# Five categories whose content differs (jargon, dictionary-style entries, politics,
# science, verse) and that each keep >= 450 fortunes of at most MAX_CHARS characters.
CATEGORIES = ("computers", "definitions", "politics", "science", "songs-poems")
MAX_CHARS = 300  # ~75 tokens at most; most fit --max-length 64 whole
MAX_LENGTH = 64
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                   "vocab.txt")
TOLERANCE = 0.5  # points of top-1: the acceptance bound
FP32, INT8 = "fp32 onnxruntime", "int8 onnxruntime"


def split_data(args) -> TextDataset:
    data = load_fortunes(categories=args.categories, max_chars=MAX_CHARS, seed=args.seed,
                         test_fraction=args.test_fraction)
    if data.classes != tuple(sorted(args.categories)):
        missing = sorted(set(args.categories) - set(data.classes))
        raise ConfigError(f"fortunes categories {', '.join(missing)} have too few texts of "
                          f"at most {MAX_CHARS} characters")
    data.train = data.train.subset(args.train_limit, seed=args.seed)
    data.test = data.test.subset(args.test_limit, seed=args.seed)
    return data


def write_jsonl(data: TextDataset, path: Path) -> Path:
    """Rows {text, label: category name, split}: text.py keeps a file's own split, and
    numbers string labels in sorted order, as load_fortunes does (checked in main)."""
    with path.open("w") as f:
        for split, part in (("train", data.train), ("test", data.test)):
            for text, y in zip(part.texts, part.y):
                f.write(json.dumps({"text": text, "label": data.classes[y], "split": split}) + "\n")
    return path


def fine_tune(base: Path, data: TextDataset, out: Path, args, log=print) -> dict:
    """Fine-tune base + a fresh linear head on data.train; save to ``out``. Returns a record."""
    import torch
    import transformers

    transformers.logging.set_verbosity_error()  # "newly initialized weights" is the point
    torch.manual_seed(args.seed)
    k = len(data.classes)
    model = transformers.AutoModelForSequenceClassification.from_pretrained(
        base, num_labels=k, id2label=dict(enumerate(data.classes)),
        label2id={c: i for i, c in enumerate(data.classes)})
    # The fresh head (and BERT's pooler, absent from the sentence-transformers checkpoint)
    # starts from random weights and needs larger steps than the pretrained encoder.
    fresh = [p for n, p in model.named_parameters() if n.startswith(("classifier", "bert.pooler"))]
    ids = {id(p) for p in fresh}
    body = [p for p in model.parameters() if id(p) not in ids]
    opt = torch.optim.AdamW([{"params": body, "lr": args.lr},
                             {"params": fresh, "lr": args.head_lr}], weight_decay=0.01)
    tok = TextTokenizer(base / "tokenizer.json", max_length=MAX_LENGTH,
                        inputs=["input_ids", "attention_mask", "token_type_ids"],
                        padding="longest")  # most fortunes are far shorter than 64 tokens
    per_epoch = -(-len(data.train) // args.batch)
    total = min(args.max_steps or per_epoch * args.epochs, per_epoch * args.epochs)
    # Linear decay to zero: the usual BERT fine-tuning schedule, steadier final weights.
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: max(0.0, 1 - s / total))
    rng = np.random.default_rng(args.seed)
    y_all = torch.from_numpy(data.train.y)
    model.train()
    step, t0, losses = 0, time.perf_counter(), []
    while step < total:
        order = rng.permutation(len(data.train))
        for i in range(0, len(order), args.batch):
            idx = order[i:i + args.batch]
            feed = {n: torch.from_numpy(v) for n, v in tok([data.train.texts[j] for j in idx]).items()}
            loss = model(**feed, labels=y_all[idx]).loss
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            losses.append(loss.item())
            step += 1
            if step % max(1, total // 10) == 0 or step == total:
                log(f"  fine-tune step {step}/{total}: loss {np.mean(losses[-20:]):.3f}, "
                    f"{time.perf_counter() - t0:.0f} s")
            if step >= total:
                break
    model.eval()
    model.save_pretrained(out)  # safetensors by default
    for name in TOKENIZER_FILES:
        if (base / name).is_file():
            shutil.copyfile(base / name, out / name)
    return {"steps": total, "train_texts": len(data.train), "final_loss": float(np.mean(losses[-20:])),
            "seconds": round(time.perf_counter() - t0, 1)}


def run(args, log=print) -> dict:
    import torch

    from edgeopt.pipeline import OptimizeOptions, optimize

    torch.set_num_threads(1)  # the acceptance setting; also what makes training repeatable
    base = Path(hf_model("all-minilm-l6-v2"))
    data = split_data(args)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    log(f"data: {len(data.classes)} categories ({', '.join(data.classes)}), "
        f"{len(data.train)} train / {len(data.test)} test texts")
    folder = work / "minilm-fortunes"
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir()
    record = fine_tune(base, data, folder, args, log=log)
    jsonl = write_jsonl(data, work / "fortunes-split.jsonl")
    opts = OptimizeOptions(recipe="int8", task="classification", max_length=MAX_LENGTH,
                           threads=1, progress=False, batch=args.latency_batch,
                           latency_repeats=args.latency_repeats)
    artifact = work / "artifact"
    t0 = time.perf_counter()
    report = optimize(f"hf:{folder}", str(jsonl), out=artifact, force=True, options=opts,
                      log=log)
    stages = {s.name: s for s in report.stages}
    fp32, int8 = stages[FP32], stages[INT8]
    return {"classes": list(data.classes), "train": len(data.train), "test": report.n_eval,
            "fine_tune": record, "optimize_s": round(time.perf_counter() - t0, 1),
            "fp32_top1": fp32.accuracy_top1, "int8_top1": int8.accuracy_top1,
            "agreement": int8.agreement, "fp32_bytes": fp32.size_bytes,
            "int8_bytes": int8.size_bytes, "artifact": str(artifact)}


def table(r: dict) -> str:
    drop = r["fp32_top1"] - r["int8_top1"]
    ok = abs(drop) <= TOLERANCE
    ft = r["fine_tune"]
    lines = [
        f"MiniLM-L6 + linear head on {len(r['classes'])} fortunes categories "
        f"({', '.join(r['classes'])}); chance {100 / len(r['classes']):.1f}%",
        f"fine-tune: {ft['steps']} steps on {ft['train_texts']} texts, final loss "
        f"{ft['final_loss']:.3f}, {ft['seconds']:.0f} s; optimize: {r['optimize_s']:.0f} s",
        f"held-out test texts: {r['test']} (max length {MAX_LENGTH} tokens)",
        "",
        f"{'model':<18} {'top-1 %':>8} {'size MB':>8} {'size x':>7}",
        f"{FP32:<18} {r['fp32_top1']:>8.2f} {r['fp32_bytes'] / 1e6:>8.2f} {1.0:>7.3f}",
        f"{INT8:<18} {r['int8_top1']:>8.2f} {r['int8_bytes'] / 1e6:>8.2f} "
        f"{r['int8_bytes'] / r['fp32_bytes']:>7.3f}",
        "",
        f"int8 drop: {drop:.2f} points (argmax agreement with fp32 {r['agreement']:.2f}%)",
        f"int8 within {TOLERANCE} points of fp32 top-1: {'PASS' if ok else 'FAIL'}",
    ]
    return "\n".join(lines)


TINY = {"train_limit": 160, "test_limit": 100, "max_steps": 10, "epochs": 2,
        "latency_repeats": 4, "latency_batch": 8}


def parse(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--categories", default=",".join(CATEGORIES),
                   help="comma-separated fortunes categories (at least 2)")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--max-steps", type=int, help="stop fine-tuning after this many steps")
    p.add_argument("--train-limit", type=int, help="fine-tune on this many training texts")
    p.add_argument("--test-limit", type=int, help="evaluate on this many held-out texts")
    p.add_argument("--test-fraction", type=float, default=0.2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--lr", type=float, default=5e-5, help="encoder learning rate")
    p.add_argument("--head-lr", type=float, default=1e-3, help="head (and pooler) learning rate")
    p.add_argument("--latency-repeats", type=int, default=50)
    p.add_argument("--latency-batch", type=int, default=32)
    p.add_argument("--work", help="folder for the fine-tuned model, the data and the "
                                  "artifact (default: a temporary folder)")
    p.add_argument("--out", help="also write the table here, the command line first")
    p.add_argument("--tiny", action="store_true",
                   help=f"a few steps on few texts, for the tests ({TINY})")
    args = p.parse_args(argv)
    args.categories = [c for c in args.categories.split(",") if c]
    if len(args.categories) < 2:
        p.error("--categories needs at least 2 categories")
    if args.tiny:
        for k, v in TINY.items():
            if getattr(args, k) in (None, p.get_default(k)):
                setattr(args, k, v)
    return args


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse(argv)
    log = lambda m: print(m, file=sys.stderr)  # noqa: E731
    try:
        if args.work:
            r = run(args, log=log)
        else:
            with tempfile.TemporaryDirectory(prefix="edgeopt-text-cls-") as tmp:
                args.work = tmp
                r = run(args, log=log)
    except EdgeoptError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    text = table(r)
    print(text)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(f"$ python bench/text_classifier.py {' '.join(argv)}\n\n"
                                  f"{text}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
