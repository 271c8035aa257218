"""Quantization configs: what to quantize, to how many bits, calibrated how."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any, ClassVar

from edgeopt.core.config import Config, enum_value
from edgeopt.core.errors import ConfigError
from edgeopt.core.layer_policy import LayerPolicy
from edgeopt.core.step import DataKind, DataNeed, StepConfig


class Observer(str, Enum):
    """How a tensor's quantization range is chosen from its statistics."""

    MINMAX = "minmax"
    PERCENTILE = "percentile"
    MSE = "mse"
    ENTROPY = "entropy"


class Scheme(str, Enum):
    """The grid of integer levels a weight may take."""

    UNIFORM = "uniform"  # evenly spaced integers
    POW2 = "pow2"  # 0 and +-2^k, k in [0, kmax]: multiplication-free (shift/add) weights


@dataclass(frozen=True, kw_only=True)
class QuantSpec(Config):
    """How one tensor (a layer's weights, or an activation) is quantized."""

    bits: int = 8
    symmetric: bool = True
    per_channel: bool = False
    observer: Observer = Observer.MINMAX
    percentile: float = 99.99
    scheme: Scheme = Scheme.UNIFORM

    def __post_init__(self) -> None:
        if not isinstance(self.bits, int) or isinstance(self.bits, bool) or not 2 <= self.bits <= 8:
            raise ConfigError(f"bits must be an integer in 2..8, got {self.bits!r}")
        if isinstance(self.scheme, str) and not isinstance(self.scheme, Scheme):
            object.__setattr__(self, "scheme", enum_value(Scheme, self.scheme, "scheme"))
        if self.scheme is Scheme.POW2:
            # sign + (bits-1)-bit exponent: the largest power must fit the int8
            # container that ONNX Runtime's integer kernels take.
            if self.bits > 4:
                raise ConfigError(f"pow2 weights take 2..4 bits (sign + exponent; 2^kmax must "
                                  f"fit int8), got {self.bits}")
            if not self.symmetric:
                raise ConfigError("pow2 weights are symmetric (sign + exponent); "
                                  "set symmetric: true")
        if not 50.0 < self.percentile <= 100.0:
            raise ConfigError(f"percentile must be in (50, 100], got {self.percentile!r}")
        if isinstance(self.observer, str) and not isinstance(self.observer, Observer):
            object.__setattr__(self, "observer", enum_value(Observer, self.observer, "observer"))

    @property
    def kmax(self) -> int:
        """pow2: the largest exponent. One of the 2^(b-1) exponent codes encodes zero."""
        return 2 ** (self.bits - 1) - 2

    @property
    def qmin(self) -> int:
        if self.scheme is Scheme.POW2:
            return -(2**self.kmax)
        # Symmetric ranges drop -2^(b-1) so that +x and -x both fit (restricted range).
        return -(2 ** (self.bits - 1)) + 1 if self.symmetric else 0

    @property
    def qmax(self) -> int:
        if self.scheme is Scheme.POW2:
            return 2**self.kmax
        return 2 ** (self.bits - 1) - 1 if self.symmetric else 2**self.bits - 1

    def levels(self) -> list[int]:
        """Every integer a quantized value may take, ascending (at most 2^bits of them):
        the codebook a packed artifact indexes into."""
        if self.scheme is Scheme.POW2:
            mags = [2**k for k in range(self.kmax + 1)]
            return [-m for m in reversed(mags)] + [0] + mags
        return list(range(self.qmin, self.qmax + 1))

    @property
    def label(self) -> str:
        return f"{self.bits}pow2" if self.scheme is Scheme.POW2 else str(self.bits)




DEFAULT_WEIGHTS = QuantSpec(bits=8, symmetric=True, per_channel=True, observer=Observer.MINMAX)
DEFAULT_ACTIVATIONS = QuantSpec(
    bits=8, symmetric=False, per_channel=False, observer=Observer.PERCENTILE, percentile=99.999
)

