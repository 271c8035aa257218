"""The size model of TVM artifacts: the bytes of the tensors one library build stores.

A TVM artifact keeps integer weights in params.bin at their container width (int8 for
every width up to 8 bits: TVM has no packed storage, so 4-bit weights cost what 8-bit
ones do) and compiles float tensors into the library as float32 constants (clustered
weights decoded). This counts exactly those tensors, from the same lowering export
uses. The machine code is left out: it depends on the schedules, not on the weights'
precision, and building a library per measured policy would take minutes.
"""

from __future__ import annotations

import torch.fx as fx

from edgeopt.compile.backends.tvm.lower import lower_fake_quant


def artifact_bytes(gm: fx.GraphModule) -> int:
    lowered, _ = lower_fake_quant(gm)
    tensors = [*lowered.parameters(), *lowered.buffers()]
    return sum(t.numel() * t.element_size() for t in tensors)
