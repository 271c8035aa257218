"""Which targets this machine runs, and the host build that stands in for the others."""

import platform

import pytest

from edgeopt.compile.host import host_isa_target, proxy_target, runs_here
from edgeopt.compile.targets import get_target

pytestmark = pytest.mark.skipif(platform.machine() != "x86_64", reason="an x86_64 host")


def test_the_host_runs_its_own_isa_level_and_below():
    host = host_isa_target()
    assert host in ("x86_64", "x86_64-avx2", "x86_64-avx512")
    assert runs_here(get_target("x86_64")) and runs_here(get_target(host))
    assert set(get_target(host).cpu_flags) <= set(open("/proc/cpuinfo").read().split())


def test_arm_boards_and_gpus_are_proxied_by_portable_x86_builds():
    for name in ("aarch64", "rpi4", "jetson-orin", "cuda"):
        assert not runs_here(get_target(name))
        assert proxy_target(get_target(name)) == "x86_64"  # SSE2: the nearest to 128-bit NEON
    if host_isa_target() != "x86_64-avx512":  # a level above the host's: the host's best
        assert not runs_here(get_target("x86_64-avx512"))
        assert proxy_target(get_target("x86_64-avx512")) == host_isa_target()
