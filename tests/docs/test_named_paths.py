"""Every test file, script and example the README and the docs name exists where they say."""

from __future__ import annotations

import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
PATH = re.compile(r"\b((?:tests|benchmarks|examples|scripts)/[A-Za-z0-9_./-]+\.(?:py|sh))\b")


def _named() -> list[tuple[str, str]]:
    return sorted({(doc.name, m.group(1)) for doc in DOCS for m in PATH.finditer(doc.read_text())})


def test_the_docs_name_some_paths():
    assert len(_named()) > 10


@pytest.mark.parametrize(("doc", "path"), _named(), ids=lambda v: str(v))
def test_a_named_path_exists(doc, path):
    assert (ROOT / path).is_file(), f"{doc} names {path}, which does not exist"
