"""The command line as DESIGN.md specifies it, run in-process (plus one entry-point run)."""

import contextlib
import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import edgeopt
import edgeopt.pipeline
from edgeopt.cli import main
from edgeopt.evaluate import measure_latency
from edgeopt.zoo.resnet import resnet_small

RESNET = "edgeopt.zoo.resnet:resnet_small"
STAGES = ["fp32 pytorch", "int8 simulated", "fp32 onnxruntime", "int8 onnxruntime"]


def run_cli(argv, capsys) -> tuple[int, str, str]:
    rc = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


def write_npz(path: Path, train_shape, test_shape, seed: int = 0) -> str:
    rng = np.random.default_rng(seed)
    np.savez(path,
             x_train=rng.integers(0, 256, train_shape, dtype=np.uint8),
             y_train=rng.integers(0, 10, train_shape[0]),
             x_test=rng.integers(0, 256, test_shape, dtype=np.uint8),
             y_test=np.arange(test_shape[0]) % 10)
    return str(path)


# --------------------------------------------------------------------------- optimize, once


@pytest.fixture(scope="module")
def optimized(tmp_path_factory):
    """`edgeopt optimize` on resnet_small + digits: (rc, stdout, stderr, artifact folder).

    Latency is timed with 3 repeats instead of the CLI's fixed 50: timing the
    fake-quantized stage 50 times is over half of this run on a busy 2-core machine,
    and latency measurement has its own tests.
    """
    out = tmp_path_factory.mktemp("cli") / "art"
    stdout, stderr = io.StringIO(), io.StringIO()

    def quick_latency(runnable, shape, **kwargs):
        return measure_latency(runnable, shape, **{**kwargs, "repeats": 3, "warmup": 1})

    with pytest.MonkeyPatch.context() as mp, contextlib.redirect_stdout(stdout), \
            contextlib.redirect_stderr(stderr):
        mp.setattr(edgeopt.pipeline, "measure_latency", quick_latency)
        rc = main(["optimize", RESNET, "--data", "digits", "--out", str(out), "--eval-limit", "64",
                   "--calib-size", "64", "--batch", "8", "--no-progress"])
    return rc, stdout.getvalue(), stderr.getvalue(), out


def test_optimize_writes_the_artifact_and_reports(optimized):
    rc, out, err, folder = optimized
    assert rc == 0, err
    names = {p.name for p in folder.iterdir()}
    assert {"manifest.json", "model.onnx", "report.json", "report.md"} <= names
    report = json.loads((folder / "report.json").read_text())
    assert [s["name"] for s in report["stages"]] == STAGES
    assert report["n_eval"] == 64 and report["dataset"] == "digits"
    stages = {s["name"]: s for s in report["stages"]}
    # The model is random-init, so its accuracy says nothing; that the fp32 export
    # computes what the torch module computes does: same predictions on all 64 images.
    fp32, ort32 = stages["fp32 pytorch"], stages["fp32 onnxruntime"]
    assert ort32["agreement"] == 100 and ort32["accuracy_top1"] == fp32["accuracy_top1"]
    for stage in report["stages"]:
        assert stage["size_bytes"] > 0
        assert set(stage["latency"]) == {"1", "8"}
    md = (folder / "report.md").read_text()
    assert all(name in md for name in STAGES)
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["precision"] == "int8" and manifest["recipe"]["name"] == "int8"
    assert set(manifest["files"]) == names - {"manifest.json"}
    assert manifest["preprocessing"]["scale"] == pytest.approx(1 / 255)
    assert all(name in out for name in STAGES) and f"artifact written to {folder}" in out
    assert not [p for p in folder.parent.iterdir() if p.name.startswith(".")]  # no staging left


def test_evaluate_json_reproduces_the_reported_accuracy(optimized, capsys):
    folder = optimized[3]
    argv = ["evaluate", folder, "--data", "digits", "--json", "--limit", "64"]
    rc, out, _ = run_cli(argv, capsys)
    assert rc == 0
    result = json.loads(out)
    report = json.loads((folder / "report.json").read_text())
    # Same seeded subset, same preprocessing (from the manifest), same artifact.
    assert result["n"] == 64
    assert result["top1"] == pytest.approx(report["stages"][-1]["accuracy_top1"])


