"""``vectorgate-lab``: bad arguments get an error that says what is wrong."""

from __future__ import annotations

import subprocess
import sys

import pytest

from vectorgate_lab.cli import main


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["compare", "--output-dir", "o", "--seeds", "0"], "--seeds must be at least 1, got 0"),
        (["compare", "--output-dir", "o", "--scale", "-1"], "--scale must be positive, got -1.0"),
        (["compare", "--output-dir", "o", "--tasks", "nosuch"], "unknown task(s) ['nosuch']; available:"),
        (["compare", "--output-dir", "o", "--variants", "vectorgate[rank]"], "expected key=value, got 'rank'"),
        (["bench", "--quick", "--shapes", "12"], "shapes are NxD"),
        (["no-such-command"], "invalid choice: 'no-such-command'"),
    ],
)
def test_bad_cli_arguments(argv, message, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code != 0 and message in capsys.readouterr().err + str(exc.value.code)


def test_compare_with_an_unknown_variant_is_an_error(tmp_path):
    argv = ["compare", "--output-dir", str(tmp_path), "--variants", "nosuch",
            "--tasks", "charlm_shakespeare", "--seeds", "1", "--quick", "--no-progress"]
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code != 0 and "nosuch" in str(exc.value.code)


def test_no_command_prints_the_usage_and_fails():
    assert main([]) == 2


def test_the_module_runs_as_the_console_script():
    out = subprocess.run([sys.executable, "-m", "vectorgate_lab.cli", "--help"], capture_output=True, text=True,
                         check=True)
    assert "compare" in out.stdout and "bench" in out.stdout
