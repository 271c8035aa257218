"""Acceptance run for the composed recipe prune-distill-int8 (issue 5), beside int8 alone.

Runs the real ``edgeopt.optimize`` twice on the reference ResNet: recipe
``int8`` (the unpruned model quantized) and recipe ``prune-distill-int8``
(structured pruning to half the MACs -> distillation from the original -> int8
PTQ), each writing an artifact with every stage in its report. Then it loads
the fp32, int8 and pruned-int8 artifacts with ``edgeopt.runtime.load`` and
times them round-robin in one loop (so machine noise hits all three alike):
median latency at batch 1 and 32.

Checks: pruned int8 artifact <= 0.15x the fp32 ONNX size, within 2 points of
fp32 top-1, and faster than the int8-only artifact of the unpruned model.

    python bench/compose.py                 # full test set (about 25 min on 2 cores)
    python bench/compose.py --tiny          # digits, seconds; what the tests run
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from edgeopt.core.data import Preprocess, load_dataset
from edgeopt.evaluate import interleaved_p50s, stage_table
from edgeopt.pipeline import OptimizeOptions, optimize
from edgeopt.recipes import load_recipe
from edgeopt.runtime import load
from edgeopt.zoo.reference import reference_model


def _tiny(recipe):
    steps = []
    for s in recipe.steps:
        if hasattr(s, "calib_size"):
            s = s.replace(calib_size=64)
        if hasattr(s, "epochs") and s.epochs is not None:
            s = s.replace(epochs=None, steps=5, train_size=256)
        steps.append(s)
    recipe.steps = steps
    return recipe


def round_robin_ms(predictors: dict, shape: tuple[int, ...], batch: int, repeats: int,
                   warmup: int = 10) -> dict[str, float]:
    """Median ms per call of each predictor, timed one call each in turn (after ``warmup``
    untimed calls each), so machine noise hits all of them alike."""
    interleaved_p50s(predictors, shape, batch=batch, rounds=1, warmup=warmup, repeats=1)
    p50s = interleaved_p50s(predictors, shape, batch=batch, rounds=repeats, warmup=0, repeats=1)
    return {k: statistics.median(v) for k, v in p50s.items()}


def run(args, out: Path) -> dict:
    data = load_dataset(args.data)
    model = reference_model("resnet_small", args.data, tiny=args.tiny, out=out, epochs=8,
                            limit=512)
    reports = {}
    for name in ("int8", "prune-distill-int8"):
        recipe = load_recipe(name)
        if args.tiny:
            recipe = _tiny(recipe)
        opts = OptimizeOptions(recipe=recipe, eval_limit=args.eval_limit, progress=not args.tiny,
                               latency_repeats=10 if args.tiny else 50, threads=args.threads)
        t0 = time.perf_counter()
        reports[name] = optimize(model, data, out=out / name, force=True, options=opts,
                                 log=lambda m: print(f"  {m}", file=sys.stderr))
        print(f"== recipe {name} ({time.perf_counter() - t0:.0f} s)")
        print(stage_table(reports[name]), flush=True)

    stages = {s.name: s for s in reports["prune-distill-int8"].stages}
    int8_only = {s.name: s for s in reports["int8"].stages}["int8 onnxruntime"]
    fp32 = stages["fp32 onnxruntime"]
    pruned = stages["int8 onnxruntime"]
    # Re-time the three artifacts side by side: the fp32 one is rebuilt by optimize
    # in a temporary folder, so it is compiled once more here.
    import edgeopt

    fp32_art = edgeopt.compile(model, out=out / "fp32", force=True,
                               input_shape=list(data.sample_shape),
                               preprocess=Preprocess().to_dict())
    preds = {"fp32": fp32_art.load(threads=args.threads),
             "int8": load(out / "int8", threads=args.threads),
             "prune-distill-int8": load(out / "prune-distill-int8", threads=args.threads)}
    shape = tuple(data.sample_shape)
    latency = {b: round_robin_ms(preds, shape, b, args.repeats) for b in (1, 32)}
    info = next(s for s in reports["prune-distill-int8"].meta["compression"]["steps"]
                if s["step"] == "prune")
    return {
        "fp32_top1": fp32.accuracy_top1, "fp32_bytes": fp32.size_bytes,
        "int8_top1": int8_only.accuracy_top1, "int8_bytes": int8_only.size_bytes,
        "pdi_top1": pruned.accuracy_top1, "pdi_bytes": pruned.size_bytes,
        "macs_before": info.get("macs_before"), "macs_after": info.get("macs_after"),
        "latency_ms": {str(b): v for b, v in latency.items()},
        "stages": {k: [s.to_dict() for s in r.stages] for k, r in reports.items()},
        "eval_samples": reports["int8"].n_eval,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="fashion-mnist")
    ap.add_argument("--eval-limit", type=int, default=None)
    ap.add_argument("--repeats", type=int, default=200, help="timed runs per artifact and batch")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--tiny", action="store_true")
    ap.add_argument("--out", default=None)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    if args.tiny:
        args.data, args.eval_limit, args.repeats = "digits", 100, 5
    with tempfile.TemporaryDirectory(prefix="edgeopt-compose-") as tmp:
        out = Path(args.out) if args.out else Path(tmp)
        if out.exists() and args.out:
            shutil.rmtree(out)
        out.mkdir(parents=True, exist_ok=True)
        r = run(args, out)
    lat = r["latency_ms"]
    size_ratio = r["pdi_bytes"] / r["fp32_bytes"]
    drop = r["fp32_top1"] - r["pdi_top1"]
    print(f"\nartifacts on {r['eval_samples']} test images; latency: median of "
          f"{args.repeats} round-robin runs")
    print(f"{'artifact':22s} {'top-1':>7s} {'size':>11s} {'x fp32':>7s} {'b1 ms':>7s} {'b32 ms':>7s}")
    for key, top1, size in (("fp32", r["fp32_top1"], r["fp32_bytes"]),
                            ("int8", r["int8_top1"], r["int8_bytes"]),
                            ("prune-distill-int8", r["pdi_top1"], r["pdi_bytes"])):
        print(f"{key:22s} {top1:6.2f}% {size:>9,d} B {size / r['fp32_bytes']:6.3f}x "
              f"{lat['1'][key]:7.3f} {lat['32'][key]:7.3f}")
    if r["macs_before"]:
        print(f"MACs {r['macs_before']:,} -> {r['macs_after']:,} "
              f"({1 - r['macs_after'] / r['macs_before']:.1%} removed)")
    checks = [
        (f"size {size_ratio:.3f}x <= 0.15x fp32", size_ratio <= 0.15),
        (f"top-1 {r['pdi_top1']:.2f} within 2 points of fp32 {r['fp32_top1']:.2f} "
         f"({drop:+.2f})", drop <= 2.0),
        (f"faster than int8 alone at batch 32: {lat['32']['prune-distill-int8']:.3f} vs "
         f"{lat['32']['int8']:.3f} ms ({lat['32']['prune-distill-int8'] / lat['32']['int8']:.2f}x)",
         lat["32"]["prune-distill-int8"] < lat["32"]["int8"]),
        (f"faster than int8 alone at batch 1: {lat['1']['prune-distill-int8']:.3f} vs "
         f"{lat['1']['int8']:.3f} ms ({lat['1']['prune-distill-int8'] / lat['1']['int8']:.2f}x)",
         lat["1"]["prune-distill-int8"] < lat["1"]["int8"]),
    ]
    for text, ok in checks:
        print(f"{'PASS' if ok else 'FAIL'}  {text}")
    r["checks"] = [{"check": t, "pass": ok} for t, ok in checks]
    if args.json:
        Path(args.json).write_text(json.dumps(r, indent=2))
    return 0 if all(ok for _, ok in checks) or args.tiny else 1


if __name__ == "__main__":
    sys.exit(main())
