"""``edgeopt evaluate``, ``bench`` and ``inspect``: look at a model or an artifact."""

from __future__ import annotations

import json
from pathlib import Path

from edgeopt.cli.parser import preprocess


def _runnable(model: str, weights: str | None, threads: int | None = None):
    """(runnable, preprocess dict or None, input shape) for a model file or artifact folder."""
    from edgeopt.core.model import load_model
    from edgeopt.runtime import load

    if Path(model).is_dir():
        pred = load(model, threads=threads)
        return pred, pred.manifest.get("preprocessing"), pred.input_shape[1:]
    handle = load_model(model, weights=weights)
    return handle.module, None, handle.input_shape


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
                             preprocess=preprocess(args) if not Path(args.model).is_dir()
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
        pre = preprocess(args)
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
