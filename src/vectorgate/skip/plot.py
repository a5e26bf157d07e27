"""Pictures of token skipping: which tokens each layer skips, and the share it skips.

- :func:`plot_skip_map`: for one input, a sites x tokens map of kept and skipped tokens
  (from :func:`vectorgate.skip.skip_map`), with each site's skipped share at the right.
- :func:`plot_skip_ratios`: the skip ratio reached per site, beside the target.

matplotlib is imported only when a function here runs (``import vectorgate`` does not need
it), and only its object-oriented API is used (a ``Figure`` with the Agg canvas, as in
:mod:`vectorgate.plotting`), so the caller's pyplot backend is never touched. Neither
function writes a file: save the returned figure (``fig.savefig("skip_map.png")``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["plot_skip_map", "plot_skip_ratios", "site_labels"]

KEPT_COLOR = "#2c7bb6"
"""Colour of a kept token (its branch runs)."""
SKIPPED_COLOR = "#fdae61"
"""Colour of a skipped token (its branch does not run; y is the gate's term on x alone)."""


def site_labels(names: Sequence[str]) -> list[str]:
    """Short labels for skip-site names: ``"bert.encoder.layer.3.mlp"`` -> ``"layer 3 mlp"``.

    The first integer in a dotted name is taken as the layer index and what follows it names
    the site (``"blocks.0.mlp"`` -> ``"layer 0 mlp"``, a ``GatedResidual`` at ``"2"`` ->
    ``"layer 2"``); a name without one is kept as it is. Should two labels collide, the full
    names are returned.
    """
    labels = []
    for name in names:
        parts = name.split(".")
        idx = next((i for i, p in enumerate(parts) if re.fullmatch(r"\d+", p)), None)
        labels.append(name if idx is None else " ".join([f"layer {int(parts[idx])}", *parts[idx + 1 :]]))
    return labels if len(set(labels)) == len(labels) else list(names)


def _new_axes(width: float, height: float) -> Axes:
    from vectorgate._figures import new_figure

    return new_figure(width, height).add_subplot()


def _percent(share: float) -> str:
    return "n/a" if math.isnan(share) else f"{100 * share:.0f}%"


def _example_map(result: Any, example: int) -> tuple[list[str], Tensor]:
    """The site names and the ``(sites, tokens)`` bool map of one example, checked."""
    if not isinstance(result, Mapping) or "sites" not in result or "keep" not in result:
        raise ValueError(
            "expected the dict skip_map(model, batch) returns, with 'sites' and 'keep', got "
            f"{type(result).__name__}{'' if not isinstance(result, Mapping) else ' with keys ' + str(sorted(result))}"
        )
    sites, keep = list(result["sites"]), result["keep"]
    if not isinstance(keep, Tensor):
        keep = torch.as_tensor(keep)
    if keep.dim() < 2 or keep.shape[0] != len(sites) or not sites:
        raise ValueError(
            f"result['keep'] must have shape (sites={len(sites)}, [batch,] tokens) with at least one "
            f"site, got {tuple(keep.shape)}"
        )
    if isinstance(example, bool) or not isinstance(example, int):
        raise ValueError(f"example must be an int index into the batch, got {example!r}")
    batch = 1 if keep.dim() == 2 else keep.shape[1]
    if not 0 <= example < batch:
        raise ValueError(f"example {example} is out of range: the map holds {batch} example(s) (0..{batch - 1})")
    row = keep if keep.dim() == 2 else keep[:, example].reshape(len(sites), -1)
    if row.shape[1] == 0:
        raise ValueError("the map holds no tokens to draw")
    return sites, row.bool().cpu()


def plot_skip_map(
    result: Mapping[str, Any],
    tokens: Sequence[str] | None = None,
    *,
    example: int = 0,
    ax: Axes | None = None,
    title: str | None = None,
) -> Figure:
    """Which tokens each site (layer) skips, for one example of a :func:`~vectorgate.skip.skip_map` batch.

    One row per site, in forward order (labelled by :func:`site_labels`), one column per
    token; kept tokens in blue, skipped tokens in orange. At the right of each row, the
    share of this example's tokens the site skipped ("skipped 48%"): it is read off the row
    as drawn, so padding columns count when the example is padded (``result["skip_ratio"]``
    is over the whole batch's real tokens; for one unpadded input the two agree).

    Args:
        result: what ``skip_map(model, batch)`` returned: ``"sites"`` and ``"keep"``, a bool
            ``(sites, batch, tokens)`` tensor (or ``(sites, tokens)``; trailing token dims,
            e.g. an image's patch grid, are flattened in order).
        tokens: one label per token column (e.g. ``tokenizer.convert_ids_to_tokens(ids)``);
            default: the token positions.
        example: which element of the batch to draw.
        ax: matplotlib axes to draw into; default: a new figure sized to the map.
        title: the axes title (default: a short explanation).

    Returns:
        The matplotlib ``Figure`` holding the map.

    Raises:
        ValueError: ``result`` is not a skip map, ``example`` is out of range, or ``tokens``
            does not have one label per token column.
    """
    sites, keep = _example_map(result, example)
    n_sites, n_tokens = keep.shape
    if tokens is not None:
        if isinstance(tokens, str) or not isinstance(tokens, Sequence):
            raise ValueError(f"tokens must be a sequence of token strings, got {type(tokens).__name__}")
        if len(tokens) != n_tokens:
            raise ValueError(
                f"tokens has {len(tokens)} label(s) but the map has {n_tokens} token column(s) "
                f"for example {example}"
            )
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch
    from matplotlib.transforms import blended_transform_factory

    if ax is None:
        ax = _new_axes(min(max(7.0, 3.5 + 0.28 * n_tokens), 40.0), 2.2 + 0.38 * n_sites)
    labels = site_labels(sites)
    ax.imshow(keep.to(torch.uint8).numpy(), aspect="auto", interpolation="nearest",
              cmap=ListedColormap([SKIPPED_COLOR, KEPT_COLOR]), vmin=0, vmax=1)
    ax.set_yticks(range(n_sites), labels, fontsize=8)
    if tokens is not None:
        ax.set_xticks(range(n_tokens), [str(t) for t in tokens], rotation=60, ha="right",
                      rotation_mode="anchor", fontsize=8)
        ax.set_xlabel("token")
    else:
        ax.set_xlabel("token position")
    ax.set_ylabel("site (in forward order)")
    if n_tokens <= 200:  # thin white lines between cells, where they stay visible
        ax.set_xticks([i - 0.5 for i in range(1, n_tokens)], minor=True)
        ax.set_yticks([i - 0.5 for i in range(1, n_sites)], minor=True)
        ax.grid(which="minor", color="white", linewidth=0.8)
        ax.tick_params(which="minor", length=0)
    skipped = (~keep).double().mean(1)
    right = blended_transform_factory(ax.transAxes, ax.transData)
    for i, share in enumerate(skipped.tolist()):
        ax.text(1.01, i, f"skipped {_percent(share)}", transform=right, ha="left", va="center",
                fontsize=8, clip_on=False)
    ax.legend(handles=[Patch(color=KEPT_COLOR, label="kept (branch runs)"),
                       Patch(color=SKIPPED_COLOR, label="skipped (branch not run)")],
              loc="lower right", bbox_to_anchor=(1.0, 1.0), ncols=2, fontsize=8, frameon=False,
              borderaxespad=0.2)
    default = f"Tokens each site skips ({int((~keep).sum())} of {keep.numel()} token-site pairs skipped)"
    ax.set_title(default if title is None else title, fontsize=10, loc="left", pad=22)
    return ax.figure


def plot_skip_ratios(
    ratios: Mapping[str, float],
    target: float | None = None,
    ax: Axes | None = None,
    *,
    title: str | None = None,
) -> Figure:
    """Bar chart of the skip ratio each site reached, with the target as a dashed line.

    Args:
        ratios: site name -> share of tokens skipped, in [0, 1] (e.g.
            ``skip_map(...)["skip_ratio"]`` or ``skip_controller(model).skip_ratios()``);
            NaN (a site that saw no token) is drawn as "n/a".
        target: the share aimed at, in [0, 1), drawn as a dashed line; None draws none.
        ax: matplotlib axes to draw into; default: a new figure.
        title: the axes title (default: a short explanation).

    Returns:
        The matplotlib ``Figure`` holding the chart.

    Raises:
        ValueError: no ratios, a ratio that is not a number in [0, 1] (or NaN), or a
            target outside [0, 1).
    """
    if not isinstance(ratios, Mapping) or not ratios:
        raise ValueError(f"ratios must be a non-empty dict of site name -> skip ratio, got {ratios!r}")
    values = []
    for name, r in ratios.items():
        if isinstance(r, bool) or not isinstance(r, int | float) or not (math.isnan(r) or 0 <= r <= 1):
            raise ValueError(f"the skip ratio of {name!r} must be a share in [0, 1] (or nan), got {r!r}")
        values.append(float(r))
    if target is not None and (
        isinstance(target, bool) or not isinstance(target, int | float) or not 0 <= target < 1
    ):
        raise ValueError(f"target must be a share of tokens in [0, 1), got {target!r}")
    from matplotlib.ticker import PercentFormatter

    if ax is None:
        ax = _new_axes(max(6.5, 0.6 * len(values) + 2.5), 4.0)
    labels = site_labels(list(ratios))
    x = range(len(values))
    ax.bar(x, [0.0 if math.isnan(v) else v for v in values], color=SKIPPED_COLOR,
           edgecolor="black", linewidth=0.5, label="skipped (reached)")
    for i, v in enumerate(values):
        ax.text(i, 0.0 if math.isnan(v) else v, _percent(v), ha="center", va="bottom", fontsize=8,
                bbox={"facecolor": "white", "edgecolor": "none", "pad": 0.5, "alpha": 0.8})
    if target is not None:
        ax.axhline(target, color="black", linestyle="--", linewidth=1.0, label=f"target {_percent(target)}")
    ax.set_xticks(list(x), labels, rotation=60 if len(values) > 6 else 0,
                  ha="right" if len(values) > 6 else "center", fontsize=8)
    ax.set_xlim(-0.6, len(values) - 0.4)
    ax.set_ylim(0, 1.08)
    ax.yaxis.set_major_formatter(PercentFormatter(1.0))
    ax.set_xlabel("site (in forward order)")
    ax.set_ylabel("share of tokens skipped")
    ax.legend(loc="lower right", bbox_to_anchor=(1.0, 1.0), ncols=2, fontsize=8, frameon=False,
              borderaxespad=0.2)
    ax.set_title("Skip ratio reached per site" if title is None else title, fontsize=10, loc="left", pad=22)
    return ax.figure
