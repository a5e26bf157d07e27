"""Per-site thresholds for a target skip ratio, and the token x site map of one input."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch
from torch import Tensor, nn

from vectorgate.skip.budget import check_skip_ratio
from vectorgate.skip.control import (
    SkipController,
    enable_skipping,
    find_skip_sites,
    skip_controller,
)

__all__ = ["calibrate_skipping", "default_forward", "skip_map", "threshold_for_ratio"]


def default_forward(model: nn.Module, batch: Any) -> Any:
    """``model(**batch)`` for a mapping, ``model(batch[0])`` for a tuple/list, else ``model(batch)``."""
    if isinstance(batch, Mapping):
        return model(**batch)
    if isinstance(batch, tuple | list):
        return model(batch[0])
    return model(batch)


def _mask_of(batch: Any) -> Tensor | None:
    return batch.get("attention_mask") if isinstance(batch, Mapping) else None


def threshold_for_ratio(scores: Tensor, ratio: float) -> float:
    """A threshold below which ``ratio`` of ``scores`` lie (midway between neighbours).

    0 gives -inf (keep all). Where many scores tie at the cut (saturated gates share one
    value), the tied block is skipped whole or kept whole, whichever lands nearer ``ratio``.
    """
    if ratio == 0 or scores.numel() == 0:
        return -math.inf
    s = torch.sort(scores.float().flatten()).values
    n = s.numel()
    k = round(ratio * n)
    if k == 0:
        return -math.inf
    if k >= n:
        return _just_above(s[-1])
    if s[k - 1] != s[k]:
        return _between(s[k - 1], s[k])
    tie = s[k]
    below = int(torch.searchsorted(s, tie, right=False))  # skipped if the tie is kept
    through = int(torch.searchsorted(s, tie, right=True))  # skipped if the tie is skipped
    if through - k < k - below:
        return _just_above(tie) if through >= n else _between(tie, s[through])
    return float(tie) if below == 0 else _between(s[below - 1], tie)

def _just_above(value: Tensor) -> float:
    """The next float32 above ``value`` (scores are float32: a float64 step would round back)."""
    return float(torch.nextafter(value.float(), torch.tensor(math.inf)))


def _between(lo: Tensor, hi: Tensor) -> float:
    """A float32 threshold t with lo < t <= hi (the midpoint, or hi itself for adjacent floats):
    ``score >= t`` compares in float32, so a float64 midpoint could round back onto lo."""
    mid = (lo.float() + hi.float()) / 2
    return float(mid) if mid > lo else float(hi)


def calibrate_skipping(
    model: nn.Module,
    batches: Iterable[Any],
    ratio: float | Mapping[str, float],
    *,
    forward: Callable[[nn.Module, Any], Any] = default_forward,
    passes: int = 2,
) -> dict[str, float]:
    """Choose each site's threshold so that ``ratio`` of the held-out tokens are skipped there.

    Runs ``batches`` (held-out data, not the data you evaluate on) through the model in eval
    mode and sets, per site, the ``ratio`` quantile of the skip scores it saw as the
    threshold. Skipping at one layer changes what later layers see, so each pass after the
    first re-measures with the previous thresholds on. Padding is left out when a batch is
    a mapping with an ``attention_mask``. Turns skipping on if it is not.

    Args:
        model: a model :func:`vectorgate.skip.enable_skipping` accepts.
        batches: re-iterable held-out inputs, each passed to ``forward``.
        ratio: target share of tokens skipped at every site, in [0, 1), or a mapping from
            every site name to its own share.
        forward: how to run the model on one batch (default: :func:`default_forward`).
        passes: calibration passes (>= 1).

    Returns:
        The thresholds set, ``{site name: threshold}``.

    Raises:
        ValueError: a ratio outside [0, 1), unknown sites, ``passes < 1`` or no batches.
    """
    if isinstance(passes, bool) or not isinstance(passes, int) or passes < 1:
        raise ValueError(f"passes must be an int >= 1, got {passes!r}")
    # Every check before skipping is turned on: a bad call leaves the model as it was.
    site_names = list(skip_controller(model).sites) if skip_controller(model) else [n for n, _, _ in find_skip_sites(model)]
    if isinstance(ratio, Mapping):
        unknown = sorted(set(ratio) - set(site_names))
        if unknown or set(ratio) != set(site_names):
            raise ValueError(f"ratio must name every skip site; unknown {unknown}, "
                             f"missing {sorted(set(site_names) - set(ratio))}")
        ratios = {k: check_skip_ratio(f"ratio[{k!r}]", v) for k, v in ratio.items()}
    else:
        ratios = dict.fromkeys(site_names, check_skip_ratio("ratio", ratio))
    batches = list(batches)
    if not batches:
        raise ValueError("calibrate_skipping needs at least one batch of held-out data")
    controller = skip_controller(model) or enable_skipping(model)
    if all(r == 0 for r in ratios.values()):
        controller.set_thresholds(-math.inf)
        return controller.thresholds
    was_training = model.training
    model.eval()
    try:
        for _ in range(passes):
            _run(model, controller, batches, forward)
            controller.set_thresholds({
                name: threshold_for_ratio(torch.cat(site.scores) if site.scores else torch.empty(0), ratios[name])
                for name, site in controller.sites.items()
            })
    finally:
        controller.reset()
        model.train(was_training)
    return controller.thresholds


def _run(model: nn.Module, controller: SkipController, batches: list[Any], forward: Callable[[nn.Module, Any], Any]) -> None:
    controller.reset()
    with torch.no_grad(), controller.record():
        for batch in batches:
            with controller.tokens(_mask_of(batch)):
                forward(model, batch)


def skip_map(model: nn.Module, batch: Any, *, forward: Callable[[nn.Module, Any], Any] = default_forward) -> dict[str, Any]:
    """Which tokens each site keeps on one batch, at the thresholds now set.

    Returns:
        ``{"sites": [site names, forward order], "keep": bool tensor (sites, *token shape),
        "skip_ratio": {site: share of real tokens skipped}}``; the token shape is the branch
        input's without its last dim, e.g. ``(batch, tokens)``, padding included (ratios
        leave it out when the batch has an ``attention_mask``).

    Raises:
        ValueError: skipping is not enabled on ``model``.
    """
    controller = skip_controller(model)
    if controller is None:
        raise ValueError("skip_map needs enable_skipping(model) (and thresholds) first")
    was_training = model.training
    model.eval()
    try:
        _run(model, controller, [batch], forward)
        names = list(controller.sites)
        keep = torch.stack([controller.sites[n].decisions[-1] for n in names])
        ratios = controller.skip_ratios()
    finally:
        controller.reset()
        model.train(was_training)
    return {"sites": names, "keep": keep, "skip_ratio": ratios}
