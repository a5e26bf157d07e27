"""Pictures of token skipping: the sites x tokens map, the per-site ratios, and their place in
write_report and ``vectorgate inspect --skip-ratio``."""

from __future__ import annotations

import json
import math

import pytest
import torch

import vectorgate
from vectorgate.skip import (
    calibrate_skipping,
    disable_skipping,
    enable_skipping,
    skip_controller,
    skip_map,
)
from vectorgate.skip.plot import (
    KEPT_COLOR,
    SKIPPED_COLOR,
    plot_skip_map,
    plot_skip_ratios,
    site_labels,
)

pytest.importorskip("matplotlib")  # vectorgate itself imports without it; the plots need it

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
SENTENCES = [
    "A gripping, beautifully acted film.",
    "Dull.",
    "Too long by half, and never funny.",
    "An instant classic.",
    "I walked out after an hour.",
    "The score is lovely but the plot goes nowhere.",
]
SITES = [f"bert.encoder.layer.{i}.mlp" for i in range(3)]


def _result() -> dict:
    """A hand-made skip_map result: 3 sites, a batch of 2, 5 tokens; example 1 is known."""
    keep = torch.ones(3, 2, 5, dtype=torch.bool)
    keep[0, 1, [0, 3]] = False        # site 0 skips 2 of 5 tokens of example 1: 40%
    keep[1, 1, :] = False             # site 1 skips all of them: 100%
    keep[2, 0, :] = False             # site 2 skips none of example 1 (all of example 0)
    return {"sites": list(SITES), "keep": keep, "skip_ratio": dict.fromkeys(SITES, 0.5)}


def _right_texts(ax) -> list[str]:
    return [t.get_text() for t in ax.texts]


# --- plot_skip_map -------------------------------------------------------------------------


def test_skip_map_has_one_row_per_site_and_one_column_per_token():
    result, tokens = _result(), ["[CLS]", "a", "fine", "film", "[SEP]"]
    fig = plot_skip_map(result, tokens, example=1)
    (ax,) = fig.axes
    image = ax.images[0].get_array()
    assert image.shape == (3, 5)
    assert torch.equal(torch.as_tensor(image.data).bool(), result["keep"][:, 1])
    assert [t.get_text() for t in ax.get_yticklabels()] == ["layer 0 mlp", "layer 1 mlp", "layer 2 mlp"]
    assert [t.get_text() for t in ax.get_xticklabels()] == tokens
    # kept and skipped get the two legend colours
    cmap, norm = ax.images[0].get_cmap(), ax.images[0].norm
    from matplotlib.colors import to_hex

    assert to_hex(cmap(norm(1))) == KEPT_COLOR and to_hex(cmap(norm(0))) == SKIPPED_COLOR
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert any(t.startswith("kept") for t in legend) and any(t.startswith("skipped") for t in legend)


def test_skip_map_ratio_text_matches_the_map():
    result = _result()
    for example, expected in ((1, ["skipped 40%", "skipped 100%", "skipped 0%"]),
                              (0, ["skipped 0%", "skipped 0%", "skipped 100%"])):
        (ax,) = plot_skip_map(result, example=example).axes
        assert _right_texts(ax) == expected
        shares = (~result["keep"][:, example]).double().mean(1)
        assert [f"skipped {100 * s:.0f}%" for s in shares.tolist()] == expected


def test_skip_map_without_tokens_and_without_a_batch_dim():
    keep = torch.tensor([[True, False, True, True], [False, False, True, True]])
    (ax,) = plot_skip_map({"sites": ["0", "1"], "keep": keep}).axes
    assert ax.images[0].get_array().shape == (2, 4)
    assert ax.get_xlabel() == "token position"
    assert _right_texts(ax) == ["skipped 25%", "skipped 50%"]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["layer 0", "layer 1"]


def test_skip_map_draws_into_given_axes():
    from matplotlib.figure import Figure

    fig = Figure()
    ax1, ax2 = fig.subplots(1, 2)
    out = plot_skip_map(_result(), example=1, ax=ax2, title="mine")
    assert out is fig and not ax1.images and ax2.images and ax2.get_title(loc="left") == "mine"


