"""GateRecorder: statistics against a direct computation, masks, hooks, JSON, summary."""

from __future__ import annotations

import copy
import json
import math

import pytest
import torch
from torch import nn

from vectorgate import GatedResidual, VectorGate
from vectorgate.base import ResidualGate
from vectorgate.recorder import HIST_BINS, GateRecorder, short_names

DIM = 8


def _stack(depth: int = 3, dtype: torch.dtype = torch.float64, **gate_kwargs) -> nn.Sequential:
    """A stack of gated MLP blocks with non-trivial, per-dimension curvature."""
    torch.manual_seed(0)
    gate_kwargs.setdefault("init", "random")
    gate_kwargs.setdefault("init_curvature", 0.5)
    model = nn.Sequential(*[
        GatedResidual(nn.Sequential(nn.LayerNorm(DIM), nn.Linear(DIM, DIM)), DIM, **gate_kwargs)
        for _ in range(depth)
    ]).to(dtype)
    with torch.no_grad():
        for block in model:
            block.gate.curvature.mul_(torch.linspace(0.2, 3.0, block.gate.curvature.numel()))
            for p in block.gate.proj.parameters():  # push some of tanh(g(x)) into saturation
                p.mul_(3)
    return model


def _gate_inputs(model: nn.Module) -> tuple[dict[str, list[torch.Tensor]], list]:
    """Store every input each gate's projection sees (the test's own "stored activations")."""
    seen: dict[str, list[torch.Tensor]] = {}
    handles = []
    for name, m in model.named_modules():
        if isinstance(m, VectorGate):
            seen[name] = []
            handles.append(m.proj.register_forward_pre_hook(
                lambda mod, args, name=name: seen[name].append(args[0].detach().clone())
            ))
    return seen, handles