def test_bench_prints_percentiles(optimized, capsys):
    folder = optimized[3]
    rc, out, _ = run_cli(["bench", folder, "--batch", "2", "--repeats", "5"], capsys)
    assert rc == 0 and "batch 2" in out and "p50" in out and "(5 runs" in out
    rc, out, _ = run_cli(["bench", folder, "--batch", "2", "--repeats", "5", "--json"], capsys)
    lat = json.loads(out)
    assert rc == 0 and lat["batch"] == 2 and 0 < lat["p50_ms"] <= lat["p90_ms"]


def test_inspect_artifact_lists_layer_precision(optimized, capsys):
    rc, out, _ = run_cli(["inspect", optimized[3]], capsys)
    assert rc == 0
    lines = out.splitlines()
    assert lines[0].endswith("int8 onnxruntime artifact for x86_64")
    layers = dict(line.split() for line in lines[1:])
    assert len(layers) == 10 and {"stem.0", "layer3.shortcut.0", "fc"} <= layers.keys()
    assert "fp32" not in layers.values()  # 9 convs + fc, all quantized


def test_no_progress_prints_no_bars(optimized):
    assert "calibrate" not in optimized[2] and "bias correction" not in optimized[2]


# --------------------------------------------------------------------------- listings


def test_recipes_lists_builtins(capsys):
    rc, out, _ = run_cli(["recipes"], capsys)
    names = [line.split()[0] for line in out.splitlines()]
    assert rc == 0 and {"fp32", "int8"} <= set(names) and names == sorted(names)
    assert all(len(line.split()) > 1 for line in out.splitlines())  # each has a description


def test_entry_point_runs():
    exe = Path(sys.executable).with_name("edgeopt")
    proc = subprocess.run([str(exe), "recipes"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert {"fp32", "int8"} <= {line.split()[0] for line in proc.stdout.splitlines()}


def test_targets_lists_x86_64(capsys):
    rc, out, _ = run_cli(["targets"], capsys)
    assert rc == 0
    x86 = [line for line in out.splitlines() if line.split()[0] == "x86_64"]
    assert len(x86) == 1 and "onnxruntime" in x86[0] and "int8" in x86[0]


def test_inspect_counts_params_and_macs(capsys):
    rc, out, _ = run_cli(["inspect", RESNET, "--input-shape", "1,28,28"], capsys)
    assert rc == 0
    lines = out.splitlines()
    assert lines[0].split() == ["layer", "type", "params", "MACs", "output", "shape"]
    rows = {line.split()[0]: line.split() for line in lines[2:-2]}
    assert rows["stem.0"][1] == "Conv2d" and rows["fc"][1] == "Linear"
    assert sum(r[1] == "Conv2d" for r in rows.values()) == 9
    assert rows["fc"][-1] == "10"

    model = resnet_small().eval()
    macs = []

    def hook(mod, _inp, out):
        if isinstance(mod, torch.nn.Conv2d):
            kh, kw = mod.kernel_size
            macs.append(out[0].numel() * mod.in_channels // mod.groups * kh * kw)
        else:
            macs.append(out[0].numel() * mod.in_features)

    for m in model.modules():
        if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)):
            m.register_forward_hook(hook)
    with torch.no_grad():
        model(torch.zeros(1, 1, 28, 28))
    total = lines[-1].split()
    assert total[0] == "total"
    assert int(total[1].replace(",", "")) == sum(p.numel() for p in model.parameters())
    assert int(total[2].replace(",", "")) == sum(macs)


# --------------------------------------------------------------------------- bad input


def _npz_10x10(tmp_path):
    return write_npz(tmp_path / "d10.npz", (16, 1, 10, 10), (8, 1, 10, 10))


def _onnx_model(tmp_path, make_cnn):
    edgeopt.compile(make_cnn(), input_shape=[1, 8, 8], out=tmp_path / "compiled")
    return str(tmp_path / "compiled" / "model.onnx")


def _pt2_model(tmp_path, make_cnn):
    path = tmp_path / "tiny.pt2"
    ep = torch.export.export(make_cnn(), (torch.zeros(2, 1, 8, 8),),
                             dynamic_shapes=({0: torch.export.Dim("b")},))
    torch.export.save(ep, path)
    return str(path)


def _nan_weights(tmp_path, make_cnn):
    state = make_cnn().state_dict()
    state["head.weight"][0, 0] = float("nan")
    torch.save(state, tmp_path / "nan.pt")
    return str(tmp_path / "nan.pt")


def case_missing_model(tmp_path, fac, make_cnn):
    return [str(tmp_path / "nope.onnx"), "--data", "digits"], ["nope.onnx", "does not exist"]


def case_corrupt_model(tmp_path, fac, make_cnn):
    path = tmp_path / "bad.pt2"
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 2048, dtype=np.uint8).tobytes())
    return [str(path), "--data", "digits"], ["bad.pt2", "not a valid"]