@pytest.mark.parametrize(
    "change, kwargs, message",
    [
        (None, {"example": 2}, r"example 2 is out of range: the map holds 2 example\(s\)"),
        (None, {"example": -1}, "example -1 is out of range"),
        (None, {"example": True}, "example must be an int"),
        (None, {"tokens": ["a", "b"]}, r"tokens has 2 label\(s\) but the map has 5 token column\(s\)"),
        (None, {"tokens": "abcde"}, "tokens must be a sequence of token strings"),
        ("drop_keep", {}, "expected the dict skip_map"),
        ("wrong_sites", {}, r"must have shape \(sites=2"),
        ("flat", {}, r"must have shape \(sites=3"),
    ],
)
def test_skip_map_bad_input_raises(change, kwargs, message):
    result = _result()
    if change == "drop_keep":
        del result["keep"]
    elif change == "wrong_sites":
        result["sites"] = SITES[:2]
    elif change == "flat":
        result["keep"] = result["keep"].reshape(-1)
    with pytest.raises(ValueError, match=message):
        plot_skip_map(result, **kwargs)


def test_skip_map_without_batch_dim_has_only_example_0():
    with pytest.raises(ValueError, match=r"holds 1 example\(s\)"):
        plot_skip_map({"sites": ["a"], "keep": torch.ones(1, 3, dtype=torch.bool)}, example=1)


# --- plot_skip_ratios ----------------------------------------------------------------------


def test_skip_ratios_bars_and_target_line():
    ratios = {SITES[0]: 0.25, SITES[1]: 0.5, SITES[2]: math.nan}
    (ax,) = plot_skip_ratios(ratios, target=0.4).axes
    heights = [p.get_height() for p in ax.patches]
    assert heights == [0.25, 0.5, 0.0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["layer 0 mlp", "layer 1 mlp", "layer 2 mlp"]
    assert _right_texts(ax) == ["25%", "50%", "n/a"]
    (line,) = ax.get_lines()
    assert line.get_linestyle() == "--" and list(line.get_ydata()) == [0.4, 0.4]
    assert "target 40%" in [t.get_text() for t in ax.get_legend().get_texts()]
    (ax,) = plot_skip_ratios(ratios).axes
    assert not ax.get_lines()  # no target, no line


@pytest.mark.parametrize(
    "ratios, target, message",
    [
        ({}, None, "non-empty dict"),
        ({"a": 1.5}, None, r"skip ratio of 'a' must be a share in \[0, 1\]"),
        ({"a": "half"}, None, "skip ratio of 'a'"),
        ({"a": 0.5}, 1.0, r"target must be a share of tokens in \[0, 1\)"),
        ({"a": 0.5}, -0.1, "target must be"),
    ],
)
def test_skip_ratios_bad_input_raises(ratios, target, message):
    with pytest.raises(ValueError, match=message):
        plot_skip_ratios(ratios, target)


@pytest.mark.parametrize(
    "names, expected",
    [
        (["bert.encoder.layer.0.mlp", "bert.encoder.layer.11.mlp"], ["layer 0 mlp", "layer 11 mlp"]),
        (["transformer.h.2.mlp"], ["layer 2 mlp"]),
        (["0", "1"], ["layer 0", "layer 1"]),
        (["root"], ["root"]),
        (["a.0.mlp", "b.0.mlp"], ["a.0.mlp", "b.0.mlp"]),  # labels would collide: full names
    ],
)
def test_site_labels(names, expected):
    assert site_labels(names) == expected


# --- on a real model -----------------------------------------------------------------------


@pytest.fixture
def tiny_bert(minilm_tokenizer):
    """A 2-layer BERT over MiniLM's vocabulary, gated with random gates (scores differ)."""
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    config = BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                        vocab_size=minilm_tokenizer.vocab_size)
    model = BertModel(config).eval()
    vectorgate.patch(model, init="random", init_curvature=1.0)
    return model


def test_skip_map_of_a_real_model_is_drawn_as_recorded(tiny_bert, minilm_tokenizer):
    enc = minilm_tokenizer(SENTENCES[:2], padding=True, return_tensors="pt")
    batch = {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}
    enable_skipping(tiny_bert)
    calibrate_skipping(tiny_bert, [batch], 0.5)
    result = skip_map(tiny_bert, batch)
    disable_skipping(tiny_bert)
    tokens = minilm_tokenizer.convert_ids_to_tokens(enc["input_ids"][0].tolist())
    (ax,) = plot_skip_map(result, tokens).axes
    assert torch.equal(torch.as_tensor(ax.images[0].get_array().data).bool(), result["keep"][:, 0])
    assert [t.get_text() for t in ax.get_yticklabels()] == ["layer 0 mlp", "layer 1 mlp"]
    # the first sentence is the longer one: no padding, so the row shares are skip_map's ratios
    assert int(enc["attention_mask"][0].sum()) == len(tokens)
    assert 0 < (~result["keep"][:, 0]).sum() < result["keep"][:, 0].numel()


