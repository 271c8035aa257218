"""AdaRound: learned rounding of weights (Nagel et al. 2020, "Up or Down?").

Rounding each weight to the nearest grid point minimises the error of every
weight alone, not the error of the layer's output. AdaRound instead learns, per
weight, whether to round down or up, by minimising the output error on
calibration data with a soft rounding variable that a regulariser drives to
0 or 1. Layers are done one at a time in graph order; each layer sees the
inputs the partially quantized model gives it (earlier layers already rounded,
activation quantizers on) and is fitted to the float model's output, so it
also absorbs the error accumulated before it ("asymmetric reconstruction").

The result is written back as float weights lying exactly on the layer's grid,
so the round-to-nearest fake-quant, ``int_weight()`` and the exporter
reproduce the learned rounding without knowing about it.
"""

from __future__ import annotations

import logging

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from edgeopt.compress.quantize.fake_quant import QUANT_LAYERS, QuantConv2d
from edgeopt.compress.quantize.placement import FUSED_ACTIVATIONS
from edgeopt.compress.quantize.spec import AdaRoundConfig, Scheme
from edgeopt.core.graph import leaf_modules

log = logging.getLogger(__name__)

# Rectified sigmoid stretch: h reaches exactly 0 and 1 for finite V, so the
# regulariser can settle every weight on a grid point.
ZETA, GAMMA = 1.1, -0.1


def rectified_sigmoid(v: torch.Tensor) -> torch.Tensor:
    return torch.clamp(torch.sigmoid(v) * (ZETA - GAMMA) + GAMMA, 0.0, 1.0)


def _inverse_rectified_sigmoid(h: torch.Tensor) -> torch.Tensor:
    p = ((h - GAMMA) / (ZETA - GAMMA)).clamp(1e-6, 1 - 1e-6)
    return torch.log(p / (1 - p))


class _Grid:
    """A layer's weights between their two neighbouring grid points.

    ``h`` in [0, 1] moves each weight from its lower neighbour (h = 0) to its
    upper one (h = 1); h >= 0.5 rounds up. Uniform grids: floor/ceil of W/s,
    interpolated linearly. Power-of-two grids: the neighbouring powers of
    |W|/s, sign kept, interpolated in the log domain (lower * 2^h), so that
    h = 0.5 is the geometric midpoint where ``ops.pow2_round`` switches; below
    1 the neighbours are 0 and 1 and the switch is at 0.5, linear again.
    """

    def __init__(self, layer: nn.Module) -> None:
        spec = layer.w_spec
        w = layer.weight.detach()
        shape = (-1,) + (1,) * (w.dim() - 1)
        self.scale = layer.w_scale.reshape(shape) if layer.w_scale.numel() > 1 else layer.w_scale
        zp = layer.w_zero_point
        self.zp = (zp.reshape(shape) if zp.numel() > 1 else zp).to(w.dtype)
        self.spec = spec
        q = w / self.scale
        self.pow2 = spec.scheme is Scheme.POW2
        if self.pow2:
            top = 2.0**spec.kmax
            mag = q.abs()
            below_one = mag < 1.0
            lower = torch.exp2(torch.floor(torch.log2(mag.clamp(min=1.0)))).clamp(max=top)
            lower = torch.where(below_one, torch.zeros_like(mag), lower)
            # Beyond the top power both neighbours are the top: nothing to choose.
            self.gap = torch.where(below_one, torch.ones_like(mag), lower)
            self.gap = torch.where(lower >= top, torch.zeros_like(mag), self.gap)
            self.log_domain = ~below_one
            self.sign = torch.sign(q)
            frac = torch.where(below_one, mag, torch.log2(mag.clamp(min=1.0) / lower.clamp(min=1.0)))
        else:
            lower = torch.floor(q)
            self.gap = torch.ones_like(q)
            frac = q - lower
        self.lower = lower
        # h = fraction: the relaxed weight starts as the float weight itself.
        self.init_h = frac.clamp(0.0, 1.0)

    def weight(self, h: torch.Tensor) -> torch.Tensor:
        """The (relaxed, for h in (0, 1)) weight in float units; on the grid for h in {0, 1}."""
        if self.pow2:
            step = torch.where(self.log_domain, torch.exp2(h) - 1, h)
            return (self.sign * (self.lower + self.gap * step)) * self.scale
        level = self.lower + h * self.gap
        return (torch.clamp(level + self.zp, self.spec.qmin, self.spec.qmax) - self.zp) * self.scale


def _layer_fn(layer: nn.Module):
    bias = None if layer.bias is None else layer.bias.detach()
    if isinstance(layer, QuantConv2d):
        return lambda x, w: layer._conv_forward(x, w, bias)
    return lambda x, w: F.linear(x, w, bias)


def _following_activation(gm: fx.GraphModule, name: str):
    """The ReLU/ReLU6 that alone consumes the layer's output, as a function, else identity.

    Matching the output after that activation (the paper's f_a(Wx)) ignores
    errors on outputs the activation zeroes anyway, which leaves the rounding
    free to spend its accuracy where the next layer can see it.
    """
    node = next(n for n in gm.graph.nodes if n.op == "call_module" and n.target == name)
    users = list(node.users)
    if len(users) == 1 and users[0].op == "call_function" and users[0].target in FUSED_ACTIVATIONS:
        act = users[0]
        return lambda y: act.target(y, *act.args[1:], **act.kwargs)
    return lambda y: y


