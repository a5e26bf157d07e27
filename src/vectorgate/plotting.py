"""Pictures of what the gates do, saved as PNG (matplotlib, the ``plot`` extra).

- :func:`plot_curvature`: learned |c|, gates (layer by layer, then site) x feature dimensions.
- :func:`plot_s_distribution`: the distribution of s = c*tanh(g(x)) of each gate.
- :func:`plot_token_beta`: for one sentence, mean beta (the branch's gate) per token and gate.

matplotlib is imported only when a function here runs, and only its object-oriented API
is used (``Figure`` with the Agg canvas), so the caller's pyplot backend is never touched.
The inputs come from :class:`vectorgate.recorder.GateRecorder`.
"""

from __future__ import annotations

import math
import pathlib
import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from vectorgate._figures import new_figure as _figure
from vectorgate._figures import save_figure as _save
from vectorgate.recorder import GateStats, _find_gates, short_names

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["plot_curvature", "plot_s_distribution", "plot_token_beta"]


def _layer_and_site(label: str) -> tuple[int | None, str]:
    """``"3.attention.output"`` -> ``(3, "attention.output")``: the first integer in a
    dotted name is taken as the layer index, the rest names the site."""
    parts = label.split(".")
    for i, p in enumerate(parts):
        if re.fullmatch(r"\d+", p):
            return int(p), ".".join(parts[:i] + parts[i + 1 :]) or "gate"
    return None, label


def _curvatures(source: Mapping[str, GateStats] | nn.Module) -> dict[str, Tensor]:
    if isinstance(source, nn.Module):
        gates, _ = _find_gates(source)
        if not gates:
            raise ValueError(f"model {type(source).__name__} contains no VectorGate")
        with torch.no_grad():
            return {
                n: g.effective_curvature().detach().float().cpu().expand(g.dim) for n, g in gates
            }
    if not isinstance(source, Mapping) or not source:
        raise TypeError(
            "expected a model with VectorGates or GateRecorder.stats() (a non-empty dict of "
            f"GateStats), got {type(source).__name__}"
        )
    return {n: st.curvature.float() for n, st in source.items()}


def plot_curvature(
    source: Mapping[str, GateStats] | nn.Module, path: str | pathlib.Path
) -> Figure:
    """Heatmap of the learned curvature |c|: one row per gate, one column per dimension.

    |c| bounds the gate: alpha and beta stay within ``[exp(-|c|), exp(|c|)]``, so a dark
    cell is a dimension this gate leaves as the plain residual, a bright one a dimension it
    can re-weight strongly.

    Args:
        source: a model (its VectorGates are read directly; no recording needed) or
            ``GateRecorder.stats()``.
        path: PNG file to write.

    Returns:
        The matplotlib ``Figure``.
    """
    curv = _curvatures(source)
    labels = short_names(list(curv))
    width = max(c.numel() for c in curv.values())
    grid = torch.full((len(curv), width), math.nan)
    for i, c in enumerate(curv.values()):
        grid[i, : c.numel()] = c.abs()
    fig = _figure(11, 1.6 + 0.32 * len(curv))
    ax = fig.add_subplot()
    im = ax.imshow(grid.numpy(), aspect="auto", interpolation="nearest", cmap="magma")
    ax.set_yticks(range(len(labels)), labels, fontsize=8)
    ax.set_xlabel("feature dimension of the residual stream")
    ax.set_ylabel("gate (layer.site, in model order)")
    vmax = float(torch.nan_to_num(grid, nan=0.0).max())
    ax.set_title(
        "Learned curvature |c| per gate and dimension\n"
        f"(alpha, beta stay within [e^-|c|, e^|c|]; |c| = 0 is the plain residual; max |c| = {vmax:.3g})",
        fontsize=10,
    )
    layers = [_layer_and_site(lb)[0] for lb in labels]
    for i in range(1, len(layers)):
        if layers[i] != layers[i - 1]:  # a thin line between layers
            ax.axhline(i - 0.5, color="white", linewidth=0.6)
    fig.colorbar(im, ax=ax, label="|c|", fraction=0.03, pad=0.01)
    return _save(fig, path)