# Per-layer policy: ``weights``/``activations`` (a mapping changes those attributes of
# the global spec), and the short keys that recipes have always used for them.
QUANT_LAYERS_POLICY = LayerPolicy("quantize", fields=("weights", "activations"), aliases={
    "bits": ("weights", "bits"),
    "weight_bits": ("weights", "bits"),
    "act_bits": ("activations", "bits"),
    "per_channel": ("weights", "per_channel"),
    "symmetric": ("weights", "symmetric"),
    "weight_observer": ("weights", "observer"),
    "weight_scheme": ("weights", "scheme"),
    "act_observer": ("activations", "observer"),
})


@dataclass(frozen=True, kw_only=True)
class AdaRoundConfig(Config):
    """Learned rounding (AdaRound, Nagel et al. 2020), layer by layer on calibration data."""

    iters: int = 1000  # optimisation steps per layer
    batch_size: int = 32
    reg_weight: float = 0.01  # lambda of the rounding regulariser
    beta: tuple[float, float] = (20.0, 2.0)  # annealed from the first to the second
    warmup: float = 0.2  # fraction of iterations without the regulariser
    lr: float = 1e-3

    def __post_init__(self) -> None:
        if self.iters < 1:
            raise ConfigError(f"adaround.iters must be >= 1, got {self.iters}")
        if not 0.0 <= self.warmup < 1.0:
            raise ConfigError(f"adaround.warmup must be in [0, 1), got {self.warmup}")


@dataclass(frozen=True, kw_only=True)
class QuantConfig(StepConfig):
    """Post-training quantization of weights and activations.

    ``layers`` overrides the global specs by glob on the layer's qualified name
    (core/layer_policy.py: first match wins, a container's name covers its layers).
    Keys: weights/activations (a mapping of spec attributes), the short keys
    bits/weight_bits, act_bits, per_channel, symmetric, weight_observer,
    weight_scheme, act_observer, and skip (leave the layer in float).
    """

    weights: QuantSpec = DEFAULT_WEIGHTS
    activations: QuantSpec = DEFAULT_ACTIVATIONS
    layers: dict[str, Any] = field(default_factory=dict)  # glob -> {key: value}
    fold_bn: bool = True
    bias_correction: bool = True
    adaround: AdaRoundConfig | None = None  # None: round to nearest
    calib_size: int = 512
    calib_seed: int = 0
    calib_batch_size: int = 64
    histogram_bins: int = 2048

    overridable: ClassVar[tuple[str, ...]] = ("calib_size",)
    policy: ClassVar[LayerPolicy] = QUANT_LAYERS_POLICY

    def data_need(self) -> DataNeed:
        return DataNeed(DataKind.CALIBRATION, size=self.calib_size, seed=self.calib_seed)

    def override(self, option: str, value: Any) -> QuantConfig:
        if option != "calib_size":
            return super().override(option, value)
        return self.replace(calib_size=value)

    def __post_init__(self) -> None:
        if self.calib_size < 1:
            raise ConfigError(f"calib_size must be >= 1, got {self.calib_size}")
        self.policy.check(self)

    def for_layer(self, name: str) -> tuple[QuantSpec, QuantSpec] | None:
        """(weight spec, activation spec) for a layer, or None to keep it float."""
        config = self.policy.resolve(self, name)
        return None if config is None else (config.weights, config.activations)

    def check_patterns(self, names: list[str]) -> None:
        """Warn about patterns that match no layer, listing the layer names."""
        self.policy.warn_unmatched(self, names)

    def precision_label(self, name: str) -> str:
        specs = self.for_layer(name)
        if specs is None:
            return "fp32"
        w, a = specs
        return f"w{w.label}a{a.bits}"


@dataclass(frozen=True, kw_only=True)
class Int8Config(QuantConfig):
    """int8 weights (per-channel, symmetric) and uint8 activations: what ORT runs fastest."""
