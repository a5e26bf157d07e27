"""vectorgate.skip: gate-driven token skipping.

Dense equality at skip ratio 0, gather/scatter against hand-computed references, what a
skipped token becomes, calibration on held-out data, SkipBudget, unpatch/skip_map, errors.
"""

from __future__ import annotations

import copy
import itertools
import math

import pytest
import torch
from torch import nn

import vectorgate as vg
from vectorgate.skip import (
    SkipBudget,
    calibrate_skipping,
    disable_skipping,
    enable_skipping,
    find_skip_sites,
    run_on_kept,
    skip_controller,
    skip_map,
)
from vectorgate.skip.calibrate import threshold_for_ratio

transformers = pytest.importorskip("transformers")

RANDOM_GATE = {"init": "random", "init_curvature": 1.0}  # scores differ between tokens
VOCAB = 100


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny models: one intra-op thread is faster, and far faster on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ----------------------------------------------------------------------------- builders


def _bert(seed: int = 0, **patch_kwargs) -> nn.Module:
    torch.manual_seed(seed)
    cfg = transformers.BertConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, vocab_size=VOCAB,
        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
    )
    model = transformers.BertModel(cfg).eval()
    return vg.patch(model, **(patch_kwargs or RANDOM_GATE))


def _gpt2(seed: int = 0, **patch_kwargs) -> nn.Module:
    torch.manual_seed(seed)
    cfg = transformers.GPT2Config(
        n_embd=32, n_layer=2, n_head=4, vocab_size=VOCAB, n_positions=64, bos_token_id=0, eos_token_id=0,
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
    )
    model = transformers.GPT2LMHeadModel(cfg).eval()
    return vg.patch(model, **(patch_kwargs or RANDOM_GATE))


def _llama(seed: int = 0, **patch_kwargs) -> nn.Module:
    torch.manual_seed(seed)
    cfg = transformers.LlamaConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        vocab_size=VOCAB, max_position_embeddings=64, bos_token_id=0, eos_token_id=0, pad_token_id=0,
    )
    model = transformers.LlamaForCausalLM(cfg).eval()
    return vg.patch(model, **(patch_kwargs or RANDOM_GATE))


def _timm_vit(seed: int = 0, **patch_kwargs) -> nn.Module:
    pytest.importorskip("timm")
    from timm.models.vision_transformer import VisionTransformer

    import vectorgate.integrations.timm  # noqa: F401  (registers the timm family)

    torch.manual_seed(seed)
    model = VisionTransformer(
        img_size=28, patch_size=7, in_chans=1, num_classes=10, embed_dim=32, depth=2, num_heads=4
    ).eval()
    return vg.patch(model, **(patch_kwargs or RANDOM_GATE))


def _mlp(d: int = 16, hidden: int = 32) -> nn.Module:
    return nn.Sequential(nn.Linear(d, hidden), nn.GELU(), nn.Linear(hidden, d))


def _gated_residual(variant: str = "vectorgate", seed: int = 0, d: int = 16, **gate_kwargs) -> vg.GatedResidual:
    torch.manual_seed(seed)
    if variant == "vectorgate" and not gate_kwargs:
        gate_kwargs = dict(RANDOM_GATE)
    gr = vg.GatedResidual(_mlp(d), d, variant=variant, tokenwise=True, **gate_kwargs)
    if variant != "vectorgate":  # move the peer gates off their init so scores differ by token
        with torch.no_grad():
            for p in gr.gate.parameters():
                p.add_(0.5 * torch.randn_like(p))
    return gr.eval()


def _ids(batch: int, seq: int, seed: int) -> torch.Tensor:
    return torch.randint(1, VOCAB, (batch, seq), generator=torch.Generator().manual_seed(seed))


def _padded_mask(batch: int = 3, seq: int = 7) -> torch.Tensor:
    mask = torch.ones(batch, seq, dtype=torch.long)
    mask[1, 4:] = 0
    if batch > 2:
        mask[2, 6:] = 0
    return mask


# kind -> (builder, input builder(seed) -> (args, kwargs), output extraction)
def _text_inputs(seed: int, mask: bool = False):
    ids = _ids(3, 7, seed)
    kwargs = {"input_ids": ids}
    if mask:
        kwargs["attention_mask"] = _padded_mask()
    return kwargs


def _image_inputs(seed: int, mask: bool = False):
    return {"x": torch.randn(3, 1, 28, 28, generator=torch.Generator().manual_seed(seed))}


def _seq_inputs(seed: int, mask: bool = False):
    return {"x": torch.randn(3, 7, 16, generator=torch.Generator().manual_seed(seed))}


def _out(result) -> torch.Tensor:
    if isinstance(result, torch.Tensor):
        return result
    if hasattr(result, "logits"):
        return result.logits
    return result.last_hidden_state


KINDS = {
    "bert": (_bert, _text_inputs),
    "gpt2": (_gpt2, _text_inputs),
    "llama": (_llama, _text_inputs),
    "timm_vit": (_timm_vit, _image_inputs),
    "gated_residual": (_gated_residual, _seq_inputs),
}


def _run(model: nn.Module, inputs: dict) -> torch.Tensor:
    with torch.no_grad():
        return _out(model(**inputs))


def _calib_batches(kind: str, n: int = 2, seed: int = 100) -> list:
    _, make = KINDS[kind]
    return [make(seed + i) for i in range(n)]


def _fwd(model: nn.Module, batch: dict):
    return model(**batch)


# ----------------------------------------------------------------------------- 1. skip ratio 0 == dense


@pytest.mark.parametrize("kind", list(KINDS))
def test_skip_ratio_zero_is_bit_exact_dense(kind):
    build, make = KINDS[kind]
    model = build()
    inputs = make(0, mask=True)
    ref = _run(model, inputs)

    ctl = enable_skipping(model)
    assert all(t == -math.inf for t in ctl.thresholds.values())
    assert torch.equal(_run(model, inputs), ref)

    thresholds = calibrate_skipping(model, _calib_batches(kind), 0.0, forward=_fwd)
    assert thresholds == dict.fromkeys(ctl.sites, -math.inf)
    assert torch.equal(_run(model, inputs), ref)

    # Recording runs the skip path (decide computes z, the host uses it) with nothing skipped.
    ctl.set_thresholds(-math.inf)
    ctl.reset()
    with ctl.record():
        out = _run(model, inputs)
    assert torch.equal(out, ref)
    for site in ctl.sites.values():
        assert len(site.scores) == 1 and site.scores[0].numel() > 0
        assert site.skipped == 0 and site.seen > 0
        assert bool(site.decisions[0].all())

    # A finite threshold changes the output; back to -inf gives dense again, bit for bit.
    ctl.set_thresholds(math.inf)
    assert not torch.equal(_run(model, inputs), ref)
    ctl.set_thresholds(-math.inf)
    assert torch.equal(_run(model, inputs), ref)

    disable_skipping(model)
    assert skip_controller(model) is None
    assert torch.equal(_run(model, inputs), ref)
    ctl = enable_skipping(model, thresholds=-math.inf)
    assert torch.equal(_run(model, inputs), ref)