def plot_s_distribution(stats: Mapping[str, GateStats], path: str | pathlib.Path) -> Figure:
    """Violin-style distribution of s for each gate, from the recorder's histograms.

    Each shape is the histogram of s over every recorded token and dimension of one gate
    (width scaled per gate); the black tick is the mean, the grey ticks mark ``±max|c|``,
    the range s can reach. s > 0 keeps more of the residual stream (alpha > 1) and damps
    the branch (beta < 1); s < 0 the opposite.

    Args:
        stats: ``GateRecorder.stats()``.
        path: PNG file to write.

    Returns:
        The matplotlib ``Figure``.
    """
    if not isinstance(stats, Mapping) or not stats:
        raise TypeError(f"expected GateRecorder.stats() (a non-empty dict), got {type(stats).__name__}")
    labels = short_names(list(stats))
    sites = list(dict.fromkeys(_layer_and_site(lb)[1] for lb in labels))
    fig = _figure(max(6.0, 0.55 * len(stats) + 2), 4.8)
    ax = fig.add_subplot()
    colors = [f"C{i % 10}" for i in range(len(sites))]
    lo, hi = 0.0, 0.0
    for i, (label, st) in enumerate(zip(labels, stats.values(), strict=True)):
        counts = st.hist_counts.double()
        if counts.sum() == 0:
            ax.text(i, 0, "not\nrecorded", ha="center", va="center", fontsize=7, color="grey")
            continue
        edges = st.hist_edges().double()
        centres = (edges[:-1] + edges[1:]) / 2
        used = counts > 0
        first, last = int(used.nonzero()[0]), int(used.nonzero()[-1])
        # Pad one empty bin either side so a spike (c = 0: every s is 0) still shows a shape.
        a, b = max(first - 1, 0), min(last + 1, counts.numel() - 1)
        half = 0.42 * counts[a : b + 1] / counts.max()
        y = centres[a : b + 1]
        color = colors[sites.index(_layer_and_site(label)[1])]
        ax.fill_betweenx(y.numpy(), (i - half).numpy(), (i + half).numpy(), color=color, alpha=0.75, linewidth=0)
        o = st.overall()
        ax.plot([i - 0.3, i + 0.3], [o["mean_s"]] * 2, color="black", linewidth=1.2)
        ax.plot([i - 0.2, i + 0.2], [o["max_abs_c"]] * 2, color="grey", linewidth=0.8)
        ax.plot([i - 0.2, i + 0.2], [-o["max_abs_c"]] * 2, color="grey", linewidth=0.8)
        lo, hi = min(lo, float(y[0]), -o["max_abs_c"]), max(hi, float(y[-1]), o["max_abs_c"])
    span = max(hi - lo, 1e-6)
    ax.set_ylim(lo - 0.05 * span, hi + 0.05 * span)
    ax.axhline(0.0, color="black", linewidth=0.5, linestyle=":")
    ax.set_xticks(range(len(labels)), labels, rotation=60, ha="right", fontsize=8)
    ax.set_xlim(-0.7, len(labels) - 0.3)
    ax.set_xlabel("gate (layer.site, in model order)")
    ax.set_ylabel("s = c·tanh(g(x))   (alpha = e^s, beta = e^-s)")
    total = max(st.tokens for st in stats.values())
    ax.set_title(
        f"Distribution of s per gate (up to {total:,} token positions x all dimensions)\n"
        "s > 0: residual kept, branch damped; s < 0: the opposite\n"
        "black: mean s; grey: ±max|c|, the reachable range",
        fontsize=10,
    )
    if len(sites) > 1:
        from matplotlib.patches import Patch

        # Outside the axes, so that it never hides a violin.
        ax.legend(handles=[Patch(color=c, label=s) for c, s in zip(colors, sites, strict=True)],
                  fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0), title="site",
                  title_fontsize=8)
    return _save(fig, path)


def plot_token_beta(
    token_values: Mapping[str, Tensor],
    tokens: Sequence[str],
    path: str | pathlib.Path,
    *,
    text: str | None = None,
    sample: int = 0,
) -> Figure:
    """Heatmap of the mean beta over dimensions for each token of one input and each gate.

    beta = exp(-s) scales the branch: red (> 1) means the gate lets this token's branch
    output in more strongly than a plain residual would (and keeps less of the stream), blue
    (< 1) means it damps the branch and keeps the stream. The mean is geometric,
    ``exp(-mean_d s)``: an arithmetic mean of exp(-s) is > 1 whenever s varies (Jensen), even
    when the gate favours neither side, and would paint a balanced gate red.

    Args:
        token_values: ``GateRecorder.token_values()``: gate name -> s of shape
            ``(batch, seq, d)`` or ``(seq, d)``.
        tokens: the ``seq`` token strings, used as labels.
        path: PNG file to write.
        text: the sentence, shown in the title.
        sample: which element of the batch to show.

    Returns:
        The matplotlib ``Figure``.
    """
    if not token_values:
        raise ValueError(
            "no per-token values: run the model inside `with rec.capture_tokens():` first"
        )
    cols = []
    for name, s in token_values.items():
        s = s[sample] if s.dim() == 3 else s
        if s.dim() != 2 or s.shape[0] != len(tokens):
            raise ValueError(
                f"gate {name!r}: expected s of shape (seq={len(tokens)}, d) for the given tokens, "
                f"got {tuple(s.shape)} (sample {sample})"
            )
        cols.append(torch.exp(-s.double().mean(-1)))
    grid = torch.stack(cols, dim=1)  # (seq, gates)
    labels = short_names(list(token_values))
    from matplotlib.colors import LogNorm

    # Symmetric in log space around beta = 1, so e^m and e^-m get equally strong colours.
    spread = max(float(grid.log().abs().max()), 1e-4)
    fig = _figure(max(6.0, 0.5 * len(labels) + 3), max(3.5, 0.26 * len(tokens) + 1.8))
    ax = fig.add_subplot()
    im = ax.imshow(grid.numpy(), aspect="auto", interpolation="nearest", cmap="RdBu_r",
                   norm=LogNorm(vmin=math.exp(-spread), vmax=math.exp(spread)))
    ax.set_yticks(range(len(tokens)), list(tokens), fontsize=8)
    ax.set_xticks(range(len(labels)), labels, rotation=60, ha="right", fontsize=8)
    ax.set_ylabel("token")
    ax.set_xlabel("gate (layer.site, in model order)")
    shown = "" if text is None else f'\n"{text if len(text) <= 70 else text[:67] + "..."}"'
    ax.set_title(
        "beta (the branch's gate) per token and gate, geometric mean over dimensions\n"
        "red > 1: branch let in more; blue < 1: branch damped, residual kept" + shown,
        fontsize=10,
    )
    cbar = fig.colorbar(im, ax=ax, fraction=0.04, pad=0.01)
    cbar.set_label("exp(-mean s) = geometric mean of beta")
    cbar.minorticks_off()
    ticks = [math.exp(v) for v in torch.linspace(-spread, spread, 5).tolist()]
    digits = 3
    while len({f"{t:.{digits}g}" for t in ticks}) < len(ticks) and digits < 8:
        digits += 1  # beta stays near 1: add digits until the tick labels differ
    cbar.set_ticks(ticks, labels=[f"{t:.{digits}g}" for t in ticks])
    return _save(fig, path)
