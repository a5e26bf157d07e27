"""The docs site builds in strict mode, and its API reference covers the public modules.

``mkdocs build --strict`` turns every warning into a failure: a broken link or anchor, a
page that is neither in the nav nor listed under ``not_in_nav``, a ``::: module`` block that
griffe cannot collect, a docstring parameter that is not in the signature. The build runs
the way a reader would run it, ``python -m mkdocs build --strict``, into a temporary folder.
"""

from __future__ import annotations

import os
import pathlib
import re
import subprocess
import sys

import pytest
import yaml
from test_docstrings import PUBLIC_MODULES

ROOT = pathlib.Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
API = DOCS / "api"


def _mkdocs_config() -> dict:
    class _Loader(yaml.SafeLoader):
        pass

    # mkdocs.yml may hold python-specific tags (!!python/name:...); none matter here.
    _Loader.add_multi_constructor("tag:yaml.org,2002:python/", lambda loader, suffix, node: None)
    return yaml.load((ROOT / "mkdocs.yml").read_text(), Loader=_Loader)


def _nav_pages(nav) -> list[str]:
    pages = []
    for item in nav:
        value = next(iter(item.values())) if isinstance(item, dict) else item
        if isinstance(value, list):
            pages.extend(_nav_pages(value))
        else:
            pages.append(value)
    return pages


def test_mkdocs_build_strict(tmp_path):
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1", "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--clean",
         "--config-file", str(ROOT / "mkdocs.yml"), "--site-dir", str(tmp_path / "site")],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )
    log = proc.stdout + proc.stderr
    warnings = [line for line in log.splitlines() if re.match(r"\s*(WARNING|ERROR)\b", line)]
    assert proc.returncode == 0 and not warnings, (
        f"mkdocs build --strict failed (exit {proc.returncode}):\n" + ("\n".join(warnings) or log)
    )
    assert (tmp_path / "site" / "api" / "gate" / "index.html").is_file()
    # The API pages are rendered, not left as literal ':::' directives.
    gate_page = (tmp_path / "site" / "api" / "gate" / "index.html").read_text()
    assert 'id="vectorgate.gate.VectorGate"' in gate_page
    assert ":::" not in gate_page


def test_api_pages_cover_the_public_modules():
    rendered = {}
    for page in sorted(API.glob("*.md")):
        for ident in re.findall(r"^:::\s*(\S+)", page.read_text(), flags=re.M):
            rendered[ident] = page.relative_to(DOCS).as_posix()
    missing = sorted(set(PUBLIC_MODULES) - set(rendered))
    assert not missing, f"public modules without an API page (add docs/api/<name>.md): {missing}"
    extra = sorted(set(rendered) - set(PUBLIC_MODULES))
    assert not extra, (
        f"API pages for modules not in test_docstrings.PUBLIC_MODULES (add them there so their "
        f"docstrings are checked): {extra}"
    )
    nav = set(_nav_pages(_mkdocs_config()["nav"]))
    not_in_nav = sorted(set(rendered.values()) - nav)
    assert not not_in_nav, f"API pages missing from the nav of mkdocs.yml: {not_in_nav}"


def test_every_guide_is_in_the_nav():
    # mkdocs itself reports pages left out of the nav only at INFO level; a guide that
    # nobody can reach from the menu is a bug here.
    config = _mkdocs_config()
    nav = set(_nav_pages(config["nav"]))
    not_in_nav = {line.strip() for line in config.get("not_in_nav", "").splitlines() if line.strip()}
    pages = {p.relative_to(DOCS).as_posix() for p in DOCS.rglob("*.md")}
    orphans = sorted(pages - nav - not_in_nav)
    assert not orphans, f"pages neither in the nav nor under not_in_nav in mkdocs.yml: {orphans}"


@pytest.mark.parametrize("page", ["index.md", "api/index.md"])
def test_landing_pages_exist(page):
    assert (DOCS / page).is_file()


def test_reliability_stress_table_is_what_the_show_command_prints():
    # docs/reliability.md quotes the stress results as `benchmarks/stress.py --show` prints them
    # from the committed JSON files; a rerun that changes the JSON must change the page too.
    results = ROOT / "benchmarks" / "results"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "stress.py"), "--show",
         str(results / "stress.json"), str(results / "stress_plain.json")],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = [line for line in proc.stdout.splitlines() if line.startswith("| ") and "---" not in line]
    header = [r for r in rows if r.startswith("| config |")]
    data = [r for r in rows if not r.startswith("| config |")]
    assert header and len(data) >= 10, proc.stdout
    page = (DOCS / "reliability.md").read_text()
    assert header[0] in page
    missing = [r for r in data if r not in page]
    assert not missing, "stress rows in docs/reliability.md that differ from --show:\n" + "\n".join(missing)
