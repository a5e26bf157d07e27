"""torch.compile(fullgraph=True) of the integrations: timm ViT (block_fn, patch(), and
patch(gate_source="normed") stacked), patched HF BERT and HF ViT; forward and backward equal eager.

Backend ``aot_eager``: Dynamo and AOTAutograd are where integrations break (forward hooks
that carry the residual stream, the ``vectorgate::exp_gated_residual`` custom op and its
backward, module swaps); inductor's code generation for the op itself is tested in
tests/core/test_residual.py. DDP under torch.compile runs in tests/integrations/test_distributed.py.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import nn

pytest.importorskip("timm")
pytest.importorskip("transformers")


def timm_block_fn() -> tuple[nn.Module, Callable]:
    from timm.models.vision_transformer import VisionTransformer

    from vectorgate.integrations.timm import gated_block_fn

    vit = VisionTransformer(img_size=28, patch_size=7, in_chans=1, num_classes=10, embed_dim=32, depth=1,
                            num_heads=4, init_values=0.1, block_fn=gated_block_fn(init="random", init_curvature=0.3))
    return vit, lambda m, x: m(x)


def timm_patched() -> tuple[nn.Module, Callable]:
    from timm.models.vision_transformer import VisionTransformer

    from vectorgate.patching import patch

    vit = VisionTransformer(img_size=28, patch_size=7, in_chans=1, num_classes=10, embed_dim=32, depth=1,
                            num_heads=4)
    return patch(vit, init="random", init_curvature=0.3), lambda m, x: m(x)


def hf_vit_patched() -> tuple[nn.Module, Callable]:
    from transformers import ViTConfig, ViTForImageClassification

    from vectorgate.patching import patch

    cfg = ViTConfig(image_size=28, patch_size=7, num_channels=1, hidden_size=32, num_hidden_layers=1,
                    num_attention_heads=4, intermediate_size=64, num_labels=10)
    return patch(ViTForImageClassification(cfg), init="random", init_curvature=0.3), lambda m, x: m(pixel_values=x).logits


def hf_bert_patched() -> tuple[nn.Module, Callable]:
    from transformers import BertConfig, BertForSequenceClassification

    from vectorgate.patching import patch

    cfg = BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
                     intermediate_size=64, max_position_embeddings=32, num_labels=2)
    model = patch(BertForSequenceClassification(cfg), init="random", init_curvature=0.3)
    ids = torch.arange(16).view(2, 8) % 100
    return model, lambda m, _x: m(input_ids=ids).logits


def timm_normed_stacked() -> tuple[nn.Module, Callable]:
    """gate_source="normed" (a forward hook on the norm too) and the stacked GEMM."""
    from timm.models.vision_transformer import VisionTransformer

    from vectorgate.patching import patch, stack_gate_projections

    vit = VisionTransformer(img_size=28, patch_size=7, in_chans=1, num_classes=10, embed_dim=32, depth=1,
                            num_heads=4)
    model = patch(vit, init="random", init_curvature=0.3, rank=8, gate_source="normed")
    stack_gate_projections(model)
    return model, lambda m, x: m(x)


@pytest.mark.parametrize("build", [timm_block_fn, timm_patched, timm_normed_stacked, hf_vit_patched, hf_bert_patched],
                         ids=lambda f: f.__name__)
def test_compile_fullgraph_matches_eager(build):
    torch.manual_seed(0)
    model, run = build()
    model.eval()  # no dropout: eager and compiled see the same computation
    x = torch.randn(2, 1, 28, 28)

    out = run(model, x)
    out.square().sum().backward()
    eager_grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)

    torch._dynamo.reset()
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True)
    out_c = run(compiled, x)
    out_c.square().sum().backward()
    torch.testing.assert_close(out_c, out, rtol=1e-5, atol=1e-6)
    gate_grads = [n for n in eager_grads if "gate" in n]
    assert gate_grads, "the gates should receive gradient"
    for name, grad in eager_grads.items():
        torch.testing.assert_close(model.get_parameter(name).grad, grad, rtol=1e-5, atol=1e-6, msg=name)


@pytest.mark.parametrize("same_instance", [True, False], ids=["same", "another"])
def test_a_graph_compiled_before_patch_is_not_reused(same_instance):
    """torch.compile skips guards on forward hooks by default; a patched pre-norm site must
    still get its own graph, not the one compiled for the unpatched class."""
    from live_gates import liven_gates
    from transformers import LlamaConfig, LlamaModel

    import vectorgate

    def llama() -> nn.Module:
        torch.manual_seed(0)
        return LlamaModel(LlamaConfig(num_hidden_layers=1, hidden_size=32, intermediate_size=64,
                                      num_attention_heads=4, num_key_value_heads=4, vocab_size=64)).eval()

    torch._dynamo.reset()
    ids = torch.randint(0, 64, (2, 8), generator=torch.Generator().manual_seed(0))
    plain = llama()
    compiled_plain = torch.compile(plain, backend="aot_eager", fullgraph=True)
    with torch.no_grad():
        y_plain = compiled_plain(input_ids=ids).last_hidden_state
    gated = vectorgate.patch(plain if same_instance else llama())
    liven_gates(gated, 0.5)
    compiled = compiled_plain if same_instance else torch.compile(gated, backend="aot_eager", fullgraph=True)
    with torch.no_grad():
        eager = gated(input_ids=ids).last_hidden_state
        assert not torch.allclose(eager, y_plain)
        torch.testing.assert_close(compiled(input_ids=ids).last_hidden_state, eager)
        if not same_instance:  # and the plain model still runs its own graph
            torch.testing.assert_close(compiled_plain(input_ids=ids).last_hidden_state, y_plain)
