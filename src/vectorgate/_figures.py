"""Figure creation and saving shared by every plot module (matplotlib's object-oriented API,
no pyplot state; matplotlib is imported only when a figure is made)."""

from __future__ import annotations

import pathlib
from typing import TYPE_CHECKING

from vectorgate._optional import require

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["new_figure", "save_figure"]


def new_figure(width: float, height: float) -> Figure:
    """A detached ``Figure`` of ``width`` x ``height`` inches with constrained layout."""
    figure = require("matplotlib.figure", extra="plot", needed_by="vectorgate's plots")
    return figure.Figure(figsize=(width, height), layout="constrained")


def save_figure(fig: Figure, path: str | pathlib.Path) -> Figure:
    """Write ``fig`` to ``path`` (parent folders created) at 130 dpi; returns it."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=130)
    return fig
