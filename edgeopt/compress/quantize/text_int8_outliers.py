"""Outlier channels out of the int8 path (LLM.int8()-style decomposition), for transformer
MatMuls whose input has a few channels far larger than the rest.

A LayerNorm output of MiniLM reaches 28 in one channel while the median channel stays
under 2; with one per-tensor activation scale (ORT's DynamicQuantizeLinear) that channel
sets the step for all 384. So ``X @ W`` becomes ``(X * mask) @ W`` in int8 (the mask zeroes
the ``k`` channels with the largest calibrated range) plus ``X[..., O] @ W[O]`` in float
(a Gather of the k channels, then a k-row MatMul): the same sum, with the int8 scale set by
the ordinary channels.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from edgeopt.compress.quantize.text_int8_ops import copy, tap


def channel_ranges(model: onnx.ModelProto, tensors: list[str], feeds: list[dict],
                   session) -> dict[str, np.ndarray]:
    """max |x| per last-axis channel of each tensor over the calibration feeds."""
    amax = {t: None for t in tensors}
    for _, values in tap(model, tensors, feeds, session):
        for t, v in zip(tensors, values):
            a = np.abs(v).reshape(-1, v.shape[-1]).max(0)
            amax[t] = a if amax[t] is None else np.maximum(amax[t], a)
    return amax


def outliers(amax: np.ndarray, k: int) -> np.ndarray:
    return np.sort(np.argsort(amax)[::-1][:k]).astype(np.int64)


def split_outliers(model: onnx.ModelProto, nodes: set[str], amax: dict[str, np.ndarray],
                   k: int) -> onnx.ModelProto:
    """Each MatMul of ``nodes`` split as the module doc says; the int8-bound MatMul keeps
    its name (so quantize_dynamic's node list still names it), the float one is
    ``<name>_outliers``. MatMuls reading the same input share its mask and gather."""
    m = copy(model)
    inits = {i.name: i for i in m.graph.initializer}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for n in m.graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    shared: dict[str, tuple[str, str, np.ndarray]] = {}
    after: dict[str, list[onnx.NodeProto]] = {}  # node name -> nodes to place after it
    out = []
    for n in m.graph.node:
        if n.name not in nodes:
            out.append(n)
            out += after.pop(n.name, [])
            continue
        x, w_name = n.input[0], n.input[1]
        if x not in shared:
            idx = outliers(amax[x], k)
            mask = np.ones(len(amax[x]), np.float32)
            mask[idx] = 0
            key = n.name + "_outlier"
            # The outlier channels are picked by a Gather on the last axis. A one-hot MatMul
            # did it before (when a strided Gather measured slower); with ORT 1.32 the
            # Gather is 1.2x (384 channels) to 4x (1536) cheaper at b32 x seq 64, and
            # MiniLM's int8 model 2% faster at b1 and 6% at b32 (interleaved, 1 thread).
            m.graph.initializer.extend([
                numpy_helper.from_array(mask, key + "_mask"),
                numpy_helper.from_array(idx, key + "_idx")])
            out += [helper.make_node("Mul", [x, key + "_mask"], [key + "_xin"],
                                     name=key + "_mask_mul"),
                    helper.make_node("Gather", [x, key + "_idx"], [key + "_xout"],
                                     name=key + "_pick", axis=-1)]
            shared[x] = (key + "_xin", key + "_xout", idx)
        x_in, x_out, idx = shared[x]
        w = numpy_helper.to_array(inits[w_name])
        m.graph.initializer.append(numpy_helper.from_array(w[idx], n.name + "_outlier_w"))
        n.input[0] = x_in
        part = n.name + "_outlier_part"
        out += [n, helper.make_node("MatMul", [x_out, n.name + "_outlier_w"], [part],
                                    name=n.name + "_outliers")]
        # The float part joins after the bias Add, so that ORT still fuses MatMul + bias
        # into its int8 kernel (DynamicQuantizeMatMul's bias input).
        users = consumers.get(n.output[0], [])
        bias = users[0] if len(users) == 1 and users[0].op_type == "Add" and any(
            i in inits for i in users[0].input) else None
        joined = bias if bias is not None else n
        y = joined.output[0]
        joined.output[0] = y + "_int8part"
        add = helper.make_node("Add", [y + "_int8part", part], [y], name=n.name + "_outlier_add")
        if bias is None:
            out.append(add)
        else:
            after.setdefault(bias.name, []).append(add)
    del m.graph.node[:]
    m.graph.node.extend(out)
    return m
