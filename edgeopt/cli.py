"""Command line: parsing and printing only (DESIGN.md, "Command line")."""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path

from edgeopt.core.errors import EdgeoptError
from edgeopt.version import __version__

# Spelled out rather than imported from edgeopt.compile: --help must not import torch.
BACKEND_CHOICES = ("onnxruntime", "tvm")


def _floats(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def _shape(text: str) -> list[int]:
    try:
        return [int(v) for v in text.lower().replace("x", ",").split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a shape like 1,28,28, got {text!r}") from None


def _add_preprocess(p: argparse.ArgumentParser) -> None:
    p.add_argument("--scale", type=float, default=1 / 255, help="multiply raw values (default 1/255)")
    p.add_argument("--mean", type=_floats, default=None, help="per-channel mean, e.g. 0.5 or 0.5,0.5,0.5")
    p.add_argument("--std", type=_floats, default=None, help="per-channel std")


def _add_model(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help=".onnx, .pt2, .pt/.ts (TorchScript) or pkg.module:factory")
    p.add_argument("--weights", help="state_dict for a pkg.module:factory model")


def _preprocess(args):
    from edgeopt.core.data import Preprocess

    return Preprocess(scale=args.scale, mean=args.mean, std=args.std)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="edgeopt", description=__doc__)
    parser.add_argument("--version", action="version", version=f"edgeopt {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("optimize", help="compress, compile and evaluate in one run")
    _add_model(p)
    p.add_argument("--data", required=True, help="dataset folder, .npz, or digits / fashion-mnist")
    p.add_argument("--recipe", default="int8", help="built-in recipe name or YAML file")
    p.add_argument("--target", default="x86_64", help="see `edgeopt targets`")
    p.add_argument("--backend", choices=BACKEND_CHOICES,
                   help="compile backend (default: the recipe's, else onnxruntime)")
    p.add_argument("--out", default="out", help="artifact folder to write")
    p.add_argument("--force", action="store_true", help="replace an existing --out folder")
    p.add_argument("--calib-size", type=int, help="override the recipe's calibration set size")
    p.add_argument("--budget", type=float,
                   help="size budget of a mixed-precision recipe, as a fraction of fp32 size")
    _training_args(p)
    p.add_argument("--eval-limit", type=int, help="evaluate on this many test samples (seeded)")
    p.add_argument("--batch", type=int, default=32, help="second latency batch size (default 32)")
    p.add_argument("--threads", type=int, help="threads for every stage (default: all cores)")
    p.add_argument("--task", choices=["classification", "detection", "generic"],
                   help="metrics to report (default: from the model's outputs)")
    p.add_argument("--onnx-path", choices=["auto", "graph", "torch"], default="auto",
                   help="ONNX files: quantize the graph itself (graph), convert to torch "
                        "(torch), or pick by recipe (auto)")
    p.add_argument("--no-progress", action="store_true")
    _add_preprocess(p)

    p = sub.add_parser("compress", help="apply a recipe's compression; writes a .pt2 model")
    _add_model(p)
    p.add_argument("--data", required=True)
    p.add_argument("--recipe", required=True)
    p.add_argument("--budget", type=float,
                   help="size budget of a mixed-precision recipe, as a fraction of fp32 size")
    _training_args(p)
    p.add_argument("--out", required=True, help="output .pt2 file")
    p.add_argument("--force", action="store_true")
    _add_preprocess(p)

    p = sub.add_parser("compile", help="lower a model to an artifact folder")
    _add_model(p)
    p.add_argument("--target", default="x86_64", help="see `edgeopt targets`")
    p.add_argument("--backend", choices=BACKEND_CHOICES, default="onnxruntime",
                   help="onnxruntime (an ONNX file) or tvm (a native library built by TVM)")
    p.add_argument("--precision", choices=["fp32", "int8", "fp16", "auto"],
                   help="default: as the model is; fp16: TVM converts a float model to fp16 "
                        "compute (CUDA targets); auto: build and measure every precision "
                        "the target supports and keep the fastest within --tolerance of fp32")
    p.add_argument("--data", help="calibration data (needed for --precision int8 and auto)")
    p.add_argument("--tolerance", type=float, help="auto: top-1 points below fp32 (default 0.5)")
    p.add_argument("--eval-limit", type=int, help="auto: test samples to measure (default 2000)")
    p.add_argument("--candidates", help="auto: comma-separated, from fp32,int8,w4a8,mixed "
                                        "(default: what the target supports, mixed excepted)")
    p.add_argument("--input-shape", type=_shape, help="C,H,W when the model does not declare it")
    p.add_argument("--out", required=True)
    p.add_argument("--force", action="store_true")
    p.add_argument("--tune-seconds", type=float,
                   help="tvm: MetaSchedule tuning for batch 1, at most this long (0: apply "
                        "--tuning-log only)")
    p.add_argument("--tuning-log", help="tvm: tuning records folder, reused and extended")
    p.add_argument("--tune-trials", type=int, default=64, help="tvm: trials per task (default 64)")
    _add_preprocess(p)

    p = sub.add_parser("evaluate", help="accuracy of a model or artifact folder")
    p.add_argument("model", help="artifact folder or model (as for optimize)")
    p.add_argument("--weights")
    p.add_argument("--data", required=True)
    p.add_argument("--limit", type=int, help="evaluate on this many test samples")
    p.add_argument("--reference", help="fp32 model (.onnx or artifact) to compare outputs "
                                       "with: fidelity without labels")
    p.add_argument("--task", choices=["classification", "detection", "generic"])
    p.add_argument("--json", action="store_true", help="print JSON")
    _add_preprocess(p)

    p = sub.add_parser("bench", help="latency of a model or artifact folder")
    p.add_argument("model")
    p.add_argument("--weights")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--repeats", type=int, default=50)
    p.add_argument("--threads", type=int)
    p.add_argument("--input-shape", type=_shape)
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("inspect", help="per-layer table: type, parameters, MACs, output shape")
    p.add_argument("model")
    p.add_argument("--weights")
    p.add_argument("--input-shape", type=_shape)
    p.add_argument("--data", help="dataset to take the input shape from")

    sub.add_parser("recipes", help="list built-in recipes")
    sub.add_parser("targets", help="list compile targets")
    return parser


def _training_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--train-epochs", type=float,
                   help="budget of every training step (QAT, distillation, fine-tuning)")
    p.add_argument("--train-seconds", type=float,
                   help="wall-clock budget of every training step, in seconds")
    p.add_argument("--checkpoint-dir", help="write training checkpoints here (one per step)")
    p.add_argument("--resume", action="store_true",
                   help="continue from the checkpoints in --checkpoint-dir")


def _recipe(args):
    from edgeopt.recipes import load_recipe
    from edgeopt.recipes.overrides import with_training

    return with_training(load_recipe(args.recipe), epochs=args.train_epochs,
                         seconds=args.train_seconds, checkpoint_dir=args.checkpoint_dir,
                         resume=args.resume)


def _runnable(model: str, weights: str | None, threads: int | None = None):
    """(runnable, preprocess dict or None, input shape) for a model file or artifact folder."""
    from edgeopt.core.model import load_model
    from edgeopt.runtime import load

    if Path(model).is_dir():
        pred = load(model, threads=threads)
        return pred, pred.manifest.get("preprocessing"), pred.input_shape[1:]
    handle = load_model(model, weights=weights)
    return handle.module, None, handle.input_shape


def cmd_optimize(args) -> int:
    from edgeopt.evaluate import stage_table
    from edgeopt.pipeline import OptimizeOptions, optimize
    recipe = _recipe(args)
    if args.calib_size is not None:
        recipe.steps = [s.replace(calib_size=args.calib_size) if hasattr(s, "calib_size") else s
                        for s in recipe.steps]
    opts = OptimizeOptions(recipe=recipe, target=args.target, preprocess=_preprocess(args),
                           eval_limit=args.eval_limit, batch=args.batch, threads=args.threads,
                           progress=not args.no_progress, budget=args.budget,
                           backend=args.backend, task=args.task, onnx_path=args.onnx_path)
    report = optimize(args.model, args.data, out=args.out, force=args.force,
                      weights=args.weights, options=opts, log=lambda m: print(m, file=sys.stderr))
    print(stage_table(report))
    print(f"artifact written to {args.out}")
    return 0


def cmd_compress(args) -> int:
    import io

    import torch

    from edgeopt.core.data import load_dataset
    from edgeopt.core.errors import ConfigError, OutputExistsError
    from edgeopt.core.files import atomic_write_bytes
    from edgeopt.core.model import load_model
    from edgeopt.pipeline import OptimizeOptions, compress_with_recipe, with_budget
    out = Path(args.out)
    if out.suffix != ".pt2":
        raise ConfigError(f"--out {out}: compress writes a torch.export .pt2 file")
    if out.exists() and not args.force:
        raise OutputExistsError(f"output file {out} already exists (use --force to replace it)")
    recipe = with_budget(_recipe(args), args.budget)
    handle = load_model(args.model, weights=args.weights)
    dataset = load_dataset(args.data)
    opts = OptimizeOptions(recipe=recipe, preprocess=_preprocess(args))
    model = compress_with_recipe(handle.module, recipe, dataset, opts,
                                 log=lambda m: print(m, file=sys.stderr))
    example = torch.from_numpy(_preprocess(args)(dataset.test.x[:2]))
    ep = torch.export.export(model, (example,),
                             dynamic_shapes=({0: torch.export.Dim("batch", min=1)},))
    buf = io.BytesIO()
    torch.export.save(ep, buf)
    atomic_write_bytes(out, buf.getvalue())
    print(f"compressed model ({recipe.name}, simulated) written to {out}")
    return 0


def cmd_compile(args) -> int:
    from edgeopt.compile.api import compile as compile_model
    from edgeopt.compile.artifact import check_output_dir
    from edgeopt.compress import apply
    from edgeopt.core.data import load_dataset
    from edgeopt.core.errors import ConfigError
    from edgeopt.core.model import load_model
    from edgeopt.recipes import load_recipe

    check_output_dir(args.out, args.force)
    if (Path(args.model).suffix.lower() == ".onnx" and args.weights is None
            and args.precision in ("auto", "int8") and args.backend == "onnxruntime"):
        return _compile_graph(args)
    handle = load_model(args.model, weights=args.weights)
    pre = _preprocess(args)
    shape = handle.input_shape or args.input_shape
    model = handle.module
    if args.precision == "auto" and shape is None and args.data:
        shape = list(load_dataset(args.data).sample_shape)
    if args.precision == "auto" and _is_float(model, shape):
        if not args.data:
            raise ConfigError("--precision auto needs --data to measure the candidates on "
                              "(or give --precision fp32)")
        return _compile_auto(args, model, pre, shape, Path(args.model).name)
    if args.precision == "int8":
        if not args.data:
            raise ConfigError("--precision int8 needs --data for calibration")
        dataset = load_dataset(args.data)
        shape = shape or list(dataset.sample_shape)
        cfg = load_recipe("int8").steps[0]
        model = apply(model, cfg, data=pre(dataset.train.subset(cfg.calib_size, seed=0).x))
    elif shape is None and args.data:
        shape = list(load_dataset(args.data).sample_shape)
    if shape is None:
        raise ConfigError(f"{args.model} does not declare its input shape: pass --input-shape C,H,W")
    # fp16 is converted by the backend; the other labels were applied above (or are the model's).
    art = compile_model(model, target=args.target, backend=args.backend, out=args.out,
                        precision="fp16" if args.precision == "fp16" else None,
                        input_shape=shape, preprocess=pre.to_dict(), force=args.force,
                        tune=_tune_config(args))
    print(f"{art.manifest['precision']} {art.manifest['backend']} artifact for "
          f"{art.manifest['target']} written to {art.path}")
    return 0


def _compile_graph(args) -> int:
    """An ONNX file keeps its graph (the ONNX-graph path): int8 QDQ of the ops that pay,
    every other op as it was; ``auto`` keeps int8 only when it is faster and close."""
    from edgeopt.core.errors import ConfigError
    from edgeopt.evaluate import stage_table
    from edgeopt.graph_auto import auto_compile_graph
    from edgeopt.graph_pipeline import optimize_graph
    from edgeopt.pipeline import OptimizeOptions
    from edgeopt.recipes import load_recipe

    if not args.data:
        raise ConfigError(f"--precision {args.precision} needs --data (calibration and, for "
                          f"auto, the measurement of both candidates)")
    opts = OptimizeOptions(recipe="int8", target=args.target, preprocess=_preprocess(args),
                           eval_limit=args.eval_limit or 2000, progress=False)
    log = lambda m: print(m, file=sys.stderr)  # noqa: E731
    if args.precision == "int8":
        report = optimize_graph(args.model, args.data, out=args.out, force=args.force,
                                opts=opts, recipe=load_recipe("int8"), log=log)
        print(stage_table(report))
        print(f"int8 onnxruntime artifact for {args.target} written to {args.out}")
        return 0
    res = auto_compile_graph(args.model, args.data, out=args.out, force=args.force, opts=opts,
                             tolerance=args.tolerance if args.tolerance is not None else 0.5,
                             log=log)
    print(stage_table(res.report))
    print(res.why)
    print(f"{res.precision} onnxruntime artifact for {args.target} (picked by --precision "
          f"auto) written to {res.path}")
    return 0


def _tune_config(args):
    from edgeopt.compile.api import TuneConfig
    from edgeopt.core.errors import ConfigError

    if args.tune_seconds is None and args.tuning_log is None:
        return None
    if args.tune_seconds is None or args.tuning_log is None:
        raise ConfigError("tuning needs both --tune-seconds and --tuning-log")
    return TuneConfig(seconds=args.tune_seconds, log_dir=args.tuning_log,
                      trials_per_task=args.tune_trials)


def _is_float(model, shape) -> bool:
    from edgeopt.compile.api import model_precision, prepare
    from edgeopt.core.canonical import is_canonical

    if shape is None and not is_canonical(model):
        return True  # a plain module of unknown input shape: the user's float model
    # Loaded quantized models are recognised when lifted to the canonical form.
    return model_precision(prepare(model, shape)[0])[0] == "fp32"


def _compile_auto(args, model, pre, shape, name: str) -> int:
    from edgeopt.compile.auto import AutoOptions, auto_compile
    from edgeopt.evaluate import stage_table

    given = {"tolerance": args.tolerance, "eval_limit": args.eval_limit,
             "candidates": args.candidates.split(",") if args.candidates else None}
    opts = AutoOptions(**{k: v for k, v in given.items() if v is not None})
    res = auto_compile(model, args.data, target=args.target, backend=args.backend,
                       out=args.out, input_shape=shape, preprocess=pre, options=opts,
                       force=args.force, model_name=name, log=lambda m: print(m, file=sys.stderr))
    print(stage_table(res.report))
    print(res.report.meta["measured"])
    for c in res.candidates:
        print(f"{'*' if c.picked else ' '} {c.name}: {c.why}")
    print(f"{res.manifest['precision']} {res.manifest['backend']} artifact for "
          f"{res.manifest['target']} (picked by --precision auto) written to {res.path}")
    return 0


def _graph_model(model: str) -> bool:
    """An ONNX file, or an artifact the ONNX-graph path wrote (it records its task)."""
    path = Path(model)
    if path.suffix.lower() == ".onnx":
        return True
    if path.is_dir() and (path / "manifest.json").is_file():
        return "task" in json.loads((path / "manifest.json").read_text())
    return False


def cmd_evaluate(args) -> int:
    from edgeopt.core.data import Preprocess, load_dataset
    from edgeopt.evaluate import evaluate

    if _graph_model(args.model) or args.reference or args.task:
        from edgeopt.graph_pipeline import evaluate_graph

        res = evaluate_graph(args.model, args.data, reference=args.reference, task=args.task,
                             preprocess=_preprocess(args) if not Path(args.model).is_dir()
                             else None, limit=args.limit)
        if args.json:
            print(json.dumps(res, default=str))
        else:
            parts = [f"top-1 {res['top1']:.2f}%"] if "top1" in res else []
            head = res.get("fidelity") or {}
            if "sqnr_db_min" in head:
                parts.append(f"worst-output SQNR {head['sqnr_db_min']:.1f} dB")
            if "cosine_min" in head:
                parts.append(f"cosine min {head['cosine_min']:.4f}")
            if res.get("agreement") is not None:
                parts.append(f"argmax agreement {res['agreement']:.2f}%")
            if "box_f1" in res:
                parts.append(f"box F1 {res['box_f1']:.3f}")
            print(f"{args.model}: {', '.join(parts)} on {res['n']} samples ({res['task']})")
        return 0
    runnable, pre, _ = _runnable(args.model, args.weights)
    if pre is not None:
        pre = Preprocess.from_dict(pre)
        pre = pre.replace(mean=tuple(pre.mean) if pre.mean else None,
                          std=tuple(pre.std) if pre.std else None)
    else:
        pre = _preprocess(args)
    test = load_dataset(args.data).test.subset(args.limit, seed=0)
    res = evaluate(runnable, test.x, test.y, preprocess=pre, progress=not args.json)
    if args.json:
        print(json.dumps(res.to_dict()))
    else:
        top5 = f", top-5 {res.top5:.2f}%" if res.top5 is not None else ""
        print(f"{args.model}: top-1 {res.top1:.2f}%{top5} on {res.n} samples")
    return 0


def cmd_bench(args) -> int:
    from edgeopt.core.errors import ConfigError
    from edgeopt.evaluate import measure_latency

    runnable, _, shape = _runnable(args.model, args.weights, args.threads)
    shape = shape or args.input_shape
    if shape is None:
        raise ConfigError(f"{args.model} does not declare its input shape: pass --input-shape C,H,W")
    lat = measure_latency(runnable, tuple(shape), batch=args.batch, repeats=args.repeats,
                          threads=args.threads)
    if args.json:
        print(json.dumps(lat.to_dict()))
    else:
        print(f"{args.model}: batch {lat.batch}: p50 {lat.p50_ms:.3f} ms, p90 {lat.p90_ms:.3f} ms "
              f"({lat.repeats} runs, {lat.threads} threads)")
    return 0


def cmd_inspect(args) -> int:
    from edgeopt.core.data import load_dataset
    from edgeopt.core.errors import ConfigError
    from edgeopt.core.model import load_model
    from edgeopt.inspect import format_rows, inspect_model

    if Path(args.model).is_dir():
        from edgeopt.runtime import read_manifest

        m = read_manifest(args.model)
        print(f"{args.model}: {m['precision']} {m['backend']} artifact for {m['target']}")
        for layer, prec in m.get("layer_precision", {}).items():
            print(f"  {layer:40s} {prec}")
        return 0
    if Path(args.model).suffix.lower() == ".onnx" and args.weights is None:
        # Any ONNX model, read as the graph path sees it: no conversion, no run.
        from edgeopt.inspect_graph import format_graph, inspect_graph

        print(format_graph(*inspect_graph(args.model)))
        return 0
    handle = load_model(args.model, weights=args.weights)
    shape = handle.input_shape or args.input_shape
    if shape is None and args.data:
        shape = list(load_dataset(args.data).sample_shape)
    if shape is None:
        raise ConfigError(f"{args.model} does not declare its input shape: pass --input-shape C,H,W")
    print(format_rows(inspect_model(handle.module, list(shape))))
    return 0


def cmd_recipes(args) -> int:
    from edgeopt.recipes import builtin_recipes, load_recipe

    names = builtin_recipes()
    width = max(map(len, names)) + 1
    for name in names:
        print(f"{name:{width}s} {load_recipe(name).description}")
    return 0


def cmd_targets(args) -> int:
    from edgeopt.compile.targets import TARGETS

    # One line per target (greppable): what each backend builds, then how TVM compiles.
    width = max(len(name) for name in TARGETS) + 1
    for t in TARGETS.values():
        support = "; ".join(f"{b}: {', '.join(p)}" for b, p in t.support.items())
        aliases = f" (aliases: {', '.join(t.aliases)})" if t.aliases else ""
        tvm = f" [TVM: {t.tvm_string()}]" if t.tvm else ""
        print(f"{t.name:{width}s} {support} - {t.description}{aliases}{tvm}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler = globals()[f"cmd_{args.command}"]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            # A user-facing warning (a layer pattern matching nothing) is one line, too.
            warnings.showwarning = lambda message, *_a, **_k: print(
                f"edgeopt {args.command}: warning: {message}", file=sys.stderr)
            return handler(args)
    except EdgeoptError as exc:
        print(f"edgeopt {args.command}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
