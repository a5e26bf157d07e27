"""GateRecorder on real integrations: the pretrained MiniLM patched by vectorgate.patch, a
timm ViT, and ``vectorgate inspect`` end to end on gates written by save_gates."""

from __future__ import annotations

import json

import pytest
import torch

from vectorgate.recorder import GateRecorder

transformers = pytest.importorskip("transformers")
from vectorgate.patching import (  # noqa: E402
    gates,
    patch,
    save_gates,
)

SENTENCES = ["A gripping, beautifully acted film.", "Dull.", "Too long by half, and never funny."]


def _randomise_curvature(model: torch.nn.Module) -> None:
    """Per-dimension c and a random g, as training would leave them (g's output starts at zero)."""
    torch.manual_seed(0)
    with torch.no_grad():
        for i, (_, g) in enumerate(gates(model)):
            g.curvature.copy_(torch.rand(g.dim) * 0.3 * (1 + i % 3))
            for p in g.proj.parameters():
                p.normal_(0, 1 / g.dim**0.5)


@pytest.fixture
def gated_minilm(minilm_classifier):
    patch(minilm_classifier)
    _randomise_curvature(minilm_classifier)
    return minilm_classifier


def test_patched_minilm_padding_is_not_counted(gated_minilm, minilm_tokenizer):
    """A padded batch gives the statistics of the sentences run one by one, unpadded."""
    padded, single = GateRecorder(gated_minilm), GateRecorder(gated_minilm)
    assert len(padded.gates) == 12
    enc = minilm_tokenizer(SENTENCES, padding=True, return_tensors="pt")
    assert (enc["attention_mask"] == 0).any()
    with torch.no_grad():
        with padded, padded.masked(enc["attention_mask"]):
            gated_minilm(**enc)
        with single:
            for text in SENTENCES:  # three different sequence lengths
                gated_minilm(**minilm_tokenizer([text], return_tensors="pt"))
    a, b = padded.stats(), single.stats()
    n_real = int(enc["attention_mask"].sum())
    for name in a:
        assert a[name].tokens == b[name].tokens == n_real
        assert a[name].calls == 1 and b[name].calls == 3
        for field in ("mean", "std", "min", "max", "mean_alpha", "mean_beta"):
            torch.testing.assert_close(getattr(a[name], field), getattr(b[name], field), atol=2e-5, rtol=1e-4)


def test_patched_minilm_stats_equal_direct_computation(gated_minilm, minilm_tokenizer):
    inputs: dict[str, torch.Tensor] = {}
    handles = [
        g.proj.register_forward_pre_hook(lambda m, args, n=n: inputs.__setitem__(n, args[0].detach()))
        for n, g in gates(gated_minilm)
    ]
    enc = minilm_tokenizer(SENTENCES, padding=True, return_tensors="pt")
    rec = GateRecorder(gated_minilm)
    with torch.no_grad(), rec, rec.masked(enc["attention_mask"]):
        gated_minilm(**enc)
    for h in handles:
        h.remove()
    keep = enc["attention_mask"].bool()
    with torch.no_grad():
        for name, st in rec.stats().items():
            s = gated_minilm.get_submodule(name)(inputs[name]).s[keep].double()
            torch.testing.assert_close(st.mean, s.mean(0), atol=1e-6, rtol=1e-5)
            torch.testing.assert_close(st.std, s.std(0, correction=0), atol=1e-6, rtol=1e-5)
            torch.testing.assert_close(st.mean_beta, (-s).exp().mean(0), atol=1e-6, rtol=1e-5)
            assert float(st.std.mean()) > 1e-3  # the gates are really active


def test_timm_vit_gates_are_recorded():
    pytest.importorskip("timm")
    from timm.models.vision_transformer import VisionTransformer

    torch.manual_seed(0)
    vit = VisionTransformer(img_size=16, patch_size=8, in_chans=1, num_classes=3, embed_dim=16,
                            depth=2, num_heads=2)
    patch(vit, init="random", init_curvature=0.5)
    rec = GateRecorder(vit)
    with torch.no_grad(), rec:
        vit(torch.randn(3, 1, 16, 16))
    stats = rec.stats()
    assert len(stats) == 4 and not rec.unobserved()
    assert all(st.tokens == 3 * 5 for st in stats.values())  # 4 patches + the class token


def test_cli_inspect_end_to_end(gated_minilm, minilm_tokenizer, tmp_path, capsys):
    from vectorgate.cli import main

    gates_dir = save_gates(gated_minilm, tmp_path / "gates")
    lines = tmp_path / "lines.txt"
    lines.write_text("An instant classic.\n\nI walked out after an hour.\n")
    out = tmp_path / "report"
    code = main([
        "inspect", "--base", "minilm", "--gates", str(gates_dir), "--text", SENTENCES[0],
        "--file", str(lines), "--output-dir", str(out), "--batch-size", "2",
    ])
    assert code == 0
    printed = capsys.readouterr().out
    assert "3 sentence(s)" in printed and "0.attention.output" in printed and "5.output" in printed
    for png in ("curvature.png", "s_distribution.png", "token_beta.png", "compound_gain.png"):
        data = (out / png).read_bytes()
        assert data[:4] == b"\x89PNG" and len(data) > 10_000
    report = json.loads((out / "gate_stats.json").read_text())
    assert len(report["gates"]) == 12
    # The compound gain along the stream, one site per gate, in the summary and the JSON.
    assert len(report["compound_gain"]["sites"]) == 12 and report["compound_gain"]["within_budget"]
    assert "Compound gain on the token-level text: 12 gated sites" in (out / "summary.txt").read_text()
    texts = [SENTENCES[0], "An instant classic.", "I walked out after an hour."]
    n_tokens = sum(len(ids) for ids in minilm_tokenizer(texts)["input_ids"])
    assert all(g["tokens"] == n_tokens and g["calls"] == 2 for g in report["gates"])
    # The saved curvature came back through save_gates/load_gates.
    first_name, first_gate = next(iter(gates(gated_minilm)))
    assert report["gates"][0]["name"] == first_name
    torch.testing.assert_close(
        torch.tensor(report["gates"][0]["per_dim"]["curvature"], dtype=torch.float32),
        first_gate.effective_curvature().detach(),
    )
    assert (out / "summary.txt").read_text().splitlines()[0].startswith("gate")


@pytest.mark.parametrize(
    "extra, message",
    [
        ([], "give some text"),
        (["--text", "x", "--gates", "/nonexistent/gates"], "no vectorgate_config.json"),
    ],
    ids=["no-text", "missing-gates"],
)
def test_cli_inspect_errors(tmp_path, extra, message):
    from vectorgate.cli import main

    args = ["inspect", "--base", "minilm", "--output-dir", str(tmp_path)]
    if "--gates" not in extra:
        args += ["--gates", str(tmp_path)]
    with pytest.raises(SystemExit, match=message):
        main(args + extra)