def _batches(dtype: torch.dtype = torch.float64) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Three batches of different sequence lengths with right padding."""
    g = torch.Generator().manual_seed(1)
    out = []
    for batch, seq in ((2, 5), (3, 9), (1, 4)):
        x = torch.randn(batch, seq, DIM, generator=g, dtype=dtype)
        lengths = torch.randint(1, seq + 1, (batch,), generator=g)
        mask = (torch.arange(seq)[None, :] < lengths[:, None]).long()
        out.append((x, mask))
    return out


@pytest.mark.parametrize(
    "gate_kwargs",
    [{}, {"rank": 3}, {"curvature": "scalar"}, {"max_curvature": 2.0}],
    ids=["full", "lowrank", "scalar", "capped"],
)
def test_stats_equal_direct_computation(gate_kwargs):
    model = _stack(**gate_kwargs)
    seen, handles = _gate_inputs(model)
    rec = GateRecorder(model)
    masks = []
    with rec:
        for x, mask in _batches():
            with rec.masked(mask):
                model(x)
            masks.append(mask)
    for h in handles:
        h.remove()
    stats = rec.stats()
    assert list(stats) == list(seen)
    for name, inputs in seen.items():
        gate = model.get_submodule(name).requires_grad_(False)
        s = torch.cat([gate(x).s[m.bool()] for x, m in zip(inputs, masks, strict=True)])
        t = torch.tanh(gate.pre_activation(torch.cat([x[m.bool()] for x, m in zip(inputs, masks, strict=True)])))
        st = stats[name]
        assert st.calls == len(masks)
        assert st.count.tolist() == [float(s.shape[0])] * DIM
        torch.testing.assert_close(st.mean, s.mean(0))
        torch.testing.assert_close(st.std, s.std(0, correction=0))
        torch.testing.assert_close(st.min, s.amin(0))
        torch.testing.assert_close(st.max, s.amax(0))
        torch.testing.assert_close(st.mean_alpha, s.exp().mean(0))
        torch.testing.assert_close(st.mean_beta, (-s).exp().mean(0))
        torch.testing.assert_close(st.saturated, (t.abs() >= rec.threshold).double().mean(0))
        torch.testing.assert_close(st.curvature, gate.effective_curvature().detach().expand(DIM))
        o = st.overall()
        assert o["mean_s"] == pytest.approx(float(s.mean()), abs=1e-10)
        assert o["std_s"] == pytest.approx(float(s.std(correction=0)), abs=1e-10)
        assert o["saturated"] == pytest.approx(float((t.abs() >= rec.threshold).double().mean()))
        assert st.hist_counts.sum() == s.numel()
        assert 0 < o["saturated"] < 1  # the comparison above is not vacuous


def test_masked_positions_do_not_count():
    model = _stack()
    x, mask = torch.randn(2, 6, DIM, dtype=torch.float64), torch.ones(2, 6, dtype=torch.bool)
    mask[0, 4:] = False
    mask[1, 2:] = False
    garbage = x.clone()
    garbage[~mask] = 1e3  # would move every statistic if it were counted
    masked, only_real = GateRecorder(model), GateRecorder(model)
    with masked, masked.masked(mask):
        model(garbage)
    with only_real:
        model(x[0, :4])
        model(x[1, :2])
    a, b = masked.stats(), only_real.stats()
    for name in a:
        assert a[name].tokens == 6
        for field in ("count", "mean", "std", "min", "max", "mean_alpha", "mean_beta", "saturated"):
            torch.testing.assert_close(getattr(a[name], field), getattr(b[name], field))
        assert torch.equal(a[name].hist_counts, b[name].hist_counts)


def test_mask_cleared_after_masked_block_and_set_mask():
    model = _stack(depth=1)
    rec = GateRecorder(model)
    x = torch.randn(2, 3, DIM, dtype=torch.float64)
    with rec:
        with rec.masked(torch.tensor([[1, 1, 0], [1, 0, 0]])):
            model(x)
        model(x)  # no mask any more: all 6 positions count
        rec.set_mask(torch.tensor([[0, 0, 0], [0, 0, 1]]))
        model(x)
    (st,) = rec.stats().values()
    assert st.tokens == 3 + 6 + 1


def test_flattened_tokens_accept_batch_seq_mask():
    gate = VectorGate(DIM, init="random", init_curvature=1.0, dtype=torch.float64)
    rec = GateRecorder(gate)
    with rec, rec.masked(torch.tensor([[1, 1, 0], [1, 0, 0]])):
        gate(torch.randn(6, DIM, dtype=torch.float64))  # (batch*seq, d)
    assert rec.stats()[type(gate).__name__].tokens == 3


def test_mask_of_wrong_shape_raises_and_removes_hooks():
    model = _stack(depth=2)
    rec = GateRecorder(model)
    with pytest.raises(ValueError, match=r"broadcastable to \(2, 5\)"), rec, rec.masked(torch.ones(3, 4)):
        model(torch.randn(2, 5, DIM, dtype=torch.float64))
    assert not rec.recording
    assert all(not m.gate.proj._forward_hooks for m in model)


def test_hooks_only_while_recording_and_removed_after_error():
    model = _stack(depth=2)
    projs = [m.gate.proj for m in model]
    rec = GateRecorder(model)
    assert all(not p._forward_hooks for p in projs)  # nothing registered until start
    with pytest.raises(RuntimeError, match="boom"), rec:
        assert all(len(p._forward_hooks) == 1 for p in projs)
        model(torch.randn(1, 2, DIM, dtype=torch.float64))
        raise RuntimeError("boom")
    assert all(not p._forward_hooks for p in projs)
    assert rec.stats()["0.gate"].calls == 1
    model(torch.randn(1, 2, DIM, dtype=torch.float64))  # not recording: nothing counted
    assert rec.stats()["0.gate"].calls == 1


def test_start_stop_reset():
    model = _stack(depth=1)
    rec = GateRecorder(model).start()
    with pytest.raises(RuntimeError, match="already recording"):
        rec.start()
    model(torch.randn(4, DIM, dtype=torch.float64))
    rec.stop()
    rec.stop()  # idempotent
    assert rec.stats()["0.gate"].tokens == 4
    rec.reset()
    st = rec.stats()["0.gate"]
    assert st.calls == 0 and st.tokens == 0 and math.isnan(st.overall()["mean_s"])


def test_histogram_range_grows_with_curvature_exactly():
    gate = VectorGate(DIM, init="random", init_curvature=0.1, dtype=torch.float64)
    rec = GateRecorder(gate)
    xs = [torch.randn(50, DIM, dtype=torch.float64) * 3 for _ in range(2)]
    ss = []
    with rec:
        ss.append(gate(xs[0]).s)
        with torch.no_grad():
            gate.curvature.fill_(2.0)  # 20x the range: the histogram triples its bound 3 times
        ss.append(gate(xs[1]).s)
    st = rec.stats()["VectorGate"]
    assert st.hist_bound == pytest.approx(0.1 * 27)
    edges = st.hist_edges().double()
    expected = torch.histogram(torch.cat(ss).flatten(), bins=edges).hist
    # Merged bins are unions of old ones, so only values on a bin edge may differ.
    assert (st.hist_counts - expected).abs().sum() <= 2
    assert st.hist_counts.sum() == 100 * DIM


def test_identity_gate_records_zero_s():
    model = _stack(depth=2, init="random", init_curvature=0.0)
    with torch.no_grad():
        for block in model:
            block.gate.curvature.zero_()
    rec = GateRecorder(model)
    with rec:
        model(torch.randn(3, 4, DIM, dtype=torch.float64))
    for st in rec.stats().values():
        assert torch.equal(st.mean, torch.zeros(DIM)) and torch.equal(st.std, torch.zeros(DIM))
        assert torch.equal(st.mean_alpha, torch.ones(DIM, dtype=torch.float64))
        assert st.hist_counts[HIST_BINS // 2] == 12 * DIM  # all in the centre bin


def test_nonfinite_values_are_left_out_and_reported():
    model = _stack(depth=1)
    x = torch.randn(2, 3, DIM, dtype=torch.float64)
    x[1, 2, 0] = float("nan")  # one token: its whole projection row turns NaN
    rec = GateRecorder(model)
    with rec:
        model(x)
    st = rec.stats()["0.gate"]
    assert st.nonfinite == DIM
    assert st.count.tolist() == [5.0] * DIM
    assert torch.isfinite(st.mean).all()
    assert "NON-FINITE" in rec.summary()


def test_token_capture_keeps_last_call_per_gate():
    model = _stack(depth=2)
    rec = GateRecorder(model)
    x = torch.randn(1, 7, DIM, dtype=torch.float64)
    with rec:
        model(torch.randn(2, 3, DIM, dtype=torch.float64))  # not captured
        with rec.capture_tokens():
            model(x)
    tokens = rec.token_values()
    assert list(tokens) == ["0.gate", "1.gate"]
    torch.testing.assert_close(tokens["0.gate"], model[0].gate(x).s.float())
    assert tokens["1.gate"].shape == (1, 7, DIM)


def test_to_json_is_strict_json_with_per_dim_lists(tmp_path):
    model = nn.Sequential(_stack(depth=2), GatedResidual(nn.Identity(), DIM).double())
    rec = GateRecorder(model)
    with rec:
        model[0](torch.randn(2, 3, DIM, dtype=torch.float64))  # the last gate is never called
    path = tmp_path / "stats.json"
    rec.to_json(path)
    data = json.loads(path.read_text(), parse_constant=lambda c: pytest.fail(f"non-JSON {c}"))
    assert data["threshold"] == rec.threshold
    assert [g["name"] for g in data["gates"]] == ["0.0.gate", "0.1.gate", "1.gate"]
    first, unused = data["gates"][0], data["gates"][2]
    assert first["tokens"] == 6 and len(first["per_dim"]["mean_s"]) == DIM
    assert sum(first["histogram"]["counts"]) == 6 * DIM
    assert unused["calls"] == 0 and unused["per_dim"]["mean_s"] == [None] * DIM
    assert rec.unobserved() == ["1.gate"]
    assert "NOT OBSERVED" in rec.summary() and "1.gate" in rec.summary()


def test_summary_has_one_row_per_gate():
    model = _stack(depth=3)
    rec = GateRecorder(model)
    with rec:
        model(torch.randn(2, 5, DIM, dtype=torch.float64))
    lines = rec.summary().splitlines()
    assert lines[0].split()[:3] == ["gate", "calls", "tokens"]
    rows = [ln.split() for ln in lines[2:5]]
    assert [r[0] for r in rows] == ["0", "1", "2"]
    assert all(r[1] == "1" and r[2] == "10" for r in rows)


def test_recording_works_under_autocast_and_float32():
    model = _stack(depth=2, dtype=torch.float32)
    rec = GateRecorder(model)
    with rec, torch.autocast("cpu", dtype=torch.bfloat16):
        model(torch.randn(2, 4, DIM))
    for st in rec.stats().values():
        assert st.tokens == 8 and torch.isfinite(st.std).all()
        assert (st.max <= st.curvature.abs() + 1e-6).all()


class _OtherVariant(ResidualGate):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim

    def residual(self, x, f_x):
        return x + f_x


def test_other_variants_are_skipped_with_a_warning():
    model = nn.ModuleDict({"a": VectorGate(DIM), "b": _OtherVariant(DIM)})
    rec = GateRecorder(model)
    assert list(rec.gates) == ["a"] and rec.skipped == ["b"]
    with pytest.warns(UserWarning, match="not recording 1 other residual variant"), rec:
        pass


@pytest.mark.parametrize(
    "model, error",
    [
        (nn.Linear(4, 4), ValueError),
        (nn.ModuleList([_OtherVariant(4)]), ValueError),
        ("not a module", TypeError),
    ],
)
def test_bad_models_raise(model, error):
    with pytest.raises(error, match=r"no VectorGate|torch\.nn\.Module"):
        GateRecorder(model)


@pytest.mark.parametrize("threshold", [0.0, 1.5, -0.1])
def test_bad_threshold_raises(threshold):
    with pytest.raises(ValueError, match=r"threshold must be in \(0, 1\]"):
        GateRecorder(VectorGate(DIM), threshold=threshold)


@pytest.mark.parametrize("mask", [[1, 0], torch.tensor([1j, 0j])])
def test_bad_mask_type_raises(mask):
    rec = GateRecorder(VectorGate(DIM))
    with pytest.raises(TypeError, match="mask must be"):
        rec.set_mask(mask)


@pytest.mark.parametrize(
    "names, expected",
    [
        (["enc.layer.0.attn.gate", "enc.layer.0.ffn.gate", "enc.layer.1.attn.gate"],
         ["0.attn", "0.ffn", "1.attn"]),
        (["b.layer.0.attention.output.gate", "b.layer.0.output.gate", "b.layer.1.output.gate"],
         ["0.attention.output", "0.output", "1.output"]),
        (["0.gate", "1.gate"], ["0", "1"]),
        (["a.b.gate"], ["b.gate"]),
        (["x", "y.z"], ["x", "y.z"]),
    ],
)
def test_short_names(names, expected):
    assert short_names(names) == expected


@pytest.mark.parametrize(
    "device",
    ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA"))],
)
def test_state_stays_on_the_gates_device(device):
    cpu_model = _stack(depth=2, dtype=torch.float32)
    model = copy.deepcopy(cpu_model).to(device)
    x, mask = torch.randn(2, 5, DIM), torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    rec, reference = GateRecorder(model), GateRecorder(cpu_model)
    with rec, rec.masked(mask.to(device)):
        model(x.to(device))
    with reference, reference.masked(mask):
        cpu_model(x)
    assert all(acc.state["mean"].device.type == device for acc in rec._acc.values())
    expected = reference.stats()
    for name, st in rec.stats().items():
        assert st.mean.device.type == "cpu" and st.tokens == 8
        torch.testing.assert_close(st.mean, expected[name].mean, atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(st.std, expected[name].std, atol=1e-5, rtol=1e-4)
