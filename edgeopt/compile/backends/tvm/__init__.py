"""TVM backend: native shared libraries built by Apache TVM (relax) for a target's CPU or GPU.

Declares the backend and nothing more on purpose: the runtime (runtime.py) must import
without torch or the compiler (export.py), e.g. in an emulated aarch64 Python.
"""

from edgeopt.compile.backends.protocol import FolderBackend

# packed_lowbit stays False: TVM runs sub-8-bit weights from int8 containers (size.py).
BACKEND = FolderBackend("tvm", "native libraries built by Apache TVM for the target's CPU "
                        "or GPU", tunable=True, conversions=("fp16",))
