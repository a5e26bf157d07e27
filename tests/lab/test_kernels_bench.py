"""``vectorgate-lab bench --quick`` end to end, and the pieces its figures rest on."""

from __future__ import annotations

import json

import pytest
import torch

from vectorgate import VectorGate
from vectorgate.functional import exp_gated_residual
from vectorgate_lab.bench.naive import NaiveVectorGate, naive_gated_residual
from vectorgate_lab.bench.timing import saved_for_backward
from vectorgate_lab.cli import main


@pytest.fixture(scope="module")
def quick(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("bench") / "bench.json"
    threads = torch.get_num_threads()
    assert main(["bench", "--quick", "--device", "cpu", "--threads", "1", "--out", str(out)]) == 0
    return {**json.loads(out.read_text()), "threads_before": threads, "threads_after": torch.get_num_threads()}


def test_quick_op_rows(quick: dict) -> None:
    rows = quick["op"]["rows"]
    # Both dtypes by default on the CPU, in one run.
    assert {(r["part"], r["impl"], r["dtype"]) for r in rows} == {
        (p, i, dt) for p in ("elementwise", "gate") for i in ("naive_eager", "vectorgate")
        for dt in ("float32", "bfloat16")
    }
    for r in rows:
        assert r["fwd_ms"] > 0 and r["fwd_bwd_ms"] > 0 and r["floor_fwd_bwd_ms"] > 0
        assert r["fwd_bwd_vs_floor"] == pytest.approx(r["fwd_bwd_ms"] / r["floor_fwd_bwd_ms"])
    by = {(r["part"], r["impl"], r["dtype"]): r for r in rows}
    for part in ("elementwise", "gate"):
        for dt in ("float32", "bfloat16"):
            # The naive formula keeps tanh(z), exp(s), exp(-s); the fused op keeps z and, on
            # the CPU, exp(s): its input plus at most one tensor of x's size.
            assert by[part, "naive_eager", dt]["saved_extra_like_x"] == 3
            assert by[part, "vectorgate", dt]["saved_extra_like_x"] == 2
            assert by[part, "vectorgate", dt]["backend"] == "cpu_eager"
            assert by[part, "naive_eager", dt]["fwd_bwd_vs_naive"] == 1.0


def test_quick_model_rows(quick: dict, capsys) -> None:
    (result,) = quick["models"]
    rows = result["rows"]
    assert result["size"] == "tiny"
    assert [(r["variant"], r["mode"]) for r in rows] == [
        ("plain", "eager"), ("naive", "eager"), ("vectorgate", "eager"), ("vectorgate_stacked", "eager"),
        ("vectorgate_r8", "eager"),
    ]
    by = {r["variant"]: r for r in rows}
    assert by["plain"]["step_vs_plain"] == 1.0 and by["plain"]["flop_vs_plain"] == 1.0
    # Gates add parameters and saved activations; the fused op saves less than the naive one.
    assert by["naive"]["params_m"] == by["vectorgate"]["params_m"] > by["vectorgate_r8"]["params_m"]
    assert by["vectorgate_r8"]["params_m"] > by["plain"]["params_m"]
    # Stacking changes how the GEMMs are grouped, not their FLOPs or the parameters.
    assert by["vectorgate_stacked"]["gflop"] == pytest.approx(by["vectorgate"]["gflop"])
    assert by["vectorgate_stacked"]["params_m"] == by["vectorgate"]["params_m"]
    assert by["vectorgate_stacked"]["stacked"] and not by["vectorgate"]["stacked"]
    assert by["vectorgate"]["saved_mib"] < by["naive"]["saved_mib"]
    assert by["plain"]["saved_mib"] < by["vectorgate"]["saved_mib"]
    # FLOPs are counted, not assumed: two d x d GEMMs per gate (x3 for forward+backward).
    assert by["naive"]["gflop"] == by["vectorgate"]["gflop"] > by["vectorgate_r8"]["gflop"] > by["plain"]["gflop"]
    c = result["config"]
    tokens, d = c["batch"] * c["seq"], c["hidden"]
    extra = 2 * c["layers"] * 3 * 2 * tokens * d * d  # 2 gates x (fwd + 2 bwd GEMMs) x 2 flop/MAC
    assert (by["vectorgate"]["gflop"] - by["plain"]["gflop"]) * 1e9 == pytest.approx(extra)
    assert (by["vectorgate_r8"]["gflop"] - by["plain"]["gflop"]) * 1e9 == pytest.approx(extra * 2 * 8 / d)
    for r in rows:
        assert r["peak_gib"] > 0 and r["peak_vs_plain"] > 0
        assert r["step_vs_flop_ratio"] == pytest.approx(r["step_vs_plain"] / r["flop_vs_plain"])
    assert by["vectorgate"]["peak_gib"] > by["plain"]["peak_gib"]
    assert quick["machine"]["device"] == "cpu" and quick["machine"]["torch_threads"] == 1
    assert quick["wall_s"] > 0


def test_quick_minilm_is_the_pretrained_checkpoint(tmp_path) -> None:
    pytest.importorskip("transformers")
    out = tmp_path / "bench.json"
    argv = ["bench", "--quick", "--device", "cpu", "--threads", "1", "--what", "model",
            "--model-size", "minilm", "--rank", "16", "--output", str(out)]
    assert main(argv) == 0
    (result,) = json.loads(out.read_text())["models"]
    assert (result["config"]["layers"], result["config"]["hidden"]) == (6, 384)  # from config.json
    assert [r["variant"] for r in result["rows"]] == ["plain", "vectorgate", "vectorgate_r16"]
    assert 1.0 < result["rows"][2]["flop_vs_plain"] < result["rows"][1]["flop_vs_plain"]


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--shapes", "4096by768"], "NxD"),
        (["--dtype", "float64"], "--dtype"),
        (["--dtype", "float32,int8"], "--dtype"),
        (["--model-size", "huge"], "--model-size"),
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


def test_quick_llama_rows_stack_the_normed_gate(tmp_path) -> None:
    pytest.importorskip("transformers")
    out = tmp_path / "bench.json"
    argv = ["bench", "--quick", "--device", "cpu", "--threads", "1", "--what", "model",
            "--model-size", "llama_tiny", "--output", str(out)]
    assert main(argv) == 0
    (result,) = json.loads(out.read_text())["models"]
    assert result["config"]["arch"] == "llama"
    by = {r["variant"]: r for r in result["rows"]}
    assert list(by) == ["plain", "vectorgate", "vectorgate_normed", "vectorgate_normed_stacked", "vectorgate_r8"]
    assert by["vectorgate_normed_stacked"]["stacked"] and by["vectorgate_normed_stacked"]["normed"]
    assert not by["vectorgate"]["normed"]
    # Reading norm(x) instead of x and stacking change neither FLOPs nor parameters.
    for v in ("vectorgate_normed", "vectorgate_normed_stacked"):
        assert by[v]["gflop"] == pytest.approx(by["vectorgate"]["gflop"])
        assert by[v]["params_m"] == by["vectorgate"]["params_m"]
    assert by["vectorgate"]["gflop"] > by["vectorgate_r8"]["gflop"] > by["plain"]["gflop"]


def test_bench_variant_names() -> None:
    from vectorgate_lab.bench.model import parse_variant

    assert parse_variant("vectorgate_r64_normed_stacked") == ("vectorgate", 64, True, True)
    assert parse_variant("vectorgate_stacked") == ("vectorgate", None, False, True)
    for bad in ("plain_normed", "plain_stacked", "vectorgate_normal"):
        with pytest.raises(ValueError, match="optionally"):
            parse_variant(bad)
