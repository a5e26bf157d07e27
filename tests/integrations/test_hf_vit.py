"""Hugging Face ViT through vectorgate.patch(), tested the way the timm ViT is (test_timm.py)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

pytest.importorskip("transformers")
from transformers import ViTConfig, ViTForImageClassification

from vectorgate.patching import gates, patch, patch_state, unpatch
from vectorgate_lab.assets import load_mnist


def tiny_hf_vit(**overrides) -> ViTForImageClassification:
    cfg = dict(image_size=28, patch_size=7, num_channels=1, hidden_size=32, num_hidden_layers=2,
               num_attention_heads=4, intermediate_size=64, num_labels=10)
    cfg.update(overrides)
    torch.manual_seed(0)
    return ViTForImageClassification(ViTConfig(**cfg))


@pytest.fixture(scope="module")
def digits():
    images, labels = load_mnist()
    idx = torch.arange(0, 5000, 250)  # two of every class (the file is sorted by class)
    return images[idx], labels[idx]


@pytest.mark.parametrize("sites", [("attention", "mlp"), ("attention",), ("mlp",)])
def test_hf_vit_patch_is_bit_exact_identity_at_init(sites, digits):
    model = tiny_hf_vit().eval()
    x = digits[0][:8]
    expected = model(pixel_values=x).logits
    patch(model, sites=sites)
    assert patch_state(model).family == "vit"
    assert len(list(gates(model))) == 2 * len(sites)
    assert torch.equal(model(pixel_values=x).logits, expected)


def test_hf_vit_identity_holds_in_training_mode_with_dropout(digits):
    model = tiny_hf_vit(hidden_dropout_prob=0.2, attention_probs_dropout_prob=0.1).train()
    x = digits[0][:8]
    torch.manual_seed(1)
    expected = model(pixel_values=x).logits
    patch(model)
    torch.manual_seed(1)  # the same dropout masks
    assert torch.equal(model(pixel_values=x).logits, expected)


def test_hf_vit_gates_train_on_real_digits_and_unpatch_restores(digits):
    model = tiny_hf_vit()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    patch(model, init="random", init_curvature=0.1)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    x, y = digits
    for _ in range(3):
        loss = nn.functional.cross_entropy(model(pixel_values=x).logits, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert torch.isfinite(loss)
    for name, gate in gates(model):
        assert not torch.allclose(gate.curvature, torch.full_like(gate.curvature, 0.1)), name
    unpatch(model)
    assert set(model.state_dict()) == set(before)
