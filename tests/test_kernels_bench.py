"""``vectorgate bench --quick`` end to end, and the pieces its figures rest on."""

from __future__ import annotations

import json

import pytest
import torch

from vectorgate import VectorGate
from vectorgate.bench.naive import NaiveVectorGate, naive_gated_residual
from vectorgate.bench.timing import saved_for_backward
from vectorgate.cli import main
from vectorgate.functional import exp_gated_residual


@pytest.fixture(scope="module")
def quick(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("bench") / "bench.json"
    threads = torch.get_num_threads()
    assert main(["bench", "--quick", "--device", "cpu", "--threads", "1", "--out", str(out)]) == 0
    return {**json.loads(out.read_text()), "threads_before": threads, "threads_after": torch.get_num_threads()}


def test_quick_op_rows(quick: dict) -> None:
    rows = quick["op"]["rows"]
    assert {(r["part"], r["impl"]) for r in rows} == {
        (p, i) for p in ("elementwise", "gate") for i in ("naive_eager", "vectorgate")
    }
    for r in rows:
        assert r["fwd_ms"] > 0 and r["fwd_bwd_ms"] > 0 and r["floor_fwd_bwd_ms"] > 0
        assert r["fwd_bwd_vs_floor"] == pytest.approx(r["fwd_bwd_ms"] / r["floor_fwd_bwd_ms"])
    by = {(r["part"], r["impl"]): r for r in rows}
    for part in ("elementwise", "gate"):
        # The naive formula keeps tanh(z), exp(s), exp(-s); the fused op keeps z and, on the
        # CPU, exp(s): its input plus at most one tensor of x's size.
        assert by[part, "naive_eager"]["saved_extra_like_x"] == 3
        assert by[part, "vectorgate"]["saved_extra_like_x"] == 2
        assert by[part, "vectorgate"]["backend"] == "cpu_eager"
        assert by[part, "naive_eager"]["fwd_bwd_vs_naive"] == 1.0


def test_quick_model_rows(quick: dict, capsys) -> None:
    rows = quick["model"]["rows"]
    assert [(r["variant"], r["mode"]) for r in rows] == [
        ("plain", "eager"), ("naive", "eager"), ("vectorgate", "eager")
    ]
    by = {r["variant"]: r for r in rows}
    assert by["plain"]["step_vs_plain"] == 1.0
    # Gates add parameters and saved activations; the fused op saves less than the naive one.
    assert by["naive"]["params_m"] == by["vectorgate"]["params_m"] > by["plain"]["params_m"]
    assert by["vectorgate"]["saved_mib"] < by["naive"]["saved_mib"]
    assert by["plain"]["saved_mib"] < by["vectorgate"]["saved_mib"]
    assert quick["machine"]["device"] == "cpu" and quick["machine"]["torch_threads"] == 1


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--shapes", "4096by768"], "NxD"),
        (["--dtype", "float64"], "--dtype"),
        (["--parts", "gemm"], "--parts"),
        (["--amp", "int8"], "--amp"),
    ],
)
def test_bad_arguments_say_what_was_expected(argv, message, capsys) -> None:
    with pytest.raises(SystemExit) as err:
        main(["bench", "--quick", "--device", "cpu", "--what", "op", *argv])
    assert message in str(err.value) + capsys.readouterr().err


@pytest.mark.parametrize("delta", [False, True])
def test_naive_gate_is_the_same_function(delta: bool) -> None:
    # The naive baseline must compute what vectorgate computes, or the comparison is moot.
    torch.manual_seed(0)
    fused = VectorGate(24, init_curvature=0.4)
    naive = NaiveVectorGate(24, init_curvature=0.4)
    naive.load_state_dict(fused.state_dict())
    x, f_x = torch.randn(2, 5, 24), torch.randn(2, 5, 24)
    fn = "residual_delta" if delta else "residual"
    torch.testing.assert_close(getattr(naive, fn)(x, f_x), getattr(fused, fn)(x, f_x), rtol=1e-6, atol=1e-6)


def test_saved_for_backward_counts_distinct_storages() -> None:
    x, f_x, z = (torch.randn(8, 16, requires_grad=True) for _ in range(3))
    c = torch.randn(16, requires_grad=True)
    naive = saved_for_backward(lambda: naive_gated_residual(x, f_x, z, c), x, (x, f_x, c))
    fused = saved_for_backward(lambda: exp_gated_residual(x, f_x, z, c), x, (x, f_x, c))
    assert (naive.extra_like_x, fused.extra_like_x) == (3, 2)
    # z (an input of the op) and one float32 tensor of x's size, exp(s).
    assert fused.extra_bytes == z.numel() * z.element_size() + x.numel() * 4
    assert naive.total_bytes > fused.total_bytes


def test_cli_restores_process_settings(quick: dict) -> None:
    # The fixture ran the CLI in this process with --threads 1; the count must come back.
    assert quick["threads_after"] == quick["threads_before"]
