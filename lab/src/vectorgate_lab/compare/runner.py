"""Train every (task, variant, seed) at equal steps and data order; append one JSON record per run."""

from __future__ import annotations

import json
import math
import os
import pathlib
import platform
import re
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from vectorgate.discovery import count_parameters, gates
from vectorgate.patching import param_groups
from vectorgate.skip import SkipBudget, calibrate_skipping, disable_skipping, enable_skipping
from vectorgate_lab.compare.spec import VariantSpec
from vectorgate_lab.compare.task import TASKS, Task

__all__ = ["load_runs", "run_comparison", "run_one"]


def _schedule(steps: int) -> Callable[[int], float]:
    """Linear warmup over 10% of the steps, then cosine decay to 10% of the peak."""
    warmup = max(1, steps // 10)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, steps - warmup)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))

    return factor


def _curvature_stats(model: nn.Module) -> dict[str, float] | None:
    """Mean and max |c| over the model's VectorGates (None when it has none)."""
    cs = [g.effective_curvature().detach().abs().flatten() for _, g in gates(model) if hasattr(g, "effective_curvature")]
    if not cs:
        return None
    c = torch.cat(cs).float()
    return {"mean_abs_c": float(c.mean()), "max_abs_c": float(c.max())}


def run_one(task: Task, spec: VariantSpec, seed: int) -> dict[str, Any]:
    """Train one arm of ``task`` from scratch and return its record.

    The global RNG is seeded with ``seed`` before the model is built (so the backbone and
    head start the same for every variant), and batches come from a generator seeded with
    ``seed`` alone (so every variant sees the same data in the same order).

    Returns:
        A JSON-serialisable dict: the final metric, its curve, the training-loss curve,
        trainable/total parameters, wall time, whether the loss went non-finite, and the
        gates' curvature at the end (VectorGate variants).
    """
    # Before anything is built: a task that cannot skip fails fast.
    calibration = task.calibration_batches() if spec.skip_budget is not None else None
    torch.manual_seed(seed)
    if hasattr(task, "last_correct"):
        task.last_correct = None
    model = task.build_model(spec, seed).to(task.device)
    lr = task.lr * spec.lr_mult
    gate_wd = {} if spec.gate_weight_decay is None else {"gate_weight_decay": spec.gate_weight_decay}
    groups = param_groups(model, weight_decay=task.weight_decay, lr=lr, gate_lr=lr * spec.gate_lr_mult, **gate_wd)
    optimizer = torch.optim.AdamW(groups, lr=lr)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _schedule(task.steps))
    budget = None
    if spec.skip_budget is not None:
        budget = SkipBudget(model, spec.skip_budget, weight=spec.skip_weight,
                            warmup_steps=round(spec.skip_warmup * task.steps))
    generator = torch.Generator().manual_seed(seed)
    eval_at = {max(1, round(task.steps * k / task.eval_points)) for k in range(1, task.eval_points + 1)}
    loss_every = max(1, task.steps // 50)
    curve: list[list[float]] = []
    losses: list[list[float]] = []
    diverged_at = None
    start = time.perf_counter()
    for step in range(1, task.steps + 1):
        model.train()
        batch = task.batch(step, generator)
        if budget is None:
            loss = task.loss(model, batch)
        else:
            with budget.tokens(task.token_mask(batch)):
                loss = task.loss(model, batch)
            loss = loss + budget.loss()
            budget.step()
        if not torch.isfinite(loss):
            diverged_at = step
            break
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for g in groups for p in g["params"]], 1.0)
        optimizer.step()
        scheduler.step()
        if step % loss_every == 0 or step == task.steps:
            losses.append([step, float(loss.detach())])
        if step in eval_at:
            model.eval()
            curve.append([step, float(task.evaluate(model))])
    elapsed = time.perf_counter() - start
    skip_curve = None
    if budget is not None:
        budget.remove()
        if not diverged_at:
            skip_curve = _skip_curve(task, model, calibration)
    # Which held-out examples the final evaluation got right (tasks that keep it), as "0"/"1":
    # paired tests across arms on the same examples (McNemar).
    last = getattr(task, "last_correct", None)
    correct = "".join(map(str, last.int().tolist())) if last is not None and not diverged_at else None
    return {
        "task": task.name,
        "metric": task.metric,
        "higher_is_better": task.higher_is_better,
        "variant": spec.label,
        "variant_name": spec.variant,
        "variant_kwargs": spec.kwargs,
        "lr": lr,
        "gate_lr": lr * spec.gate_lr_mult,
        "gate_weight_decay": spec.gate_weight_decay,
        "seed": seed,
        "steps": task.steps,
        "batch_size": task.batch_size,
        "final": float("nan") if diverged_at else curve[-1][1],
        "diverged_at": diverged_at,
        "curve": curve,
        "train_loss": losses,
        "trainable_params": count_parameters(model, trainable_only=True),
        "total_params": count_parameters(model),
        "time_s": elapsed,
        "curvature": _curvature_stats(model),
        "correct": correct,
        "skip_curve": skip_curve,
        "threads": torch.get_num_threads(),
        "device": task.device,
    }


