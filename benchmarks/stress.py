"""Numerical stress: train a deep pre-norm stack of gated blocks and watch for NaN/Inf.

A character-level next-token model on the Shakespeare corpus (``vectorgate_lab.assets``):
the previous ``--context`` characters are embedded (one table per position, summed) into
a residual stream of width ``--dim``, which runs through ``--depth`` pre-norm gated MLP
blocks ``GatedResidual(Sequential(LayerNorm, Linear, GELU, Linear))``, a final LayerNorm
and a linear head. Every configuration is trained with AdamW (weight decay on matrices
only), gradient clipping at 1.0 and a constant learning rate, for ``--steps`` steps.

Per step the loss and the gradient norm are checked (one sync, which the loss print needs
anyway); every ``--check-every`` steps and at the end :func:`vectorgate.stability.check_gates`
and a finiteness check over all parameters run. Under fp16 the GradScaler skips steps whose
scaled gradients overflowed: that is its job, and the count is reported, not hidden.

Prints a table and writes JSON (``--out``). Run (about 25 minutes on a shared 2-core CPU):

    .venv/bin/python benchmarks/stress.py --out benchmarks/results/stress.json

The CI-sized version of the same harness runs in ``tests/core/test_stress.py``.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import pathlib
import platform
import time
import warnings
from dataclasses import asdict, dataclass, field

import torch
from torch import Tensor, nn

from vectorgate.residual import GatedResidual
from vectorgate.stability import NonFiniteError, UnstableGateWarning, assert_finite, check_gates
from vectorgate_lab.assets import load_shakespeare

PRECISIONS = ("fp32", "bf16", "fp16")


@dataclass
class StressConfig:
    """One training run. ``precision``: fp32, bf16 (autocast) or fp16 (autocast + GradScaler).

    ``gated=False`` freezes every curvature at 0, which makes each gate exactly the plain
    residual ``x + f(x)``: the same model without gating, for comparison.
    """

    precision: str = "bf16"
    lr: float = 1e-2
    max_curvature: float | None = None
    init_curvature: float = 0.0
    depth: int = 48
    dim: int = 64
    hidden: int = 128
    context: int = 8
    batch: int = 64
    steps: int = 1000
    check_every: int = 50
    clip: float | None = 1.0
    gated: bool = True
    seed: int = 0

    def name(self) -> str:
        cap = "none" if self.max_curvature is None else f"{self.max_curvature:g}"
        clip = "" if self.clip == 1.0 else f" clip={self.clip}"
        if not self.gated:
            return f"{self.precision} lr={self.lr:g} plain residual (c frozen at 0){clip}"
        return f"{self.precision} lr={self.lr:g} cap={cap} c0={self.init_curvature:g}{clip}"


@dataclass
class StressResult:
    """What one run measured. ``finite`` is False when anything went NaN/Inf (``error`` says where)."""

    config: StressConfig
    finite: bool = True
    error: str | None = None
    steps_done: int = 0
    skipped_steps: int = 0
    first_loss: float = math.nan
    final_loss: float = math.nan
    val_bpc: float = math.nan
    max_abs_curvature: float = 0.0
    sum_max_abs_curvature: float = 0.0
    realised_log_amplification: float = 0.0
    stream_growth: float = math.nan
    max_grad_norm: float = 0.0
    final_scale: float | None = None
    first_warning_step: int | None = None
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0


class CharData:
    """Shakespeare as a tensor of character ids, split 90/10 into train/validation."""

    def __init__(self, max_chars: int = 1_000_000) -> None:
        text = load_shakespeare(max_chars)
        vocab = sorted(set(text))
        self.vocab_size = len(vocab)
        lookup = {ch: i for i, ch in enumerate(vocab)}
        ids = torch.tensor([lookup[ch] for ch in text], dtype=torch.long)
        cut = int(0.9 * len(ids))
        self.train, self.val = ids[:cut], ids[cut:]

    def batch(self, split: str, batch: int, context: int, gen: torch.Generator) -> tuple[Tensor, Tensor]:
        """Contexts ``(batch, context)`` and next characters ``(batch,)``."""
        ids = self.train if split == "train" else self.val
        start = torch.randint(0, len(ids) - context - 1, (batch,), generator=gen)
        offsets = torch.arange(context + 1)
        window = ids[start[:, None] + offsets]
        return window[:, :-1], window[:, -1]


class GatedStack(nn.Module):
    """Context embedding -> ``depth`` pre-norm gated MLP blocks -> LayerNorm -> logits.

    Shapes: ids ``(batch, context)`` -> logits ``(batch, vocab)``.
    """

    def __init__(self, vocab: int, cfg: StressConfig) -> None:
        super().__init__()
        self.context = cfg.context
        self.vocab = vocab
        self.embed = nn.Embedding(vocab * cfg.context, cfg.dim)
        # The stress grid is about c itself (random g, c = c0: vectorgate 0.1's init), so that
        # c0 sets how far from the identity the gates start.
        gate_kwargs = {"init": "random", "init_curvature": cfg.init_curvature, "max_curvature": cfg.max_curvature}
        self.blocks = nn.ModuleList(
            GatedResidual(
                nn.Sequential(
                    nn.LayerNorm(cfg.dim),
                    nn.Linear(cfg.dim, cfg.hidden),
                    nn.GELU(),
                    nn.Linear(cfg.hidden, cfg.dim),
                ),
                cfg.dim,
                **gate_kwargs,
            )
            for _ in range(cfg.depth)
        )
        self.norm = nn.LayerNorm(cfg.dim)
        self.head = nn.Linear(cfg.dim, vocab)

    def stream(self, ids: Tensor) -> list[Tensor]:
        """The residual stream before each block and after the last, each ``(batch, dim)``."""
        offsets = torch.arange(self.context, device=ids.device) * self.vocab
        h = self.embed(ids + offsets).sum(1)
        states = [h]
        for block in self.blocks:
            h = block(h)
            states.append(h)
        return states

    def forward(self, ids: Tensor) -> Tensor:
        return self.head(self.norm(self.stream(ids)[-1]))


def _autocast(precision: str) -> contextlib.AbstractContextManager:
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast("cpu", dtype=dtype)


def _optimizer(model: nn.Module, lr: float) -> torch.optim.Optimizer:
    # nanoGPT's rule: decay matrices only; curvature vectors, biases and norms are not decayed.
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": 0.01}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=lr)


@torch.no_grad()
def _measure(model: GatedStack, result: StressResult, ids: Tensor, targets: Tensor) -> None:
    """Curvature, realised amplification of the stream and validation bits per character."""
    states = model.stream(ids)
    realised = 0.0
    for block, h in zip(model.blocks, states[:-1], strict=True):
        realised += float(block.gate(h).s.max())
    result.realised_log_amplification = realised
    result.stream_growth = float(states[-1].norm(dim=-1).mean() / states[0].norm(dim=-1).mean())
    logits = model.head(model.norm(states[-1]))
    result.val_bpc = float(nn.functional.cross_entropy(logits, targets)) / math.log(2)
    _record_curvature(model, result)


@torch.no_grad()
def _record_curvature(model: GatedStack, result: StressResult) -> None:
    curv = [float(b.gate.effective_curvature().abs().max()) for b in model.blocks]
    result.max_abs_curvature = max(curv)
    result.sum_max_abs_curvature = math.fsum(curv)


def _gate_warnings(caught: list[warnings.WarningMessage]) -> list[warnings.WarningMessage]:
    return [w for w in caught if issubclass(w.category, UnstableGateWarning)]


def run_config(cfg: StressConfig, data: CharData, *, progress: bool = False) -> StressResult:
    """Train one configuration; never raises on NaN/Inf, records it in the result instead."""
    if cfg.precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {cfg.precision!r}")
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    model = GatedStack(data.vocab_size, cfg)
    if not cfg.gated:
        if cfg.init_curvature != 0.0:
            raise ValueError(f"gated=False needs init_curvature=0.0, got {cfg.init_curvature}")
        for block in model.blocks:
            block.gate.requires_grad_(False)
    opt = _optimizer(model, cfg.lr)
    scaler = torch.amp.GradScaler("cpu", enabled=cfg.precision == "fp16")
    result = StressResult(config=cfg)
    caught: list[warnings.WarningMessage] = []
    start = time.perf_counter()
    steps = range(cfg.steps)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(steps, desc=cfg.name(), leave=False)
        steps = bar
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", UnstableGateWarning)
            check_gates(model)  # pre-flight: a configuration unstable at init warns here
            if _gate_warnings(caught):
                result.first_warning_step = 0
            for step in steps:
                ids, targets = data.batch("train", cfg.batch, cfg.context, gen)
                with _autocast(cfg.precision):
                    logits = model(ids)
                loss = nn.functional.cross_entropy(logits.float(), targets)
                opt.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.unscale_(opt)
                gnorm = torch.nn.utils.clip_grad_norm_(
                    model.parameters(), math.inf if cfg.clip is None else cfg.clip
                )
                scale_before = scaler.get_scale() if scaler.is_enabled() else None
                scaler.step(opt)
                scaler.update()
                loss_value, gnorm_value = float(loss.detach()), float(gnorm)
                if not math.isfinite(loss_value):
                    raise NonFiniteError(f"loss is {loss_value} at step {step}")
                if not math.isfinite(gnorm_value):
                    # Under fp16 an overflowed scaled gradient is the GradScaler's business:
                    # it skipped this step and lowered the scale. Anywhere else it is a failure.
                    if scale_before is None:
                        raise NonFiniteError(f"gradient norm is {gnorm_value} at step {step}")
                    result.skipped_steps += 1
                else:
                    result.max_grad_norm = max(result.max_grad_norm, gnorm_value)
                if step == 0:
                    result.first_loss = loss_value
                result.final_loss = loss_value
                result.steps_done = step + 1
                if (step + 1) % cfg.check_every == 0 or step + 1 == cfg.steps:
                    check_gates(model, grads=scale_before is None)
                    if _gate_warnings(caught) and result.first_warning_step is None:
                        result.first_warning_step = step + 1
                    for name, p in model.named_parameters():
                        assert_finite(f"parameter {name} after step {step}", p)
                    if bar is not None:
                        bar.set_postfix(loss=f"{loss_value:.3f}")
        val_ids, val_targets = data.batch("val", 2048, cfg.context, torch.Generator().manual_seed(1))
        _measure(model, result, val_ids, val_targets)
    except NonFiniteError as err:
        result.finite = False
        result.error = str(err)
        _record_curvature(model, result)  # where the gates stood when it failed
    finally:
        # Warnings repeat with updated numbers; keep the first and the last of each kind.
        kinds: dict[str, list[str]] = {}
        for w in _gate_warnings(caught):
            kinds.setdefault(str(w.message)[:40], []).append(str(w.message))
        result.warnings = [m for msgs in kinds.values() for m in dict.fromkeys([msgs[0], msgs[-1]])]
        if bar is not None:
            bar.close()
    result.final_scale = scaler.get_scale() if scaler.is_enabled() else None
    result.seconds = time.perf_counter() - start
    return result


def default_grid(steps: int) -> list[StressConfig]:
    """fp16+GradScaler and bf16 x lr 1e-3, 1e-2 x cap none, 3; then the harder cases."""
    grid = [
        StressConfig(precision=p, lr=lr, max_curvature=cap, steps=steps)
        for p in ("fp16", "bf16")
        for lr in (1e-3, 1e-2)
        for cap in (None, 3.0)
    ]
    # Curvature started away from zero, uncapped, at the high lr: the case most likely to grow.
    grid += [StressConfig(precision=p, lr=1e-2, init_curvature=1.0, steps=steps) for p in ("fp16", "bf16")]
    # Without gradient clipping, at the high lr.
    grid += [StressConfig(precision=p, lr=1e-2, clip=None, steps=steps) for p in ("fp16", "bf16")]
    # The cap check_gates suggests for 48 gates under fp16 (log(65504) / 48 ~ 0.23).
    grid.append(StressConfig(precision="fp16", lr=1e-2, max_curvature=0.2, steps=steps))
    grid.append(StressConfig(precision="fp32", lr=1e-2, steps=steps))
    # The same stack without gating (c frozen at 0), at the high lr under fp16.
    grid.append(StressConfig(precision="fp16", lr=1e-2, gated=False, steps=steps))
    return grid


def format_table(results: list[StressResult]) -> str:
    head = (
        "| config | finite | steps | skipped (fp16) | loss first -> last | val bpc | max abs c "
        "| sum max abs c | realised log amp | stream growth | warned at step | s |"
    )
    rows = [head, "|" + "---|" * 12]
    for r in results:
        if not r.finite:  # nothing after the failure was measured
            r = dataclasses.replace(r, val_bpc=math.nan, realised_log_amplification=math.nan)
        rows.append(
            f"| {r.config.name()} | {'yes' if r.finite else 'NO: ' + str(r.error)} | {r.steps_done} "
            f"| {r.skipped_steps} | {r.first_loss:.3f} -> {r.final_loss:.3f} | {r.val_bpc:.3f} "
            f"| {r.max_abs_curvature:.3f} | {r.sum_max_abs_curvature:.2f} "
            f"| {r.realised_log_amplification:.2f} | {r.stream_growth:.3g} "
            f"| {'-' if r.first_warning_step is None else r.first_warning_step} | {r.seconds:.0f} |"
        )
    return "\n".join(rows)


def load_results(path: str) -> tuple[str, list[StressResult]]:
    """The machine line and the results of a JSON file written by :func:`main`."""
    payload = json.loads(pathlib.Path(path).read_text())
    results = []
    for raw in payload["results"]:
        raw = dict(raw)
        results.append(StressResult(config=StressConfig(**raw.pop("config")), **raw))
    return payload["machine"], results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--show", nargs="+", metavar="JSON", help="print the table of saved result files and exit"
    )
    parser.add_argument("--steps", type=int, default=1000, help="steps per configuration (default 1000)")
    parser.add_argument("--out", default="benchmarks/results/stress.json", help="JSON output path")
    # One thread by default: on a shared, oversubscribed CPU two OpenMP threads spin-wait on
    # each other and a step was measured up to 10x slower than with one.
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    parser.add_argument("--only", default=None, help="run only configs whose name contains this")
    args = parser.parse_args(argv)
    if args.show:
        for path in args.show:
            machine, results = load_results(path)
            print(f"{path} ({machine})")
            print(format_table(results))
        return 0
    if args.steps < 1:
        parser.error(f"--steps must be a positive integer, got {args.steps}")
    torch.set_num_threads(args.threads)
    data = CharData()
    grid = [c for c in default_grid(args.steps) if args.only is None or args.only in c.name()]
    from tqdm import tqdm

    results = []
    for cfg in tqdm(grid, desc="configurations"):
        results.append(run_config(cfg, data, progress=True))
        tqdm.write(format_table(results[-1:]).splitlines()[-1])
    print(format_table(results))
    machine = f"{platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}"
    payload = {"machine": machine, "results": [asdict(r) for r in results]}
    out = pathlib.Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(payload, indent=1))
    print(f"wrote {out}")
    return 0 if all(r.finite for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
