"""edgeopt: compress, compile and evaluate neural networks for edge devices.

    qmodel = edgeopt.apply(model, edgeopt.Int8Config(), data=calib)   # simulated int8
    artifact = edgeopt.compile(qmodel, target="x86_64", out="out/")    # QDQ ONNX folder
    edgeopt.evaluate(artifact.load(), "fashion-mnist")                # {"top1": ...}
    predictor = edgeopt.runtime.load("out/")                           # .run / .predict
"""

from edgeopt import compile, compress, evaluate, runtime  # noqa: A004  (callable packages)
from edgeopt.compress import apply
from edgeopt.compress.quantize.spec import Int8Config, Observer, QuantConfig, QuantSpec
from edgeopt.version import __version__

__all__ = [
    "Int8Config",
    "Observer",
    "QuantConfig",
    "QuantSpec",
    "__version__",
    "apply",
    "compile",
    "compress",
    "evaluate",
    "runtime",
]
