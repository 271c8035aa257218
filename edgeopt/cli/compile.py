"""``edgeopt compile``: a model to an artifact folder, at a precision or the best one."""

from __future__ import annotations

import sys
from pathlib import Path

from edgeopt.cli.parser import preprocess


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
    pre = preprocess(args)
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
    from edgeopt.auto import auto_compile_graph
    from edgeopt.core.errors import ConfigError
    from edgeopt.evaluate import stage_table
    from edgeopt.graph_pipeline import optimize_graph
    from edgeopt.pipeline import OptimizeOptions
    from edgeopt.recipes import load_recipe

    if not args.data:
        raise ConfigError(f"--precision {args.precision} needs --data (calibration and, for "
                          f"auto, the measurement of both candidates)")
    opts = OptimizeOptions(recipe="int8", target=args.target, preprocess=preprocess(args),
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
    from edgeopt.auto import AutoOptions, auto_compile
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
