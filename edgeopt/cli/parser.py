"""The command line's arguments (argparse), and the preprocessing they describe."""

from __future__ import annotations

import argparse

from edgeopt.compile.backends.registry import BACKENDS, DEFAULT_BACKEND, backend_names
from edgeopt.version import __version__

DESCRIPTION = "Command line: parsing and printing only (DESIGN.md, \"Command line\")."


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


def preprocess(args):
    from edgeopt.core.data import Preprocess

    return Preprocess(scale=args.scale, mean=args.mean, std=args.std)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="edgeopt", description=DESCRIPTION)
    parser.add_argument("--version", action="version", version=f"edgeopt {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("optimize", help="compress, compile and evaluate in one run")
    _add_model(p)
    p.add_argument("--data", required=True, help="dataset folder, .npz, or digits / fashion-mnist")
    p.add_argument("--recipe", default="int8", help="built-in recipe name or YAML file")
    p.add_argument("--target", default="x86_64", help="see `edgeopt targets`")
    p.add_argument("--backend", choices=backend_names(),
                   help=f"compile backend (default: the recipe's, else {DEFAULT_BACKEND})")
    p.add_argument("--out", default="out", help="artifact folder to write")
    p.add_argument("--force", action="store_true", help="replace an existing --out folder")
    _step_options(p, calibration=True)
    _training_args(p)
    p.add_argument("--eval-limit", type=int, help="evaluate on this many test samples (seeded)")
    p.add_argument("--batch", type=int, default=32, help="second latency batch size (default 32)")
    p.add_argument("--threads", type=int, help="threads for every stage (default: all cores)")
    p.add_argument("--task", choices=["classification", "detection", "generic", "embedding"],
                   help="metrics to report (default: from the model's outputs; hf: models "
                        "take embedding or classification, default embedding)")
    p.add_argument("--max-length", type=int, default=128,
                   help="hf: models: tokens per text, longer texts truncated (default 128)")
    p.add_argument("--onnx-path", choices=["auto", "graph", "torch"], default="auto",
                   help="ONNX files: quantize the graph itself (graph), convert to torch "
                        "(torch), or pick by recipe (auto)")
    p.add_argument("--no-progress", action="store_true")
    _add_preprocess(p)

    p = sub.add_parser("compress", help="apply a recipe's compression; writes a .pt2 model")
    _add_model(p)
    p.add_argument("--data", required=True)
    p.add_argument("--recipe", required=True)
    _step_options(p, calibration=False)
    _training_args(p)
    p.add_argument("--out", required=True, help="output .pt2 file")
    p.add_argument("--force", action="store_true")
    _add_preprocess(p)

    p = sub.add_parser("compile", help="lower a model to an artifact folder")
    _add_model(p)
    p.add_argument("--target", default="x86_64", help="see `edgeopt targets`")
    p.add_argument("--backend", choices=backend_names(), default=DEFAULT_BACKEND,
                   help="; ".join(f"{name}: {b.description}" for name, b in BACKENDS.items()))
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

    p = sub.add_parser("package", help="tarballs of an artifact with the C++ runner, per target")
    p.add_argument("artifact", help="artifact folder (an ONNX Runtime artifact)")
    p.add_argument("--target", action="append", choices=["x86_64", "aarch64"], dest="targets",
                   help="architecture to package for; repeat for several "
                        "(default: the artifact's own)")
    p.add_argument("--out", help="folder for the tarballs (default: beside the artifact)")
    p.add_argument("--runner", action="append", default=[], metavar="ARCH=PATH",
                   help="a built runner binary to ship instead of building deploy/cpp")
    p.add_argument("--force", action="store_true", help="replace existing tarballs")
    return parser


def _step_options(p: argparse.ArgumentParser, *, calibration: bool) -> None:
    """Run-level step options: each goes to every recipe step that takes it
    (``StepConfig.overridable``); ``step_options(args)`` collects them."""
    if calibration:
        p.add_argument("--calib-size", type=int,
                       help="calibration samples of every step that calibrates")
    p.add_argument("--budget", type=float,
                   help="size budget, as a fraction of the fp32 size, of a step that "
                        "works to one")


def step_options(args) -> dict:
    """The run-level step options given on the command line, by option name."""
    return {name: getattr(args, name, None) for name in ("budget", "calib_size")}


def _training_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--train-epochs", type=float,
                   help="budget of every training step (QAT, distillation, fine-tuning)")
    p.add_argument("--train-seconds", type=float,
                   help="wall-clock budget of every training step, in seconds")
    p.add_argument("--checkpoint-dir", help="write training checkpoints here (one per step)")
    p.add_argument("--resume", action="store_true",
                   help="continue from the checkpoints in --checkpoint-dir")