def case_empty_calibration(tmp_path, fac, make_cnn):
    data = write_npz(tmp_path / "empty.npz", (0, 1, 8, 8), (8, 1, 8, 8))
    return [f"{fac}:tiny_cnn", "--data", data], ["train split is empty"]


def case_onnx_shape_mismatch(tmp_path, fac, make_cnn):
    # The ONNX-graph path names the input and shows the model's shape with its batch dim.
    return ([_onnx_model(tmp_path, make_cnn), "--data", _npz_10x10(tmp_path)],
            ["input 'input'", "1, 10, 10)", "(N, 1, 8, 8)"])


def case_pt2_shape_mismatch(tmp_path, fac, make_cnn):
    return ([_pt2_model(tmp_path, make_cnn), "--data", _npz_10x10(tmp_path)],
            ["(1, 10, 10)", "(1, 8, 8)"])


def case_factory_shape_mismatch(tmp_path, fac, make_cnn):
    return [f"{fac}:tiny_cnn", "--data", _npz_10x10(tmp_path)], ["(1, 10, 10)"]


def case_nan_weights(tmp_path, fac, make_cnn):
    return ([f"{fac}:tiny_cnn", "--weights", _nan_weights(tmp_path, make_cnn), "--data", "digits",
             "--eval-limit", "16"], ["head.weight", "NaN"])


def case_unknown_recipe(tmp_path, fac, make_cnn):
    return [f"{fac}:tiny_cnn", "--data", "digits", "--recipe", "int3"], ["int3", "built-in:", "fp32", "int8"]


def case_unknown_recipe_option(tmp_path, fac, make_cnn):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("name: r\nsteps:\n  - quantize: {bitz: 4}\n")
    return ([f"{fac}:tiny_cnn", "--data", "digits", "--recipe", str(recipe)],
            ["'bitz'", "valid:", "weights", "activations"])


def case_unknown_step(tmp_path, fac, make_cnn):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("name: r\nsteps:\n  - quantise: {}\n")
    # The valid names come from the registry: every technique's own registration.
    return ([f"{fac}:tiny_cnn", "--data", "digits", "--recipe", str(recipe)],
            ["unknown step 'quantise'", "valid:", "cluster", "quantize", "sparsify"])


def case_unknown_compile_key(tmp_path, fac, make_cnn):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("name: r\nsteps: []\ncompile: {backnd: tvm}\n")
    return ([f"{fac}:tiny_cnn", "--data", "digits", "--recipe", str(recipe)],
            ["compile:", "unknown option 'backnd'", "valid: backend"])


def case_unknown_compile_backend(tmp_path, fac, make_cnn):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("name: r\nsteps: []\ncompile: {backend: tflite}\n")
    return ([f"{fac}:tiny_cnn", "--data", "digits", "--recipe", str(recipe)],
            ["'tflite'", "onnxruntime", "tvm"])


