"""Put an artifact on a device: the C++ runner (deploy/cpp) built per architecture, run
here or under qemu, and ``edgeopt package`` tarballs (artifact + runner + library + README).

Its own layer above compile and emulate (docs/deploy.md): it ships artifacts, never
builds or changes them.
"""

from edgeopt.deploy.cpp import (
    ARCHES,
    DeployError,
    build_runner,
    ort_library,
    run_runner,
    source_dir,
    tvm_libraries,
)
from edgeopt.deploy.package import package

__all__ = ["ARCHES", "DeployError", "build_runner", "ort_library", "package", "run_runner",
           "source_dir",
           "tvm_libraries"]
