"""Backends side by side (issue 4): PyTorch eager, ONNX Runtime and TVM on both reference models.

For each reference model trained on Fashion-MNIST, in one process: PyTorch eager fp32,
ONNX Runtime fp32 and int8 (the ``int8`` recipe), TVM fp32 and int8, each TVM build both
for generic x86_64 and for the x86_64 variant matching this host's ISA (avx512 / avx2,
read from /proc/cpuinfo). Every artifact is loaded with ``edgeopt.runtime.load``;
accuracy on the test set, size on disk, latency p50 at batch 1 and 32 (warm-up, then
interleaved rounds of many repeats; the median of the rounds' p50s), ratios to eager.

Checks:
* TVM fp32 logits match PyTorch (max abs difference <= 1e-4) for both x86_64 builds;
* TVM x86_64 fp32 no slower than PyTorch eager fp32 at batch 1 (generic and host-ISA
  builds, each reported).

    python bench/compare_backends.py --json bench/results/backends.json
    python bench/compare_backends.py --tiny          # seconds; what the tests run
"""

from __future__ import annotations

import argparse
import io
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import edgeopt
from edgeopt.compile.host import host_isa_target
from edgeopt.core.data import Preprocess, load_dataset
from edgeopt.core.errors import ModelLoadError
from edgeopt.evaluate import evaluate, interleaved_p50s
from edgeopt.pipeline import OptimizeOptions, compress_with_recipe
from edgeopt.recipes import load_recipe

ARCHS = ("resnet_small", "mobilenetv2_small")
BATCHES = (1, 32)
MAX_ABS = 1e-4


def _state_dict_bytes(model: torch.nn.Module) -> int:
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    return buf.tell()


def _artifact_bytes(art) -> int:
    return sum(f["size"] for f in art.manifest["files"].values())


def build_rows(model, data, args, out_root: Path, arch: str, log) -> list[dict]:
    """Every runnable to compare: label, backend, precision, target, runnable, size."""
    shape = list(data.sample_shape)
    pre = Preprocess()
    rows = [{"label": "pytorch eager fp32", "backend": "torch", "precision": "fp32",
             "target": platform.machine(), "runnable": model, "bytes": _state_dict_bytes(model)}]
    recipe = load_recipe("int8")
    log(f"{arch}: int8 recipe (calibration on {recipe.steps[0].calib_size} train images)")
    int8 = compress_with_recipe(model, recipe, data, OptimizeOptions(preprocess=pre,
                                                                     progress=False), log=log)
    host = host_isa_target()
    plan = [("onnxruntime", "x86_64")] + [("tvm", t) for t in dict.fromkeys(["x86_64", host])]
    for precision, m in (("fp32", model), ("int8", int8)):
        for backend, target in plan:
            t0 = time.perf_counter()
            art = edgeopt.compile(m, target=target, backend=backend, input_shape=shape,
                                  out=out_root / f"{arch}-{backend}-{target}-{precision}",
                                  preprocess=pre.to_dict())
            log(f"{arch}: {backend} {precision} for {target} built in "
                f"{time.perf_counter() - t0:.1f} s")
            label = f"{backend} {precision}" + (f" {target}" if backend == "tvm" else "")
            rows.append({"label": label, "backend": backend, "precision": precision,
                         "target": target, "runnable": art.load(threads=args.threads),
                         "bytes": _artifact_bytes(art)})
    return rows


def measure(rows: list[dict], data, args, shape) -> None:
    test = data.test.subset(args.eval_limit, seed=0)
    pre = Preprocess()
    for r in rows:
        ev = evaluate(r["runnable"], test.x, test.y, preprocess=pre, progress=False)
        r["top1"], r["logits"] = ev.top1, ev.logits
    r0 = rows[0]["logits"]
    for r in rows:
        r["max_abs_vs_eager"] = float(np.abs(r["logits"] - r0).max())
        r["agreement"] = float((r["logits"].argmax(1) == r0.argmax(1)).mean() * 100)
    runnables = {str(i): r["runnable"] for i, r in enumerate(rows)}
    p50s = {b: interleaved_p50s(runnables, tuple(shape), batch=b, rounds=args.rounds, warmup=10,
                                repeats=args.repeats, threads=args.threads) for b in BATCHES}
    for i, r in enumerate(rows):
        r["p50_ms"] = {b: float(np.median(p50s[b][str(i)])) for b in BATCHES}
        r["rounds_p50_ms"] = {b: p50s[b][str(i)] for b in BATCHES}
    for r in rows:
        r["speedup_vs_eager"] = {b: rows[0]["p50_ms"][b] / r["p50_ms"][b] for b in BATCHES}
        r["size_vs_eager"] = r["bytes"] / rows[0]["bytes"]


