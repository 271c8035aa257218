"""``edgeopt package DIR``: an artifact, its C++ runner and README in one tarball per target."""

from __future__ import annotations


def cmd_package(args) -> int:
    from edgeopt.core.errors import ConfigError
    from edgeopt.deploy import package

    runners = {}
    for item in args.runner:
        arch, sep, path = item.partition("=")
        if not sep or not path:
            raise ConfigError(f"--runner expects ARCH=PATH, got {item!r}")
        runners[arch] = path
    for path in package(args.artifact, args.out, arches=args.targets, force=args.force,
                        runners=runners):
        print(path)
    return 0
