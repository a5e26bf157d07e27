"""The ``vectorgate-lab`` command: ``compare`` and ``bench``.

Each subcommand module (:mod:`.compare`, :mod:`.bench`) exposes ``HELP``,
``add_arguments(parser)`` and ``run(args) -> int`` and imports its heavy dependencies only
when it runs.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from vectorgate_lab.cli import bench, compare

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``vectorgate-lab COMMAND [options]``; returns the exit status."""
    from vectorgate import __version__

    parser = argparse.ArgumentParser(
        prog="vectorgate-lab", description="vectorgate's lab: comparisons and benchmarks."
    )
    parser.add_argument("--version", action="version", version=f"vectorgate-lab (vectorgate {__version__})")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module in (("compare", compare), ("bench", bench)):
        command = commands.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(command)
        command.set_defaults(_run=module.run)
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    return int(args._run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