def _skip_curve(task: Task, model: nn.Module, batches: list[Any]) -> list[list[float]]:
    """``[target, achieved, metric]`` at each of the task's skip ratios.

    Thresholds are calibrated on the task's calibration batches (held out from the
    evaluation data); ``achieved`` is the share of (real) tokens the skippable branches
    skipped during the evaluation itself, i.e. the share of their FLOPs saved.
    """
    model.eval()
    controller = enable_skipping(model)
    curve = []
    try:
        for ratio in task.skip_eval_ratios:
            calibrate_skipping(model, batches, ratio, forward=task.skip_forward)
            controller.reset()
            metric = float(task.evaluate(model))
            achieved = controller.skip_ratio() if ratio > 0 else 0.0
            curve.append([ratio, achieved, metric])
    finally:
        disable_skipping(model)
    return curve


def load_runs(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Records of one ``.jsonl`` file, or of every ``runs*.jsonl`` in a folder (absent: []).

    Several processes may fill one folder at once, each through its own shard file
    (``runs-<shard>.jsonl``), and one report reads them all.
    """
    path = pathlib.Path(path)
    files = sorted(path.glob("runs*.jsonl")) if path.is_dir() else [path] if path.exists() else []
    return [json.loads(line) for f in files for line in f.read_text().splitlines() if line.strip()]


def machine_description(device: str) -> str:
    """A line naming the machine, e.g. ``x86_64, 2 CPU cores, 2 torch threads, torch 2.14.1``."""
    where = torch.cuda.get_device_name() if device.startswith("cuda") else f"{os.cpu_count()} CPU cores"
    return (f"{platform.machine()}, {where}, {torch.get_num_threads()} torch threads, "
            f"torch {torch.__version__}, Python {platform.python_version()}")


def run_comparison(
    tasks: Sequence[str | Task],
    specs: Sequence[VariantSpec],
    seeds: Sequence[int],
    output_dir: str | os.PathLike,
    *,
    quick: bool = False,
    scale: float = 1.0,
    device: str = "cpu",
    progress: bool = True,
    shard: str | None = None,
    command: str | None = None,
) -> list[dict[str, Any]]:
    """Run every (task, variant, seed) not already recorded in ``output_dir``; append as it goes.

    Records go to ``output_dir/runs.jsonl``, or ``runs-<shard>.jsonl`` when ``shard`` is
    given (for several processes filling one folder). Runs recorded in any shard are skipped,
    so an interrupted comparison resumes where it stopped. ``command`` is stored in each
    record so the report can say how every number was made.

    A run that raises is recorded with its error (and counted in the report), so one broken
    arm does not lose the others.

    Returns:
        All records now in ``runs.jsonl`` (earlier ones included).

    Raises:
        ValueError: unknown task name, no variants or no seeds.
    """
    if not specs or not seeds:
        raise ValueError(f"need at least one variant and one seed, got {len(specs)} variants and {len(seeds)} seeds")
    task_objs: list[Task] = []
    for t in tasks:
        if isinstance(t, str):
            if t not in TASKS:
                raise ValueError(f"unknown task {t!r}; available: {', '.join(sorted(TASKS))}")
            t = TASKS[t]()
        t.device = device
        t.configure(quick=quick, scale=scale)
        task_objs.append(t)
    out = pathlib.Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    if shard is not None and not re.fullmatch(r"[\w.-]+", shard):
        raise ValueError(f"shard must be letters, digits, '.', '_' or '-', got {shard!r}")
    runs_path = out / ("runs.jsonl" if shard is None else f"runs-{shard}.jsonl")
    done = {(r["task"], r["variant"], r["seed"]) for r in load_runs(out)}
    # Seed-major: an interrupted sweep leaves every arm with (nearly) the same seeds, paired.
    todo = [(t, s, seed) for seed in seeds for t in task_objs for s in specs if t.supports(s)
            if (t.name, s.label, seed) not in done]
    orphans = [s.label for s in specs if not any(t.supports(s) for t in task_objs)]
    if orphans:
        from vectorgate.variants import VARIANTS
        from vectorgate_lab.peers import STREAM_VARIANTS

        raise ValueError(
            f"no task here runs {orphans}: not a registered variant "
            f"({', '.join(sorted({*VARIANTS, *STREAM_VARIANTS}))}) "
            f"nor an arm of tasks {[t.name for t in task_objs]} (lora/dora/ia3 run in the *_adapt tasks only)"
        )
    for t in task_objs:
        skipped = [s.label for s in specs if not t.supports(s)]
        if skipped:
            print(f"{t.name}: not run for {', '.join(skipped)} (the task does not support them)", flush=True)
    bar = _progress(len(todo), progress)
    loaded: set[str] = set()
    for task, spec, seed in todo:
        bar.set_description(f"{task.name} {spec.label} seed {seed}")
        if task.name not in loaded:
            task.load()
            loaded.add(task.name)
        try:
            record = run_one(task, spec, seed)
        except Exception as err:  # recorded, reported, and the sweep goes on
            record = {"task": task.name, "metric": task.metric, "higher_is_better": task.higher_is_better,
                      "variant": spec.label, "seed": seed, "error": f"{type(err).__name__}: {err}"}
            bar.write(f"run failed: {task.name} {spec.label} seed {seed}: {record['error']}")
        record["machine"] = machine_description(device)
        record["command"] = command
        with runs_path.open("a") as f:
            f.write(json.dumps(record) + "\n")
        bar.update(1)
    bar.close()
    return load_runs(out)


def _progress(total: int, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, disable=not enabled, unit="run")