def test_calibrate_ratio_zero_by_site_mapping_is_dense():
    model = _bert()
    inputs = _text_inputs(0, mask=True)
    ref = _run(model, inputs)
    names = [n for n, _, _ in find_skip_sites(model)]
    thresholds = calibrate_skipping(model, _calib_batches("bert"), dict.fromkeys(names, 0.0), forward=_fwd)
    assert set(thresholds) == set(names) and all(t == -math.inf for t in thresholds.values())
    assert torch.equal(_run(model, inputs), ref)


@pytest.mark.parametrize("kind", ["bert", "gated_residual"])
def test_skip_ratios_are_zero_not_nan_when_nothing_is_skipped(kind):
    build, make = KINDS[kind]
    model = build()
    ctl = enable_skipping(model)  # no thresholds: every site idle
    assert ctl.skip_ratio() == 0.0 and set(ctl.skip_ratios().values()) == {0.0}  # before any token
    _run(model, make(0))
    assert ctl.skip_ratio() == 0.0 and set(ctl.skip_ratios().values()) == {0.0}
    assert all(site.seen > 0 and site.skipped == 0 for site in ctl.sites.values())  # counted, all kept
    calibrate_skipping(model, _calib_batches(kind), 0.0, forward=_fwd)
    _run(model, make(1))
    assert ctl.skip_ratio() == 0.0 and set(ctl.skip_ratios().values()) == {0.0}
    assert not any(math.isnan(r) for r in skip_map(model, make(2))["skip_ratio"].values())


def test_overall_skip_ratio_counts_the_tokens_of_idle_sites():
    """One site skips all its tokens, the other keeps every token at -inf: half the branch tokens."""
    model = _bert()
    inputs = _text_inputs(0, mask=True)
    names = [n for n, _, _ in find_skip_sites(model)]
    ctl = enable_skipping(model, {names[0]: math.inf, names[1]: -math.inf})
    with ctl.tokens(inputs["attention_mask"]):
        _run(model, inputs)
    real = int(inputs["attention_mask"].sum())
    assert [ctl.sites[n].seen for n in names] == [real, real]
    assert ctl.skip_ratios() == {names[0]: 1.0, names[1]: 0.0}
    assert ctl.skip_ratio() == 0.5


# ----------------------------------------------------------------------------- 2. run_on_kept


def test_run_on_kept_zeros_skipped_rows_and_runs_fn_on_kept_rows_only():
    torch.manual_seed(0)
    lin = nn.Linear(5, 3)
    h = torch.randn(3, 7, 5)
    keep = torch.rand(3, 7) > 0.5
    keep[0, 0], keep[0, 1] = True, False
    seen_rows = []

    def fn(rows):
        seen_rows.append(rows.shape[0])
        return lin(rows)

    out = run_on_kept(fn, h, keep)
    assert out.shape == (3, 7, 3)
    assert seen_rows == [int(keep.sum())]  # the GEMM shrinks to the kept rows
    assert torch.equal(out[~keep], torch.zeros_like(out[~keep]))
    torch.testing.assert_close(out[keep], lin(h)[keep], rtol=1e-6, atol=1e-6)


def test_run_on_kept_every_token_skipped_and_one_kept():
    lin = nn.Linear(4, 6)
    h = torch.randn(2, 3, 4)
    out = run_on_kept(lin, h, torch.zeros(2, 3, dtype=torch.bool))
    assert out.shape == (2, 3, 6) and torch.equal(out, torch.zeros(2, 3, 6))
    keep = torch.zeros(2, 3, dtype=torch.bool)
    keep[1, 2] = True
    out = run_on_kept(lin, h, keep)
    torch.testing.assert_close(out[1, 2], lin(h[1, 2]), rtol=1e-6, atol=1e-6)
    out[1, 2] = 0
    assert torch.equal(out, torch.zeros(2, 3, 6))


def test_run_on_kept_none_and_all_true_call_fn_directly():
    h = torch.randn(2, 3, 4)
    calls = []

    def fn(t):
        calls.append(t)
        return t * 2

    assert torch.equal(run_on_kept(fn, h, None), h * 2)
    assert torch.equal(run_on_kept(fn, h, torch.ones(2, 3, dtype=torch.bool)), h * 2)
    assert calls[0] is h and calls[1] is h  # no gather, the very input


@pytest.mark.parametrize(
    "keep",
    [
        torch.ones(2, 3, dtype=torch.long),
        torch.ones(2, 3, dtype=torch.float32),
        torch.ones(2, 4, dtype=torch.bool),
        torch.ones(2, 3, 4, dtype=torch.bool),
        torch.ones(6, dtype=torch.bool),
    ],
    ids=["long", "float", "wrong-tokens", "full-shape", "flat"],
)
def test_run_on_kept_rejects_bad_keep(keep):
    with pytest.raises(ValueError, match="keep must be a bool tensor"):
        run_on_kept(lambda t: t, torch.randn(2, 3, 4), keep)


# ----------------------------------------------------------------------------- 2. gather/scatter vs reference


