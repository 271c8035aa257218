"""Acceptance run for low-rank factorisation: every accuracy from an ONNX Runtime artifact.

resnet_small on Fashion-MNIST loses at least --reduction (default 40%) of its
parameters by Tucker-2 (main row) and CP (second row), with the per-layer ranks
chosen by the global budget; each is evaluated before and after a short
fine-tune that distils the unfactorised model. Latency of the fp32 and the
factorised artifacts is measured at the end of the same run, interleaved (ORT; medians
over rounds of medians over many calls).

    python bench/lowrank.py                       # full test set, tucker2 and cp
    python bench/lowrank.py --only tucker2        # the main row only
    python bench/lowrank.py --tiny                # digits, seconds; what the tests run

Checks: Tucker-2 parameters -reduction or more, and after fine-tuning within 1.5
points of fp32 top-1. CP is reported without a threshold.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

import edgeopt
from edgeopt.compress import apply
from edgeopt.compress.distill.finetune import FinetuneOptions
from edgeopt.compress.lowrank import LowRankConfig
from edgeopt.core.data import Preprocess, load_dataset
from edgeopt.core.train import TrainData
from edgeopt.evaluate import evaluate
from edgeopt.evaluate.latency import interleaved_p50s
from edgeopt.zoo.reference import reference_model

ARCH = "resnet_small"
METHODS = ("tucker2", "cp")


def _params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


class Bench:
    def __init__(self, args, out_root: Path) -> None:
        self.args, self.out_root = args, out_root
        self.pre = Preprocess()
        self.data = load_dataset(args.data)
        self.test = self.data.test.subset(args.eval_limit, seed=0)
        self.shape = list(self.data.sample_shape)
        self.model = reference_model(ARCH, args.data, tiny=args.tiny, out=out_root)
        self.model.eval()
        train = self.data.train.subset(args.train_size, seed=0)
        self.train = TrainData(x=self.pre(train.x), y=train.y)
        self.predictors: dict[str, object] = {}  # timed together at the end
        self.fp32 = self.artifact(self.model, "fp32", latency=True)

    def artifact(self, model, name: str, *, latency: bool = False) -> dict:
        art = edgeopt.compile(model, out=self.out_root / name, input_shape=self.shape,
                              preprocess=self.pre.to_dict())
        pred = art.load()
        ref = getattr(self, "fp32", {}).get("logits")
        ev = evaluate(pred, self.test.x, self.test.y, preprocess=self.pre,
                      reference_logits=ref, progress=False)
        row = {"top1": ev.top1, "agreement": ev.agreement, "logits": ev.logits,
               "bytes": (art.path / art.manifest["model_file"]).stat().st_size,
               "params": _params(model)}
        if latency:
            self.predictors[name] = pred
        return row

    def latencies(self) -> dict[str, dict[str, float]]:
        """Median latency per artifact at batch 1 and 32, in interleaved rounds.

        The machine is shared: timing one artifact after another would compare
        different loads. Each round times every artifact once (``repeats`` calls,
        their median); the figure is the median over ``rounds`` rounds.
        """
        got = {b: interleaved_p50s(self.predictors, tuple(self.shape), batch=b,
                                   rounds=self.args.rounds, warmup=10, repeats=reps,
                                   min_time_s=self.args.min_time)
               for b, reps in ((1, self.args.repeats), (32, max(10, self.args.repeats // 8)))}
        return {n: {f"b{b}_ms": statistics.median(got[b][n]) for b in got}
                for n in self.predictors}

    def options(self) -> FinetuneOptions:
        if self.args.tiny:
            return FinetuneOptions(steps=4, lr=1e-3, batch_size=32, seed=0)
        # max_seconds alone: the cosine schedule anneals over the wall-clock budget,
        # so a run cut by the cap still ends at a small learning rate.
        return FinetuneOptions(max_seconds=self.args.max_seconds, epochs=None, lr=1e-3,
                               optimizer="adamw", schedule="cosine", batch_size=64,
                               shift=2, hflip=True, seed=0)

    def row(self, method: str) -> dict:
        cfg = LowRankConfig(conv=method, param_reduction=self.args.reduction)
        if self.args.tiny:
            cfg = cfg.replace(tucker_iters=2, cp_iters=2)  # a rougher start, same code path
        t0 = time.perf_counter()
        plain = apply(self.model, cfg, progress=False)
        before = self.artifact(plain, f"{method}-before")
        tuned = apply(self.model, cfg.replace(finetune=self.options()), data=self.train,
                          progress=not self.args.tiny)
        seconds = time.perf_counter() - t0
        after = self.artifact(tuned, f"{method}-finetuned", latency=True)
        info = tuned.meta["edgeopt"]["lowrank"]
        fp = self.fp32
        row = {
            "method": method, "fp32_top1": fp["top1"], "before_top1": before["top1"],
            "top1": after["top1"], "drop": fp["top1"] - after["top1"],
            "agreement": after["agreement"],
            "params_before": fp["params"], "params_after": after["params"],
            "param_reduction": 1 - after["params"] / fp["params"],
            "bytes": after["bytes"], "fp32_bytes": fp["bytes"],
            "seconds": round(seconds, 1), "finetune": info.get("finetune"),
            "layers": {k: {f: v[f] for f in ("kind", "shape", "ranks", "params_before",
                                             "params_after", "energy_kept")}
                       for k, v in info["layers"].items()},
        }
        return row


def _table(rows: list[dict], fp32: dict) -> str:
    head = (f"{'model':10s} {'params':>9s} {'reduct':>7s} {'top1 pre-ft':>11s} "
            f"{'top1':>7s} {'drop':>6s} {'ONNX bytes':>11s} {'b1 ms':>7s} {'b32 ms':>7s} "
            f"{'b1 x':>5s} {'b32 x':>5s}")
    lines = [head, "-" * len(head),
             f"{'fp32':10s} {fp32['params']:>9,d} {'':>7s} {'':>11s} {fp32['top1']:6.2f}% "
             f"{'':>6s} {fp32['bytes']:>11,d} {fp32['b1_ms']:7.3f} {fp32['b32_ms']:7.3f} "
             f"{1:5.2f} {1:5.2f}"]
    for r in rows:
        lines.append(
            f"{r['method']:10s} {r['params_after']:>9,d} {-100 * r['param_reduction']:6.1f}% "
            f"{r['before_top1']:10.2f}% {r['top1']:6.2f}% {-r['drop']:+6.2f} {r['bytes']:>11,d} "
            f"{r['b1_ms']:7.3f} {r['b32_ms']:7.3f} {r['b1_ms'] / r['fp32_b1_ms']:5.2f} "
            f"{r['b32_ms'] / r['fp32_b32_ms']:5.2f}")
    return "\n".join(lines)


def _checks(rows: list[dict], reduction: float) -> list[tuple[str, bool]]:
    out = []
    for r in rows:
        out.append((f"{r['method']} parameters {r['params_before']:,} -> {r['params_after']:,} "
                    f"(-{100 * r['param_reduction']:.1f}%, asked -{100 * reduction:.0f}%)",
                    r["param_reduction"] >= reduction))
        if r["method"] == "tucker2":
            out.append((f"tucker2 fine-tuned within 1.5 points of fp32 ({r['top1']:.2f}% vs "
                        f"{r['fp32_top1']:.2f}%, {-r['drop']:+.2f})", r["drop"] <= 1.5))
        else:
            out.append((f"{r['method']} fine-tuned reaches {r['top1']:.2f}% (reported, no "
                        f"threshold)", True))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--only", help=f"comma-separated subset of: {', '.join(METHODS)}")
    p.add_argument("--data", default="fashion-mnist")
    p.add_argument("--reduction", type=float, default=0.4, help="parameter reduction asked")
    p.add_argument("--max-seconds", type=float, default=420.0, help="fine-tune cap per method")
    p.add_argument("--train-size", type=int, help="fine-tuning samples (default: all)")
    p.add_argument("--eval-limit", type=int, help="default: the whole test set")
    p.add_argument("--repeats", type=int, default=300, help="latency calls per round, batch 1")
    p.add_argument("--rounds", type=int, default=7, help="interleaved latency rounds")
    p.add_argument("--min-time", type=float, default=0.5, help="latency seconds per point")
    p.add_argument("--threads", type=int, default=1, help="torch threads (fine-tuning)")
    p.add_argument("--out", type=Path, help="keep the artifacts here")
    p.add_argument("--json", type=Path)
    p.add_argument("--tiny", action="store_true", help="digits, a briefly trained model")
    p.add_argument("--strict", action="store_true", help="exit 1 when a check fails")
    args = p.parse_args(argv)
    methods = args.only.split(",") if args.only else list(METHODS)
    if set(methods) - set(METHODS):
        p.error(f"--only takes {', '.join(METHODS)}")
    if args.tiny:
        args.data, args.eval_limit, args.train_size = "digits", 128, 256
        args.repeats, args.rounds, args.min_time = 20, 1, 0.0
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        out_root = args.out or Path(tmp)
        out_root.mkdir(parents=True, exist_ok=True)
        bench = Bench(args, out_root)
        rows = []
        for method in methods:
            r = bench.row(method)
            rows.append(r)
            # One line per row as it finishes: a long run that is cut keeps its figures.
            print(f"{method}: params {r['params_after']:,} (-{100 * r['param_reduction']:.1f}%)"
                  f" top1 {r['before_top1']:.2f}% -> {r['top1']:.2f}% (fp32 "
                  f"{r['fp32_top1']:.2f}%) in {r['seconds']} s", flush=True)
        lat = bench.latencies()
    fp32 = {**{k: v for k, v in bench.fp32.items() if k != "logits"}, **lat["fp32"]}
    for r in rows:
        r.update(lat[f"{r['method']}-finetuned"])
        r.update(fp32_b1_ms=fp32["b1_ms"], fp32_b32_ms=fp32["b32_ms"])
    print(_table(rows, fp32))
    for r in rows:
        ranks = ", ".join(f"{k} {v['ranks']}" for k, v in r["layers"].items())
        print(f"{r['method']} ranks: {ranks}")
    checks = _checks(rows, args.reduction)
    failed = False
    for text, ok in checks:
        print(f"{'PASS' if ok else 'FAIL'}  {text}")
        failed |= not ok
    if args.json:
        args.json.write_text(json.dumps({"fp32": fp32, "rows": rows, "checks": checks},
                                        indent=2))
    return 1 if failed and args.strict else 0


if __name__ == "__main__":
    sys.exit(main())
