"""Every ```python block of README.md (and of the docs' landing page) runs as written.

Each block runs in a fresh namespace, as a reader copying it into a new file would run it,
with its own empty working folder. All blocks share one subprocess (the venv's python), so
torch and transformers are imported once; a failure names the file and the line of the
block, and the traceback points at README lines. ```bash blocks are not run.

The figures of the README's performance section are checked against the benchmark's own
output, ``benchmarks/results/bench-cpu.json`` (written by the command the README quotes).

The blocks use the lab's offline assets (``vectorgate_lab.assets``: the pretrained MiniLM, Rotten
Tomatoes snippets) and train for a few steps at most, so they run on a 2-core CPU without
a network.
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import subprocess
import sys
import textwrap

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
FILES = [ROOT / "README.md", ROOT / "docs" / "index.md"]

_FENCE = re.compile(r"^(?P<indent>[ \t]*)```(?P<lang>[\w+-]*)[^\n]*$")


def python_blocks(path: pathlib.Path) -> list[tuple[int, str]]:
    """``(line of the first code line, code)`` for each ```python block of ``path``."""
    blocks, lines = [], path.read_text().splitlines()
    i = 0
    while i < len(lines):
        m = _FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        start, lang, indent = i + 1, m["lang"], m["indent"]
        i += 1
        while i < len(lines) and lines[i].strip() != "```":
            i += 1
        if lang == "python":
            body = [line[len(indent):] if line.startswith(indent) else line for line in lines[start:i]]
            blocks.append((start + 1, textwrap.dedent("\n".join(body)) + "\n"))
        i += 1
    return blocks


BLOCKS = [(path, line, code) for path in FILES for line, code in python_blocks(path)]
IDS = [f"{path.relative_to(ROOT)}:{line}" for path, line, _ in BLOCKS]

_RUNNER = r'''
import json, os, sys, traceback

blocks = json.load(open(sys.argv[1]))
results = {}
for block in blocks:
    os.chdir(block["cwd"])
    # Pad with blank lines so tracebacks give the line in the Markdown file.
    code = "\n" * (block["line"] - 1) + block["code"]
    try:
        exec(compile(code, block["file"], "exec"), {"__name__": "__main__"})
        results[block["id"]] = None
    except BaseException:  # a block may raise anything, SystemExit included
        results[block["id"]] = traceback.format_exc(limit=-6)
    sys.stdout.flush()
json.dump(results, open(sys.argv[2], "w"))
'''


@pytest.fixture(scope="module")
def block_results(tmp_path_factory) -> dict[str, str | None]:
    work = tmp_path_factory.mktemp("readme")
    spec = []
    for (path, line, code), ident in zip(BLOCKS, IDS, strict=True):
        cwd = work / re.sub(r"\W", "_", ident)
        cwd.mkdir()
        spec.append({"id": ident, "file": str(path), "line": line, "code": code, "cwd": str(cwd)})
    (work / "blocks.json").write_text(json.dumps(spec))
    (work / "runner.py").write_text(_RUNNER)
    env = {**os.environ, "MPLBACKEND": "Agg", "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.run(
        [sys.executable, str(work / "runner.py"), str(work / "blocks.json"), str(work / "results.json")],
        cwd=work, env=env, capture_output=True, text=True, timeout=600,
    )
    if proc.returncode != 0 or not (work / "results.json").exists():
        pytest.fail(f"the block runner itself failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}")
    return json.loads((work / "results.json").read_text())


def test_readme_has_python_blocks():
    assert sum(1 for path, _, _ in BLOCKS if path.name == "README.md") >= 5


@pytest.mark.parametrize(("path", "line", "code"), BLOCKS, ids=IDS)
def test_block_has_no_placeholder(path, line, code):
    # `...` is valid Python (Ellipsis), so a placeholder line would run and teach nothing.
    for offset, text in enumerate(code.splitlines()):
        statement = text.split("#", 1)[0].strip()
        assert statement != "...", f"{path.name}:{line + offset}: placeholder `...` in a python block"


@pytest.mark.parametrize(("path", "line", "code"), BLOCKS, ids=IDS)
def test_block_runs(block_results, path, line, code):
    ident = f"{path.relative_to(ROOT)}:{line}"
    error = block_results[ident]
    assert error is None, f"the python block at {ident} fails as written:\n{error}"


BENCH_JSON = ROOT / "benchmarks" / "results" / "bench-cpu.json"
_PARTS = {"elementwise": "elementwise (given z)", "gate": "gate (GEMM + elementwise)"}


