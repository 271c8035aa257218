"""Third-party ONNX models through the real ``edgeopt.optimize`` (recipe int8, the
ONNX-graph path), side by side with ONNX Runtime's own ``quantize_static`` defaults.

For each model (yolov8n from nudenet, ppocr-cls from rapidocr, silero-vad) it writes
an .npz keyed by the model's input names with disjoint ``NAME_train`` (calibration)
and ``NAME_test`` (evaluation) splits (different source photos / text regions /
utterances), runs ``edgeopt.optimize`` on it, quantizes the same calibration samples
with ``onnxruntime.quantization.quantize_static`` (QDQ, per-tensor, MinMax: all
defaults) and scores every method on the same test feeds against the user's fp32
file: per-output SQNR (worst output), box P/R/F1 (yolo), argmax agreement (ppocr-cls),
speech/non-speech decision agreement with the state carried frame to frame
(silero-vad), size on disk, and ORT latency at batch 1 on one thread, all methods
timed in interleaved rounds.

    python bench/thirdparty.py                      # all three (about 10 min on 2 cores)
    python bench/thirdparty.py --only ppocr-cls     # one model
    python bench/thirdparty.py --tiny               # a few samples; what the tests run

The peer quantizes the same onnxslim-simplified fp32 graph edgeopt starts from (with
silero's ``sr`` bound to 16000, so its control flow folds): quantize_static cannot
take the raw silero file's If branches, and the simplification only helps it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import shutil
import subprocess
import sys
import tempfile
import time
import wave
from pathlib import Path

import numpy as np
import onnx

MODELS = ("yolov8n", "ppocr-cls", "silero-vad")
SR = 16000
FRAME = 512
CONTEXT = 64  # samples of the previous frame each input starts with (16 kHz)

SENTENCES_CALIB = [
    "The quick brown fox jumps over the lazy dog near the river bank.",
    "Please call Stella and ask her to bring these things with her from the store.",
    "Six spoons of fresh snow peas, five thick slabs of blue cheese, and maybe a snack.",
    "We also need a small plastic snake and a big toy frog for the kids.",
]
SENTENCES_TEST = [
    "Voice activity detection tells speech from silence and noise.",
    "She can scoop these things into three red bags, and we will go meet her.",
    "A large wooden ship sailed slowly past the old lighthouse at dawn.",
    "Numbers like forty two and nineteen eighty four are easy to say.",
]
VOICES_CALIB = ["en", "en-us"]
VOICES_TEST = ["en-gb-x-rp", "en-us"]


# --------------------------------------------------------------------------- data


def _crops(images, n, size, rng) -> np.ndarray:
    """``n`` random square-ish crops of the images (cycled), rescaled to ``size``, as
    uint8 (n, H, W, C) or (n, H, W)."""
    from skimage import transform

    out = []
    for i in range(n):
        im = images[i % len(images)]
        h, w = im.shape[:2]
        s = int(rng.integers(min(h, w) // 2, min(h, w) + 1))
        sw = min(w, int(s * rng.uniform(0.8, 1.25)))
        y, x = rng.integers(0, h - s + 1), rng.integers(0, w - sw + 1)
        crop = transform.resize(im[y:y + s, x:x + sw], size, anti_aliasing=True,
                                preserve_range=True)
        out.append(np.clip(np.rint(crop), 0, 255).astype(np.uint8))
    return np.stack(out)


def yolo_data(rng, n_calib: int, n_test: int) -> dict[str, np.ndarray]:
    """Photos from skimage.data: calibration and evaluation from different photos."""
    from skimage import color, data

    rgb = lambda im: im if im.ndim == 3 else color.gray2rgb(im)  # noqa: E731
    calib_imgs = [data.astronaut(), data.coffee(), data.chelsea(), data.rocket()]
    eval_imgs = [rgb(data.hubble_deep_field()), data.cat(), rgb(data.camera()),
                 data.stereo_motorcycle()[0], rgb(data.immunohistochemistry())]
    chw = lambda c: np.ascontiguousarray(c[..., :3].transpose(0, 3, 1, 2))  # noqa: E731
    return {"images_train": chw(_crops(calib_imgs, n_calib, (320, 320), rng)),
            "images_test": chw(_crops(eval_imgs, n_test, (320, 320), rng))}


def ppocr_data(rng, n_calib: int, n_test: int) -> dict[str, np.ndarray]:
    """Text-line crops (upright and rotated 180 degrees, the classifier's two classes):
    calibration from the left half of skimage's text page and a photo, evaluation from
    the right half and another photo. uint8, 3 x 48 x 192."""
    from skimage import color, data

    text = data.text()  # 172x448 grey page of text
    grey = lambda im: np.rint(color.rgb2gray(im) * 255).astype(np.uint8)  # noqa: E731

    def feeds(crops):
        out = []
        for im in crops:
            for k in (0, 2):
                out.append(np.repeat(np.rot90(im, k)[None], 3, 0))
        return np.ascontiguousarray(np.stack(out))

    calib = _crops([text[:, :224], grey(data.coffee())], (n_calib + 1) // 2, (48, 192), rng)
    evals = _crops([text[:, 224:], grey(data.astronaut())], (n_test + 1) // 2, (48, 192), rng)
    return {"x_train": feeds(calib)[:n_calib], "x_test": feeds(evals)[:n_test]}


def have_espeak() -> bool:
    return shutil.which("espeak-ng") is not None


def _speech(sentence: str, voice: str, work: Path) -> np.ndarray:
    path = work / "s.wav"
    subprocess.run(["espeak-ng", "-v", voice, "-w", str(path), sentence], check=True,
                   capture_output=True)
    with wave.open(str(path)) as w:
        rate = w.getframerate()
        x = np.frombuffer(w.readframes(w.getnframes()), np.int16) / 32768.0
    t = np.arange(0, len(x) / rate, 1 / SR)
    return np.interp(t, np.arange(len(x)) / rate, x)  # to 16 kHz


def silero_audio(sentences, voices, rng, work: Path) -> np.ndarray:
    """Utterances with silences between them and a little noise: one long signal."""
    parts = [np.zeros(8000)]
    for i, sentence in enumerate(sentences):
        s = _speech(sentence, voices[i % len(voices)], work)
        parts += [float(rng.uniform(0.4, 1.0)) * s, np.zeros(int(rng.integers(8000, 20000)))]
    audio = np.concatenate(parts)
    return (audio + rng.normal(0, 0.005, audio.shape)).astype(np.float32)


def chunks(audio: np.ndarray) -> np.ndarray:
    """The model's input per 512-sample frame: the frame after the previous frame's last
    64 samples (zeros before the first), (F, 576), as silero-vad's own OnnxWrapper feeds
    it; without that context the v5+ model scores espeak speech below 0.35."""
    starts = range(0, len(audio) - FRAME + 1, FRAME)
    padded = np.concatenate([np.zeros(CONTEXT, audio.dtype), audio])
    return np.stack([padded[i:i + CONTEXT + FRAME] for i in starts]).astype(np.float32)


def silero_frames(sess, audio: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Frames of the audio with the fp32 model's state carried frame to frame: inputs
    (F, 576) and the state each frame starts from, in data layout (F, 2, 128)."""
    frames = chunks(audio)
    states, state = [], np.zeros((2, 1, 128), np.float32)
    for f in frames:
        states.append(state[:, 0])
        state = sess.run(None, {"input": f[None], "state": state,
                                "sr": np.array(SR, np.int64)})[1]
    return frames, np.stack(states).astype(np.float32)


def silero_data(rng, n_calib: int, n_test: int, model_path, tiny: bool):
    import onnxruntime as ort

    work = Path(tempfile.mkdtemp(prefix="edgeopt-vad-"))
    sess = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    k = 1 if tiny else len(SENTENCES_CALIB)
    calib_audio = silero_audio(SENTENCES_CALIB[:k], VOICES_CALIB, rng, work)
    test_audio = silero_audio(SENTENCES_TEST[:k], VOICES_TEST, rng, work)
    shutil.rmtree(work, ignore_errors=True)
    cx, cs = silero_frames(sess, calib_audio)
    tx, ts = silero_frames(sess, test_audio)
    ci = np.linspace(0, len(cx) - 1, min(n_calib, len(cx))).round().astype(int)
    ti = np.linspace(0, len(tx) - 1, min(n_test, len(tx))).round().astype(int)
    arrays = {"input_train": cx[ci], "state_train": cs[ci], "input_test": tx[ti],
              "state_test": ts[ti], "sr": np.array(SR, np.int64)}
    return arrays, test_audio


# --------------------------------------------------------------------------- methods


def ort_default(fp_path: Path, out: Path, calib: list[dict]) -> float:
    """quantize_static with every default (what a user runs); seconds taken."""
    from onnxruntime.quantization import quantize_static

    class Reader:
        def __init__(self):
            self.it = iter(calib)

        def get_next(self):
            return next(self.it, None)

    t0 = time.perf_counter()
    with contextlib.redirect_stdout(sys.stderr):  # its calibrator prints progress
        quantize_static(str(fp_path), str(out), Reader())
    return time.perf_counter() - t0


def _model_feeds(arrays: dict, split: str, inputs, opts) -> list[dict]:
    """One feed per sample (batch 1), preprocessed and in model layout, with constants."""
    from edgeopt.core.inputs import prepare
    from edgeopt.graph_pipeline import to_model_layout

    const = {k: v for k, v in arrays.items() if not k.endswith(("_train", "_test"))}
    keyed = {k[: -len(split) - 1]: v for k, v in arrays.items() if k.endswith("_" + split)}
    n = len(next(iter(keyed.values())))
    feeds = []
    for i in range(n):
        f = {k: v[i:i + 1] for k, v in keyed.items()}
        f = to_model_layout(prepare(f, opts.preprocess, inputs=inputs), inputs, set(const))
        f.update(const)
        feeds.append(f)
    return feeds


def vad_agreement(audio: np.ndarray, runs: dict) -> dict[str, dict]:
    """Each method run over the whole test audio frame by frame, carrying its own state;
    percent of frames whose decision (prob > 0.5) matches fp32's."""
    probs = {}
    frames = chunks(audio)
    for name, step in runs.items():
        state, out = np.zeros((2, 1, 128), np.float32), []
        for f in frames:
            p, state = step(f[None].astype(np.float32), state)
            out.append(float(np.asarray(p).reshape(-1)[0]))
        probs[name] = np.asarray(out)
    ref = probs["fp32"] > 0.5
    return {name: {"agreement_pct": float(100 * np.mean((p > 0.5) == ref)),
                   "speech_frames": int((p > 0.5).sum()), "frames": len(p),
                   "max_abs_prob": float(np.abs(p - probs["fp32"]).max())}
            for name, p in probs.items()}


def run_model(name: str, args, work: Path) -> dict:
    from edgeopt.compile.backends.onnxruntime.runtime import make_session
    from edgeopt.core.data import Preprocess
    from edgeopt.core.onnx_graph import describe, load_graph
    from edgeopt.evaluate.fidelity import compare, summarise
    from edgeopt.graph_pipeline import collect, session_runner, time_interleaved
    from edgeopt.pipeline import OptimizeOptions, optimize
    from edgeopt.runtime import load
    from edgeopt.zoo.thirdparty import thirdparty_model

    rng = np.random.default_rng(args.seed)
    path = thirdparty_model(name)
    n_calib, n_test = args.calib, args.eval
    audio = None
    if name == "yolov8n":
        arrays = yolo_data(rng, n_calib or 64, n_test or 100)
        pre, task = Preprocess(scale=1 / 255), "detection"
    elif name == "ppocr-cls":
        arrays = ppocr_data(rng, n_calib or 64, n_test or 100)
        pre, task = Preprocess(scale=1 / 255, mean=(0.5,) * 3, std=(0.5,) * 3), None
    else:
        arrays, audio = silero_data(rng, n_calib or 64, n_test or 200, path, args.tiny)
        pre, task = Preprocess(), None
    if args.tiny:  # a few samples of each split
        arrays = {k: v[:8] if k.endswith(("_train", "_test")) else v for k, v in arrays.items()}
    mdir = work / name
    mdir.mkdir(parents=True, exist_ok=True)
    npz = mdir / "data.npz"
    np.savez(npz, **arrays)
    opts = OptimizeOptions(recipe="int8", task=task, threads=1, eval_limit=None, batch=8,
                           latency_repeats=10 if args.tiny else 50, progress=False,
                           preprocess=pre)
    t0 = time.perf_counter()
    report = optimize(str(path), str(npz), out=mdir / "artifact", force=True, options=opts,
                      log=lambda m: print(f"  [{name}] {m}", file=sys.stderr, flush=True))
    t_edgeopt = time.perf_counter() - t0

    source = onnx.load(str(path), load_external_data=False)
    inputs, outputs = describe(source)
    out_names = [o.name for o in outputs]
    calib = _model_feeds(arrays, "train", inputs, opts)
    test = _model_feeds(arrays, "test", inputs, opts)
    bound = {k: v for k, v in arrays.items() if not k.endswith(("_train", "_test"))
             and np.asarray(v).ndim == 0}
    slim = load_graph(str(path), fixed=bound or None)
    takes = {i.name for i in slim.graph.input}
    fp_slim = mdir / "fp32_slim.onnx"
    onnx.save(slim, fp_slim)
    peer_path = mdir / "ort_default.onnx"
    t_peer = ort_default(fp_slim, peer_path, [{k: v for k, v in f.items() if k in takes}
                                              for f in calib])
    art_model = mdir / "artifact" / "model.onnx"
    runners = {
        "fp32 (source file)": session_runner("fp32 (source file)", str(path), out_names,
                                             threads=1),
        "fp32 (onnxslim)": session_runner("fp32 (onnxslim)", str(fp_slim), out_names,
                                          threads=1),
        "ORT quantize_static defaults": session_runner(
            "ORT quantize_static defaults", str(peer_path), out_names, threads=1),
        "edgeopt optimize int8": session_runner("edgeopt optimize int8", str(art_model),
                                                out_names, threads=1),
    }
    sizes = {"fp32 (source file)": path.stat().st_size, "fp32 (onnxslim)": fp_slim.stat().st_size,
             "ORT quantize_static defaults": peer_path.stat().st_size,
             "edgeopt optimize int8": art_model.stat().st_size}
    feeds = [(f, 1, 1) for f in test]
    for r in runners.values():
        collect(r, feeds, outputs)
    ref = runners["fp32 (source file)"].outputs
    rows = {}
    for label, r in runners.items():
        per_output = compare(ref, r.outputs)
        head = summarise(per_output)
        rows[label] = {"method": label, "size_bytes": sizes[label],
                       "sqnr_db_min": head.get("sqnr_db_min"),
                       "worst_output": head.get("worst_output"),
                       "argmax_agreement": head.get("argmax_agreement_min"),
                       "fidelity": per_output}
        if task == "detection":
            from edgeopt.evaluate.detection import box_agreement, decode_yolo

            boxes = box_agreement(decode_yolo(ref[out_names[0]]),
                                  decode_yolo(r.outputs[out_names[0]]), iou=0.5)
            rows[label]["boxes"] = boxes
    lat = time_interleaved(list(runners.values()), test[0], batch=1,
                           rounds=5 if args.tiny else 10,
                           repeats=args.repeats or (4 if args.tiny else 10), threads=1)
    fp32_lat = lat["fp32 (source file)"].p50_ms
    for label in rows:
        rows[label]["p50_ms_b1"] = lat[label].p50_ms
        rows[label]["p90_ms_b1"] = lat[label].p90_ms
        rows[label]["timed_runs"] = lat[label].repeats
        rows[label]["speed_x"] = fp32_lat / lat[label].p50_ms
        rows[label]["size_x"] = sizes[label] / sizes["fp32 (source file)"]
    result = {"model": name, "source": str(path), "n_calib": len(calib), "n_eval": len(test),
              "quantize_s": {"edgeopt optimize (whole run)": round(t_edgeopt, 1),
                             "ORT quantize_static": round(t_peer, 1)},
              "rows": list(rows.values()),
              "edgeopt_report": {s.name: {"sqnr_db_min": (s.fidelity or {}).get("headline", {})
                                          .get("sqnr_db_min"), "size_bytes": s.size_bytes,
                                          "task_metrics": s.task_metrics,
                                          "p50_ms": {str(b): v.p50_ms
                                                     for b, v in s.latency.items()}}
                                 for s in report.stages},
              "report_json": str(mdir / "artifact" / "report.json"),
              "report_json_exists": (mdir / "artifact" / "report.json").is_file()}
    if name == "silero-vad":
        sr = np.array(SR, np.int64)
        # The artifact's own session options for both (exact int8 products on every CPU).
        fp = make_session(str(path))
        peer = make_session(str(peer_path))
        pred = load(mdir / "artifact", threads=1)

        def art_step(x, state):
            out = pred.run({"input": x, "state": state, "sr": sr})
            return out["output"], out["stateN"]

        result["vad"] = vad_agreement(audio, {
            "fp32": lambda x, s: fp.run(None, {"input": x, "state": s, "sr": sr}),
            "ORT quantize_static defaults": lambda x, s: peer.run(
                None, {"input": x, "state": s}),
            "edgeopt optimize int8": art_step})
    result["checks"] = checks(result)
    return result


# --------------------------------------------------------------------------- report


def checks(r: dict) -> list[dict]:
    rows = {x["method"]: x for x in r["rows"]}
    ours, peer = rows["edgeopt optimize int8"], rows["ORT quantize_static defaults"]
    fp32 = rows["fp32 (source file)"]
    out = []
    if r["model"] == "yolov8n":
        out.append((f"SQNR {ours['sqnr_db_min']:.1f} dB >= peer's {peer['sqnr_db_min']:.1f} dB",
                    ours["sqnr_db_min"] >= peer["sqnr_db_min"]))
        f1, pf1 = ours["boxes"]["f1"], peer["boxes"]["f1"]
        out.append((f"box F1 {f1:.3f} >= peer's {pf1:.3f}", f1 >= pf1))
    out.append((f"size {ours['size_x']:.3f}x <= 0.30x fp32", ours["size_x"] <= 0.30))
    out.append((f"faster than fp32 at b1: {ours['p50_ms_b1']:.3f} vs {fp32['p50_ms_b1']:.3f} ms "
                f"({ours['speed_x']:.2f}x)", ours["p50_ms_b1"] < fp32["p50_ms_b1"]))
    if "vad" in r:
        a = r["vad"]["edgeopt optimize int8"]["agreement_pct"]
        fp = r["vad"]["fp32"]
        out.append((f"decision agreement {a:.2f}% >= 99% (prob > 0.5, state carried, "
                    f"{fp['frames']} frames, {fp['speech_frames']} speech by fp32)",
                    a >= 99.0))
    return [{"check": f"{r['model']}: {t}", "pass": bool(ok)} for t, ok in out]


def _f(v, fmt=".1f"):
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "-"
    return format(v, fmt)


def table(r: dict) -> str:
    det = r["model"] == "yolov8n"
    vad = "vad" in r
    third = "box P/R/F1" if det else ("decision agreement %" if vad else "argmax agreement %")
    lines = [f"### {r['model']} ({r['n_calib']} calibration, {r['n_eval']} evaluation samples)",
             "", f"| method | SQNR dB (worst output) | {third} | size x fp32 | p50 b1 ms "
             "| speed x fp32 |", "|---|---|---|---|---|---|"]
    for row in r["rows"]:
        m = row["method"]
        sq = "ref" if m == "fp32 (source file)" else _f(row["sqnr_db_min"])
        if det:
            b = row["boxes"]
            extra = f"{b['precision']:.3f} / {b['recall']:.3f} / {b['f1']:.3f}"
        elif vad:
            v = r["vad"].get("fp32" if m.startswith("fp32") else m)
            extra = _f(v["agreement_pct"], ".2f") if v and m != "fp32 (onnxslim)" else "-"
        else:
            extra = _f(row["argmax_agreement"], ".1f")
        lines.append(f"| {m} | {sq} | {extra} | {row['size_x']:.3f} ({row['size_bytes']:,} B) "
                     f"| {row['p50_ms_b1']:.3f} | {row['speed_x']:.2f}x |")
    lines.append("")
    lines += [f"{'PASS' if c['pass'] else 'FAIL'}  {c['check']}" for c in r["checks"]]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", nargs="+", choices=MODELS, default=list(MODELS))
    ap.add_argument("--calib", type=int, default=None, help="calibration samples per model")
    ap.add_argument("--eval", type=int, default=None, help="evaluation samples per model")
    ap.add_argument("--repeats", type=int, default=None, help="timed runs per round")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tiny", action="store_true")
    ap.add_argument("--out", default=None, help="keep artifacts and data here")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    results = []
    with tempfile.TemporaryDirectory(prefix="edgeopt-thirdparty-") as tmp:
        work = Path(args.out) if args.out else Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        for name in args.only:
            t0 = time.perf_counter()
            r = run_model(name, args, work)
            r["wall_s"] = round(time.perf_counter() - t0, 1)
            results.append(r)
            print(table(r))
            print(f"({r['wall_s']:.0f} s; quantize: {r['quantize_s']})\n", flush=True)
    doc = {"results": results, "checks": [c for r in results for c in r["checks"]],
           "tiny": args.tiny}
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(doc, indent=2, default=float))
    return 0 if all(c["pass"] for c in doc["checks"]) or args.tiny else 1


if __name__ == "__main__":
    sys.exit(main())
