"""stack_gate_projections: the gate's first projection in one GEMM with Q (attention) and the
intermediate dense (FFN) of a patched BERT; same results to fp32 rounding, same parameters."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

pytest.importorskip("transformers")

import vectorgate
from vectorgate.integrations.transformers.modules import stack_gate_projections


def _bert(rank: int | None) -> nn.Module:
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                     intermediate_size=64, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    model = BertModel(cfg, add_pooling_layer=False)
    vectorgate.patch(model, init_curvature=0.5, **({"rank": rank} if rank else {}))
    with torch.no_grad():  # gates away from their identity init, so z matters
        for name, p in model.named_parameters():
            if ".gate." in name:
                p.normal_(0, 0.2)
    return model


def _run(model: nn.Module, ids: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    model.zero_grad(set_to_none=True)
    y = model(input_ids=ids).last_hidden_state
    y.square().mean().backward()
    return y.detach(), {n.removeprefix("_orig_mod."): p.grad for n, p in model.named_parameters()}


@pytest.mark.parametrize("rank", [None, 8])
def test_stacked_equals_unstacked_forward_and_backward(rank) -> None:
    plain = _bert(rank)
    stacked = copy.deepcopy(plain)
    keys = list(stacked.state_dict())
    assert stack_gate_projections(stacked) == 4  # 2 layers x (attention, FFN)
    assert list(stacked.state_dict()) == keys  # no parameter renamed, added or removed
    assert [n for n, _ in stacked.named_parameters()] == [n for n, _ in plain.named_parameters()]
    # The gate's first projection no longer runs on its own: it is inside the stacked GEMM.
    first = [m.gate.proj if rank is None else m.gate.proj.down
             for m in stacked.modules() if hasattr(m, "gate")]
    calls = []
    handles = [f.register_forward_hook(lambda *a: calls.append(1)) for f in first]
    ids = torch.randint(0, 100, (3, 9), generator=torch.Generator().manual_seed(1))
    y0, g0 = _run(plain, ids)
    y1, g1 = _run(stacked, ids)
    for h in handles:
        h.remove()
    assert calls == []
    torch.testing.assert_close(y1, y0, rtol=1e-5, atol=1e-5)
    for name, grad in g0.items():
        torch.testing.assert_close(g1[name], grad, rtol=1e-4, atol=1e-6, msg=lambda m, n=name: f"{n}: {m}")


def test_gate_files_are_the_same(tmp_path) -> None:
    stacked = _bert(None)
    stack_gate_projections(stacked)
    vectorgate.save_gates(stacked, tmp_path / "g")
    fresh = _bert(None)
    vectorgate.unpatch(fresh)
    vectorgate.load_gates(fresh, tmp_path / "g")  # an unstacked model reads the stacked one's file
    for (n0, p0), (n1, p1) in zip(stacked.named_parameters(), fresh.named_parameters(), strict=True):
        assert n0 == n1 and torch.equal(p0, p1)
    stack_gate_projections(fresh)
    vectorgate.save_gates(fresh, tmp_path / "h")
    files = sorted(p.name for p in (tmp_path / "g").iterdir())
    assert files == sorted(p.name for p in (tmp_path / "h").iterdir())


def test_unpatch_undoes_the_stacking() -> None:
    model = _bert(None)
    stack_gate_projections(model)
    vectorgate.unpatch(model)
    layer = model.encoder.layer[0]
    assert type(layer.attention.self.query) is nn.Linear and type(layer.intermediate.dense) is nn.Linear
    assert not hasattr(layer.output, "gate")
    model(input_ids=torch.arange(8).view(1, 8))


def test_refusals() -> None:
    from transformers import BertConfig, BertModel

    with pytest.raises(ValueError, match="not patched"):
        stack_gate_projections(BertModel(BertConfig(vocab_size=10, hidden_size=8, num_hidden_layers=1,
                                                    num_attention_heads=2, intermediate_size=16)))
    model = _bert(None)
    stack_gate_projections(model)
    with pytest.raises(ValueError, match="stacked already"):
        stack_gate_projections(model)


def test_stacked_model_compiles_fullgraph() -> None:
    model = _bert(8)
    stack_gate_projections(model)
    ids = torch.randint(0, 100, (2, 8), generator=torch.Generator().manual_seed(2))
    y0, g0 = _run(model, ids)
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True)
    y1, g1 = _run(compiled, ids)
    torch.testing.assert_close(y1, y0)
    for name, grad in g0.items():
        torch.testing.assert_close(g1[name], grad, msg=lambda m, n=name: f"{n}: {m}")
