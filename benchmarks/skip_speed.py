"""Wall-clock speed of token-skipping inference against the dense model, side by side.

For each model: the plain model, the gated model run dense, and the gated model skipping
30% / 50% / 70% of MLP-branch tokens (thresholds calibrated on other inputs), timed in
interleaved rounds in one process (median of the rounds), so machine load hits every
configuration alike. Which tokens are skipped does not change the cost, so the gates here
have random projections (init="random", c = 1, scores spread out) rather than trained ones.

Models: the real pretrained MiniLM (BERT, 6 layers, d=384) on Rotten Tomatoes sentences
(batch trimmed to its longest row), a timm ViT-S/16 at 224x224 (random weights, 197 tokens),
and the vit_mnist comparison model (d=64, 17 tokens).

    .venv/bin/python benchmarks/skip_speed.py --threads 1 --output benchmarks/results/skip-speed-cpu.json
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import pathlib
import platform
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

import vectorgate
from vectorgate.skip import calibrate_skipping, enable_skipping, skip_controller


def _minilm(batch_size: int) -> tuple[nn.Module, list[dict[str, torch.Tensor]], dict[str, torch.Tensor], str]:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from vectorgate_lab.assets import load_rotten_tomatoes, minilm_path

    data = load_rotten_tomatoes()
    tok = AutoTokenizer.from_pretrained(minilm_path())
    model = AutoModelForSequenceClassification.from_pretrained(minilm_path(), num_labels=2)

    def enc(texts: list[str]) -> dict[str, torch.Tensor]:
        e = tok(texts, truncation=True, max_length=128, padding=True, return_tensors="pt")
        return {"input_ids": e["input_ids"], "attention_mask": e["attention_mask"]}

    calib = [enc(data.texts[i : i + batch_size]) for i in range(0, 4 * batch_size, batch_size)]
    timed = enc(data.texts[4 * batch_size : 5 * batch_size])
    shape = tuple(timed["input_ids"].shape)
    return model, calib, timed, f"MiniLM-L6 (pretrained BERT, d=384), RT batch {shape[0]} x {shape[1]} tokens"


def _timm_vit(batch_size: int, small: bool) -> tuple[nn.Module, list[torch.Tensor], torch.Tensor, str]:
    from timm.models.vision_transformer import VisionTransformer

    import vectorgate.integrations.timm  # noqa: F401  (registers the timm family)

    if small:
        model = VisionTransformer(img_size=28, patch_size=7, in_chans=1, num_classes=10, embed_dim=64,
                                  depth=4, num_heads=4, mlp_ratio=2.0)
        shape, label = (batch_size, 1, 28, 28), "vit_mnist model (timm, d=64, 17 tokens)"
    else:
        model = VisionTransformer(img_size=224, patch_size=16, embed_dim=384, depth=12, num_heads=6)
        shape, label = (batch_size, 3, 224, 224), "timm ViT-S/16 224 (random weights, d=384, 197 tokens)"
    gen = torch.Generator().manual_seed(0)
    calib = [torch.randn(shape, generator=gen) for _ in range(2)]
    return model, calib, torch.randn(shape, generator=gen), f"{label}, batch {batch_size}"


def _call(model: nn.Module, batch: Any) -> Any:
    return model(**batch) if isinstance(batch, dict) else model(batch)


def _to(batch: Any, device: str) -> Any:
    return {k: v.to(device) for k, v in batch.items()} if isinstance(batch, dict) else batch.to(device)


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def measure(model: nn.Module, calib: list[Any], timed: Any, ratios: list[float], rounds: int,
            device: str = "cpu") -> list[dict[str, Any]]:
    """Time the plain model, the gated model dense and skipping at each ratio (interleaved rounds)."""
    model = model.to(device)
    calib, timed = [_to(b, device) for b in calib], _to(timed, device)
    plain = copy.deepcopy(model).eval()
    torch.manual_seed(0)
    gated = vectorgate.patch(model, init="random", init_curvature=1.0).eval()
    controller = enable_skipping(gated)
    configs: list[tuple[str, nn.Module, dict[str, float] | None]] = [("plain", plain, None), ("gated dense", gated, None)]
    achieved: dict[str, float] = {"plain": 0.0, "gated dense": 0.0}
    for r in ratios:
        thresholds = calibrate_skipping(gated, calib, r, forward=_call)
        controller.reset()
        with torch.no_grad(), controller.tokens(timed.get("attention_mask") if isinstance(timed, dict) else None):
            _call(gated, timed)
        achieved[f"skip {r:.0%}"] = controller.skip_ratio()
        configs.append((f"skip {r:.0%}", gated, thresholds))
    times: dict[str, list[float]] = {name: [] for name, _, _ in configs}
    with torch.no_grad():
        for rnd in range(rounds + 1):  # round 0 warms up
            for name, m, th in configs:
                if m is gated:
                    controller.set_thresholds(th if th is not None else float("-inf"))
                _sync(device)
                start = time.perf_counter()
                _call(m, timed)
                _sync(device)
                elapsed = time.perf_counter() - start
                if rnd:
                    times[name].append(elapsed)
    dense = statistics.median(times["gated dense"])
    plain_t = statistics.median(times["plain"])
    rows = []
    for name, _, _ in configs:
        t = statistics.median(times[name])
        rows.append({"config": name, "median_ms": 1000 * t, "achieved_skip": achieved[name],
                     "speedup_vs_gated_dense": dense / t, "speedup_vs_plain": plain_t / t})
    assert skip_controller(gated) is not None
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--ratios", type=float, nargs="+", default=[0.3, 0.5, 0.7])
    parser.add_argument("--models", nargs="+", default=["minilm", "vit_s", "vit_mnist"], choices=["minilm", "vit_s", "vit_mnist"])
    parser.add_argument("--device", default="cpu", help="torch device (default cpu); cuda syncs around each timed call")
    parser.add_argument("--output", type=pathlib.Path)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    builders: dict[str, Callable[[], tuple]] = {
        "minilm": lambda: _minilm(args.batch_size),
        "vit_s": lambda: _timm_vit(min(args.batch_size, 8), small=False),
        "vit_mnist": lambda: _timm_vit(args.batch_size * 8, small=True),
    }
    where = torch.cuda.get_device_name() if args.device.startswith("cuda") else f"{os.cpu_count()} CPU cores, {args.threads} torch threads"
    machine = f"{platform.machine()}, {where}, torch {torch.__version__}"
    results = {"machine": machine, "rounds": args.rounds, "models": []}
    for key in args.models:
        model, calib, timed, label = builders[key]()
        rows = measure(model, calib, timed, args.ratios, args.rounds, args.device)
        results["models"].append({"model": label, "rows": rows})
        print(f"\n{label}  ({machine}, median of {args.rounds} interleaved rounds)")
        print("| config | median ms | MLP tokens skipped | speedup vs gated dense | speedup vs plain |")
        print("|---|---|---|---|---|")
        for r in rows:
            print(f"| {r['config']} | {r['median_ms']:.1f} | {r['achieved_skip']:.0%} | "
                  f"{r['speedup_vs_gated_dense']:.2f}x | {r['speedup_vs_plain']:.2f}x |", flush=True)
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
