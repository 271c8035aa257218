"""Acceptance run for knowledge distillation (issue 5): a half-width student taught by
the reference ResNet beats the same student trained on labels alone.

Both students start from the same seeded initialisation and train for the same
steps on the same data with the same optimizer, schedule and augmentation; the
only difference is the loss (cross-entropy on labels, against
``alpha * T^2 * KL_T + (1 - alpha) * CE`` with the teacher's soft targets).
Every figure comes from an ONNX Runtime artifact loaded with
``edgeopt.runtime.load`` and evaluated on the test set.

    python bench/distill.py                 # full run (about 20 min on 2 cores)
    python bench/distill.py --tiny          # seconds; what the tests run

``--tiny`` is the same experiment in miniature, where it still has to pass: a teacher
trained to ~96% on all of digits, half-width students given only 128 of its images
(little data is where soft targets teach most; seeded, distillation wins by 6-8 points).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

import edgeopt
from edgeopt.compress import apply
from edgeopt.compress.distill.finetune import FinetuneOptions, finetune
from edgeopt.compress.distill.trainer import DistillConfig
from edgeopt.core.data import Preprocess, load_dataset
from edgeopt.core.model import build_from_factory
from edgeopt.core.train import TrainData
from edgeopt.evaluate import evaluate
from edgeopt.zoo.reference import reference_model

STUDENT = "edgeopt.zoo.resnet:resnet_small"


def _artifact_top1(model, out: Path, data, test, pre) -> tuple[float, int]:
    art = edgeopt.compile(model, out=out, input_shape=list(data.sample_shape),
                          preprocess=pre.to_dict())
    ev = evaluate(art.load(), test.x, test.y, preprocess=pre, progress=False)
    return ev.top1, (art.path / art.manifest["model_file"]).stat().st_size


def run(args, out: Path) -> dict:
    pre = Preprocess()
    data = load_dataset(args.data)
    test = data.test.subset(args.eval_limit, seed=0)
    train = data.train.subset(args.train_size, seed=0)
    train_data = TrainData(x=pre(train.x), y=train.y)
    width = args.teacher_width // 2
    # A teacher worth learning from: a near-random one makes the comparison noise.
    teacher = reference_model("resnet_small", args.data, tiny=args.tiny, out=out, epochs=4,
                              limit=None, batch_size=32, hflip=False)
    common = dict(epochs=args.epochs, batch_size=args.batch_size, optimizer="sgd", lr=args.lr,
                  weight_decay=5e-4, schedule="onecycle", shift=2 if not args.tiny else 0,
                  hflip=not args.tiny and args.data == "fashion-mnist", seed=0)
    rows = {}
    t_top1, t_bytes = _artifact_top1(teacher, out / "teacher", data, test, pre)
    rows["teacher"] = {"top1": t_top1, "bytes": t_bytes,
                       "params": sum(p.numel() for p in teacher.parameters())}

    # Labels alone: the same seeded student, the same loop, cross-entropy.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        student = build_from_factory(STUDENT, {"width": width})
    t0 = time.perf_counter()
    res = finetune(student, train_data, FinetuneOptions(distill=False, **common), teacher=None,
                   progress=not args.tiny, desc="labels only")
    rows["labels only"] = {"seconds": round(time.perf_counter() - t0, 1), "steps": res.steps}

    cfg = DistillConfig(teacher="input", student=STUDENT, student_kwargs={"width": width},
                        temperature=args.temperature, alpha=args.alpha, **common)
    t0 = time.perf_counter()
    distilled = apply(teacher, cfg, data=train_data, progress=not args.tiny)
    rows["distilled"] = {"seconds": round(time.perf_counter() - t0, 1),
                         "steps": distilled.meta["edgeopt"]["distill"]["steps"]}
    for name, model in (("labels only", student.eval()), ("distilled", distilled)):
        top1, size = _artifact_top1(model, out / name.replace(" ", "-"), data, test, pre)
        rows[name].update(top1=top1, bytes=size,
                          params=sum(p.numel() for p in model.parameters()))
    return {"rows": rows, "width": width, "epochs": args.epochs, "train_samples": len(train),
            "eval_samples": len(test.y), "temperature": args.temperature, "alpha": args.alpha}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="fashion-mnist")
    ap.add_argument("--epochs", type=float, default=4.0)
    ap.add_argument("--lr", type=float, default=0.05)
    ap.add_argument("--temperature", type=float, default=4.0)
    ap.add_argument("--alpha", type=float, default=0.9)
    ap.add_argument("--teacher-width", type=int, default=32)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--train-size", type=int, default=None)
    ap.add_argument("--eval-limit", type=int, default=None)
    ap.add_argument("--tiny", action="store_true", help="digits, a few steps: what tests run")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", default=None, help="folder for the artifacts (default: temporary)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    if args.tiny:
        args.data, args.epochs, args.train_size, args.batch_size = "digits", 8.0, 128, 32
    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="edgeopt-distill-") as tmp:
        out = Path(args.out) if args.out else Path(tmp)
        out.mkdir(parents=True, exist_ok=True)
        result = run(args, out)
    rows = result["rows"]
    print(f"half-width student (width {result['width']}), {result['epochs']:g} epochs on "
          f"{result['train_samples']} images, evaluated on {result['eval_samples']}; "
          f"T={result['temperature']:g}, alpha={result['alpha']:g}")
    print(f"{'model':14s} {'params':>8s} {'top-1':>7s} {'size':>11s} {'train s':>8s}")
    for name, r in rows.items():
        print(f"{name:14s} {r['params']:>8,d} {r['top1']:6.2f}% {r['bytes']:>9,d} B "
              f"{r.get('seconds', ''):>8}")
    gain = rows["distilled"]["top1"] - rows["labels only"]["top1"]
    ok = gain > 0
    print(f"{'PASS' if ok else 'FAIL'}  distilled student beats labels-only by {gain:+.2f} points")
    result["checks"] = [{"check": "distilled beats labels-only", "pass": ok, "gain": gain}]
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