class _Stop(Exception):
    pass


def _capture(model: nn.Module, name: str, batches, *, output: bool) -> torch.Tensor:
    """The input (or output) of ``model``'s submodule ``name`` on every batch.

    The forward pass is cut short at that layer: the rest of the model is not needed.
    """
    got: list[torch.Tensor] = []

    def hook(_m, inputs, out):
        got.append((out if output else inputs[0]).detach())
        raise _Stop

    handle = model.get_submodule(name).register_forward_hook(hook)
    try:
        with torch.no_grad():
            for x in batches:
                try:
                    model(x)
                except _Stop:
                    pass
    finally:
        handle.remove()
    return torch.cat(got)


def _mse(fn, act, x: torch.Tensor, target: torch.Tensor, w: torch.Tensor, chunk: int = 128):
    total = 0.0
    with torch.no_grad():
        for i in range(0, x.shape[0], chunk):
            total += float((act(fn(x[i:i + chunk], w)) - target[i:i + chunk]).pow(2).sum())
    return total / target.numel()


def _optimise(grid: _Grid, fn, act, x, target, config: AdaRoundConfig, bar) -> torch.Tensor:
    """Learn the rounding; returns h as 0/1 per weight."""
    v = nn.Parameter(_inverse_rectified_sigmoid(grid.init_h))
    opt = torch.optim.Adam([v], lr=config.lr)
    gen = torch.Generator().manual_seed(0)
    warm = int(config.warmup * config.iters)
    b0, b1 = config.beta
    n = x.shape[0]
    with torch.enable_grad():
        for it in range(config.iters):
            idx = torch.randint(n, (min(config.batch_size, n),), generator=gen)
            h = rectified_sigmoid(v)
            y = act(fn(x[idx], grid.weight(h)))
            # Squared error summed over output channels, averaged over samples and
            # positions: the normalisation the default lambda = 0.01 goes with in the
            # reference implementations (BRECQ, AIMET). A plain mean would also divide
            # by the channel count and tilt the balance toward the regulariser, which
            # only pulls each weight to whichever side it already leans.
            t = target[idx]
            loss = F.mse_loss(y, t, reduction="sum") * (t.shape[1] / t.numel())
            if it >= warm:
                done = (it - warm) / max(1, config.iters - warm)
                beta = b0 + (b1 - b0) * done
                reg = (1 - (2 * h - 1).abs().pow(beta)).sum()
                loss = loss + config.reg_weight * reg
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            bar.update()
    return (rectified_sigmoid(v.detach()) >= 0.5).to(grid.init_h.dtype)


def adaround(
    gm: fx.GraphModule, float_model: nn.Module, batches, config: AdaRoundConfig,
    *, progress: bool = True,
) -> dict[str, dict[str, float]]:
    """Learn the rounding of every quantized layer of ``gm`` in place.

    ``gm`` must be calibrated (activation quantizers in QUANT mode); ``float_model``
    has the same qualified layer names. Returns, per layer, the MSE of its output
    (after its fused ReLU, if any) against the float model's on the calibration
    set, with round-to-nearest and with the learned rounding. A layer
    whose learned rounding does worse than nearest (possible with very few
    iterations) keeps round-to-nearest.
    """
    report: dict[str, dict[str, float]] = {}
    for name, layer in leaf_modules(gm, QUANT_LAYERS):
        if not layer.quant_enabled:
            continue
        act = _following_activation(gm, name)
        x = _capture(gm, name, batches, output=False)
        with torch.no_grad():
            target = act(_capture(float_model, name, batches, output=True))
        fn = _layer_fn(layer)
        grid = _Grid(layer)
        nearest = layer.quantized_weight().detach()
        bar = tqdm(total=config.iters, desc=f"adaround {name}", disable=not progress,
                   leave=False)
        try:
            h = _optimise(grid, fn, act, x, target, config, bar)
        finally:
            bar.close()
        learned = grid.weight(h)
        mse_nearest = _mse(fn, act, x, target, nearest)
        mse_learned = _mse(fn, act, x, target, learned)
        kept = "adaround"
        if not mse_learned <= mse_nearest:
            log.info("adaround %s: learned rounding (MSE %.3g) is worse than nearest (%.3g); "
                     "keeping nearest", name, mse_learned, mse_nearest)
            learned, kept = nearest, "nearest"
        with torch.no_grad():
            layer.weight.copy_(learned)
            # The exporter and int_weight() round to nearest: they reproduce the learned
            # rounding only if the weight is already a grid point.
            if not torch.equal(layer.quantized_weight(), layer.weight):
                raise RuntimeError(f"adaround {name}: rounded weights are off the grid")
        report[name] = {
            "mse_nearest": mse_nearest,
            "mse_adaround": mse_learned,
            "kept": kept,
            "changed": float((learned != nearest).float().mean()),  # share of weights
        }
    return report
