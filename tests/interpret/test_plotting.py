"""vectorgate.plotting: each plot writes a non-empty PNG; bad inputs get clear errors."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from vectorgate import GatedResidual
from vectorgate.recorder import GateRecorder

pytest.importorskip("matplotlib")
from vectorgate import plotting

DIM = 12
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def recorded() -> tuple[nn.Module, GateRecorder, list[str]]:
    torch.manual_seed(0)
    model = nn.Sequential(*[
        GatedResidual(nn.Linear(DIM, DIM), DIM, init="random", init_curvature=0.4 * (i + 1)) for i in range(3)
    ])
    rec = GateRecorder(model)
    tokens = ["[CLS]", "a", "fine", "film", "[SEP]"]
    with rec, torch.no_grad():
        model(torch.randn(4, 6, DIM))
        with rec.capture_tokens():
            model(torch.randn(1, len(tokens), DIM))
    return model, rec, tokens


def _assert_png(path) -> None:
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC and len(data) > 5_000


@pytest.mark.parametrize("plot", ["curvature_from_model", "curvature_from_stats", "s_distribution", "token_beta"])
def test_plot_writes_png(recorded, tmp_path, plot):
    model, rec, tokens = recorded
    path = tmp_path / "sub" / f"{plot}.png"  # the folder is created
    if plot == "curvature_from_model":
        fig = plotting.plot_curvature(model, path)
    elif plot == "curvature_from_stats":
        fig = plotting.plot_curvature(rec.stats(), path)
    elif plot == "s_distribution":
        fig = plotting.plot_s_distribution(rec.stats(), path)
    else:
        fig = plotting.plot_token_beta(rec.token_values(), tokens, path, text="a fine film")
    _assert_png(path)
    (ax,) = [a for a in fig.axes if a.get_label() != "<colorbar>"]
    assert ax.get_title() and ax.get_xlabel() and ax.get_ylabel()


def test_token_beta_labels_are_the_tokens(recorded, tmp_path):
    _, rec, tokens = recorded
    fig = plotting.plot_token_beta(rec.token_values(), tokens, tmp_path / "t.png")
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()] == tokens
    image = fig.axes[0].images[0].get_array()
    assert image.shape == (len(tokens), 3)
    expected = torch.exp(-rec.token_values()["0.gate"][0].double().mean(-1))
    torch.testing.assert_close(torch.as_tensor(image[:, 0]), expected, check_dtype=False)


def test_s_distribution_marks_unrecorded_gates(tmp_path):
    model = nn.Sequential(GatedResidual(nn.Linear(DIM, DIM), DIM, init="random", init_curvature=0.5),
                          GatedResidual(nn.Linear(DIM, DIM), DIM, init="random", init_curvature=0.5))
    rec = GateRecorder(model)
    with rec, torch.no_grad():
        model[0](torch.randn(3, DIM))
    fig = plotting.plot_s_distribution(rec.stats(), tmp_path / "s.png")
    assert any(t.get_text() == "not\nrecorded" for t in fig.axes[0].texts)


@pytest.mark.parametrize(
    "call, error, match",
    [
        (lambda p: plotting.plot_curvature(nn.Linear(2, 2), p), ValueError, "no VectorGate"),
        (lambda p: plotting.plot_curvature({}, p), TypeError, "GateRecorder.stats"),
        (lambda p: plotting.plot_s_distribution({}, p), TypeError, "GateRecorder.stats"),
        (lambda p: plotting.plot_token_beta({}, ["a"], p), ValueError, "capture_tokens"),
        (lambda p: plotting.plot_token_beta({"g": torch.zeros(1, 3, 4)}, ["a"], p), ValueError,
         r"expected s of shape \(seq=1, d\)"),
    ],
    ids=["model-without-gates", "empty-stats", "empty-stats-s", "no-tokens", "token-count"],
)
def test_bad_inputs_raise(tmp_path, call, error, match):
    with pytest.raises(error, match=match):
        call(tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()
