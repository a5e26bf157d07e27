"""``vectorgate-lab compare``: residual variants side by side on real tasks (tasks x variants x seeds)."""

from __future__ import annotations

import argparse
import shlex
import sys

HELP = "Train residual variants on real tasks at equal steps and data order; write runs JSON, a results table and plots."

DEFAULT_TASKS = ("rt_full", "rt_adapt", "sms_full", "sms_adapt", "vit_mnist", "charlm_shakespeare")
DEFAULT_VARIANTS = ("plain", "vectorgate", "vectorgate_scalar", "vectorgate_lowrank", "highway", "rezero", "layerscale", "gateskip")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tasks", nargs="+", default=list(DEFAULT_TASKS), help=f"tasks to run (default: {' '.join(DEFAULT_TASKS)})")
    parser.add_argument(
        "--variants", nargs="+", default=list(DEFAULT_VARIANTS),
        help="arms: 'name' or 'name[key=value,...]' (gate kwargs, lr_mult, gate_lr_mult; "
        "'lora[r=8]', 'dora[r=8]', 'ia3' in the *_adapt tasks). Default: every registered variant.",
    )
    parser.add_argument("--seeds", type=int, default=3, help="number of seeds, 0..N-1 (default 3)")
    parser.add_argument("--output-dir", required=True, help="where runs*.jsonl, results.md and plots go")
    parser.add_argument("--markdown", default=None, help="where to write the table (default: OUTPUT_DIR/results.md)")
    parser.add_argument("--shard", default=None,
                        help="append to OUTPUT_DIR/runs-SHARD.jsonl (lets several processes fill one folder)")
    parser.add_argument("--note", default=None, help="a line for the report, e.g. what else loaded the machine")
    parser.add_argument("--quick", action="store_true", help="tiny models and 3 steps (smoke test)")
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every task's steps (e.g. 10 on a GPU)")
    parser.add_argument("--device", default="cpu", help="torch device (default cpu)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--report-only", action="store_true", help="only rebuild the table and plots from the runs in OUTPUT_DIR")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--references", nargs="+", default=None,
                        help="arms every other arm is compared with, where a task ran them "
                             "(default: plain and lora[r=8])")


def run(args: argparse.Namespace) -> int:
    import pathlib

    import torch

    from vectorgate_lab.compare import (
        TASKS,
        load_runs,
        parse_variant,
        run_comparison,
        write_markdown,
        write_plots,
    )

    if args.seeds < 1:
        raise SystemExit(f"--seeds must be at least 1, got {args.seeds}")
    if not args.scale > 0:
        raise SystemExit(f"--scale must be positive, got {args.scale}")
    unknown = [t for t in args.tasks if t not in TASKS]
    if unknown:
        raise SystemExit(f"unknown task(s) {unknown}; available: {', '.join(sorted(TASKS))}")
    try:
        specs = [parse_variant(v) for v in args.variants]
    except ValueError as err:
        raise SystemExit(str(err)) from err
    if args.threads:
        torch.set_num_threads(args.threads)
    out = pathlib.Path(args.output_dir)
    command = _command_line(args)
    if args.report_only:
        runs = load_runs(out)
        if not runs:
            raise SystemExit(f"no runs*.jsonl records in {out}")
    else:
        try:
            runs = run_comparison(args.tasks, specs, range(args.seeds), out, quick=args.quick, scale=args.scale,
                                  device=args.device, progress=not args.no_progress, shard=args.shard,
                                  command=command)
        except ValueError as err:
            raise SystemExit(str(err)) from err
    plots = write_plots(runs, out)
    markdown = pathlib.Path(args.markdown) if args.markdown else out / "results.md"
    markdown.parent.mkdir(parents=True, exist_ok=True)
    refs = {} if args.references is None else {"references": args.references}
    write_markdown(runs, markdown, command=command, plots=plots, note=args.note, **refs)
    failed = [r for r in runs if "error" in r]
    print(f"{len(runs)} runs in {out}; table: {markdown}")
    if failed:
        print(f"{len(failed)} run(s) failed; see results.md", file=sys.stderr)
        return 1
    return 0


def _command_line(args: argparse.Namespace) -> str:
    """The command as typed (when run as ``vectorgate-lab compare ...``), else rebuilt from ``args``."""
    if sys.argv[1:2] == ["compare"]:
        return "vectorgate-lab " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    parts = ["vectorgate-lab compare", "--tasks", *args.tasks, "--variants", *map(shlex.quote, args.variants),
             "--seeds", str(args.seeds), "--output-dir", args.output_dir]
    parts += ["--quick"] * args.quick + (["--scale", str(args.scale)] if args.scale != 1.0 else [])
    return " ".join(parts)
