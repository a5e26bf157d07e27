"""Thin entry point: ``python benchmarks/bench.py [options]`` == ``vectorgate bench [options]``.

The code lives in :mod:`vectorgate.bench` (op level: :mod:`vectorgate.bench.ops`; BERT
step: :mod:`vectorgate.bench.model`), importable from notebooks and scripts alike.
"""

import sys

from vectorgate.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", *sys.argv[1:]]))
