"""The 2025 residual peers in the library: LAuReL (RW, LR, RW+LR).

LAuReL variants are ordinary ``(x, f) -> y`` gates and also go through every generic test of
tests/core/test_variants.py; here: their formulas, init and configuration. Hyper-Connections / mHC
widen the residual stream and live in the lab (tests/lab/test_peers_hyper.py); here: every
library entry point refuses them with a message naming where they went.
"""

from __future__ import annotations

import pytest
import torch
from peer_helpers import DIM, moved, pair
from torch import nn

from vectorgate.variants import VARIANTS, build_gate

# ----------------------------------------------------------------------------- LAuReL


@pytest.mark.parametrize(("name", "kwargs", "dim", "params"), [
    ("laurel_rw", {}, 64, 2),
    ("laurel_lr", {}, 64, 2 * 16 * 64),
    ("laurel_lr", {"rank": 4}, 32, 2 * 4 * 32),
    ("laurel_rw_lr", {"rank": 4}, 32, 2 * 4 * 32 + 2),
])
def test_laurel_parameter_counts(name, kwargs, dim, params):
    gate = build_gate(name, dim, **kwargs)
    assert gate.num_parameters == params == sum(p.numel() for p in gate.parameters())
    assert f"params={params:,}" in repr(gate)


def test_laurel_rw_is_a_softmax_weighted_sum():
    x, f = pair(1)
    gate = build_gate("laurel_rw", DIM)
    # softmax of equal logits: both weights 1/2, exactly
    torch.testing.assert_close(gate.residual(x, f), (x + f) / 2)
    with torch.no_grad():
        gate.weight_logits.copy_(torch.tensor([0.3, -1.2]))
    a, b = torch.softmax(torch.tensor([0.3, -1.2]), 0)
    torch.testing.assert_close(gate.residual(x, f), a * f + b * x)
    torch.testing.assert_close(x + gate.residual_delta(x, f), gate.residual(x, f))


def test_laurel_rw_other_normalisations():
    x, f = pair(2)
    sig = build_gate("laurel_rw", DIM, norm="sigmoid")
    with torch.no_grad():
        sig.weight_logits.copy_(torch.tensor([2.0, -1.0]))
    torch.testing.assert_close(sig.residual(x, f), torch.sigmoid(torch.tensor(2.0)) * f + torch.sigmoid(torch.tensor(-1.0)) * x)
    raw = build_gate("laurel_rw", DIM, norm="none")
    assert torch.equal(raw.residual(x, f), x + f) and torch.equal(raw.residual_delta(x, f), f)
    with pytest.raises(ValueError, match="norm"):
        build_gate("laurel_rw", DIM, norm="tanh")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_laurel_lr_starts_as_the_plain_residual_and_computes_its_formula(dtype):
    x, f = pair(3, dtype)
    gate = build_gate("laurel_lr", DIM, rank=4).to(dtype)
    assert torch.equal(gate.residual(x, f), x + f) and torch.equal(gate.residual_delta(x, f), f)
    assert not gate.up.weight.any() and gate.down.weight.any()
    moved(gate)
    tol = {} if dtype == torch.float32 else {"atol": 1e-2, "rtol": 2e-2}
    torch.testing.assert_close(gate.residual(x, f), f + x + gate.up(gate.down(x)), **tol)


def test_laurel_rw_lr_formula():
    x, f = pair(4)
    gate = moved(build_gate("laurel_rw_lr", DIM, rank=3))
    a, b = torch.softmax(gate.weight_logits, 0)
    torch.testing.assert_close(gate.residual(x, f), a * f + b * (x + gate.up(gate.down(x))))


def test_laurel_lr_every_parameter_learns_from_the_second_step():
    """B = 0 (LoRA's trick): B gets a gradient at step 0, A from the step after."""
    gate = build_gate("laurel_lr", DIM, rank=4)
    x, f = pair(5)
    gate.residual(x, f).square().sum().backward()
    assert gate.up.weight.grad.abs().sum() > 0 and not gate.down.weight.grad.any()
    torch.optim.SGD(gate.parameters(), lr=0.1).step()
    gate.zero_grad()
    gate.residual(x, f).square().sum().backward()
    assert all(p.grad.abs().sum() > 0 for p in gate.parameters())


def test_laurel_errors():
    with pytest.raises(ValueError, match="rank"):
        build_gate("laurel_lr", DIM, rank=-1)
    from vectorgate.variants import LaurelResidual

    with pytest.raises(ValueError, match="plain"):
        LaurelResidual(DIM, weights=False, rank=0)


# ----------------------------------------------------------------------------- HC / mHC: lab-only

STREAM = ["hc", "hc_dynamic", "mhc"]
WHERE = r"widens the residual stream.*vectorgate_lab\.peers\.hyper_connect"


@pytest.mark.parametrize("name", STREAM)
def test_stream_peers_are_refused_by_the_library_naming_where_they_went(name):
    from vectorgate import GateConfig, GatedResidual

    assert name not in VARIANTS
    with pytest.raises(ValueError, match=rf"variant '{name}' .*{WHERE}"):
        GateConfig(variant=name)
    with pytest.raises(ValueError, match=WHERE):
        build_gate(name, DIM, n=2, layer_index=0)
    with pytest.raises(ValueError, match=WHERE):
        GatedResidual(nn.Identity(), DIM, variant=name)


def test_patch_refuses_stream_variants_and_leaves_the_model_unchanged():
    transformers = pytest.importorskip("transformers")
    transformers.logging.set_verbosity_error()
    config = transformers.GPT2Config(vocab_size=30, n_positions=16, n_embd=16, n_layer=2, n_head=2,
                                     bos_token_id=0, eos_token_id=0)
    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(config).eval()
    ids = torch.randint(0, 30, (3, 10))
    before = model(ids).logits
    from vectorgate.patching import is_patched, patch

    with pytest.raises(ValueError, match=WHERE) as err:
        patch(model, variant="hc", n=2)
    assert "vectorgate.patch() and GateConfig cannot" in str(err.value)
    assert not is_patched(model) and torch.equal(model(ids).logits, before)