def case_calib_size_without_calibrating_step(tmp_path, fac, make_cnn):
    return ([f"{fac}:tiny_cnn", "--data", "digits", "--recipe", "sparse", "--calib-size", "64"],
            ["--calib-size applies", "quantize", "sparse has none"])


def case_unknown_target(tmp_path, fac, make_cnn):
    return ([f"{fac}:tiny_cnn", "--data", "digits", "--target", "riscv", "--eval-limit", "16"],
            ["riscv", "x86_64"])


def case_bits_out_of_range(tmp_path, fac, make_cnn):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("name: r\nsteps:\n  - quantize: {weights: {bits: 9}}\n")
    return ([f"{fac}:tiny_cnn", "--data", "digits", "--recipe", str(recipe)],
            ["bits must be an integer in 2..8, got 9"])


def case_budget_without_mixed_step(tmp_path, fac, make_cnn):
    return ([f"{fac}:tiny_cnn", "--data", "digits", "--recipe", "int8", "--budget", "0.2"],
            ["--budget applies", "mixed_precision", "int8 has none"])


# Errors that need no work first: stderr must be exactly the one error line.
BAD_INPUT = [
    case_bits_out_of_range, case_budget_without_mixed_step,
    case_missing_model, case_corrupt_model, case_empty_calibration, case_onnx_shape_mismatch,
    case_pt2_shape_mismatch, case_unknown_recipe, case_unknown_recipe_option,
    case_unknown_step, case_unknown_compile_key, case_unknown_compile_backend,
    case_calib_size_without_calibrating_step,
    case_factory_shape_mismatch,
    case_nan_weights,
    case_unknown_target,
]


@pytest.mark.parametrize("case", BAD_INPUT)
def test_bad_input_is_one_error_line_and_no_output(tmp_path, capsys, model_factories, make_cnn,
                                                   case):
    args, expected = case(tmp_path, model_factories, make_cnn)
    out = tmp_path / "out"
    before = set(tmp_path.iterdir())
    if "--recipe" not in args:
        args += ["--recipe", "fp32"]  # the quickest run for errors that should come first
    capsys.readouterr()  # what making the case's model printed (torch.onnx warnings)
    rc, _, err = run_cli(["optimize", *args, "--out", out, "--no-progress"], capsys)
    assert rc != 0
    assert err.count("\n") == 1 and err.startswith("edgeopt optimize: error: "), err
    for text in expected:
        assert text in err, err
    assert set(tmp_path.iterdir()) == before  # no --out folder, no staging leftovers


def test_unexportable_operator_names_op_and_layer(tmp_path, capsys, model_factories):
    out = tmp_path / "out"
    rc, _, err = run_cli(["optimize", f"{model_factories}:gelu_cnn", "--data", "digits",
                          "--out", out, "--recipe", "fp32", "--eval-limit", "16", "--batch", "2",
                          "--no-progress"], capsys)
    op, layer = "gelu", "act"
    assert rc != 0
    # Found only when compiling, after earlier stages logged their progress.
    errors = [line for line in err.splitlines() if "error:" in line]
    assert len(errors) == 1 and err.splitlines()[-1] == errors[0]
    assert "Traceback" not in err
    assert f"operator {op}" in errors[0] and f"layer '{layer}'" in errors[0]
    assert list(tmp_path.iterdir()) == []


