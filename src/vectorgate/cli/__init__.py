"""The ``vectorgate`` command. Each subcommand lives in its own module of this package.

A subcommand module exposes ``HELP: str``, ``add_arguments(parser)`` and
``run(args) -> int``; list it in ``SUBCOMMANDS`` below. Modules are imported only when
their subcommand runs, so optional dependencies stay optional.

``compare`` and ``bench`` moved to the repository's lab in 0.6 (``vectorgate-lab``, see
``lab/README.md``): here they only say so and exit with status 2 (:data:`MOVED`).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

# subcommand name -> module path. Keep each subcommand's code in its own module.
SUBCOMMANDS: dict[str, str] = {
    "demo": "vectorgate.cli.demo",
    "inspect": "vectorgate.cli.inspect_cmd",
}

#: Subcommands that left the library in 0.6 -> the command that runs them now.
MOVED: dict[str, str] = {"compare": "vectorgate-lab compare", "bench": "vectorgate-lab bench"}


def _moved(name: str) -> int:
    print(
        f"vectorgate {name} moved to the lab in 0.6: run `{MOVED[name]}` with the same arguments "
        "(install it from the repository with `pip install -e lab` or scripts/bootstrap.sh)",
        file=sys.stderr,
    )
    return 2


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
    for name, new in MOVED.items():
        sp = sub.add_parser(name, help=f"moved to `{new}` (the lab)", add_help=False)
        sp.add_argument("rest", nargs=argparse.REMAINDER)
        sp.set_defaults(_run=lambda args, name=name: _moved(name))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in MOVED:  # before parsing: the lab's options are not known here
        return _moved(argv[0])
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    return int(args._run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
