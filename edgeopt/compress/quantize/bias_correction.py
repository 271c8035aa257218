"""Empirical bias correction (Nagel et al. 2019, "Data-Free Quantization", sec. 4.2).

Quantization shifts the mean of a layer's output; the shift is measured on
calibration data against the float model and subtracted through the bias.
Layers are corrected in execution order so each one sees the already-corrected
layers before it, and the correction absorbs activation error too.
"""

from __future__ import annotations

import torch
import torch.fx as fx
from torch import nn
from tqdm import tqdm


def _channel_mean(y: torch.Tensor) -> torch.Tensor:
    dims = [d for d in range(y.dim()) if d != 1] if y.dim() > 2 else [0]
    return y.mean(dim=dims)


def _output_means(model: nn.Module, names: list[str], batches) -> dict:
    sums: dict[str, torch.Tensor] = {}
    handles = []

    def hook_for(name):
        def hook(_m, _i, out):
            m = _channel_mean(out.detach()) * out.shape[0]
            sums[name] = sums.get(name, 0) + m

        return hook

    for name in names:
        handles.append(model.get_submodule(name).register_forward_hook(hook_for(name)))
    n = 0
    try:
        with torch.no_grad():
            for x in batches:
                n += x.shape[0]
                model(x)
    finally:
        for h in handles:
            h.remove()
    return {k: v / n for k, v in sums.items()}


def correct_bias(
    qmodel: fx.GraphModule, float_model: nn.Module, layers: list[str], batches,
    *, progress: bool = True,
) -> dict[str, float]:
    """Correct the biases of ``layers`` in ``qmodel`` in place.

    One pass: the calibration set runs through the quantized model as a single
    batch, and a hook on each layer (in execution order) measures its output
    mean, moves the bias by the shift and hands the corrected output on, so each
    layer is measured with every earlier correction applied. Returns, per layer,
    the mean absolute shift removed (for the report).
    """
    reference = _output_means(float_model, layers, batches)
    removed: dict[str, float] = {}
    bar = tqdm(total=len(layers), desc="bias correction", disable=not progress, leave=False)

    def hook_for(name):
        def hook(layer, _inputs, out):
            delta = reference[name] - _channel_mean(out.detach())
            if layer.bias is None:
                layer.bias = nn.Parameter(torch.zeros_like(delta))
            layer.bias.add_(delta)
            removed[name] = float(delta.abs().mean())
            bar.update()
            shape = (1, -1) + (1,) * (out.dim() - 2)
            return out + delta.reshape(shape)

        return hook

    handles = [qmodel.get_submodule(n).register_forward_hook(hook_for(n)) for n in layers]
    try:
        with torch.no_grad():
            qmodel(torch.cat(list(batches)))
    finally:
        for h in handles:
            h.remove()
        bar.close()
    return removed
