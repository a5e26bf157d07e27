"""Hyper-Connections / mHC (n streams), the lab's stream-widening peers.

They widen the residual stream, so they are tested through their own host
(:func:`vectorgate_lab.peers.hyper_connect`) on tiny GPT-2 and timm ViT models, and as sites
called directly; last, a few steps of each peer (LAuReL's too) in the comparison harness's
char-LM and ViT tasks.
"""

from __future__ import annotations

import copy

import pytest
import torch
from peer_helpers import DIM, moved, pair  # shared with the library's peer tests
from torch import nn

from vectorgate.base import ResidualGate

# ----------------------------------------------------------------------------- HC / mHC

hyper_connections = pytest.importorskip("hyper_connections")

from vectorgate_lab.peers import (  # noqa: E402
    STREAM_VARIANTS,
    HyperConnectionSite,
    hyper_connect,
    is_stream_variant,
    stream_functions,
)

STREAM = ["hc", "hc_dynamic", "mhc"]


def _formula(name: str, n: int, d: int) -> int:
    static = n * n + 2 * n
    return {"hc": static, "hc_dynamic": static + (n + 3) * d + 2, "mhc": static + (n + 3) * d + 3}[name]


@pytest.mark.parametrize("name", STREAM)
@pytest.mark.parametrize("n", [2, 4])
def test_stream_sites_build_with_their_parameter_count(name, n):
    site = STREAM_VARIANTS[name](16, n=n, layer_index=3)
    assert isinstance(site, HyperConnectionSite) and isinstance(site, ResidualGate)
    assert is_stream_variant(name) and getattr(STREAM_VARIANTS[name], "expands_stream", False)
    assert site.num_streams == n and site.dim == 16 and site.layer_index == 3
    assert site.num_parameters == sum(p.numel() for p in site.parameters()) == _formula(name, n, 16)
    assert f"n={n}" in repr(site) and f"params={_formula(name, n, 16):,}" in repr(site)
    # The package's module does the math; static HC keeps the dynamic terms as zero buffers.
    inner = {"hc": hyper_connections.HyperConnections, "hc_dynamic": hyper_connections.HyperConnections,
             "mhc": hyper_connections.ManifoldConstrainedHyperConnections}[name]
    assert type(site.hc) is inner
    if name == "hc":
        assert not site.hc.dynamic_alpha_fn.requires_grad and not site.hc.dynamic_alpha_fn.any()


@pytest.mark.parametrize("name", STREAM)
def test_stream_variants_refuse_the_x_f_interface_with_clear_errors(name):
    with pytest.raises(ValueError, match=r"patch\(\) and GatedResidual cannot"):
        STREAM_VARIANTS[name](DIM)
    site = STREAM_VARIANTS[name](DIM, n=2, layer_index=0)
    x, f = pair(6)
    with pytest.raises(TypeError, match="hyper_connect"):
        site.residual(x, f)
    with pytest.raises(TypeError, match="stream-expanding"):
        site.residual_delta(x, f)
    with pytest.raises(ValueError, match=r"batch \* 2"):
        site(x, nn.Identity())  # batch 3 is not a multiple of 2 streams: not expanded
    with pytest.raises(ValueError, match="n "):
        STREAM_VARIANTS[name](DIM, n=0, layer_index=0)


def _branches(depth: int, d: int) -> list[nn.Module]:
    torch.manual_seed(0)
    return [nn.Sequential(nn.LayerNorm(d), nn.Linear(d, d), nn.GELU()) for _ in range(depth)]


@pytest.mark.parametrize("name", ["hc", "hc_dynamic"])
@pytest.mark.parametrize("n", [2, 4])
def test_hc_sites_called_directly_start_as_the_plain_residual_stack(name, n):
    branches = _branches(4, DIM)
    sites = [STREAM_VARIANTS[name](DIM, n=n, layer_index=i) for i in range(4)]
    expand, reduce = stream_functions(n)
    x = pair(7)[0]
    plain, streams = x, expand(x)
    for branch, site in zip(branches, sites, strict=True):
        plain = plain + branch(plain)
        streams = site(streams, branch)
    assert streams.shape == (3 * n, 5, DIM)
    # every stream is the plain residual stream, bit for bit; the package's reduce sums them
    assert all(torch.equal(s, plain) for s in streams.view(3, n, 5, DIM).unbind(1))
    assert torch.equal(reduce(streams) / n, plain)


@pytest.mark.parametrize("name", STREAM)
def test_begin_end_hooks_compute_what_the_package_forward_computes(name):
    """The host path (begin -> branch -> streams + end) equals the package's own forward."""
    site = moved(STREAM_VARIANTS[name](DIM, n=4, layer_index=1))
    branch = _branches(1, DIM)[0]
    streams = torch.randn(8, 5, DIM)
    direct = site(streams, branch)
    hosted = streams + site.end(branch(site.begin(streams)))
    torch.testing.assert_close(hosted, direct)
    with pytest.raises(RuntimeError, match="begin"):
        site.end(torch.zeros(2, 5, DIM))


def _tiny_gpt2():
    transformers = pytest.importorskip("transformers")
    transformers.logging.set_verbosity_error()
    config = transformers.GPT2Config(vocab_size=30, n_positions=16, n_embd=16, n_layer=2, n_head=2,
                                     resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                                     bos_token_id=0, eos_token_id=0)
    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(config)
    inputs = {"input_ids": torch.randint(0, 30, (3, 10))}
    from vectorgate_lab.compare.tasks.charlm import _gpt2_sites

    return model, inputs, _gpt2_sites, lambda out: out.logits


