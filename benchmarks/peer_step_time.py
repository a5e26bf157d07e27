"""Training-step time of each residual arm on a comparison task, as a multiple of plain.

Why: the time / run column of `vectorgate-lab compare` reports depends on what else shared the
machine while each run went; this times one training step of every arm in interleaved rounds
in one process, so the ratios hold on a loaded machine too.

    python benchmarks/peer_step_time.py --task charlm_sweep_4l --arms plain vectorgate \
        "laurel_lr[rank=16]" "hc_dynamic[n=2]" "hc_dynamic[n=4]" "mhc[n=2]" "mhc[n=4]"
"""

from __future__ import annotations

import argparse

import torch

import vectorgate_lab.compare.tasks  # noqa: F401  (registers the tasks)
from vectorgate_lab.bench.timing import interleaved_medians
from vectorgate_lab.compare.spec import parse_variant
from vectorgate_lab.compare.task import TASKS


def step_fn(task, arm: str):
    """One AdamW training step of ``arm`` on ``task``, on a fixed batch."""
    model = task.build_model(parse_variant(arm), 0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    batch = task.batch(0, torch.Generator().manual_seed(0))

    def step() -> None:
        loss = task.loss(model, batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--task", default="charlm_sweep_4l", help=f"one of {sorted(TASKS)}")
    parser.add_argument("--arms", nargs="+", default=["plain", "vectorgate"], help="arms; the first is the reference")
    parser.add_argument("--reps", type=int, default=7, help="interleaved timed rounds (median)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = parser.parse_args(argv)
    if args.task not in TASKS:
        parser.error(f"--task must be one of {sorted(TASKS)}, got {args.task!r}")
    torch.set_num_threads(args.threads)
    task = TASKS[args.task]()
    task.configure()
    task.load()
    steps = {arm: step_fn(task, arm) for arm in args.arms}
    ms = interleaved_medians(steps, torch.device("cpu"), args.reps, warmup=2)
    reference = ms[args.arms[0]]
    print(f"task {args.task}, {args.threads} torch thread(s), median of {args.reps} interleaved rounds\n")
    print(f"| arm | ms / step | x {args.arms[0]} |\n|---|---|---|")
    for arm in args.arms:
        print(f"| {arm} | {ms[arm]:.0f} | {ms[arm] / reference:.2f} |")


if __name__ == "__main__":
    main()
