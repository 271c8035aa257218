"""The ONNX-graph int8 quantizer's config: which ops it may quantize, how it calibrates,
and the bounds of its accuracy and hardware searches (``onnx_ptq.quantize_graph``)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from edgeopt.core.config import Config, enum_field
from edgeopt.core.errors import ConfigError

# Ops whose weights ORT stores as int8 (the size win) and runs as QLinear/Integer kernels.
WEIGHT_OPS = ("Conv", "ConvTranspose", "MatMul", "Gemm")
# Activation-only ops with an ORT int8 kernel or a QDQ rule that keeps tensors int8
# between integer kernels; onnx_hw drops those that do not pay on this CPU.
ACTIVATION_OPS = ("Add", "Mul", "Sigmoid", "Concat", "MaxPool", "GlobalAveragePool",
                  "AveragePool", "Resize", "Split", "Softmax", "Relu", "Clip", "LeakyRelu",
                  "Transpose", "Reshape", "Flatten", "Squeeze", "Unsqueeze")


class CalibMethod(str, Enum):
    MINMAX = "minmax"
    PERCENTILE = "percentile"
    ENTROPY = "entropy"


class ActType(str, Enum):
    """Activation integer type. uint8 is what ORT's x86 QLinearConv kernels take."""

    UINT8 = "uint8"
    INT8 = "int8"


@dataclass(frozen=True, kw_only=True)
class OnnxQuantConfig(Config):
    """int8 QDQ quantization of an ONNX graph: calibration, which ops, and the searches."""

    calibration: CalibMethod = CalibMethod.MINMAX
    percentile: float = 99.999  # for calibration: percentile
    activations: ActType = ActType.UINT8
    per_channel: bool = True
    op_types: tuple[str, ...] = WEIGHT_OPS + ACTIVATION_OPS
    exclude: tuple[str, ...] = ()  # node-name globs kept float
    # Time int8 against float per op type and for the whole graph, and keep what pays;
    # False makes the choice of quantized nodes independent of timing.
    hardware_aware: bool = True
    accuracy_aware: bool = True  # keep output-feeding layers float when that buys SQNR
    head_levels: int = 2  # how many weight layers back from the outputs to try in float
    min_gain_db: float = 1.0  # SQNR gain that justifies keeping a head level float
    # Head levels are tried in float only while the output SQNR is below this: at 30 dB a
    # classifier's argmax already agrees ~99.9%, and the head often holds the most weights.
    target_db: float = 30.0
    eval_samples: int = 8  # calibration samples used for SQNR
    # Below target_db after the full int8 graph: score each node quantized alone and keep
    # the worst float, one at a time, until the target is met (within this many seconds).
    search_budget_s: float = 60.0
    # Weight ops left float (for speed or accuracy) and LSTM/GRU weights, which ORT's
    # static QDQ does not quantize, store int8 weights (Cast * per-channel scale, folded
    # back to float when the runtime loads the model); the compute stays float.
    weight_only_fallback: bool = True

    def __post_init__(self) -> None:
        enum_field(self, "calibration", CalibMethod, "calibration")
        enum_field(self, "activations", ActType, "activations")
        if not 50.0 < self.percentile <= 100.0:
            raise ConfigError(f"percentile must be in (50, 100], got {self.percentile!r}")
        if self.head_levels < 0:
            raise ConfigError(f"head_levels must be >= 0, got {self.head_levels}")
        if self.search_budget_s < 0:
            raise ConfigError(f"search_budget_s must be >= 0, got {self.search_budget_s}")
        if self.eval_samples < 1:
            raise ConfigError(f"eval_samples must be >= 1, got {self.eval_samples}")
        unknown = [t for t in self.op_types if t not in WEIGHT_OPS + ACTIVATION_OPS]
        if unknown:
            raise ConfigError(f"op_types: {unknown[0]!r} has no int8 kernel in onnxruntime "
                              f"(valid: {', '.join(WEIGHT_OPS + ACTIVATION_OPS)})")
