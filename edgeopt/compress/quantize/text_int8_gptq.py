"""GPTQ rounding of a text model's int8 MatMul weights (Frantar et al., 2022), after the
graph is built: the per-column scales stay as ORT (MatMulInteger) or ``weight_only`` chose
them; only which integer each weight rounds to changes.

Round-to-nearest treats every weight alone. GPTQ quantizes the input rows of ``W [in, out]``
one at a time and moves each row's rounding error onto the rows not yet quantized, weighted
by the inverse Hessian ``H = X^T X`` of the calibration inputs, so the error that remains is
the part the layer's real inputs cannot see. The inputs are read from the quantized graph
itself (the float tensor each DynamicQuantizeLinear, or each weight-only MatMul, reads), so
each layer is fitted to what the layers before it, already int8, send it. Padding
positions are left out of ``H``: the pooling never reads them, and nothing else does.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

from edgeopt.compress.quantize.text_int8_ops import copy, tap


def gptq_rows(w: np.ndarray, scale: np.ndarray, h: np.ndarray, *, damp: float = 0.01,
              qmin: int = -127, qmax: int = 127) -> np.ndarray:
    """int8 codes for ``w [in, out]`` on the grid ``scale [out]`` (symmetric, as ORT's
    own), minimising ``||X w - X (q * scale)||`` for inputs with ``X^T X = h [in, in]``."""
    w = w.astype(np.float64).copy()
    h = h.astype(np.float64).copy()
    n = w.shape[0]
    dead = np.diag(h) <= 0  # an input channel never nonzero (a masked outlier): any code
    h[dead, dead] = 1.0
    w[dead] = 0.0
    h[np.diag_indices(n)] += damp * float(np.mean(np.diag(h)))  # GPTQ's dampening
    # Upper Cholesky factor of H^-1: row i holds the updates quantizing input i implies.
    u = np.linalg.cholesky(np.linalg.inv(h)).T
    s = scale.astype(np.float64)
    q = np.empty(w.shape, dtype=np.int8)
    for i in range(n):
        qi = np.clip(np.round(w[i] / s), qmin, qmax)
        q[i] = qi
        err = (w[i] - qi * s) / u[i, i]
        w[i + 1:] -= np.outer(u[i, i + 1:], err)
    return q


def int8_weights(model: onnx.ModelProto) -> list[tuple[str, str, str]]:
    """(int8 weight initializer, its per-column scale initializer, the float activation it
    multiplies) for each int8 MatMul weight of a quantize_text graph."""
    inits = {i.name for i in model.graph.initializer}
    producer = {o: n for n in model.graph.node for o in n.output}
    found = []
    for n in model.graph.node:
        if n.op_type == "MatMulInteger" and n.input[1] in inits:
            dq = producer.get(n.input[0])
            scale = n.input[1].removesuffix("_quantized") + "_scale"
            if dq is not None and dq.op_type == "DynamicQuantizeLinear" and scale in inits:
                found.append((n.input[1], scale, dq.input[0]))
        elif n.op_type == "MatMul" and n.input[1] not in inits:
            dq = producer.get(n.input[1])  # weight_only: Cast(int8) * scale -> MatMul
            if dq is not None and dq.op_type == "Mul" and dq.input[1] in inits:
                cast = producer.get(dq.input[0])
                if cast is not None and cast.op_type == "Cast" and cast.input[0] in inits:
                    found.append((cast.input[0], dq.input[1], n.input[0]))
    return found


def hessians(model: onnx.ModelProto, tensors: list[str], feeds: list[dict],
             session, mask_input: str | None = "attention_mask") -> dict[str, np.ndarray]:
    """``X^T X`` over the calibration feeds of each float tensor (last axis = channels),
    on the positions the attention mask keeps."""
    h: dict[str, np.ndarray] = {}
    for f, values in tap(model, tensors, feeds, session):
        keep = f[mask_input].reshape(-1).astype(bool) if mask_input in f else None
        for t, v in zip(tensors, values):
            x = v.reshape(-1, v.shape[-1])
            if keep is not None and len(keep) == len(x):
                x = x[keep]
            x = x.astype(np.float64)
            h[t] = h[t] + x.T @ x if t in h else x.T @ x
    return h


def float_name(int8_name: str) -> str:
    """The float initializer an int8 weight was made from (ORT's ``W_quantized``,
    weight_only's ``W_int8``)."""
    for suffix in ("_quantized", "_int8"):
        if int8_name.endswith(suffix):
            return int8_name.removesuffix(suffix)
    return int8_name


def gptq_int8(model: onnx.ModelProto, floats: dict[str, np.ndarray], feeds: list[dict],
              session) -> tuple[onnx.ModelProto, int]:
    """``model`` with each int8 MatMul weight whose float original is in ``floats``
    re-rounded by GPTQ on its scale, and how many were."""
    weights = [x for x in int8_weights(model) if float_name(x[0]) in floats]
    if not weights:
        return model, 0
    h = hessians(model, sorted({x for _, _, x in weights}), feeds, session)
    m = copy(model)
    inits = {i.name: i for i in m.graph.initializer}
    done = 0
    for wname, sname, x in weights:
        t, w = inits[wname], floats[float_name(wname)]
        scale = numpy_helper.to_array(inits[sname]).reshape(-1)
        if w.shape != tuple(t.dims) or scale.shape[0] != w.shape[1]:
            continue  # not the [in, out] / per-column layout this rounding assumes
        t.CopyFrom(numpy_helper.from_array(gptq_rows(w, scale, h[x]), wname))
        done += 1
    return m, done
