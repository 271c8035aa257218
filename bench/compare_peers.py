"""edgeopt int8 vs ONNX Runtime's and NNCF's post-training quantizers, side by side.

    .venv/bin/python -m bench.compare_peers [--model resnet_small] [--threads 1] [--json out.json]

All methods start from the SAME fp32 ONNX file (edgeopt's own fp32 export, BN folded) and the
SAME preprocessed calibration images, are scored on the same test images, and are timed by
sessions from edgeopt's ``make_session`` (identical SessionOptions) in interleaved rounds.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch

import edgeopt
from edgeopt.compile.backends.onnxruntime.runtime import make_session
from edgeopt.core.data import Preprocess, load_dataset
from edgeopt.core.errors import ModelLoadError
from edgeopt.evaluate import evaluate
from edgeopt.recipes import load_recipe
from edgeopt.zoo import ARCHS
from edgeopt.zoo.reference import load_reference, reference_model

FP32, ORT, NNCF, EDGEOPT = "fp32 ORT", "ORT quantize_static int8", "NNCF int8", "edgeopt int8"
BATCHES = (1, 32)
PREPROCESS = Preprocess()  # x/255: what the reference models were trained with


def ort_int8(fp32: Path, out: Path, calib: np.ndarray, act_type: str, batch: int = 64) -> str:
    import onnxruntime.quantization as oq
    from onnxruntime.quantization.shape_inference import quant_pre_process

    # ORT's quantization docs "highly recommend" this pre-processing step (shape inference +
    # graph optimisation) before quantize_static, so the peer gets its documented best path.
    pre = out.with_name("ort_preprocessed.onnx")
    quant_pre_process(str(fp32), str(pre))

    class Reader(oq.CalibrationDataReader):
        def __init__(self):
            self.it = iter({"input": calib[i:i + batch]} for i in range(0, len(calib), batch))

        def get_next(self):
            return next(self.it, None)

    # Defaults otherwise: MinMax calibration, QInt8 weights, QInt8 activations unless
    # --ort-activations quint8 (what quantize_static's docstring recommends for x86 CPUs).
    kw = {"activation_type": oq.QuantType.QUInt8} if act_type == "quint8" else {}
    oq.quantize_static(str(pre), str(out), Reader(), quant_format=oq.QuantFormat.QDQ,
                       per_channel=True, **kw)
    acts = "QUInt8" if kw else "QInt8 (default)"
    return f"quant_pre_process + quantize_static(QDQ, per_channel, MinMax, act {acts}, w QInt8)"


def nncf_int8(fp32: Path, out: Path, calib: np.ndarray) -> str:
    import nncf

    # One sample per item and subset_size=len(calib): NNCF's default subset_size is 300, and
    # it must see exactly the images the other methods saw.
    data = nncf.Dataset([calib[i:i + 1] for i in range(len(calib))], lambda x: {"input": x})
    q = nncf.quantize(onnx.load(str(fp32)), data, subset_size=len(calib))
    onnx.save(q, str(out))
    return f"nncf {nncf.__version__} quantize(default preset, subset_size={len(calib)})"


def edgeopt_int8(model: torch.nn.Module, out: Path, calib: np.ndarray) -> str:
    step = load_recipe("int8").to_dict()["steps"][0]["quantize"]
    cfg = edgeopt.Int8Config.from_dict({**step, "calib_size": len(calib)})
    q = edgeopt.apply(model, cfg, data=calib, progress=False)  # all calib images, in order
    art = edgeopt.compile(q, target="x86_64", out=out)
    return str(art.path / art.manifest["model_file"])


def time_interleaved(sessions: dict, inputs: dict[int, np.ndarray], repeats: int, warmup: int,
                     per_round: int = 5) -> dict[str, dict[int, float]]:
    """p50 latency (ms) per method and batch. Methods take turns in short rounds, in rotating
    order, so background load and CPU frequency drift hit every method alike."""
    names = list(sessions)
    result: dict[str, dict[int, float]] = {n: {} for n in names}
    for b, x in inputs.items():
        feeds = {n: {s.get_inputs()[0].name: x} for n, s in sessions.items()}
        for n, s in sessions.items():
            for _ in range(warmup):
                s.run(None, feeds[n])
        times: dict[str, list[float]] = {n: [] for n in names}
        rounds = max(1, -(-repeats // per_round))
        for r in range(rounds):
            for n in names[r % len(names):] + names[:r % len(names)]:
                s, f = sessions[n], feeds[n]
                for _ in range(per_round):
                    t0 = time.perf_counter()
                    s.run(None, f)
                    times[n].append(time.perf_counter() - t0)
        for n in names:
            result[n][b] = float(np.median(times[n]) * 1000.0)
    return result


def load_model(arch: str, args, work: Path) -> torch.nn.Module | None:
    if args.tiny:
        # Half width, trained for seconds (~95% on digits): a random-init model would
        # let any quantizer pass, since there is no accuracy to lose.
        return reference_model(arch, args.data, tiny=True, out=work, epochs=4, limit=None,
                               batch_size=32, hflip=False, width_mult=0.5)
    try:
        model, _ = load_reference(arch, args.data, train_if_missing=args.train_missing)
        return model
    except ModelLoadError as exc:
        print(f"{arch}: {exc} (or pass --train-missing)", file=sys.stderr)
        return None


def bench_model(arch: str, args, ds, work: Path) -> dict | None:
    model = load_model(arch, args, work)
    if model is None:
        return None
    calib = PREPROCESS(ds.train.subset(args.calib_size, seed=0).x)
    test = ds.test.subset(args.eval_limit, seed=0)
    fp32_art = edgeopt.compile(model, target="x86_64", input_shape=list(ds.sample_shape),
                               out=work / "fp32")
    fp32 = fp32_art.path / fp32_art.manifest["model_file"]
    paths, notes = {FP32: str(fp32)}, {FP32: "edgeopt.compile fp32 export (the peers' input)"}
    builders = [(ORT, lambda o: ort_int8(fp32, o, calib, args.ort_activations)),
                (NNCF, lambda o: nncf_int8(fp32, o, calib)), (EDGEOPT, None)]
    for name, fn in builders:
        t0 = time.perf_counter()
        try:
            if fn is None:
                paths[name] = edgeopt_int8(model, work / "edgeopt", calib)
                notes[name] = "Int8Config from the int8 recipe -> edgeopt.compile(x86_64)"
            else:
                out = work / (name.split()[0].lower() + "_int8.onnx")
                notes[name] = fn(out)
                paths[name] = str(out)
        except Exception as exc:  # a peer that fails is reported, not fatal
            msg = (str(exc).strip().splitlines() or [""])[0][:160]
            notes[name] = f"FAILED: {type(exc).__name__}: {msg}"
            if name == EDGEOPT:
                raise
        notes[name] += f" [{time.perf_counter() - t0:.1f} s]" if name in paths else ""

    sessions = {n: make_session(p, args.threads) for n, p in paths.items()}
    rows, ref = {}, None
    for name, s in sessions.items():
        inp = s.get_inputs()[0].name
        ev = evaluate(lambda x, s=s, inp=inp: s.run(None, {inp: x})[0], test.x, test.y,
                      preprocess=PREPROCESS, reference_logits=ref, progress=False)
        ref = ev.logits if ref is None else ref
        # edgeopt's metrics are percentages (0..100).
        rows[name] = {"method": name, "top1": ev.top1, "agreement": ev.agreement if name != FP32
                      else 100.0, "size_bytes": os.path.getsize(paths[name]), "notes": notes[name]}
    inputs = {b: np.ascontiguousarray(np.resize(PREPROCESS(test.x[:b]), (b, *ds.sample_shape)))
              for b in BATCHES}
    lat = time_interleaved(sessions, inputs, args.repeats, args.warmup)
    for name, row in rows.items():
        row["size_x_fp32"] = row["size_bytes"] / rows[FP32]["size_bytes"]
        row["latency_p50_ms"] = {str(b): lat[name][b] for b in BATCHES}
        row["latency_vs_ort_int8"] = ({str(b): lat[name][b] / lat[ORT][b] for b in BATCHES}
                                      if ORT in lat else None)
    for name in notes:  # failed peers keep a row that says why
        rows.setdefault(name, {"method": name, "top1": None, "notes": notes[name]})
    order = [FP32, ORT, NNCF, EDGEOPT]
    result = {"model": arch, "data": ds.name, "n_eval": len(test.y), "n_calib": len(calib),
              "threads": args.threads, "repeats": args.repeats, "onnxruntime": ort.__version__,
              "edgeopt": edgeopt.__version__, "load_avg": os.getloadavg(),
              "rows": [rows[n] for n in order], "checks": checks(arch, rows)}
    print_table(result)
    return result


def checks(arch: str, rows: dict) -> list[dict]:
    e, out = rows[EDGEOPT], []

    def add(name, ok, detail):
        out.append({"check": name, "status": "SKIP" if ok is None else ("PASS" if ok else "FAIL"),
                    "detail": detail})

    for peer in (ORT, NNCF):
        p = rows.get(peer, {})
        if p.get("top1") is None:
            add(f"accuracy >= {peer} - 0.1 pt", None, f"{peer} unavailable: {p.get('notes')}")
        else:
            add(f"accuracy >= {peer} - 0.1 pt", e["top1"] >= p["top1"] - 0.1,
                f"{e['top1']:.2f}% vs {p['top1']:.2f}%")
    for b in map(str, BATCHES):
        r = e["latency_vs_ort_int8"]
        add(f"latency b{b} <= 1.05x ORT int8", None if r is None else r[b] <= 1.05,
            "no ORT int8 row" if r is None else f"{r[b]:.2f}x")
    f32, q32 = rows[FP32]["latency_p50_ms"]["32"], e["latency_p50_ms"]["32"]
    add("int8 latency b32 < fp32", q32 < f32, f"{q32:.3f} ms vs {f32:.3f} ms")
    if arch == "resnet_small":
        add("size <= 0.27x fp32", e["size_x_fp32"] <= 0.27, f"{e['size_x_fp32']:.3f}x")
    return out


def print_table(r: dict) -> None:
    print(f"\n== {r['model']} on {r['data']}: {r['n_eval']} test images, {r['n_calib']} "
          f"calibration images, threads={r['threads'] or 'ORT default'}, "
          f"{r['repeats']} timed runs per method and batch, onnxruntime {r['onnxruntime']}, "
          f"load average {r['load_avg'][0]:.1f} ==")
    head = (f"{'method':<26} {'top-1':>7} {'agree':>7} {'size B':>9} {'x fp32':>6} "
            f"{'p50 b1 ms':>9} {'p50 b32 ms':>10} {'/ORT b1':>7} {'/ORT b32':>8}")
    print(head + "\n" + "-" * len(head))
    for row in r["rows"]:
        if row["top1"] is None:
            print(f"{row['method']:<26} {row['notes']}")
            continue
        lat, rel = row["latency_p50_ms"], row["latency_vs_ort_int8"] or {"1": np.nan, "32": np.nan}
        print(f"{row['method']:<26} {row['top1']:>6.2f}% {row['agreement']:>6.2f}% "
              f"{row['size_bytes']:>9,d} {row['size_x_fp32']:>6.3f} {lat['1']:>9.3f} "
              f"{lat['32']:>10.3f} {rel['1']:>7.2f} {rel['32']:>8.2f}")
    print("\nhow each row was made:")
    for row in r["rows"]:
        print(f"  {row['method']:<26} {row['notes']}")
    print("\nacceptance checks:")
    for c in r["checks"]:
        print(f"  {c['status']:<4}  {c['check']:<34} {c['detail']}")


def parse_args(argv):
    p = argparse.ArgumentParser(prog="bench/compare_peers.py", description=__doc__.split("\n")[0])
    p.add_argument("--model", choices=[*ARCHS, "all"], default="all")
    p.add_argument("--data", default=None, help="default fashion-mnist (digits with --tiny)")
    p.add_argument("--calib-size", type=int, default=None, help="default 512 (64 with --tiny)")
    p.add_argument("--eval-limit", type=int, default=None, help="default: the full test set")
    p.add_argument("--repeats", type=int, default=None, help="timed runs per method and batch")
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--threads", type=int, default=None, help="ORT intra-op threads (all methods)")
    p.add_argument("--json", type=Path, help="also write the results here")
    p.add_argument("--keep", type=Path, help="keep the models here (default: a temp folder)")
    p.add_argument("--ort-activations", choices=["qint8", "quint8"], default="qint8",
                   help="ORT peer's activation type (default: quantize_static's own, qint8)")
    p.add_argument("--train-missing", action="store_true", help="train missing reference models")
    p.add_argument("--strict", action="store_true", help="exit 1 when any check fails")
    p.add_argument("--tiny", action="store_true", help="briefly trained models on digits, quick")
    args = p.parse_args(argv)
    tiny = args.tiny
    args.data = args.data or ("digits" if tiny else "fashion-mnist")
    args.calib_size = args.calib_size or (64 if tiny else 512)
    args.eval_limit = args.eval_limit or (200 if tiny else None)
    args.repeats = args.repeats or (10 if tiny else 300)
    args.warmup = min(args.warmup, 3) if tiny else args.warmup
    # Tests share 2 busy cores: ORT's spinning worker threads would only fight each other.
    args.threads = args.threads or (1 if tiny else None)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    ds = load_dataset(args.data)
    archs = ARCHS if args.model == "all" else (args.model,)
    results, missing = [], []
    with tempfile.TemporaryDirectory(prefix="compare-peers-") as tmp:
        for arch in archs:
            r = bench_model(arch, args, ds, Path(args.keep or tmp) / arch)
            (results.append(r) if r is not None else missing.append(arch))
    if args.json:
        args.json.write_text(json.dumps({"results": results, "missing": missing,
                                         "args": {k: str(v) if isinstance(v, Path) else v
                                                  for k, v in vars(args).items()}}, indent=2))
    if missing:
        return 2
    failed = any(c["status"] == "FAIL" for r in results for c in r["checks"])
    return 1 if args.strict and failed else 0


if __name__ == "__main__":
    sys.exit(main())
