"""Acceptance run for model formats: every form of both reference CNNs through `edgeopt.optimize`.

From the same trained model (the cached reference weights) it writes five forms:

  pt2-dyn     torch.export with Dim("batch", min=1, max=4096), torch.export.save
  pt2-static  torch.export at a static batch of 1 (the report says static_batch: 1)
  torchscript torch.jit.trace
  onnx        legacy exporter (dynamo=False), opset 17, dynamic batch axis
  onnx-dynamo dynamo exporter (onnxscript), dynamic batch Dim

and runs the real ``edgeopt.optimize`` on each file (not on the module): recipe ``int8``
on every form (an .onnx file takes the ONNX-graph path), and ``w4a8-adaround`` and
``prune-distill-int8`` on ``pt2-dyn`` and ``onnx`` (``--train-forms`` for others; an .onnx file goes through onnx2torch
for these). Every figure is the report's: the first stage's fp32 top-1 ("fp32 pytorch" or
"fp32 source"), the last stage's ("int8 onnxruntime") top-1, size and p50 latency, and the
"fp32 onnxruntime" stage's size.

The int8 floor of a model (the same definition as bench/foundation.py): over every Conv and
Linear layer of the BN-folded model, 1 byte per weight (int8) + 4 bytes per output channel
for its fp32 scale + 4 bytes per output channel for its int32 bias (BN folding gives every
conv a bias).

Bars: int8 top-1 within 0.3 points of fp32; ResNet int8 <= 0.27x fp32 ONNX; every int8
artifact <= 1.10x the floor. w4a8-adaround (bench/lowbit.py): within 1.5 points; ResNet
<= 0.15x fp32 ONNX. prune-distill-int8 (bench/compose.py, bench/prune.py): >= 45% MACs
removed, within 2 points, ResNet <= 0.15x fp32 ONNX, faster than the same form's int8
artifact at batch 1 and 32 (the two artifacts timed here in interleaved rounds). The size
bars are ResNet's, as the earlier issues set them: MobileNetV2's depthwise layers carry
~9x more per-channel scales and biases per weight, which 4-bit weights do not shrink.

    python bench/formats.py --parallel --threads 1 --json bench/results/formats.json
    python bench/formats.py --only resnet_small --forms pt2-dyn,onnx --recipes int8
    python bench/formats.py --tiny                  # digits, tiny models; what the tests run
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

from edgeopt.core.data import Preprocess, load_dataset
from edgeopt.pipeline import OptimizeOptions, optimize
from edgeopt.recipes import load_recipe
from edgeopt.recipes.overrides import with_training
from edgeopt.zoo.reference import reference_model

ARCHS = ("resnet_small", "mobilenetv2_small")
FORMS = ("pt2-dyn", "pt2-static", "torchscript", "onnx", "onnx-dynamo")
RECIPES = ("int8", "w4a8-adaround", "prune-distill-int8")
# Recipes beyond int8 run on these forms only (--train-forms widens it).
TRAIN_FORMS = ("pt2-dyn", "onnx")


def export_forms(model: nn.Module, sample_shape, out: Path, forms) -> dict[str, Path]:
    """Write each requested form of ``model`` under ``out``; return form -> file."""
    model = model.eval()
    x = torch.from_numpy(Preprocess()(
        (torch.rand(2, *sample_shape) * 255).to(torch.uint8).numpy()))
    Dim = torch.export.Dim
    files = {}
    for form in forms:
        if form == "pt2-dyn":
            ep = torch.export.export(model, (x,), dynamic_shapes=(
                {0: Dim("batch", min=1, max=4096)},))
            path = out / "model-dyn.pt2"
            torch.export.save(ep, path)
        elif form == "pt2-static":
            path = out / "model-static1.pt2"
            torch.export.save(torch.export.export(model, (x[:1],)), path)
        elif form == "torchscript":
            path = out / "model-traced.pt"
            torch.jit.save(torch.jit.trace(model, x), path)
        elif form == "onnx":
            path = out / "model-opset17.onnx"
            torch.onnx.export(model, (x,), str(path), dynamo=False, opset_version=17,
                              input_names=["input"], output_names=["logits"],
                              dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})
        elif form == "onnx-dynamo":
            path = out / "model-dynamo.onnx"
            torch.onnx.export(model, (x,), str(path), dynamo=True, verbose=False,
                              dynamic_shapes=({0: Dim("batch")},))
        else:
            raise SystemExit(f"unknown form {form!r} (valid: {', '.join(FORMS)})")
        files[form] = path
    return files


def int8_floor(model: nn.Module) -> dict[str, int]:
    """Bytes an int8 artifact of ``model`` cannot go below (see the module docstring)."""
    floor = {"int8_weights": 0, "weight_scales": 0, "int32_biases": 0, "weight_params": 0}
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Conv1d, nn.Linear)):
            out_ch = m.weight.shape[0]
            floor["weight_params"] += m.weight.numel()
            floor["int8_weights"] += m.weight.numel()
            floor["weight_scales"] += 4 * out_ch
            floor["int32_biases"] += 4 * out_ch
    floor["total"] = floor["int8_weights"] + floor["weight_scales"] + floor["int32_biases"]
    return floor


def bounded(name: str, args):
    """The built-in recipe, with the training budgets of this bench (or tiny ones)."""
    recipe = load_recipe(name)
    steps = []
    for s in recipe.steps:
        if args.tiny and hasattr(s, "calib_size"):
            s = s.replace(calib_size=64)
        if getattr(s, "adaround", None) is not None and args.adaround_iters:
            s = s.replace(adaround=s.adaround.replace(iters=args.adaround_iters))
        steps.append(s)
    recipe.steps = steps
    if name == "prune-distill-int8":
        if args.tiny:
            recipe.steps = [s.replace(epochs=None, steps=5, train_size=256)
                            if hasattr(s, "epochs") and s.epochs is not None else s
                            for s in recipe.steps]
        elif args.distill_seconds:
            recipe = with_training(recipe, seconds=args.distill_seconds)
    return recipe


def _lat(stage, batch):
    lat = stage.latency.get(batch)
    return None if lat is None else lat.p50_ms


def run_one(arch: str, form: str, path: Path, recipe_name: str, floor: dict, data, args,
            out: Path) -> dict:
    recipe = bounded(recipe_name, args)
    limit = args.eval_limit if recipe_name == "int8" else args.train_eval_limit
    opts = OptimizeOptions(recipe=recipe, eval_limit=limit, batch=args.batch,
                           latency_repeats=args.repeats, threads=args.threads, progress=False)
    t0 = time.perf_counter()
    report = optimize(str(path), data, out=out, force=True, options=opts,
                      log=lambda m: print(f"    {m}", file=sys.stderr))
    seconds = time.perf_counter() - t0
    stages = {s.name: s for s in report.stages}
    first, last, ort32 = report.stages[0], report.stages[-1], stages["fp32 onnxruntime"]
    row = {
        "arch": arch, "form": form, "file": path.name, "recipe": recipe_name,
        "n_eval": report.n_eval, "optimize_s": round(seconds, 1),
        "first_stage": first.name, "last_stage": last.name,
        "top1_fp32": first.accuracy_top1, "top1": last.accuracy_top1,
        "drop": first.accuracy_top1 - last.accuracy_top1, "agreement": last.agreement,
        "size": last.size_bytes, "size_fp32_onnx": ort32.size_bytes,
        "ratio_fp32": last.size_bytes / ort32.size_bytes, "ratio_floor": last.size_bytes / floor["total"],
        "p50_b1": _lat(last, 1), f"p50_b{args.batch}": _lat(last, args.batch),
        "fp32_p50_b1": _lat(ort32, 1), f"fp32_p50_b{args.batch}": _lat(ort32, args.batch),
        "static_batch": report.meta.get("static_batch"),
        "batch_range": report.meta.get("batch_range"),
        "stages": [s.to_dict() for s in report.stages],
        "timings_s": report.meta.get("timings_s"),
    }
    if recipe_name == "prune-distill-int8":
        steps = (report.meta.get("compression") or {}).get("steps") or []
        prune = next((s for s in steps if s.get("step") == "prune"), {})
        row["macs_before"], row["macs_after"] = prune.get("macs_before"), prune.get("macs_after")
    return row


def time_against_int8(row: dict, base: dict, out: Path, sample_shape, args) -> None:
    """p50 of this artifact and the same form's int8 artifact, the medians of interleaved
    rounds (two reports, each timed alone minutes apart, are not comparable to a few %)."""
    import statistics

    from edgeopt import runtime
    from edgeopt.evaluate import interleaved_p50s

    preds = {k: runtime.load(p, threads=args.threads) for k, p in (("mine", out),
                                                                  ("int8", base["artifact"]))}
    static = row.get("static_batch")
    row["vs_int8"] = {}
    for b in [static] if static else sorted({1, args.batch}):
        p50s = interleaved_p50s(preds, tuple(sample_shape), batch=b, rounds=15,
                                warmup=3, repeats=max(3, args.repeats // 5 if b == 1 else 3))
        mine, theirs = (statistics.median(p50s[k]) for k in ("mine", "int8"))
        row["vs_int8"][str(b)] = {"p50_ms": mine, "int8_p50_ms": theirs, "ratio": mine / theirs}


def checks_for(row: dict, rows: list[dict], batch: int) -> list[tuple[str, bool]]:
    r, arch = row, row["arch"]
    out = []
    if r["recipe"] == "int8":
        out.append((f"drop {r['drop']:+.2f} <= 0.3", r["drop"] <= 0.3))
        if arch == "resnet_small":
            out.append((f"size {r['ratio_fp32']:.3f}x <= 0.27x fp32", r["ratio_fp32"] <= 0.27))
        out.append((f"{r['ratio_floor']:.3f}x floor <= 1.10", r["ratio_floor"] <= 1.10))
    elif r["recipe"] == "w4a8-adaround":
        out.append((f"drop {r['drop']:+.2f} <= 1.5", r["drop"] <= 1.5))
        if arch == "resnet_small":  # the bar bench/lowbit.py set, on ResNet
            out.append((f"size {r['ratio_fp32']:.3f}x <= 0.15x fp32", r["ratio_fp32"] <= 0.15))
    elif r["recipe"] == "prune-distill-int8":
        if r.get("macs_before"):
            removed = 1 - r["macs_after"] / r["macs_before"]
            out.append((f"MACs -{removed:.1%} >= 45%", removed >= 0.45))
        else:
            out.append(("MACs not in the report", False))
        out.append((f"drop {r['drop']:+.2f} <= 2", r["drop"] <= 2.0))
        if arch == "resnet_small":  # the bar bench/compose.py set, on ResNet
            out.append((f"size {r['ratio_fp32']:.3f}x <= 0.15x fp32", r["ratio_fp32"] <= 0.15))
        base = next((x for x in rows if x["arch"] == arch and x["form"] == r["form"]
                     and x["recipe"] == "int8"), None)
        for b, t in (r.get("vs_int8") or {}).items():  # interleaved (time_against_int8)
            out.append((f"b{b} {t['ratio']:.2f}x int8's < 1", t["ratio"] < 1))
        if base is not None and not r.get("vs_int8"):
            for b in (1, batch):
                mine, theirs = r.get(f"p50_b{b}"), base.get(f"p50_b{b}")
                if mine is not None and theirs is not None:
                    out.append((f"b{b} {mine / theirs:.2f}x int8's (separate reports) < 1",
                                mine < theirs))
    return out


def table(arch: str, rows: list[dict], batch: int) -> str:
    head = ["form", "recipe", "n", "fp32 top-1", "top-1", "Δ", "size", "size × fp32", "× floor",
            "p50 b1 ms", f"p50 b{batch} ms", "checks"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        if r["arch"] != arch:
            continue
        checks = "; ".join(f"{'PASS' if ok else 'FAIL'} {t}" for t, ok in r["checks"])
        b = r.get(f"p50_b{batch}")
        form = r["form"] + (f" (static_batch {r['static_batch']})" if r["static_batch"] else "")
        lines.append("| " + " | ".join([
            form, r["recipe"], str(r["n_eval"]), f"{r['top1_fp32']:.2f}", f"{r['top1']:.2f}",
            f"{-r['drop']:+.2f}", f"{r['size']:,} B", f"{r['ratio_fp32']:.3f}",
            f"{r['ratio_floor']:.3f}", f"{r['p50_b1']:.3f}",
            "-" if b is None else f"{b:.3f}", checks]) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="fashion-mnist")
    ap.add_argument("--only", choices=ARCHS, help="one architecture (default: both)")
    ap.add_argument("--forms", default=",".join(FORMS), help=f"comma list of {', '.join(FORMS)}")
    ap.add_argument("--recipes", default=",".join(RECIPES), help=f"comma list of {', '.join(RECIPES)}")
    ap.add_argument("--train-forms", default=",".join(TRAIN_FORMS),
                    help="the forms w4a8-adaround and prune-distill-int8 run on")
    ap.add_argument("--eval-limit", type=int, default=None,
                    help="int8 runs: test images (default: the whole test set)")
    ap.add_argument("--train-eval-limit", type=int, default=None,
                    help="w4a8-adaround / prune-distill-int8 runs: test images (default: all)")
    ap.add_argument("--distill-seconds", type=float, default=0,
                    help="prune-distill-int8: the distill step's time budget (0: the recipe's "
                         "2 epochs)")
    ap.add_argument("--adaround-iters", type=int, default=None,
                    help="w4a8-adaround: AdaRound iterations per layer (default: the recipe's)")
    ap.add_argument("--batch", type=int, default=32, help="the second latency batch")
    ap.add_argument("--repeats", type=int, default=50, help="latency repeats at batch 1")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--tiny", action="store_true", help="digits, tiny models (for tests)")
    ap.add_argument("--out", default=None, help="keep the forms and artifacts here")
    ap.add_argument("--json", default=None)
    ap.add_argument("--strict", action="store_true", help="exit 1 when a check fails")
    ap.add_argument("--parallel", action="store_true",
                    help="run the two architectures in two processes side by side")
    ap.add_argument("--merge", nargs="+", metavar="JSON",
                    help="print the tables of earlier --json results (e.g. one per --only run)")
    args = ap.parse_args(argv)
    forms = [f for f in args.forms.split(",") if f]
    args.train_forms = [f for f in args.train_forms.split(",") if f]
    recipes = [r for r in args.recipes.split(",") if r]
    for f in (*forms, *args.train_forms):
        if f not in FORMS:
            ap.error(f"unknown form {f!r} (valid: {', '.join(FORMS)})")
    for r in recipes:
        if r not in RECIPES:
            ap.error(f"unknown recipe {r!r} (valid: {', '.join(RECIPES)})")
    if args.tiny:
        args.data, args.eval_limit, args.train_eval_limit, args.repeats = "digits", 100, 100, 5
        args.adaround_iters = args.adaround_iters or 5
    archs = [args.only] if args.only else list(ARCHS)
    started = time.perf_counter()
    if args.merge:
        rows, floors, total = [], {}, 0.0
        for path in args.merge:
            got = json.loads(Path(path).read_text())
            for r in got["rows"]:  # recomputed by summarize
                r["checks"] = []
            rows += got["rows"]
            floors.update(got["floors"])
            total += got.get("total_s", 0.0)
            if "args" not in got:
                print(f"{path}: a partial run (cut short): its finished rows only")
            for key in ("threads", "distill_seconds", "adaround_iters", "batch", "tiny"):
                setattr(args, key, got.get("args", {}).get(key, getattr(args, key)))
        archs = [a for a in ARCHS if a in floors]
        recipes = sorted({r["recipe"] for r in rows}, key=RECIPES.index)
        print(f"merged {', '.join(args.merge)} (each run on its own; total = their sum)")
        return summarize(rows, floors, forms, recipes, archs, args, total)
    if args.parallel and len(archs) > 1:
        rows, floors = run_parallel(archs, argv or sys.argv[1:])
    else:
        rows, floors = run(archs, forms, recipes, args)
    return summarize(rows, floors, forms, recipes, archs, args, time.perf_counter() - started)


def run(archs, forms, recipes, args) -> tuple[list[dict], dict]:
    data = load_dataset(args.data)
    rows, floors = [], {}
    with tempfile.TemporaryDirectory(prefix="edgeopt-formats-") as tmp:
        root = Path(args.out) if args.out else Path(tmp)
        if args.out and root.exists():
            shutil.rmtree(root)
        root.mkdir(parents=True, exist_ok=True)
        for arch in archs:
            d = root / arch
            d.mkdir()
            if args.tiny:
                model = reference_model(arch, args.data, tiny=True, out=d)
            else:
                model = reference_model(arch, args.data, tiny=False, out=d)
            floors[arch] = int8_floor(model)
            fl = floors[arch]
            print(f"== {arch}: int8 floor {fl['total']:,} B = {fl['int8_weights']:,} int8 weights "
                  f"+ {fl['weight_scales']:,} B fp32 scales + {fl['int32_biases']:,} B int32 "
                  f"biases", flush=True)
            files = export_forms(model, data.sample_shape, d, forms)
            for recipe in recipes:
                for form in forms:
                    if recipe != "int8" and form not in args.train_forms:
                        continue
                    print(f"  {form:12s} {recipe} ...", file=sys.stderr, flush=True)
                    row = run_one(arch, form, files[form], recipe, fl, data, args,
                                  d / f"{form}-{recipe}")
                    row["artifact"] = str(d / f"{form}-{recipe}")
                    base = next((x for x in rows if x["arch"] == arch and x["form"] == form
                                 and x["recipe"] == "int8"), None)
                    if recipe == "prune-distill-int8" and base is not None:
                        time_against_int8(row, base, d / f"{form}-{recipe}", data.sample_shape,
                                          args)
                    rows.append(row)
                    row["checks"] = checks_for(row, rows, args.batch)
                    if args.json:  # what is done so far, should a long run be cut short
                        Path(args.json + ".partial").write_text(json.dumps(
                            {"rows": rows, "floors": floors}, indent=2, default=str))
                    print(f"  {form:12s} {recipe:20s} {row['top1_fp32']:.2f} -> {row['top1']:.2f}"
                          f"  {row['size']:,} B  ({row['optimize_s']:.0f} s)", flush=True)
    return rows, floors


def run_parallel(archs, argv) -> tuple[list[dict], dict]:
    """One child process per architecture (each with --threads as given), side by side."""
    import subprocess

    drop = {"--parallel", "--strict"}
    base, skip = [], False
    for a in argv:
        if skip:
            skip = False
            continue
        if a in ("--json", "--only", "--out"):
            skip = True
            continue
        if a.split("=")[0] in ("--json", "--only", "--out") or a in drop:
            continue
        base.append(a)
    rows, floors = [], {}
    with tempfile.TemporaryDirectory(prefix="edgeopt-formats-par-") as tmp:
        procs = {}
        for arch in archs:
            cmd = [sys.executable, __file__, *base, "--only", arch, "--json",
                   str(Path(tmp) / f"{arch}.json")]
            log = open(Path(tmp) / f"{arch}.log", "w")
            procs[arch] = (subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT), log)
        for arch, (proc, log) in procs.items():
            proc.wait()
            log.close()
            text = (Path(tmp) / f"{arch}.log").read_text()
            print(f"---- {arch} (child process, rc={proc.returncode})")
            print("\n".join(line for line in text.splitlines()
                            if line.startswith(("==", "  pt2", "  torch", "  onnx"))
                            or "rror" in line), flush=True)
            if proc.returncode != 0:
                print(text[-4000:])
                raise SystemExit(f"{arch}: child process failed (rc={proc.returncode})")
            got = json.loads((Path(tmp) / f"{arch}.json").read_text())
            for r in got["rows"]:
                r["checks"] = [(c["check"], c["pass"]) for c in r["checks"]]
            rows += got["rows"]
            floors.update(got["floors"])
    return rows, floors


def summarize(rows, floors, forms, recipes, archs, args, total) -> int:
    for r in rows:  # again over every row: a merged run has the int8 rows prune-distill needs
        r["checks"] = checks_for(r, rows, args.batch)
    lim = {f"{r['arch']} {r['recipe']}": r["n_eval"] for r in rows}
    print(f"\nthreads {args.threads}"
          + (" (one process per architecture, side by side)" if args.parallel and len(archs) > 1
             else "")
          + "; test images per recipe: " + ", ".join(f"{k} {v}" for k, v in lim.items())
          + (f"; distill budget {args.distill_seconds:.0f} s"
             if "prune-distill-int8" in recipes and not args.tiny and args.distill_seconds else "")
          + (f"; adaround iters {args.adaround_iters}" if args.adaround_iters else "")
          + f"; total {total / 60:.1f} min")
    print("latency: p50 from each optimize report (its own timing, threads as above)")
    for arch in archs:
        fl = floors[arch]
        print(f"\n### {arch} (int8 floor {fl['total']:,} B)\n")
        print(table(arch, rows, args.batch))
    all_checks = [(f"{r['arch']} {r['form']} {r['recipe']}: {t}", ok)
                  for r in rows for t, ok in r["checks"]]
    n_fail = sum(not ok for _, ok in all_checks)
    print(f"\nsummary: {len(all_checks) - n_fail}/{len(all_checks)} checks PASS")
    for text, ok in all_checks:
        if not ok:
            print(f"FAIL  {text}")
    if args.json:
        for r in rows:
            r["checks"] = [{"check": t, "pass": ok} for t, ok in r["checks"]]
        Path(args.json).write_text(json.dumps(
            {"rows": rows, "floors": floors, "total_s": round(total, 1),
             "args": vars(args)}, indent=2, default=str))
        Path(args.json + ".partial").unlink(missing_ok=True)
    return 1 if (n_fail and args.strict) else 0

if __name__ == "__main__":
    sys.exit(main())
