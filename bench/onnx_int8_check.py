"""fp32 vs onnxruntime quantize_static defaults vs edgeopt quantize_graph on third-party
ONNX models: output SQNR vs fp32, file size, ORT latency at batch 1 (1 thread).

    .venv/bin/python bench/onnx_int8_check.py [yolov8n ppocr-cls silero-vad]

Temporary scaffolding, to be folded into bench/thirdparty.py.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
import wave
from pathlib import Path

import numpy as np
import onnx

from edgeopt.compress.quantize import onnx_hw
from edgeopt.compress.quantize.onnx_ptq import OnnxQuantConfig, fidelity, quantize_graph
from edgeopt.core.onnx_graph import load_graph
from edgeopt.zoo.thirdparty import thirdparty_model


def _crops(images, n, size, rng):
    from skimage import transform

    out = []
    for i in range(n):
        im = images[i % len(images)]
        h, w = im.shape[:2]
        s = int(rng.integers(min(h, w) // 2, min(h, w) + 1))
        y, x = rng.integers(0, h - s + 1), rng.integers(0, w - s + 1)
        out.append(transform.resize(im[y:y + s, x:x + s], size, anti_aliasing=True))
    return out


def yolo_data(rng):
    from skimage import color, data

    rgb = lambda im: im if im.ndim == 3 else color.gray2rgb(im)  # noqa: E731
    calib_imgs = [data.astronaut(), data.coffee(), data.chelsea(), data.rocket()]
    eval_imgs = [rgb(data.hubble_deep_field()), data.cat(), rgb(data.camera()),
                 data.stereo_motorcycle()[0], rgb(data.immunohistochemistry())]
    feed = lambda c: {"images": c[..., :3].astype(np.float32).transpose(2, 0, 1)[None]}  # noqa
    return ([feed(c) for c in _crops(calib_imgs, 16, (320, 320), rng)],
            [feed(c) for c in _crops(eval_imgs, 10, (320, 320), rng)], None)


def ppocr_data(rng):
    from skimage import data

    text = data.text() / 255.0  # 172x448 grey page of text

    def feeds(images):
        out = []
        for im in images:
            for k in (0, 2):  # upright and 180-degree rotated: the classifier's two classes
                x = np.rot90(im, k)
                x = np.repeat(x[None], 3, 0) if x.ndim == 2 else x.transpose(2, 0, 1)
                out.append({"x": ((x - 0.5) / 0.5).astype(np.float32)[None]})
        return out

    left, right = text[:, :224], text[:, 224:]
    calib = _crops([left, data.coffee() / 255.0], 8, (48, 192), rng)
    evals = _crops([right, data.astronaut() / 255.0], 8, (48, 192), rng)
    return feeds(calib), feeds(evals), None


def _speech(sentence: str, work: Path) -> np.ndarray:
    path = work / "s.wav"
    subprocess.run(["espeak-ng", "-w", str(path), sentence], check=True)
    with wave.open(str(path)) as w:
        rate = w.getframerate()
        x = np.frombuffer(w.readframes(w.getnframes()), np.int16) / 32768.0
    t = np.arange(0, len(x) / rate, 1 / 16000)
    return np.interp(t, np.arange(len(x)) / rate, x)  # to 16 kHz


def silero_data(rng, model):
    work = Path(tempfile.mkdtemp())
    sess = onnx_hw.session(model)

    def frames(sentence):
        s = _speech(sentence, work)
        audio = np.concatenate([np.zeros(8000), s, np.zeros(6000), 0.5 * s[::-1]])
        audio = audio + rng.normal(0, 0.005, audio.shape)
        out, state = [], np.zeros((2, 1, 128), np.float32)
        for i in range(0, len(audio) - 512, 512):
            feed = {"input": audio[i:i + 512].astype(np.float32)[None], "state": state}
            out.append(feed)
            state = sess.run(None, feed)[1]  # carry the fp32 model's state frame to frame
        return out

    calib = frames("The quick brown fox jumps over the lazy dog near the river bank.")
    evals = frames("Voice activity detection tells speech from silence and noise.")
    return calib[::4][:32], evals[::3][:40], None


def ort_default(fp_path: Path, out: Path, calib) -> onnx.ModelProto:
    from onnxruntime.quantization import quantize_static

    class Reader:
        def __init__(self):
            self.it = iter(calib)

        def get_next(self):
            return next(self.it, None)

    quantize_static(str(fp_path), str(out), Reader())  # what a user runs: all defaults
    return onnx.load(str(out))


def check(name: str) -> list[dict]:
    rng = np.random.default_rng(0)
    fixed = {"sr": np.array(16000, np.int64)} if name == "silero-vad" else None
    model = load_graph(thirdparty_model(name), fixed=fixed)
    if name == "yolov8n":
        calib, evals, _ = yolo_data(rng)
    elif name == "ppocr-cls":
        calib, evals, _ = ppocr_data(rng)
    else:
        calib, evals, _ = silero_data(rng, model)
    work = Path(tempfile.mkdtemp())
    fp_path = work / "fp32.onnx"
    onnx.save(model, fp_path)
    t0 = time.time()
    default = ort_default(fp_path, work / "ort_default.onnx", calib)
    t_default = time.time() - t0
    t0 = time.time()
    ours, record = quantize_graph(model, calib, OnnxQuantConfig(), log=print)
    t_ours = time.time() - t0
    sessions = [onnx_hw.session(m) for m in (model, default, ours)]
    refs = [sessions[0].run(None, f) for f in evals]
    feed1 = onnx_hw.batch_one(evals[0], model)
    lat = onnx_hw.latencies(sessions, feed1, repeats=60, budget_s=20.0)
    rows = []
    for label, m, s, ms, secs in zip(("fp32", "ort quantize_static defaults", "edgeopt quantize_graph"),
                                     (model, default, ours), sessions, lat,
                                     (0.0, t_default, t_ours)):
        row = {"model": name, "method": label, "sqnr_db": fidelity(s, evals, refs),
               "size_x": m.ByteSize() / model.ByteSize(), "size_kb": m.ByteSize() / 1024,
               "ms_b1": ms * 1e3, "speedup": lat[0] / ms, "quant_s": secs}
        if name == "ppocr-cls":
            agree = np.mean([np.argmax(s.run(None, f)[0]) == np.argmax(r[0])
                             for f, r in zip(evals, refs)])
            row["top1_agree"] = float(agree)
        rows.append(row)
    print(f"{name}: quantized {record['quantized']}, float kept "
          f"{len(record['float_kept'])}, decisions {record['decisions']}")
    return rows


def main(names: list[str]) -> None:
    rows = []
    for name in names:
        rows += check(name)
    print("\n| model | method | SQNR dB (per-channel mean, worst output) | size x fp32 | size KB "
          "| ms batch 1 | speedup | quantize s | extra |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        extra = f"top-1 agree {r['top1_agree']:.2f}" if "top1_agree" in r else ""
        sq = "inf" if r["method"] == "fp32" else f"{r['sqnr_db']:.1f}"
        print(f"| {r['model']} | {r['method']} | {sq} | {r['size_x']:.3f} | {r['size_kb']:.0f} "
              f"| {r['ms_b1']:.2f} | {r['speedup']:.2f}x | {r['quant_s']:.0f} | {extra} |")


if __name__ == "__main__":
    main(sys.argv[1:] or ["yolov8n", "ppocr-cls", "silero-vad"])
