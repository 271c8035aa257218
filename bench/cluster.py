"""Acceptance run for weight clustering: every figure from an ONNX Runtime artifact.

resnet_small on Fashion-MNIST, k shared values per layer (1-D k-means on the
BN-folded weights), without and with a short centroid fine-tune (distillation from
the unclustered model plus cross-entropy on the labels). Each model is compiled,
loaded with `edgeopt.runtime.load` and evaluated on the test set; sizes are the
artifact's model.onnx against the fp32 ONNX artifact of the same model.

    python bench/cluster.py                  # 8, 16 and 32 clusters, full test set
    python bench/cluster.py --clusters 16    # one count
    python bench/cluster.py --tiny           # digits, a briefly trained model: seconds

Checks (16 clusters, fine-tuned): model.onnx <= 0.16x of fp32, top-1 within 1 point.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch

import edgeopt
import edgeopt.compress.cluster  # noqa: F401  (registers the handler)
from edgeopt.compress.cluster import ClusterConfig
from edgeopt.compress.distill.finetune import FinetuneOptions
from edgeopt.core.data import Preprocess, load_dataset
from edgeopt.core.train import TrainData
from edgeopt.evaluate import evaluate
from edgeopt.zoo.reference import reference_model

ARCH = "resnet_small"
# A short centroid fine-tune: ~0.4 epoch of Fashion-MNIST, capped in wall-clock time.
FINETUNE = {"steps": 400, "lr": 1e-3, "batch_size": 64, "max_seconds": 300.0}
TINY_FINETUNE = {"steps": 20, "lr": 1e-3, "batch_size": 32}


def plan(counts: list[int]) -> list[tuple[str, dict]]:
    """(row label, ClusterConfig fields) per row."""
    rows = []
    for k in counts:
        rows.append((f"{k} clusters, k-means (linear init)", {"clusters": k}))
        rows.append((f"{k} clusters + centroid fine-tune", {"clusters": k, "finetune": "ft"}))
    if 16 in counts:
        rows.append(("16 clusters, k-means (k-means++ init)", {"clusters": 16,
                                                               "init": "kmeans++"}))
    return rows


class Bench:
    def __init__(self, args, out_root: Path) -> None:
        self.args, self.out_root = args, out_root
        self.pre = Preprocess()
        self.data = load_dataset(args.data)
        self.test = self.data.test.subset(args.eval_limit, seed=0)
        train = self.data.train
        self.train = TrainData(x=torch.from_numpy(self.pre(train.x)), y=train.y)
        # --tiny: trained to ~96% in seconds, so "within 1 point of fp32" means something.
        self.model = reference_model(ARCH, args.data, tiny=args.tiny, out=out_root, epochs=4,
                                     limit=None, batch_size=32, hflip=False)
        art = edgeopt.compile(self.model, out=out_root / "fp32", preprocess=self.pre.to_dict(),
                              input_shape=list(self.data.sample_shape))
        ev = evaluate(art.load(), self.test.x, self.test.y, preprocess=self.pre, progress=False)
        self.fp32 = {"top1": ev.top1, "logits": ev.logits, "bytes": self._size(art)}
        print(f"{'fp32':44s} {ev.top1:6.2f}%          {self.fp32['bytes']:>9,d} B 1.000x",
              flush=True)

    @staticmethod
    def _size(art) -> int:
        return (art.path / art.manifest["model_file"]).stat().st_size

    def row(self, label: str, fields: dict) -> dict:
        fields = dict(fields)
        if fields.pop("finetune", None):
            fields["finetune"] = FinetuneOptions(**(TINY_FINETUNE if self.args.tiny
                                                    else FINETUNE))
        config = ClusterConfig(**fields)
        t0 = time.perf_counter()
        model = edgeopt.apply(self.model, config, data=self.train, progress=False)
        seconds = time.perf_counter() - t0
        name = "".join(c if c.isalnum() else "-" for c in label)
        art = edgeopt.compile(model, out=self.out_root / name, preprocess=self.pre.to_dict())
        ev = evaluate(art.load(), self.test.x, self.test.y, preprocess=self.pre,
                      reference_logits=self.fp32["logits"], progress=False)
        size = self._size(art)
        info = model.meta["edgeopt"]["cluster"]
        row = {"label": label, "clusters": config.clusters, "init": config.init.value,
               "top1": ev.top1, "fp32_top1": self.fp32["top1"],
               "drop": self.fp32["top1"] - ev.top1, "agreement": ev.agreement,
               "bytes": size, "ratio": size / self.fp32["bytes"],
               "fraction_clustered": info["fraction_clustered"],
               "distinct_max": max(len(m.centroids.unique()) for m in model.modules()
                                   if hasattr(m, "centroids")),
               "finetune": info["finetune"], "compress_s": round(seconds, 1)}
        print(f"{label:44s} {ev.top1:6.2f}% ({row['drop']:+.2f})  {size:>9,d} B "
              f"{row['ratio']:.3f}x  {seconds:6.1f} s", flush=True)
        return row


def checks(rows: list[dict]) -> list[tuple[str, bool]]:
    by = {r["label"]: r for r in rows}
    out = []
    tuned = by.get("16 clusters + centroid fine-tune")
    if tuned is not None:
        out.append((f"16 clusters + fine-tune: model.onnx <= 0.16x fp32 ({tuned['ratio']:.3f}x)",
                    tuned["ratio"] <= 0.16))
        out.append((f"16 clusters + fine-tune within 1 point of fp32 ({tuned['drop']:+.2f})",
                    tuned["drop"] <= 1.0))
    for r in rows:
        k = r["clusters"]
        out.append((f"{r['label']}: at most {k} distinct values per layer "
                    f"({r['distinct_max']})", r["distinct_max"] <= k))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--clusters", default="8,16,32", help="comma-separated counts")
    p.add_argument("--data", default="fashion-mnist")
    p.add_argument("--eval-limit", type=int, help="default: the whole test set")
    p.add_argument("--out", type=Path, help="keep the artifacts here")
    p.add_argument("--json", type=Path)
    p.add_argument("--tiny", action="store_true", help="digits, a briefly trained model")
    p.add_argument("--strict", action="store_true", help="exit 1 when a check fails")
    args = p.parse_args(argv)
    try:
        counts = [int(c) for c in args.clusters.split(",")]
    except ValueError:
        p.error(f"--clusters takes comma-separated integers, got {args.clusters!r}")
    if args.tiny:
        args.data, args.eval_limit = "digits", None  # all 359 test images
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore", category=FutureWarning)
    with tempfile.TemporaryDirectory() as tmp:
        out_root = args.out or Path(tmp)
        out_root.mkdir(parents=True, exist_ok=True)
        bench = Bench(args, out_root)
        rows = [bench.row(label, fields) for label, fields in plan(counts)]
    results = checks(rows)
    failed = False
    for text, ok in results:
        print(f"{'PASS' if ok else 'FAIL'}  {text}")
        failed |= not ok
    if args.json:
        args.json.write_text(json.dumps({"fp32": {k: v for k, v in bench.fp32.items()
                                                  if k != "logits"},
                                         "rows": rows, "checks": results}, indent=2))
    return 1 if failed and args.strict else 0


if __name__ == "__main__":
    sys.exit(main())
