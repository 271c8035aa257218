"""``edgeopt optimize``, ``compress``, ``recipes`` and ``targets``."""

from __future__ import annotations

import sys
from pathlib import Path

from edgeopt.cli.parser import preprocess, step_options


def _recipe(args):
    from edgeopt.recipes import load_recipe
    from edgeopt.recipes.overrides import with_training

    return with_training(load_recipe(args.recipe), epochs=args.train_epochs,
                         seconds=args.train_seconds, checkpoint_dir=args.checkpoint_dir,
                         resume=args.resume)


def cmd_optimize(args) -> int:
    from edgeopt.evaluate import stage_table
    from edgeopt.pipeline import OptimizeOptions, optimize
    opts = OptimizeOptions(recipe=_recipe(args), target=args.target, preprocess=preprocess(args),
                           eval_limit=args.eval_limit, batch=args.batch, threads=args.threads,
                           progress=not args.no_progress, overrides=step_options(args),
                           backend=args.backend, task=args.task, onnx_path=args.onnx_path,
                           max_length=args.max_length)
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
    from edgeopt.pipeline import OptimizeOptions, compress_with_recipe
    from edgeopt.recipes.overrides import with_overrides
    out = Path(args.out)
    if out.suffix != ".pt2":
        raise ConfigError(f"--out {out}: compress writes a torch.export .pt2 file")
    if out.exists() and not args.force:
        raise OutputExistsError(f"output file {out} already exists (use --force to replace it)")
    recipe = with_overrides(_recipe(args), step_options(args))
    handle = load_model(args.model, weights=args.weights)
    dataset = load_dataset(args.data)
    opts = OptimizeOptions(recipe=recipe, preprocess=preprocess(args))
    model = compress_with_recipe(handle.module, recipe, dataset, opts,
                                 log=lambda m: print(m, file=sys.stderr))
    example = torch.from_numpy(preprocess(args)(dataset.test.x[:2]))
    ep = torch.export.export(model, (example,),
                             dynamic_shapes=({0: torch.export.Dim("batch", min=1)},))
    buf = io.BytesIO()
    torch.export.save(ep, buf)
    atomic_write_bytes(out, buf.getvalue())
    print(f"compressed model ({recipe.name}, simulated) written to {out}")
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
