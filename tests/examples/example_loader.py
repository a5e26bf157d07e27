"""Import a script from examples/ as a module, so tests can call its ``main(argv)``."""

from __future__ import annotations

import importlib.util
import pathlib
from types import ModuleType

EXAMPLES = pathlib.Path(__file__).resolve().parents[2] / "examples"


def load_example(filename: str) -> ModuleType:
    """The module of ``examples/<filename>``, freshly executed."""
    path = EXAMPLES / filename
    spec = importlib.util.spec_from_file_location(f"example_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
