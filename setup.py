"""The full edgeopt wheel leaves out the modules edgeopt-runtime installs (runtime/).

The rest of the configuration is in pyproject.toml; this file only keeps the two
distributions from both writing the same files (docs/deploying.md).
"""

import sys
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

sys.path.insert(0, str(Path(__file__).resolve().parent / "runtime"))
from build_runtime import runtime_files  # noqa: E402

RUNTIME_FILES = set(runtime_files(strict=False))


class BuildPyWithoutRuntime(build_py):
    def find_package_modules(self, package, package_dir):
        modules = super().find_package_modules(package, package_dir)
        return [m for m in modules if Path(m[2]).as_posix() not in RUNTIME_FILES]

    def find_data_files(self, package, src_dir):
        # include_package_data would bring the .py files back as "data".
        files = super().find_data_files(package, src_dir)
        return [f for f in files if Path(f).as_posix() not in RUNTIME_FILES]


setup(cmdclass={"build_py": BuildPyWithoutRuntime})