def test_write_report_shows_skipping(tiny_bert, minilm_tokenizer, tmp_path):
    from vectorgate import write_report

    ids = minilm_tokenizer(SENTENCES[:2], padding=True, return_tensors="pt")
    with torch.no_grad():
        before = tiny_bert(**ids).last_hidden_state
    plain, skipping = tmp_path / "plain", tmp_path / "skipping"
    write_report(tiny_bert, minilm_tokenizer, SENTENCES, plain, batch_size=4, progress=False)
    tiny_bert.train()
    write_report(tiny_bert, minilm_tokenizer, SENTENCES, skipping, batch_size=4, progress=False, skip_ratio=0.5)
    assert tiny_bert.training  # mode put back
    tiny_bert.eval()

    # the model is left as it was found
    assert skip_controller(tiny_bert) is None
    with torch.no_grad():
        assert torch.equal(tiny_bert(**ids).last_hidden_state, before)

    assert sorted(p.name for p in plain.iterdir()) == [
        "compound_gain.png", "curvature.png", "gate_stats.json", "s_distribution.png", "summary.txt", "token_beta.png"]
    for png in ("skip_map.png", "skip_ratios.png"):
        data = (skipping / png).read_bytes()
        assert data[:8] == PNG_MAGIC and len(data) > 5_000

    plain_json = json.loads((plain / "gate_stats.json").read_text())
    data = json.loads((skipping / "gate_stats.json").read_text(),
                      parse_constant=lambda c: pytest.fail(f"non-JSON {c}"))
    assert "skipping" not in plain_json
    assert data["gates"] == plain_json["gates"]  # gate statistics recorded with every branch running
    info = data["skipping"]
    sites = ["encoder.layer.0.mlp", "encoder.layer.1.mlp"]
    assert info["target"] == 0.5 and info["sites"] == sites and info["labels"] == ["layer 0 mlp", "layer 1 mlp"]
    assert set(info["skip_ratio"]) == set(info["threshold"]) == set(sites)
    for site in sites:
        assert info["skip_ratio"][site] == pytest.approx(0.5, abs=0.15)
        assert math.isfinite(info["threshold"][site])
    assert info["skip_ratio_overall"] == pytest.approx(0.5, abs=0.15)
    shown = info["token_text"]
    assert shown["text"] == SENTENCES[0]
    assert shown["tokens"] == minilm_tokenizer.convert_ids_to_tokens(minilm_tokenizer(SENTENCES[0])["input_ids"])
    assert [len(row) for row in shown["keep"]] == [len(shown["tokens"])] * 2
    for site, row in zip(sites, shown["keep"], strict=True):
        assert shown["skip_ratio"][site] == pytest.approx(row.count(0) / len(row))

    plain_summary = (plain / "summary.txt").read_text()
    summary = (skipping / "summary.txt").read_text()
    assert summary.startswith(plain_summary.rstrip("\n"))
    rows = {ln.split()[1]: ln for ln in summary.splitlines() if ln.startswith("layer ")}
    assert set(rows) == {"0", "1"}
    for site, label in zip(sites, ("0", "1"), strict=True):
        assert f"{100 * info['skip_ratio'][site]:.1f}%" in rows[label]
        assert f"{info['threshold'][site]:.4g}" in rows[label]
    assert "not a measurement" in summary


def test_write_report_keeps_skipping_the_caller_enabled(tiny_bert, minilm_tokenizer, tmp_path):
    from vectorgate import write_report

    controller = enable_skipping(tiny_bert, thresholds=-math.inf)
    write_report(tiny_bert, minilm_tokenizer, SENTENCES[:3], tmp_path, progress=False, skip_ratio=0.3)
    assert skip_controller(tiny_bert) is controller
    assert all(t == -math.inf for t in controller.thresholds.values())  # thresholds put back
    assert all(s.seen == 0 for s in controller.sites.values())
    info = json.loads((tmp_path / "gate_stats.json").read_text())["skipping"]
    assert all(r == pytest.approx(0.3, abs=0.15) for r in info["skip_ratio"].values())


def test_write_report_skip_ratio_zero_keeps_every_token(tiny_bert, minilm_tokenizer, tmp_path):
    from vectorgate import write_report

    write_report(tiny_bert, minilm_tokenizer, SENTENCES[:2], tmp_path, progress=False, skip_ratio=0.0)
    info = json.loads((tmp_path / "gate_stats.json").read_text())["skipping"]
    assert all(r == 0.0 for r in info["skip_ratio"].values())
    assert all(t is None for t in info["threshold"].values())  # -inf: keep every token
    assert "-inf" in (tmp_path / "summary.txt").read_text()