def test_existing_out_needs_force(tmp_path, capsys, model_factories):
    out = tmp_path / "out"
    out.mkdir()
    (out / "mine.txt").write_text("keep")
    argv = ["optimize", f"{model_factories}:tiny_cnn", "--data", "digits", "--out", out,
            "--recipe", "fp32", "--eval-limit", "16", "--batch", "2", "--no-progress"]
    rc, _, err = run_cli(argv, capsys)
    assert rc != 0 and err.count("\n") == 1 and "error:" in err and "--force" in err
    assert [p.name for p in out.iterdir()] == ["mine.txt"]
    assert (out / "mine.txt").read_text() == "keep"

    rc, _, err = run_cli([*argv, "--force"], capsys)
    assert rc == 0, err
    assert {p.name for p in out.iterdir()} >= {"manifest.json", "model.onnx", "report.json"}
    assert not (out / "mine.txt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    report = json.loads((out / "report.json").read_text())
    assert [s["name"] for s in report["stages"]] == ["fp32 pytorch", "fp32 onnxruntime"]
    assert report["stages"][1]["agreement"] == 100.0


def test_unreachable_budget_says_the_smallest(tmp_path, capsys, model_factories):
    out = tmp_path / "out"
    rc, _, err = run_cli(["optimize", f"{model_factories}:tiny_cnn", "--data", "digits",
                          "--out", out, "--recipe", "mixed", "--budget", "0.01", "--calib-size",
                          "32", "--eval-limit", "16", "--batch", "2", "--no-progress"], capsys)
    errors = [line for line in err.splitlines() if "error:" in line]
    assert rc == 2 and len(errors) == 1 and "Traceback" not in err
    assert "cannot be met; the smallest policy (every layer at 2 bits) is" in errors[0]
    assert not out.exists()


def test_layer_pattern_matching_nothing_warns_with_the_names(tmp_path, capsys, model_factories):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("name: r\nsteps:\n  - quantize: {layers: {'nosuch.*': {bits: 4}}}\n")
    out = tmp_path / "out"
    rc, _, err = run_cli(["optimize", f"{model_factories}:tiny_cnn", "--data", "digits",
                          "--out", out, "--recipe", recipe, "--calib-size", "32",
                          "--eval-limit", "16", "--batch", "2", "--no-progress"], capsys)
    warns = [line for line in err.splitlines() if "warning:" in line]
    assert rc == 0 and len(warns) == 1, err
    assert "'nosuch.*' matches no layer; layers are: features.0, head" in warns[0]


def test_training_budget_on_a_recipe_that_does_not_train(tmp_path, capsys, model_factories):
    out = tmp_path / "out"
    rc, _, err = run_cli(["optimize", f"{model_factories}:tiny_cnn", "--data", "digits",
                          "--out", out, "--recipe", "int8", "--train-seconds", "5"], capsys)
    errors = [line for line in err.splitlines() if "error:" in line]
    assert rc == 2 and len(errors) == 1 and "Traceback" not in err
    assert "recipe int8 has no training step" in errors[0]
    assert not out.exists()


def test_distill_recipe_trains_within_the_cli_budget_and_checkpoints(tmp_path, capsys,
                                                                     model_factories):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("name: r\nsteps:\n  - distill: {epochs: 50, train_size: 128}\n")
    ck = tmp_path / "ck"
    rc, _, err = run_cli(["compress", f"{model_factories}:tiny_cnn", "--data", "digits",
                          "--out", tmp_path / "m.pt2", "--recipe", recipe, "--train-epochs",
                          "1", "--checkpoint-dir", ck], capsys)
    assert rc == 0, err
    assert (ck / "step0-distill.pt").is_file() and (tmp_path / "m.pt2").is_file()


@pytest.mark.parametrize("step, message", [
    ("prune: {ratio: 1.5}", "ratio"),
    ("distill: {teacher: input, steps: 1, student: 'edgeopt.zoo.resnet:resnet_small', "
     "student_kwargs: {num_classes: 7}}", "teacher's outputs do not match the student's"),
    ("lowrank: {ranks: {'head': 999}}", "head"),
    ("cluster: {clusters: 300}", "clusters"),
    ("sparsify: {sparsity: 0}", "sparsity"),
])
def test_bad_compression_steps_are_one_line(step, message, tmp_path, capsys, model_factories):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"name: r\nsteps:\n  - {step}\n")
    out = tmp_path / "out"
    rc, _, err = run_cli(["optimize", f"{model_factories}:tiny_cnn", "--data", "digits",
                          "--out", out, "--recipe", recipe, "--eval-limit", "16", "--batch", "2",
                          "--no-progress"], capsys)
    errors = [line for line in err.splitlines() if "error:" in line]
    assert rc == 2 and len(errors) == 1 and "Traceback" not in err, err
    assert message in errors[0]
    assert not out.exists()
