"""The sandbox root every fuzz case of a module runs under."""

import pytest

from edgeopt.fuzz import warm_up


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    warm_up()  # the imports that write to TMPDIR once, before the first sandbox watches it
    return tmp_path_factory.mktemp("fuzz")
