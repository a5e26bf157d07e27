"""Thin entry point: ``python benchmarks/bench.py [options]`` == ``vectorgate-lab bench [options]``.

The code lives in :mod:`vectorgate_lab.bench` (op level: :mod:`vectorgate_lab.bench.ops`; BERT
step: :mod:`vectorgate_lab.bench.model`), importable from notebooks and scripts alike.
"""

import sys

from vectorgate_lab.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", *sys.argv[1:]]))
