"""Data for models with any inputs: several named tensors of any dtype.

``core.data`` serves single-input image classifiers. This package serves the rest
(token ids + masks, recurrent state, scalars, detectors): arrays keyed by the
model's input names, checked against the model's declared dtypes and shapes
when loaded, so a mistake is one line naming the input rather than an ONNX
Runtime error deep inside an evaluation.

Sources: an ``.npz`` (one array per input name, optional ``y``; or
``NAME_train``/``NAME_test``; ``x`` stands for the only input of a one-input
model) or a folder of ``NAME.npy`` files (optionally in ``train/`` and
``test/``). Axis 0 of an array is its sample axis, whichever axis the model
batches on (``batch_axis``: silero-vad's state ``[2, N, 128]`` is given as
``(samples, 2, 128)``; the pipeline moves the axis). An input without a batch
axis (a 0-d ``sr``, or a fully fixed shape given whole beside batched inputs)
is a *constant*: fed as it is with every batch.

One module a step: ``load`` reads and sorts the arrays, ``check`` checks them against
``specs`` (what the model declares) into ``splits``, and ``feed`` prepares each batch.

Pure numpy: the runtime side uses it without torch.
"""

from edgeopt.core.inputs.feed import prepare
from edgeopt.core.inputs.load import SPLITS, load_inputs
from edgeopt.core.inputs.specs import TensorLike, TensorSpec, batch_axis, data_shape
from edgeopt.core.inputs.splits import InputDataset, InputSplit

__all__ = [
    "SPLITS",
    "InputDataset",
    "InputSplit",
    "TensorLike",
    "TensorSpec",
    "batch_axis",
    "data_shape",
    "load_inputs",
    "prepare",
]