@pytest.mark.parametrize("ratio, message", [(1.0, r"skip_ratio must be a share of tokens in \[0, 1\)"),
                                            (float("nan"), "skip_ratio must be"),
                                            (-0.2, "skip_ratio must be")])
def test_write_report_bad_skip_ratio_raises_before_any_work(tiny_bert, minilm_tokenizer, tmp_path, ratio, message):
    from vectorgate import write_report

    with pytest.raises(ValueError, match=message):
        write_report(tiny_bert, minilm_tokenizer, SENTENCES, tmp_path / "out", skip_ratio=ratio)
    assert not (tmp_path / "out").exists()


def test_write_report_model_that_cannot_skip_raises_before_any_work(minilm_tokenizer, tmp_path):
    from transformers import BertConfig, BertModel

    from vectorgate import write_report

    model = BertModel(BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
                                 intermediate_size=64, vocab_size=minilm_tokenizer.vocab_size))
    vectorgate.patch(model, sites=("attention",))
    with pytest.raises(ValueError, match="no branch of this model can skip tokens"):
        write_report(model, minilm_tokenizer, SENTENCES, tmp_path / "out", skip_ratio=0.5)
    assert not (tmp_path / "out").exists()


# --- vectorgate inspect --skip-ratio -------------------------------------------------------


@pytest.mark.parametrize("value", ["1.0", "-0.1", "nan", "1.5"])
def test_cli_inspect_bad_skip_ratio(value, capsys):
    from vectorgate.cli import main

    argv = ["inspect", "--base", "minilm", "--gates", "g", "--output-dir", "o", "--text", "hi",
            "--skip-ratio", value]
    with pytest.raises(SystemExit) as exc:
        main(argv)
    err = capsys.readouterr().err + str(exc.value.code)
    assert exc.value.code != 0
    assert "--skip-ratio must be a share of tokens in [0, 1)" in err


def test_cli_inspect_not_a_number(capsys):
    from vectorgate.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["inspect", "--base", "minilm", "--gates", "g", "--output-dir", "o", "--text", "hi",
              "--skip-ratio", "half"])
    assert exc.value.code != 0
    assert "invalid float value: 'half'" in capsys.readouterr().err


def test_cli_inspect_skip_ratio_end_to_end(minilm_classifier, tmp_path, capsys):
    from vectorgate.cli import main
    from vectorgate.patching import save_gates

    vectorgate.patch(minilm_classifier, init="random", init_curvature=0.5)
    gates_dir = save_gates(minilm_classifier, tmp_path / "gates")
    out = tmp_path / "report"
    code = main(["inspect", "--base", "minilm", "--gates", str(gates_dir), "--output-dir", str(out),
                 "--skip-ratio", "0.5", *[a for s in SENTENCES[:4] for a in ("--text", s)]])
    assert code == 0
    printed = capsys.readouterr().out
    assert "token skipping at a target of 50%" in printed
    assert all(f"layer {i} mlp" in printed for i in range(6))
    assert "skip_map.png" in printed and "skip_ratios.png" in printed
    info = json.loads((out / "gate_stats.json").read_text())["skipping"]
    assert len(info["sites"]) == 6
    assert all(r == pytest.approx(0.5, abs=0.15) for r in info["skip_ratio"].values())


def test_cli_inspect_skip_ratio_on_gates_that_cannot_skip(minilm_classifier, tmp_path):
    from vectorgate.cli import main
    from vectorgate.patching import save_gates

    vectorgate.patch(minilm_classifier, sites=("attention",))
    gates_dir = save_gates(minilm_classifier, tmp_path / "gates")
    with pytest.raises(SystemExit, match="--skip-ratio: no branch of this model can skip tokens"):
        main(["inspect", "--base", "minilm", "--gates", str(gates_dir), "--output-dir", str(tmp_path / "o"),
              "--text", "hi", "--skip-ratio", "0.5"])
    assert not (tmp_path / "o").exists()


def test_importing_the_plot_module_does_not_need_matplotlib():
    import subprocess
    import sys

    code = ("import sys; sys.modules['matplotlib'] = None\n"
            "import vectorgate, vectorgate.skip.plot, vectorgate.recorder\n"
            "assert 'matplotlib.figure' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)