def _tiny_vit():
    pytest.importorskip("timm")
    from timm.models.vision_transformer import VisionTransformer

    from vectorgate_lab.compare.tasks.vit import _timm_sites

    torch.manual_seed(0)
    model = VisionTransformer(img_size=28, patch_size=7, in_chans=1, num_classes=10, embed_dim=16, depth=2,
                              num_heads=2, mlp_ratio=2.0)
    return model, {"x": torch.randn(3, 1, 28, 28)}, _timm_sites, lambda out: out


HOSTS = {"gpt2": _tiny_gpt2, "timm_vit": _tiny_vit}


def _run(model, inputs, read):
    return read(model(**inputs)) if "input_ids" in inputs else read(model(inputs["x"]))


@pytest.mark.parametrize("host", sorted(HOSTS))
@pytest.mark.parametrize(("name", "n"), [("hc", 2), ("hc", 4), ("hc_dynamic", 4), ("mhc", 4)])
def test_hyper_connect_on_real_models(host, name, n):
    """Identity at init (HC), parameter count, gradients to every site parameter, removal."""
    model, inputs, sites_of, read = HOSTS[host]()
    model.train()
    before = _run(model, inputs, read).detach()
    plain_params = sum(p.numel() for p in model.parameters())
    hc = copy.deepcopy(model)
    handle = hyper_connect(hc, sites_of(hc), dim=16, variant=name, n=n)
    assert len(handle.sites) == 4 and [s.layer_index for s in handle.sites] == [0, 1, 2, 3]
    assert sum(p.numel() for p in hc.parameters()) == plain_params + 4 * _formula(name, n, 16)
    from vectorgate.patching import gates

    assert len(list(gates(hc))) == 4
    after = _run(hc, inputs, read)
    if name == "mhc":
        assert not torch.equal(after, before)  # mHC has no identity at init
    else:
        assert torch.equal(after, before)
    opt = torch.optim.Adam([p for s in handle.sites for p in s.parameters()], lr=1e-2)
    for _ in range(2):  # zero-initialised dynamic terms give their scales a gradient from step 1
        opt.zero_grad()
        _run(hc, inputs, read).square().mean().backward()
        opt.step()
    for site in handle.sites:
        for pname, p in site.named_parameters():
            assert p.grad is not None and torch.isfinite(p.grad).all(), pname
            if name == "mhc" and site.layer_index in (0, 3) and pname == "hc.residual_scale":
                # mHC's residual mix is doubly stochastic: on the first site it mixes n identical
                # copies, and after the last one the streams are averaged (its rows sum to 1),
                # so at both ends the mix is a no-op and its scale learns nothing, by design.
                continue
            assert p.grad.abs().sum() > 0, (site.layer_index, pname)
    with pytest.raises(ValueError, match="already"):
        hyper_connect(hc, sites_of(hc), dim=16, variant=name, n=n)
    twin = copy.deepcopy(hc)  # the copy's hooks call the copy's own sites
    reference = _run(hc, inputs, read).detach()
    with torch.no_grad():
        for site in (m for m in twin.modules() if isinstance(m, HyperConnectionSite)):
            site.hc.static_beta.mul_(1.5)
    assert not torch.equal(_run(twin, inputs, read), reference)
    assert torch.equal(_run(hc, inputs, read), reference)
    handle.remove()
    assert not list(gates(hc)) and sum(p.numel() for p in hc.parameters()) == plain_params
    model.load_state_dict(hc.state_dict())  # same weights as trained, plain residuals again
    torch.testing.assert_close(_run(hc, inputs, read), _run(model, inputs, read))


# ----------------------------------------------------------------------------- harness


@pytest.fixture(scope="module")
def quick_tasks():
    pytest.importorskip("transformers")
    pytest.importorskip("timm")
    from vectorgate_lab.compare.tasks import CharLMShakespeareTask, ViTMnistTask

    tasks = []
    for task in (CharLMShakespeareTask(), ViTMnistTask()):
        task.configure(quick=True)
        task.load()
        tasks.append(task)
    return tasks


PEERS = ["plain", "hc[n=2]", "hc_dynamic[n=4]", "mhc[n=4]", "laurel_rw", "laurel_lr[rank=4]", "laurel_rw_lr[rank=4]"]


def test_peers_train_in_the_harness_char_lm_and_vit(quick_tasks):
    from vectorgate_lab.compare import parse_variant
    from vectorgate_lab.compare.runner import run_one
    from vectorgate_lab.compare.tasks import TextFineTuneTask

    for task in quick_tasks:
        records = {}
        for text in PEERS:
            spec = parse_variant(text)
            assert task.supports(spec)
            records[text] = record = run_one(task, spec, seed=0)
            assert "error" not in record and record["steps"] == 3, (task.name, text, record)
            assert all(torch.isfinite(torch.tensor(v)) for _, v in record["train_loss"])
        # identity at init through the whole harness: the first loss is the plain model's
        for text in ("hc[n=2]", "hc_dynamic[n=4]", "laurel_lr[rank=4]"):
            assert records[text]["train_loss"][0] == records["plain"]["train_loss"][0], (task.name, text)
        assert records["mhc[n=4]"]["train_loss"][0] != records["plain"]["train_loss"][0]
    # the pretrained-BERT text tasks patch post-LN layers: they do not take stream variants
    assert not TextFineTuneTask().supports(parse_variant("hc[n=2]"))
    assert TextFineTuneTask().supports(parse_variant("laurel_rw"))
