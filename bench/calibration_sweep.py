"""Which activation range estimator (and bias correction) loses least accuracy at int8?

Every configuration is compiled to a QDQ artifact and evaluated through
`edgeopt.runtime.load` on the same test images with the same calibration set.

    python bench/calibration_sweep.py --model resnet_small
    python bench/calibration_sweep.py --tiny          # what the tests run
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import edgeopt
from edgeopt.compress.quantize.spec import Observer, QuantConfig, QuantSpec
from edgeopt.core.data import Preprocess, load_dataset
from edgeopt.evaluate import evaluate
from edgeopt.zoo.reference import load_reference, train_reference

CANDIDATES = [
    ("minmax", {"observer": Observer.MINMAX}),
    ("percentile 99.99", {"observer": Observer.PERCENTILE, "percentile": 99.99}),
    ("percentile 99.999", {"observer": Observer.PERCENTILE, "percentile": 99.999}),
    ("mse", {"observer": Observer.MSE}),
    ("entropy", {"observer": Observer.ENTROPY}),
]


def sweep(model, data, *, calib_size: int, eval_limit: int | None, progress: bool) -> list[dict]:
    pre = Preprocess()
    calib = pre(data.train.subset(calib_size, seed=0).x)
    test = data.test.subset(eval_limit, seed=0)
    fp32 = evaluate(model, test.x, test.y, preprocess=pre, progress=False)
    rows = [{"config": "fp32 (pytorch)", "top1": fp32.top1, "drop": 0.0, "agreement": 100.0}]
    with tempfile.TemporaryDirectory() as tmp:
        for name, act in CANDIDATES:
            for bc in (False, True):
                cfg = QuantConfig(activations=QuantSpec(bits=8, symmetric=False, **act),
                                  bias_correction=bc, calib_size=calib_size)
                q = edgeopt.apply(model, cfg, data=calib, progress=progress)
                out = Path(tmp) / f"{name}-{bc}".replace(" ", "_")
                pred = edgeopt.compile(q, target="x86_64", out=out).load()
                res = evaluate(pred, test.x, test.y, preprocess=pre,
                               reference_logits=fp32.logits, progress=False)
                rows.append({"config": f"{name}{' + bias corr.' if bc else ''}",
                             "top1": res.top1, "drop": fp32.top1 - res.top1,
                             "agreement": res.agreement})
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="resnet_small", choices=["resnet_small", "mobilenetv2_small"])
    p.add_argument("--data", default="fashion-mnist")
    p.add_argument("--calib-size", type=int, default=512)
    p.add_argument("--eval-limit", type=int)
    p.add_argument("--json", type=Path)
    p.add_argument("--tiny", action="store_true")
    args = p.parse_args(argv)
    if args.tiny:
        with tempfile.TemporaryDirectory() as tmp:
            # Trained to ~96% (seconds at batch 32): an untrained model's near-uniform
            # logits would make every estimator look alike.
            model, _ = train_reference(args.model, "digits", epochs=4, batch_size=32,
                                       hflip=False, out=Path(tmp) / "w.pt", progress=False)
        args.data, args.calib_size, args.eval_limit = "digits", 64, 128
    else:
        model, _ = load_reference(args.model, args.data, train_if_missing=False)
    rows = sweep(model, load_dataset(args.data), calib_size=args.calib_size,
                 eval_limit=args.eval_limit, progress=not args.tiny)
    print(f"{args.model} on {args.data}: int8 artifacts (ONNX Runtime), "
          f"{args.calib_size} calibration images")
    print(f"{'activation ranges':34s} {'top-1':>7s} {'drop':>7s} {'agree':>7s}")
    for r in rows:
        print(f"{r['config']:34s} {r['top1']:7.2f} {r['drop']:+7.2f} {r['agreement']:7.2f}")
    best = min(rows[1:], key=lambda r: (r["drop"], -r["agreement"]))
    print(f"best: {best['config']}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
