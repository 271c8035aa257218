"""TVM backend: native shared libraries built by Apache TVM (relax) for a target's CPU or GPU.

Kept empty on purpose: the runtime (runtime.py) must import without torch or the
compiler (export.py), e.g. in an emulated aarch64 Python.
"""