def _scores_gr(gr: vg.GatedResidual, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return gr.gate.skip_score(gr.gate.pre_activation(x))


@pytest.mark.parametrize("mode", ["median", "one-kept", "all-skipped"])
@pytest.mark.parametrize("variant", ["vectorgate", "vectorgate_lowrank", "mod_router", "gateskip-x"])
def test_gated_residual_skipping_matches_zeroed_branch_reference(variant, mode):
    kwargs = {"gate_input": "x"} if variant == "gateskip-x" else {}
    if variant == "vectorgate_lowrank":
        kwargs = {"rank": 4, **RANDOM_GATE}
    gr = _gated_residual("gateskip" if variant == "gateskip-x" else variant, **kwargs)
    x = torch.randn(3, 7, 16, generator=torch.Generator().manual_seed(1))
    scores = _scores_gr(gr, x)
    assert scores.unique().numel() == scores.numel()  # the gates really tell tokens apart
    thr = {"median": float(scores.flatten().sort().values[10]), "one-kept": float(scores.max()),
           "all-skipped": math.inf}[mode]
    keep = scores >= thr
    expected_kept = {"median": 21 - 10, "one-kept": 1, "all-skipped": 0}[mode]
    assert int(keep.sum()) == expected_kept

    rows = []
    handle = gr.fn[0].register_forward_pre_hook(lambda m, a: rows.append(a[0].shape[0]))
    ctl = enable_skipping(gr, thr)
    with torch.no_grad():
        y = gr(x)
        f = gr.fn(x)
        ref = gr.gate.residual(x, f * keep.unsqueeze(-1).to(f.dtype))
    handle.remove()
    assert rows[0] == expected_kept  # the branch ran on the kept tokens only
    torch.testing.assert_close(y, ref, rtol=1e-5, atol=1e-6)
    assert ctl.sites["root"].seen == 21 and ctl.sites["root"].skipped == 21 - expected_kept
    assert ctl.skip_ratio() == pytest.approx((21 - expected_kept) / 21)


def test_gated_residual_decisions_do_not_depend_on_the_batch():
    gr = _gated_residual()
    x = torch.randn(4, 5, 16, generator=torch.Generator().manual_seed(2))
    thr = float(_scores_gr(gr, x).median())
    ctl = enable_skipping(gr, thr)
    with torch.no_grad(), ctl.record():
        y = gr(x)
        rows = [gr(x[i : i + 1]) for i in range(4)]
    site = ctl.sites["root"]
    assert torch.equal(site.decisions[0], torch.cat(site.decisions[1:]))
    torch.testing.assert_close(y, torch.cat(rows), rtol=1e-5, atol=1e-6)


def _sequential_thresholds(model, ctl, inputs, mode: str) -> dict[str, float]:
    """Per site in forward order, a threshold that skips the share ``mode`` says of this very
    batch (padding included), given the thresholds already set upstream."""
    thresholds = dict.fromkeys(ctl.sites, -math.inf)
    for name in ctl.sites:
        ctl.set_thresholds(thresholds)
        ctl.reset()
        with ctl.record():
            _run(model, inputs)
        s = ctl.sites[name].scores[0]
        thresholds[name] = {
            "median": float(s.sort().values[s.numel() // 2]),
            "one-kept": float(s.max()),
            "all-skipped": math.inf,
        }[mode]
    ctl.set_thresholds(thresholds)
    ctl.reset()
    return thresholds


@pytest.mark.parametrize("mode", ["median", "one-kept", "all-skipped"])
@pytest.mark.parametrize("variant", ["vectorgate", "gateskip-x"])
def test_bert_post_ln_skipping_matches_layer_reference(mode, variant):
    kwargs = {"variant": "gateskip", "gate_input": "x"} if variant == "gateskip-x" else RANDOM_GATE
    model = _bert(**kwargs)
    if variant == "gateskip-x":
        with torch.no_grad():
            for _, gate in vg.gates(model):
                gate.proj.weight.mul_(3.0)
    inputs = _text_inputs(0, mask=True)
    ctl = enable_skipping(model)
    thresholds = _sequential_thresholds(model, ctl, inputs, mode)

    layers = model.encoder.layer
    attn_out, layer_out, handles = {}, {}, []
    for i, layer in enumerate(layers):
        handles.append(layer.attention.register_forward_hook(
            lambda m, a, o, i=i: attn_out.__setitem__(i, o[0] if isinstance(o, tuple) else o)))
        handles.append(layer.register_forward_hook(
            lambda m, a, o, i=i: layer_out.__setitem__(i, o[0] if isinstance(o, tuple) else o)))
    with ctl.record():
        final = _run(model, inputs)
    for h in handles:
        h.remove()

    with torch.no_grad():
        for i, layer in enumerate(layers):
            a, out = attn_out[i], layer.output
            score = out.gate.skip_score(out.gate.pre_activation(a))
            keep = score >= thresholds[f"encoder.layer.{i}.mlp"]
            assert torch.equal(ctl.sites[f"encoder.layer.{i}.mlp"].decisions[0], keep)
            n_kept = {"median": None, "one-kept": 1, "all-skipped": 0}[mode]
            if n_kept is not None:
                assert int(keep.sum()) == n_kept
            else:
                assert 0 < int(keep.sum()) < keep.numel()
            f = out.dropout(out.dense(layer.intermediate(a)))
            ref = out.LayerNorm(out.gate.residual(a, f * keep.unsqueeze(-1)))
            torch.testing.assert_close(layer_out[i], ref, rtol=1e-5, atol=1e-5)
            # A skipped token is LayerNorm(what the gate makes of x alone).
            skipped_ref = out.LayerNorm(out.gate.residual(a, torch.zeros_like(a)))
            torch.testing.assert_close(layer_out[i][~keep], skipped_ref[~keep], rtol=1e-5, atol=1e-5)
    assert torch.equal(final, layer_out[len(layers) - 1])
    # Padding is left out of the counts under tokens(mask).
    mask = inputs["attention_mask"].bool()
    ctl.reset()
    with ctl.tokens(mask):
        _run(model, inputs)
    for site in ctl.sites.values():
        assert site.seen == int(mask.sum())


def _hooked_sites(kind: str, model: nn.Module):
    """Per layer: (norm, mlp, module whose output is the gate's delta, gate, site name)."""
    if kind == "gpt2":
        return [(b.ln_2, b.mlp, b.mlp, b.residual_gates["mlp"], f"transformer.h.{i}.mlp")
                for i, b in enumerate(model.transformer.h)]
    if kind == "llama":
        return [(b.post_attention_layernorm, b.mlp, b.mlp, b.residual_gates["mlp"], f"model.layers.{i}.mlp")
                for i, b in enumerate(model.model.layers)]
    return [(b.norm2, b.mlp, b.ls2, b.gate2, f"blocks.{i}.mlp") for i, b in enumerate(model.blocks)]


@pytest.mark.parametrize("mode", ["median", "one-kept", "all-skipped"])
@pytest.mark.parametrize("kind", ["gpt2", "llama", "timm_vit"])
def test_pre_norm_hooked_skipping_matches_layer_reference(kind, mode):
    build, make = KINDS[kind]
    model = build()
    inputs = make(0, mask=True)
    ctl = enable_skipping(model)
    thresholds = _sequential_thresholds(model, ctl, inputs, mode)

    sites = _hooked_sites(kind, model)
    xs, hs, deltas, handles = {}, {}, {}, []
    for i, (norm, _mlp_mod, hooked, _gate, _name) in enumerate(sites):
        handles.append(norm.register_forward_pre_hook(lambda m, a, i=i: xs.__setitem__(i, a[0])))
        handles.append(norm.register_forward_hook(lambda m, a, o, i=i: hs.__setitem__(i, o)))
        # registered after vectorgate's own hook, so it sees the delta that hook returns
        handles.append(hooked.register_forward_hook(
            lambda m, a, o, i=i: deltas.__setitem__(i, o[0] if isinstance(o, tuple) else o)))
    with ctl.record():
        _run(model, inputs)
    for h in handles:
        h.remove()

    with torch.no_grad():
        for i, (_norm, mlp_mod, hooked, gate, name) in enumerate(sites):
            x = xs[i]
            keep = gate.skip_score(gate.pre_activation(x)) >= thresholds[name]
            assert torch.equal(ctl.sites[name].decisions[0], keep)
            n_kept = {"median": None, "one-kept": 1, "all-skipped": 0}[mode]
            if n_kept is not None:
                assert int(keep.sum()) == n_kept
            else:
                assert 0 < int(keep.sum()) < keep.numel()
            f = type(mlp_mod).forward(mlp_mod, hs[i])  # the dense branch, bypassing the override
            if hooked is not mlp_mod:
                f = type(hooked).forward(hooked, f)
            ref = gate.residual_delta(x, f * keep.unsqueeze(-1))
            torch.testing.assert_close(deltas[i], ref, rtol=1e-5, atol=1e-5)
            # skipped token: y = alpha * x, i.e. delta = expm1(s) * x
            s = gate(x).s
            torch.testing.assert_close(deltas[i][~keep], (torch.expm1(s) * x)[~keep], rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------- 3. what a skipped token becomes


def test_vectorgate_skipped_token_is_alpha_times_x():
    gr = _gated_residual()
    x = torch.randn(3, 7, 16, generator=torch.Generator().manual_seed(3))
    scores = _scores_gr(gr, x)
    thr = float(scores.median())
    enable_skipping(gr, thr)
    with torch.no_grad():
        y = gr(x)
        alpha = gr.gate(x).alpha
    skipped = scores < thr
    assert 0 < int(skipped.sum()) < skipped.numel()
    torch.testing.assert_close(y[skipped], (alpha * x)[skipped], rtol=1e-6, atol=1e-7)
    assert not torch.allclose(y[~skipped], (alpha * x)[~skipped])  # kept tokens do get the branch


@pytest.mark.parametrize("variant,kwargs", [("mod_router", {}), ("gateskip", {"gate_input": "x"})])
def test_router_and_gateskip_x_skipped_token_is_x(variant, kwargs):
    gr = _gated_residual(variant, **kwargs)
    x = torch.randn(3, 7, 16, generator=torch.Generator().manual_seed(4))
    scores = _scores_gr(gr, x)
    thr = float(scores.median())
    enable_skipping(gr, thr)
    with torch.no_grad():
        y = gr(x)
    skipped = scores < thr
    assert 0 < int(skipped.sum()) < skipped.numel()
    assert torch.equal(y[skipped], x[skipped])
    assert not torch.equal(y[~skipped], x[~skipped])


def test_patched_gpt2_mod_router_skipped_token_delta_is_zero():
    model = _gpt2(variant="mod_router", sites=("mlp",))
    with torch.no_grad():
        for _, gate in vg.gates(model):
            gate.router.weight.normal_(0, 1.0)
            gate.router.bias.zero_()
    inputs = _text_inputs(0)
    ctl = enable_skipping(model)
    thresholds = _sequential_thresholds(model, ctl, inputs, "median")
    deltas = {}
    handles = [b.mlp.register_forward_hook(lambda m, a, o, i=i: deltas.__setitem__(i, o))
               for i, b in enumerate(model.transformer.h)]
    with ctl.record():
        _run(model, inputs)
    for h in handles:
        h.remove()
    for i in range(2):
        keep = ctl.sites[f"transformer.h.{i}.mlp"].decisions[0]
        assert 0 < int(keep.sum()) < keep.numel()
        assert torch.equal(deltas[i][~keep], torch.zeros_like(deltas[i][~keep]))
        assert bool((deltas[i][keep] != 0).any())
    assert set(thresholds) == set(ctl.sites)


# ----------------------------------------------------------------------------- 4. calibration


def test_threshold_for_ratio_units():
    s = torch.tensor([0.5, 0.1, 0.4, 0.2, 0.3, 0.9, 0.8, 0.7, 0.6, 1.0])
    assert threshold_for_ratio(s, 0) == -math.inf
    assert threshold_for_ratio(torch.empty(0), 0.5) == -math.inf
    assert threshold_for_ratio(s, 0.04) == -math.inf  # round(0.4) = 0 tokens
    t = threshold_for_ratio(s, 0.3)
    assert float(torch.tensor(0.3)) < t < float(torch.tensor(0.4))  # midway between neighbours
    assert t == pytest.approx((0.3 + 0.4) / 2)
    for ratio in (0.1, 0.25, 0.5, 0.7, 0.9):
        t = threshold_for_ratio(s, ratio)
        assert int((s < t).sum()) == round(ratio * s.numel())
    # a tied block at the cut is skipped or kept whole, whichever lands nearer the ratio
    ties = torch.tensor([1.0, 1.0, 1.0, 1.0])
    t = threshold_for_ratio(ties, 0.5)
    assert int((ties < t).sum()) in (0, 4)
    partial = torch.tensor([0.0, 1.0, 1.0, 2.0])
    assert int((partial < threshold_for_ratio(partial, 0.5)).sum()) == 1  # 1 or 3 from 2: the lower
    block = torch.tensor([0.0, 1.0, 1.0, 1.0, 2.0])
    assert int((block < threshold_for_ratio(block, 0.6)).sum()) == 4  # 4 is nearer 3 than 1
    assert int((block < threshold_for_ratio(block, 0.4)).sum()) == 1  # 1 is nearer 2 than 4
    # k = n: every token skipped (the float32 scores compare below the threshold)
    for ratio in (0.96, 0.99):
        assert bool((s < threshold_for_ratio(s, ratio)).all())
    # scores of any shape/dtype are flattened
    assert threshold_for_ratio(s.reshape(2, 5).double(), 0.5) == threshold_for_ratio(s, 0.5)


def test_threshold_for_ratio_between_adjacent_float32_scores():
    lo = torch.tensor(1.0)
    s = torch.stack([lo, torch.nextafter(lo, torch.tensor(2.0))])  # float32 neighbours
    t = threshold_for_ratio(s, 0.5)
    keep = s >= t  # exactly what SkipSite.decide computes
    assert int((~keep).sum()) == 1


def _held_out_ratio(model, ctl, batches, forward=_fwd):
    ctl.reset()
    with torch.no_grad():
        for b in batches:
            forward(model, b)
    return ctl.skip_ratio(), ctl.skip_ratios()


TOL = 0.05


@pytest.mark.parametrize("target", [0.3, 0.5, 0.7])
def test_calibration_meets_target_on_held_out_gated_residual(target):
    gr = _gated_residual(d=16)
    g = torch.Generator().manual_seed(5)
    calib = [torch.randn(16, 32, 16, generator=g) for _ in range(8)]  # 4096 tokens each
    held_out = [torch.randn(16, 32, 16, generator=g) for _ in range(8)]
    thresholds = calibrate_skipping(gr, calib, target)
    ctl = skip_controller(gr)
    assert ctl is not None and ctl.thresholds == thresholds
    assert all(s.seen == 0 for s in ctl.sites.values())  # calibration leaves no counts behind
    overall, _ = _held_out_ratio(gr, ctl, held_out, lambda m, b: m(b))
    assert abs(overall - target) <= TOL


@pytest.mark.parametrize("target", [0.3, 0.5, 0.7])
@pytest.mark.parametrize("kind", ["bert", "gpt2"])
def test_calibration_meets_target_on_held_out_per_site(kind, target):
    model = _bert() if kind == "bert" else _gpt2()
    calib = [{"input_ids": _ids(16, 32, 200 + i)} for i in range(6)]  # 3072 tokens each
    held_out = [{"input_ids": _ids(16, 32, 300 + i)} for i in range(6)]
    calibrate_skipping(model, calib, target)
    ctl = skip_controller(model)
    overall, per_site = _held_out_ratio(model, ctl, held_out)
    assert len(per_site) == 2
    assert abs(overall - target) <= TOL
    for name, r in per_site.items():
        assert abs(r - target) <= TOL, (name, r)


def test_calibration_per_site_ratios_on_held_out():
    model = _bert()
    names = list(n for n, _, _ in find_skip_sites(model))
    targets = dict(zip(names, [0.3, 0.7], strict=True))
    calib = [{"input_ids": _ids(16, 32, 400 + i)} for i in range(6)]
    held_out = [{"input_ids": _ids(16, 32, 500 + i)} for i in range(6)]
    calibrate_skipping(model, calib, targets)
    _, per_site = _held_out_ratio(model, skip_controller(model), held_out)
    for name, target in targets.items():
        assert abs(per_site[name] - target) <= TOL, (name, per_site[name])


def test_calibration_leaves_padding_out_of_the_quantile():
    model = _bert()
    with torch.no_grad():  # padding (id 0) far from the real tokens, so counting it would show
        model.embeddings.word_embeddings.weight[0] = 5 * torch.randn(32, generator=torch.Generator().manual_seed(0))
    batches = []
    for i in range(3):
        ids = _ids(8, 16, 600 + i)
        mask = torch.ones(8, 16, dtype=torch.long)
        mask[:, 6:] = 0  # most tokens are padding
        ids[mask == 0] = 0
        batches.append({"input_ids": ids, "attention_mask": mask})
    first = "encoder.layer.0.mlp"  # its input does not depend on any threshold
    calibrate_skipping(model, batches, 0.5, passes=1)
    ctl = skip_controller(model)
    ctl.reset()
    with torch.no_grad():
        for b in batches:
            with ctl.tokens(b["attention_mask"]):
                model(**b)
    n_real = sum(int(b["attention_mask"].sum()) for b in batches)
    site = ctl.sites[first]
    assert site.seen == n_real
    assert site.skipped == round(0.5 * n_real)  # the quantile of the real tokens, exactly
    # with padding counted (no mask), the share skipped is not a half of all tokens
    ctl.reset()
    with torch.no_grad():
        for b in batches:
            model(**b)
    assert site.seen == 3 * 8 * 16
    assert abs(site.skipped / site.seen - 0.5) > 0.2


def test_calibration_without_mask_counts_every_token_and_restores_mode():
    gr = _gated_residual().train()
    x = torch.randn(4, 10, 16, generator=torch.Generator().manual_seed(6))
    calibrate_skipping(gr, [x], 0.5, passes=1)
    assert gr.training
    ctl = skip_controller(gr)
    gr.eval()
    with torch.no_grad():
        gr(x)
    assert ctl.sites["root"].seen == 40 and ctl.sites["root"].skipped == 20


# ----------------------------------------------------------------------------- 5. errors


@pytest.mark.parametrize("target", [-0.1, 1.0, 1.5, float("nan"), float("inf"), -float("inf"), True, False, "0.5", None])
def test_skip_budget_rejects_bad_target(target):
    with pytest.raises(ValueError, match="target must be a share of tokens in"):
        SkipBudget(_gated_residual(), target)


@pytest.mark.parametrize("weight", [-1.0, float("nan"), float("inf"), True, "1"])
def test_skip_budget_rejects_bad_weight(weight):
    with pytest.raises(ValueError, match="weight must be a finite number >= 0"):
        SkipBudget(_gated_residual(), 0.5, weight=weight)


@pytest.mark.parametrize("warmup", [-1, 1.5, True, None])
def test_skip_budget_rejects_bad_warmup(warmup):
    with pytest.raises(ValueError, match="warmup_steps must be an int >= 0"):
        SkipBudget(_gated_residual(), 0.5, warmup_steps=warmup)


@pytest.mark.parametrize("ratio", [-0.1, 1.0, 2.0, float("nan"), float("inf"), True])
def test_calibrate_rejects_bad_ratio(ratio):
    gr = _gated_residual()
    with pytest.raises(ValueError, match="ratio must be a share of tokens in"):
        calibrate_skipping(gr, [torch.randn(2, 3, 16)], ratio)


def test_calibrate_rejects_bad_site_mapping_passes_and_empty_batches():
    model = _bert()
    names = [n for n, _, _ in find_skip_sites(model)]
    batch = [{"input_ids": _ids(2, 5, 0)}]
    with pytest.raises(ValueError, match="ratio must name every skip site"):
        calibrate_skipping(model, batch, {names[0]: 0.5})
    with pytest.raises(ValueError, match="unknown"):
        calibrate_skipping(model, batch, {**dict.fromkeys(names, 0.5), "nope": 0.5})
    with pytest.raises(ValueError, match=r"ratio\['encoder.layer.1.mlp'\]"):
        calibrate_skipping(model, batch, {names[0]: 0.5, names[1]: float("nan")})
    for passes in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="passes must be an int >= 1"):
            calibrate_skipping(model, batch, 0.5, passes=passes)
    for ratio in (0.5, 0.0):
        with pytest.raises(ValueError, match="at least one batch"):
            calibrate_skipping(model, [], ratio)
        with pytest.raises(ValueError, match="at least one batch"):
            calibrate_skipping(model, iter(()), ratio)


def test_set_thresholds_errors():
    model = _bert()
    ctl = enable_skipping(model)
    names = list(ctl.sites)
    for bad in (float("nan"), True, "1", None):
        with pytest.raises(ValueError, match="must be a number"):
            ctl.set_thresholds(bad)
    with pytest.raises(ValueError, match="must be a number"):
        ctl.set_thresholds({names[0]: 0.5, names[1]: float("nan")})
    with pytest.raises(ValueError, match=r"unknown: \['nope'\]"):
        ctl.set_thresholds({**dict.fromkeys(names, 0.5), "nope": 0.5})
    with pytest.raises(ValueError, match=r"missing: \['encoder.layer.1.mlp'\]"):
        ctl.set_thresholds({names[0]: 0.5})
    assert ctl.thresholds == dict.fromkeys(names, -math.inf)  # a rejected call sets nothing
    ctl.set_thresholds({names[0]: 0.5, names[1]: math.inf})
    assert ctl.thresholds == {names[0]: 0.5, names[1]: math.inf}


def test_enable_twice_and_disable_without_enable_raise():
    model = _gpt2()
    with pytest.raises(ValueError, match="not enabled"):
        disable_skipping(model)
    with pytest.raises(ValueError, match="skip_map needs enable_skipping"):
        skip_map(model, _ids(2, 3, 0))
    enable_skipping(model)
    with pytest.raises(ValueError, match="already enabled"):
        enable_skipping(model)
    disable_skipping(model)
    with pytest.raises(ValueError, match="not enabled"):
        disable_skipping(model)


@pytest.mark.parametrize("variant,kwargs", [
    ("plain", {}), ("highway", {}), ("gateskip", {}), ("gateskip", {"gate_input": "branch"}),
    ("rezero", {}), ("layerscale", {}),
])
def test_variants_whose_gate_reads_the_branch_cannot_skip(variant, kwargs):
    model = _bert(variant=variant, **kwargs)
    with pytest.raises(ValueError, match=rf"'{variant}' gates of this model cannot skip tokens.*does not read x alone"):
        enable_skipping(model)
    assert skip_controller(model) is None
    with pytest.raises(ValueError, match="cannot skip tokens"):
        SkipBudget(model, 0.5)
    gr = vg.GatedResidual(_mlp(), 16, variant=variant, tokenwise=True, **kwargs)
    with pytest.raises(ValueError, match=r"GatedResidual \(root\).*does not read x alone"):
        enable_skipping(gr)


def test_unskippable_models_raise_with_reason():
    with pytest.raises(ValueError, match=r"neither patched by vectorgate\.patch nor holds a GatedResidual"):
        enable_skipping(nn.Linear(4, 4))
    with pytest.raises(ValueError, match="neither patched"):
        SkipBudget(nn.Linear(4, 4), 0.5)
    gr = vg.GatedResidual(_mlp(), 16, **RANDOM_GATE)
    with pytest.raises(ValueError, match="tokenwise=True"):
        enable_skipping(gr)
    with pytest.raises(ValueError, match="tokenwise=True"):
        enable_skipping(nn.Sequential(gr))
    attention_only = _gpt2(sites=("attention",), **RANDOM_GATE)
    with pytest.raises(ValueError, match=r"skips tokens at sites \['mlp'\], but the model was patched at \['attention'\]"):
        enable_skipping(attention_only)


def test_gated_residual_skipping_rejects_extra_arguments_only_when_tokens_are_split():
    class TwoArg(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(16, 16)

        def forward(self, x, scale=1.0):
            return self.lin(x) * scale

    gr = vg.GatedResidual(TwoArg(), 16, tokenwise=True, **RANDOM_GATE)
    x = torch.randn(2, 5, 16)
    ref = gr(x, scale=2.0)
    enable_skipping(gr)
    assert torch.equal(gr(x, scale=2.0), ref)
    skip_controller(gr).set_thresholds(math.inf)
    with pytest.raises(TypeError, match="extra arguments"):
        gr(x, scale=2.0)


def test_enable_skipping_with_bad_threshold_leaves_model_unchanged():
    gr = _gated_residual()
    with pytest.raises(ValueError):
        enable_skipping(gr, float("nan"))
    assert skip_controller(gr) is None


def test_calibrate_skipping_with_bad_ratio_leaves_model_unchanged():
    gr = _gated_residual()
    with pytest.raises(ValueError):
        calibrate_skipping(gr, [torch.randn(2, 3, 16)], 1.5)
    assert skip_controller(gr) is None


# ----------------------------------------------------------------------------- 6. SkipBudget


def _train_gr(seed: int = 0) -> vg.GatedResidual:
    return _gated_residual(seed=seed).train()  # no dropout in the branch: train == eval numerics


def test_budget_penalty_zero_before_forward_then_positive_with_gradient():
    gr = _train_gr()
    budget = SkipBudget(gr, 0.25)
    pen = budget.loss()
    assert isinstance(pen, torch.Tensor) and pen.shape == () and float(pen) == 0.0
    x = torch.randn(2, 8, 16, generator=torch.Generator().manual_seed(7))
    gr(x)
    pen = budget.loss()
    with torch.no_grad():
        scores = _scores_gr(gr, x).flatten()
    expected = scores.sort().values[: int(0.25 * 16)].mean()
    assert float(pen.detach()) > 0
    torch.testing.assert_close(pen.detach(), expected, rtol=1e-6, atol=1e-7)
    pen.backward()
    assert gr.gate.proj.weight.grad is not None and bool(gr.gate.proj.weight.grad.abs().sum() > 0)
    assert float(budget.loss()) == 0.0  # loss() consumed the penalties


def test_budget_weight_scales_and_mean_over_forwards():
    gr = _train_gr()
    x1 = torch.randn(2, 8, 16, generator=torch.Generator().manual_seed(8))
    x2 = torch.randn(2, 8, 16, generator=torch.Generator().manual_seed(9))
    b1 = SkipBudget(gr, 0.5)
    gr(x1)
    gr(x2)
    p1 = b1.loss()
    b1.remove()
    b3 = SkipBudget(gr, 0.5, weight=3.0)
    gr(x1)
    gr(x2)
    torch.testing.assert_close(b3.loss(), 3 * p1)
    with torch.no_grad():
        m1 = _scores_gr(gr, x1).flatten().sort().values[:8].mean()
        m2 = _scores_gr(gr, x2).flatten().sort().values[:8].mean()
    torch.testing.assert_close(p1.detach(), (m1 + m2) / 2)


@pytest.mark.parametrize("kind", ["bert", "gpt2", "timm_vit"])
def test_budget_on_patched_models_has_gradient_to_every_skip_gate(kind):
    build, make = KINDS[kind]
    model = build().train()
    budget = SkipBudget(model, 0.5)
    assert len(budget.gates) == 2
    model(**make(0))
    pen = budget.loss()
    assert float(pen.detach()) > 0
    pen.backward()
    for gate in budget.gates:
        grad = gate.proj.weight.grad
        assert grad is not None and bool(grad.abs().sum() > 0)
    budget.remove()


def test_budget_ratio_ramps_linearly_over_warmup():
    budget = SkipBudget(_gated_residual(), 0.4, warmup_steps=4)
    ratios = []
    for _ in range(7):
        ratios.append(budget.ratio)
        budget.step()
    assert ratios[:4] == pytest.approx([0.1, 0.2, 0.3, 0.4])
    steps = [b - a for a, b in itertools.pairwise(ratios[:4])]
    assert steps == pytest.approx([0.1] * 3)
    assert ratios[4:] == pytest.approx([0.4] * 3) and max(ratios) <= 0.4
    budget.remove()
    assert SkipBudget(_gated_residual(), 0.4).ratio == 0.4  # no warm-up: the target at once


def test_budget_warmup_governs_how_many_tokens_rank():
    gr = _train_gr()
    x = torch.randn(2, 10, 16, generator=torch.Generator().manual_seed(10))
    scores = _scores_gr(gr, x).flatten().sort().values
    budget = SkipBudget(gr, 0.5, warmup_steps=5)
    for step in range(6):
        gr(x)
        k = int(budget.ratio * 20)
        torch.testing.assert_close(budget.loss().detach(), scores[:k].mean())
        assert k == min(2 * (step + 1), 10)
        budget.step()


@pytest.mark.parametrize("variant,kwargs", [("vectorgate", {}), ("mod_router", {}), ("gateskip", {"gate_input": "x"})])
def test_budget_drop_zeroes_ranked_out_branch_outputs(variant, kwargs):
    gr = _gated_residual(variant, **kwargs)
    x = torch.randn(3, 7, 16, generator=torch.Generator().manual_seed(11))
    with torch.no_grad():
        scores = _scores_gr(gr, x)
        dense = gr(x)
        f = gr.fn(x)
        k = int(0.3 * 21)
        dropped = scores <= scores.flatten().sort().values[k - 1]
        assert int(dropped.sum()) == k
        ref = gr.gate.residual(x, f * (~dropped).unsqueeze(-1))  # eval: no budget involved
    budget = SkipBudget(gr, 0.3)
    gr.train()
    with torch.no_grad():
        y = gr(x)
    torch.testing.assert_close(y, ref, rtol=1e-6, atol=1e-6)
    assert not torch.allclose(y, dense)
    budget.remove()

    no_drop = SkipBudget(gr, 0.3, drop=False)
    with torch.no_grad():
        y = gr(x)
    torch.testing.assert_close(y, dense, rtol=1e-6, atol=1e-6)
    assert float(no_drop.loss()) > 0  # still ranks and penalises
    no_drop.remove()


def test_budget_tokens_mask_keeps_padding_out_of_the_ranking():
    gr = _train_gr()
    x = torch.randn(2, 8, 16, generator=torch.Generator().manual_seed(12))
    with torch.no_grad():
        scores = _scores_gr(gr, x)
        gr.eval()
        dense = gr(x)
        f = gr.fn(x)
        gr.train()
    # "Padding" is the four lowest-scoring tokens: ranked with them, the budget would pick them.
    order = scores.flatten().argsort()
    mask = torch.ones(16, dtype=torch.bool)
    mask[order[:4]] = False
    mask = mask.reshape(2, 8)
    budget = SkipBudget(gr, 0.25)
    with budget.tokens(mask), torch.no_grad():
        y = gr(x)
    assert budget.token_mask is None  # restored on exit
    k = int(0.25 * 12)
    real_sorted = scores[mask].sort().values
    torch.testing.assert_close(budget.loss(), real_sorted[:k].mean())
    dropped = (scores <= real_sorted[k - 1]) & mask
    assert int(dropped.sum()) == k
    gr.eval()
    with torch.no_grad():
        ref = gr.gate.residual(x, f * (~dropped).unsqueeze(-1))
    torch.testing.assert_close(y, ref, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(y[~mask], dense[~mask], rtol=1e-6, atol=1e-6)  # padding untouched
    gr.train()
    with torch.no_grad():
        gr(x)
    torch.testing.assert_close(budget.loss(), scores.flatten().sort().values[:4].mean())  # unmasked: differs


def test_budget_remove_eval_and_double_attach():
    gr = _train_gr()
    x = torch.randn(2, 8, 16, generator=torch.Generator().manual_seed(13))
    with torch.no_grad():
        before = gr(x)
    budget = SkipBudget(gr, 0.5)
    with pytest.raises(ValueError, match="already attached"):
        SkipBudget(gr, 0.3)
    with torch.no_grad():
        assert not torch.allclose(gr(x), before)
    budget.loss()

    gr.eval()  # does nothing in eval mode
    with torch.no_grad():
        assert torch.equal(gr(x), before)
    assert float(budget.loss()) == 0.0
    gr.train()

    budget.remove()
    assert budget.gates == [] and gr.site.budget is None
    with torch.no_grad():
        assert torch.equal(gr(x), before)
    assert float(budget.loss()) == 0.0
    budget.remove()  # idempotent
    with SkipBudget(gr, 0.5) as again:  # a new one attaches after remove; the context removes it
        assert gr.site.budget is again
    assert gr.site.budget is None


def test_budget_works_with_skipping_enabled_in_training():
    gr = _train_gr()
    x = torch.randn(2, 8, 16, generator=torch.Generator().manual_seed(14))
    enable_skipping(gr, float(_scores_gr(gr, x).median()))
    budget = SkipBudget(gr, 0.25)
    y = gr(x)
    pen = budget.loss()
    (y.sum() + pen).backward()
    assert float(pen.detach()) > 0 and bool(gr.gate.proj.weight.grad.abs().sum() > 0)


def test_budget_nan_penalty_raises():
    gr = _train_gr()
    with torch.no_grad():
        gr.gate.proj.weight.fill_(float("nan"))
    budget = SkipBudget(gr, 0.5)
    gr(torch.randn(2, 4, 16))
    with pytest.raises(FloatingPointError, match="not finite"):
        budget.loss()


# ----------------------------------------------------------------------------- 7. unpatch, skip_map


@pytest.mark.parametrize("kind", ["bert", "gpt2", "llama", "timm_vit"])
def test_unpatch_with_skipping_enabled_restores_the_original(kind):
    build, make = KINDS[kind]
    model = build()
    inputs = make(0, mask=True)
    vg.unpatch(model)  # the built model comes patched: get the pristine original first
    original = copy.deepcopy(model)
    keys = list(original.state_dict())
    ref = _run(original, inputs)

    vg.patch(model, **RANDOM_GATE)
    calibrate_skipping(model, _calib_batches(kind), 0.5, forward=_fwd)
    assert not torch.equal(_run(model, inputs), ref)
    vg.unpatch(model)
    assert skip_controller(model) is None
    assert list(model.state_dict()) == keys
    assert torch.equal(_run(model, inputs), ref)
    for m in model.modules():  # no instance override left behind
        assert "forward" not in m.__dict__ and "feed_forward_chunk" not in m.__dict__
    with pytest.raises(ValueError, match="neither patched"):
        enable_skipping(model)


@pytest.mark.parametrize("kind", ["bert", "gpt2", "gated_residual"])
def test_skip_map_shape_and_ratios_match_keep(kind):
    build, make = KINDS[kind]
    model = build()
    calibrate_skipping(model, _calib_batches(kind, n=3), 0.5, forward=_fwd)
    ctl = skip_controller(model)
    inputs = make(1, mask=True)
    model.train()
    result = skip_map(model, inputs, forward=_fwd)
    assert model.training  # mode restored
    assert result["sites"] == list(ctl.sites)
    keep = result["keep"]
    batch, tokens = (3, 7)
    assert keep.dtype == torch.bool and keep.shape == (len(ctl.sites), batch, tokens)
    mask = inputs.get("attention_mask")
    for i, name in enumerate(result["sites"]):
        if mask is not None:
            real = mask.bool()
            expected = float((~keep[i] & real).sum()) / float(real.sum())
        else:
            expected = float((~keep[i]).float().mean())
        assert result["skip_ratio"][name] == pytest.approx(expected)
    assert 0 < int((~keep).sum()) < keep.numel()
    assert all(s.seen == 0 for s in ctl.sites.values())
    # the map is what the model then does: same decisions when recording
    model.eval()
    with ctl.record():
        _run(model, inputs)
    assert torch.equal(torch.stack([ctl.sites[n].decisions[0] for n in result["sites"]]), keep)


# ----------------------------------------------------------------------------- 8. non-finite scores


def test_nan_gate_raises_when_skipping_is_active():
    gr = _gated_residual()
    ctl = enable_skipping(gr)
    x = torch.randn(2, 5, 16)
    with torch.no_grad():
        gr.gate.proj.weight[0, 0] = float("nan")
    gr(x)  # idle (threshold -inf, not recording): the dense path runs, no decision made
    with pytest.raises(FloatingPointError, match="non-finite skip scores"):
        with ctl.record():
            gr(x)
    ctl.set_thresholds(0.5)
    with pytest.raises(FloatingPointError, match="root"):
        gr(x)
    with pytest.raises(FloatingPointError):
        ctl.sites["root"].decide(x)


def test_nan_gate_in_patched_model_raises():
    model = _gpt2()
    calibrate_skipping(model, _calib_batches("gpt2"), 0.5, forward=_fwd)
    with torch.no_grad():
        model.transformer.h[1].residual_gates["mlp"].proj.bias[3] = float("inf")
        model.transformer.h[1].residual_gates["mlp"].proj.weight[3, 0] = float("nan")
    with pytest.raises(FloatingPointError, match=r"transformer\.h\.1\.mlp"):
        _run(model, _text_inputs(0))


def test_decide_and_take_z_contract():
    gr = _gated_residual()
    ctl = enable_skipping(gr)
    site = ctl.sites["root"]
    x = torch.randn(2, 5, 16)
    assert site.decide(x) == (None, None)  # idle
    ctl.set_thresholds(-1e9)
    z, keep = site.decide(x)
    assert keep is None and torch.equal(z, gr.gate.pre_activation(x))
    assert site.take_z(x.clone()) is None  # only the very same x
    z, keep = site.decide(x)
    assert site.take_z(x) is z and site.take_z(x) is None  # once
    ctl.set_thresholds(math.inf)
    _, keep = site.decide(x)
    assert keep is not None and keep.dtype == torch.bool and not bool(keep.any())


def test_a_token_mask_of_the_wrong_shape_is_an_error_not_ignored():
    gr = _gated_residual()
    x = torch.randn(2, 5, 16)
    ctl = enable_skipping(gr, 0.5)
    with ctl.tokens(torch.ones(2, 4, dtype=torch.bool)), pytest.raises(ValueError, match="token mask has shape"):
        gr(x)
    disable_skipping(gr)
    gr.train()
    budget = SkipBudget(gr, 0.5)
    with budget.tokens(torch.ones(2, 4, dtype=torch.bool)), pytest.raises(ValueError, match="token mask has shape"):
        gr(x)
    budget.remove()