def table(rows: list[dict]) -> str:
    head = ["", "top-1", "agree", "max|d|", "size", "p50@1 ms", "x eager", "p50@32 ms",
            "x eager"]
    lines = [head]
    for r in rows:
        lines.append([r["label"], f"{r['top1']:.2f}", f"{r['agreement']:.2f}",
                      f"{r['max_abs_vs_eager']:.1e}", f"{r['bytes'] / 1024:.1f} kB",
                      f"{r['p50_ms'][1]:.3f}", f"{r['speedup_vs_eager'][1]:.2f}x",
                      f"{r['p50_ms'][32]:.3f}", f"{r['speedup_vs_eager'][32]:.2f}x"])
    widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
    return "\n".join("  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                               for i, (c, w) in enumerate(zip(line, widths))).rstrip()
                     for line in lines)


def checks(rows: list[dict]) -> list[tuple[str, bool]]:
    eager = rows[0]
    out = []
    for r in rows:
        if r["backend"] == "tvm" and r["precision"] == "fp32":
            out.append((f"{r['label']} logits match PyTorch (max abs {r['max_abs_vs_eager']:.1e} "
                        f"<= {MAX_ABS:g})", r["max_abs_vs_eager"] <= MAX_ABS))
    for r in rows:
        if r["backend"] == "tvm" and r["precision"] == "fp32":
            a, b = r["p50_ms"][1], eager["p50_ms"][1]
            out.append((f"{r['label']} no slower than PyTorch eager at batch 1 ({a:.3f} vs "
                        f"{b:.3f} ms, {b / a:.2f}x)", a <= b))
    return out


def run_one(arch: str, args, out_root: Path) -> tuple[dict, list[tuple[str, bool]]]:
    from edgeopt.zoo.reference import load_reference, train_reference

    log = (lambda m: None) if args.quiet else (lambda m: print(f"  {m}", file=sys.stderr))
    if args.tiny:
        model, _ = train_reference(arch, "digits", epochs=1, limit=256,
                                   out=out_root / f"{arch}.pt", progress=False)
    else:
        model, _ = load_reference(arch, args.data, train_if_missing=False)
    model.eval()
    data = load_dataset(args.data)
    rows = build_rows(model, data, args, out_root, arch, log)
    with torch.inference_mode():
        measure(rows, data, args, data.sample_shape)
    print(f"== {arch} on {args.data} ({min(len(data.test), args.eval_limit or 10**9)} test "
          f"images, threads: torch {torch.get_num_threads()}, artifacts "
          f"{args.threads or 'runtime default'})")
    print(table(rows))
    res = checks(rows)
    keep = ("label", "backend", "precision", "target", "bytes", "top1", "agreement",
            "max_abs_vs_eager", "p50_ms", "rounds_p50_ms", "speedup_vs_eager", "size_vs_eager")
    return {"arch": arch, "rows": [{k: r[k] for k in keep} for r in rows]}, res


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", choices=[*ARCHS, "all"], default="all")
    p.add_argument("--data", default="fashion-mnist")
    p.add_argument("--eval-limit", type=int, help="default: the whole test set")
    p.add_argument("--repeats", type=int, default=50, help="timed runs per round and batch")
    p.add_argument("--rounds", type=int, default=3, help="interleaved timing rounds")
    p.add_argument("--threads", type=int, help="artifact runtime threads (default: theirs)")
    p.add_argument("--out", type=Path, help="keep the artifacts here")
    p.add_argument("--json", type=Path, help="write the results as JSON")
    p.add_argument("--tiny", action="store_true",
                   help="digits, briefly trained models, 64 test images (for tests)")
    p.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    p.add_argument("--strict", action="store_true", help="exit 1 when a check fails")
    args = p.parse_args(argv)
    if args.tiny:
        args.data, args.eval_limit, args.repeats, args.rounds = "digits", 64, 5, 2
    archs = list(ARCHS) if args.model == "all" else [args.model]
    host = host_isa_target()
    print(f"host ISA: {host} (from /proc/cpuinfo); TVM builds for x86_64 and {host}")
    results, failed = [], False
    with tempfile.TemporaryDirectory() as tmp:
        out_root = args.out or Path(tmp)
        out_root.mkdir(parents=True, exist_ok=True)
        for arch in archs:
            try:
                res, res_checks = run_one(arch, args, out_root)
            except ModelLoadError as exc:
                print(f"{arch}: {exc}")
                return 2
            for text, ok in res_checks:
                print(f"{'PASS' if ok else 'FAIL'}  {arch}: {text}")
                failed |= not ok
            res["checks"] = [{"text": t, "ok": ok} for t, ok in res_checks]
            results.append(res)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"host_isa": host, "data": args.data,
                                         "eval_limit": args.eval_limit, "models": results},
                                        indent=2))
    return 1 if (failed and args.strict) else 0


if __name__ == "__main__":
    sys.exit(main())
