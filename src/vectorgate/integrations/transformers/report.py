"""The gate report of a Hugging Face text model: summary, JSON and plots in one call.

It composes the recorder (:mod:`vectorgate.recorder`), the plots (:mod:`vectorgate.plotting`)
and, on request, token skipping (:mod:`vectorgate.skip`); the recorder itself knows nothing
of tokenizers or plots.
"""

from __future__ import annotations

import json
import math
import pathlib
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from vectorgate import plotting
from vectorgate._figures import save_figure
from vectorgate.compound_gain import CompoundGainMonitor
from vectorgate.compound_gain_plot import plot_compound_gain
from vectorgate.recorder import GateRecorder

__all__ = ["write_report"]


def write_report(
    model: nn.Module,
    tokenizer: Any,
    texts: Sequence[str],
    output_dir: str | pathlib.Path,
    *,
    batch_size: int = 16,
    max_length: int = 128,
    token_text: str | None = None,
    progress: bool = True,
    skip_ratio: float | None = None,
) -> GateRecorder:
    """Run ``texts`` through a gated Hugging Face model; write the summary, JSON and plots.

    Writes into ``output_dir``: ``summary.txt``, ``gate_stats.json``, ``curvature.png``
    (|c|, gates x dimensions), ``s_distribution.png`` (s per gate), ``token_beta.png``
    (mean beta per token and gate, for ``token_text`` or the first text) and
    ``compound_gain.png`` (the product of alpha along the residual stream, site by site, for
    that text: :mod:`vectorgate.compound_gain`; also in the summary and under the
    ``"compound_gain"`` key of ``gate_stats.json``).

    With ``skip_ratio``, it also shows which tokens token skipping would drop
    (:mod:`vectorgate.skip`): skipping is turned on if it is not, each site's threshold is
    calibrated (:func:`vectorgate.skip.calibrate_skipping`) on the report's own texts at
    that ratio, and ``skip_map.png`` (kept and skipped tokens per layer for ``token_text``)
    and ``skip_ratios.png`` (the share reached per layer over the texts, against the
    target) are written; the thresholds and the ratios reached go into ``summary.txt`` and
    under the ``"skipping"`` key of ``gate_stats.json``. Calibrating on the very texts being
    reported makes a picture of what the gates would skip, not a measurement: to measure
    the accuracy cost of skipping, calibrate on held-out data and evaluate on other data.
    The gate statistics are recorded before, with every branch running. The model is left
    as it was found: skipping is turned off again if the report turned it on, else the
    previous thresholds are put back.

    Args:
        model: a model whose gates are VectorGates (e.g. after ``vectorgate.patch``);
            called as ``model(input_ids=..., attention_mask=...)``.
        tokenizer: the matching Hugging Face tokenizer.
        texts: the sentences to record (padding is masked out).
        output_dir: folder for the files (created if missing).
        batch_size: sentences per forward pass.
        max_length: truncation length in tokens.
        token_text: sentence for the token-level picture; defaults to ``texts[0]``.
        progress: show a tqdm progress bar over the batches (when tqdm is installed).
        skip_ratio: share of tokens to skip per layer, in [0, 1), for the skipping pictures;
            None (the default) leaves skipping out of the report.

    Returns:
        The recorder, holding the statistics (``rec.summary()`` prints them).

    Raises:
        ValueError: no texts, a ``skip_ratio`` outside [0, 1), or a ``skip_ratio`` for a
            model that cannot skip tokens (with why); checked before anything runs.
    """
    if isinstance(texts, str) or not texts:
        raise ValueError("texts must be a non-empty sequence of strings (not a single str)")
    if skip_ratio is not None:
        from vectorgate.skip.budget import check_skip_ratio
        from vectorgate.skip.control import find_skip_sites

        skip_ratio = check_skip_ratio("skip_ratio", skip_ratio)
        find_skip_sites(model)  # a model that cannot skip fails here, with why, before any work
    out = pathlib.Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    device = next(model.parameters()).device
    rec = GateRecorder(model)
    batches: list[dict[str, Tensor]] = []  # kept for calibrating skipping only
    was_training = model.training
    counts = _skip_counts(model)  # the report's own passes do not count in the caller's skip ratios
    model.eval()
    try:
        with rec, torch.no_grad():
            starts = range(0, len(texts), batch_size)
            if progress:
                try:
                    from tqdm.auto import tqdm

                    starts = tqdm(starts, desc="recording gates", unit="batch", leave=False)
                except ImportError:
                    pass  # the bar is a convenience; tqdm is not a dependency
            for i in starts:
                enc = tokenizer(list(texts[i : i + batch_size]), padding=True, truncation=True,
                                max_length=max_length, return_tensors="pt").to(device)
                with rec.masked(enc["attention_mask"]):
                    model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"])
                if skip_ratio is not None:
                    batches.append({"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]})
        sentence = texts[0] if token_text is None else token_text
        enc = tokenizer([sentence], truncation=True, max_length=max_length, return_tensors="pt").to(device)
        # Its own recorder, so that the token-level sentence is not counted in the statistics.
        tok_rec = GateRecorder(model)
        gain_monitor = CompoundGainMonitor(model)
        with tok_rec, gain_monitor, torch.no_grad(), tok_rec.capture_tokens():
            model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"])
        gain = gain_monitor.report(grads=False)
    finally:
        model.train(was_training)
        _skip_counts(model, restore=counts)
    tokens = tokenizer.convert_ids_to_tokens(enc["input_ids"][0].tolist())
    summary = rec.summary() + f"\n\nCompound gain on the token-level text: {gain.summary()}\n"
    data = rec.to_dict()
    data["compound_gain"] = gain.to_dict()
    if skip_ratio is not None:
        one = {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}
        skipping, result = _skipping_report(model, batches, one, skip_ratio)
        skipping["token_text"] = {"text": sentence, "tokens": tokens, **skipping["token_text"]}
        summary += "\n" + _skipping_summary(skipping) + "\n"
        data["skipping"] = skipping
    (out / "summary.txt").write_text(summary)
    (out / "gate_stats.json").write_text(json.dumps(data, indent=1))
    stats = rec.stats()
    plotting.plot_curvature(stats, out / "curvature.png")
    plotting.plot_s_distribution(stats, out / "s_distribution.png")
    plotting.plot_token_beta(tok_rec.token_values(), tokens, out / "token_beta.png", text=sentence)
    plot_compound_gain([(0, gain)], out / "compound_gain.png", title="Compound gain of the gates on the token-level text")
    if skip_ratio is not None:
        from vectorgate.skip.plot import plot_skip_map, plot_skip_ratios

        shown = sentence if len(sentence) <= 70 else sentence[:67] + "..."
        fig = plot_skip_map(result, tokens, title=(
            f"Tokens each layer skips at a target of {100 * skip_ratio:g}% per layer\n"
            f'(thresholds calibrated on the report\'s {len(texts)} text(s)): "{shown}"'
        ))
        save_figure(fig, out / "skip_map.png")
        reached = {n: math.nan if r is None else r for n, r in skipping["skip_ratio"].items()}
        fig = plot_skip_ratios(reached, skip_ratio, title=(
            f"Skip ratio reached per layer over the report's {len(texts)} text(s)\n"
            "(calibrated on the same texts: a picture, not a measurement)"
        ))
        save_figure(fig, out / "skip_ratios.png")
    return rec


def _skip_counts(model: nn.Module, restore: dict[str, tuple[int, int]] | None = None) -> dict[str, tuple[int, int]] | None:
    """The (seen, skipped) token counts of each skip site when skipping is enabled (else
    None); with ``restore``, put those counts back first."""
    from vectorgate.skip.control import skip_controller

    controller = skip_controller(model)
    if controller is None:
        return None
    for name, (seen, skipped) in (restore or {}).items():
        controller.sites[name].seen, controller.sites[name].skipped = seen, skipped
    return {name: (site.seen, site.skipped) for name, site in controller.sites.items()}


def _finite(value: float) -> float | None:
    """``value``, or None where JSON has no number for it (inf, nan)."""
    return value if math.isfinite(value) else None


def _skipping_report(
    model: nn.Module, batches: list[dict[str, Tensor]], one: dict[str, Tensor], ratio: float
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Calibrate skipping on ``batches`` at ``ratio``, measure the share each site then
    skips over them, and map the kept tokens of ``one``; leave the model's skipping state
    as it was. Returns the JSON-ready summary and :func:`vectorgate.skip.skip_map`'s result."""
    from vectorgate.skip import (
        calibrate_skipping,
        disable_skipping,
        enable_skipping,
        skip_controller,
        skip_map,
    )
    from vectorgate.skip.plot import site_labels

    controller = skip_controller(model)
    enabled_here = controller is None
    saved: dict[str, Any] = {}
    if controller is None:
        controller = enable_skipping(model)
    else:  # put back its thresholds, counts and recordings afterwards
        saved = {n: (s.threshold, s.seen, s.skipped, list(s.scores), list(s.decisions))
                 for n, s in controller.sites.items()}
    was_training = model.training
    try:
        thresholds = calibrate_skipping(model, batches, ratio)
        model.eval()
        controller.reset()
        # Recording makes every site count its tokens, even at a threshold of -inf (ratio 0).
        with torch.no_grad(), controller.record():
            for batch in batches:
                with controller.tokens(batch["attention_mask"]):
                    model(**batch)
        reached, overall = controller.skip_ratios(), controller.skip_ratio()
        controller.reset()
        result = skip_map(model, one)
    finally:
        model.train(was_training)
        if enabled_here:
            disable_skipping(model)
        else:
            controller.reset()
            for n, (threshold, seen, skipped, scores, decisions) in saved.items():
                site = controller.sites[n]
                site.threshold, site.seen, site.skipped = threshold, seen, skipped
                site.scores[:], site.decisions[:] = scores, decisions
    names = list(result["sites"])
    info = {
        "target": ratio,
        "calibrated_on": "the texts of this report: a picture of what the gates would skip, "
                         "not a measurement (calibrate on held-out data for that)",
        "sites": names,
        "labels": site_labels(names),
        "threshold": {n: _finite(thresholds[n]) for n in names},
        "skip_ratio": {n: _finite(reached[n]) for n in names},
        "skip_ratio_overall": _finite(overall),
        "token_text": {
            "skip_ratio": {n: _finite(result["skip_ratio"][n]) for n in names},
            "keep": result["keep"][:, 0].int().tolist(),
        },
    }
    return info, result


def _skipping_summary(info: dict[str, Any]) -> str:
    """The skipping section of ``summary.txt``: one row per site."""

    def pct(v: float | None) -> str:
        return "n/a" if v is None else f"{100 * v:.1f}%"

    def thr(v: float | None) -> str:
        return "-inf" if v is None else f"{v:.4g}"

    n_tokens = len(info["token_text"]["tokens"])
    head = f"{'skip site':<28} {'threshold':>10} {'skipped (texts)':>16} {'skipped (token text)':>21}"
    rows = [
        f"token skipping at a target of {100 * info['target']:g}% of the tokens per layer, thresholds "
        "calibrated on these texts",
        "(a picture of what the gates would skip, not a measurement: calibrate on held-out data for that)",
        head,
        "-" * len(head),
    ]
    for name, label in zip(info["sites"], info["labels"], strict=True):
        rows.append(
            f"{label[-28:]:<28} {thr(info['threshold'][name]):>10} {pct(info['skip_ratio'][name]):>16} "
            f"{pct(info['token_text']['skip_ratio'][name]):>21}"
        )
    rows.append(f"{'all sites':<28} {'':>10} {pct(info['skip_ratio_overall']):>16}")
    rows.append(f"token text: {n_tokens} tokens; skip_map.png shows which ones each layer skips.")
    return "\n".join(rows)
