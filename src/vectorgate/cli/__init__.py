"""The ``vectorgate`` command. Each subcommand lives in its own module of this package.

A subcommand module exposes ``HELP: str``, ``add_arguments(parser)`` and
``run(args) -> int``; list it in ``SUBCOMMANDS`` below. Modules are imported only when
their subcommand runs, so optional dependencies stay optional.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

# subcommand name -> module path. Keep each subcommand's code in its own module.
SUBCOMMANDS: dict[str, str] = {
    "demo": "vectorgate.cli.demo",
    "compare": "vectorgate.cli.compare",
    "inspect": "vectorgate.cli.inspect_cmd",
    "bench": "vectorgate.cli.bench",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vectorgate", description="Per-dimension exponential residual gating: tools."
    )
    from vectorgate import __version__

    parser.add_argument("--version", action="version", version=f"vectorgate {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module_path in SUBCOMMANDS.items():
        module = importlib.import_module(module_path)
        sp = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(sp)
        sp.set_defaults(_run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    return int(args._run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