def performance_figures() -> dict:
    """The README's performance figures, as ``vectorgate-lab bench`` wrote them to BENCH_JSON.

    ``rows``: the lines of the op table (default CPU path and opt-in compiled path, against
    the naive eager formula, fp32 and bf16); the other keys: ratios of the BERT-base step.
    """
    bench = json.loads(BENCH_JSON.read_text())
    ratio = {(r["part"], r["n"], r["d"], r["dtype"], r["impl"]): r["fwd_bwd_vs_naive"] for r in bench["op"]["rows"]}
    rows = []
    for part, label in _PARTS.items():
        for n, d in bench["op"]["config"]["shapes"]:
            cells = [
                ratio[(part, n, d, dtype, impl)]
                for impl in ("vectorgate", "vectorgate_cpu_compiled")
                for dtype in ("float32", "bfloat16")
            ]
            a, b, c, e = (f"{x:.2f}x" for x in cells)
            rows.append(f"| {label} | {n}x{d} | **{a}** | **{b}** | {c} | {e} |")
    (base,) = [m for m in bench["models"] if m["size"] == "base"]
    step = {(r["variant"], r["mode"]): r for r in base["rows"]}
    return {
        "rows": rows,
        "base_eager": f"{step['vectorgate', 'eager']['step_vs_plain']:.2f}",
        "base_compiled": f"{step['vectorgate', 'compiled']['step_vs_plain']:.2f}",
        "base_flop": f"{step['vectorgate', 'eager']['flop_vs_plain']:.2f}",
        "r64_eager": f"{step['vectorgate_r64', 'eager']['step_vs_plain']:.2f}",
        "r64_compiled": f"{step['vectorgate_r64', 'compiled']['step_vs_plain']:.2f}",
        "r64_flop": f"{step['vectorgate_r64', 'eager']['flop_vs_plain']:.2f}",
        "stacked_eager": f"{step['vectorgate_stacked', 'eager']['step_vs_plain']:.2f}",
    }


def test_performance_section_quotes_the_benchmark_output():
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Performance"):]
    section = section[: section.index("\n## ", 1)]
    bench = json.loads(BENCH_JSON.read_text())
    # The JSON was written by 0.5's `vectorgate bench`, the same command as the lab's
    # `vectorgate-lab bench` since 0.6 (the README quotes the current name).
    command = bench["command"].replace("/vectorgate bench ", "/vectorgate-lab bench ")
    assert command in section, "the README must quote the command that wrote bench-cpu.json"
    figures = performance_figures()
    missing = [row for row in figures["rows"] if row not in section]
    assert not missing, "op-table rows that differ from bench-cpu.json (expected):\n" + "\n".join(missing)
    text = " ".join(section.split())
    expected = [
        f"{figures['base_eager']}x the plain model's step eager",
        f"{figures['base_compiled']}x under `torch.compile`",
        f"counted FLOP ratio of {figures['base_flop']}x",
        f"(rank 64: {figures['r64_eager']}x / {figures['r64_compiled']}x against {figures['r64_flop']}x)",
        f"({figures['stacked_eager']}x eager)",
    ]
    wrong = [e for e in expected if e not in text]
    assert not wrong, f"BERT-step figures that differ from bench-cpu.json (expected): {wrong}"


_PAIR = re.compile(r"([+-−]?\d+\.\d+)\s+±\s+(\d+\.\d+)")


def _rounds_to(full: str, short: str) -> bool:
    """Whether ``short`` is ``full`` rounded to ``short``'s decimals (either way at a tie)."""
    decimals = len(short.split(".")[1])
    return abs(float(full) - float(short)) <= 0.5 * 10 ** -decimals + 1e-12


def test_every_interval_in_the_readme_comes_from_a_generated_results_page():
    """Each ``mean ± half-width`` the README states is a rounding of one printed by a
    generated results page (docs/results*.md, written by `vectorgate-lab compare` or the skip
    report), so a figure cannot drift from the runs behind it."""
    generated = [(m.group(1).replace("−", "-"), m.group(2))
                 for page in ROOT.glob("docs/results*.md") for m in _PAIR.finditer(page.read_text())]
    # A paired difference may be quoted from the other arm's side (+0.017 for a printed -0.0173).
    generated += [(f"{-float(a):+}", b) for a, b in generated if a[0] in "+-"]
    readme = [(m.group(1).replace("−", "-"), m.group(2)) for m in _PAIR.finditer((ROOT / "README.md").read_text())]
    assert len(readme) >= 10, "the README's results sections are gone?"
    unmatched = [f"{a} ± {b}" for a, b in readme
                 if not any(_rounds_to(ga, a) and _rounds_to(gb, b) for ga, gb in generated)]
    assert not unmatched, f"README intervals found in no generated results page: {unmatched}"


def test_the_rounding_check_tells_a_rounding_from_a_different_number():
    assert _rounds_to("3.4474", "3.45") and _rounds_to("+0.0274", "+0.027") and _rounds_to("3.2055", "3.206")
    assert not _rounds_to("3.4615", "3.45") and not _rounds_to("0.0274", "0.028")
