"""``vectorgate-lab bench``: op-level and BERT-step benchmarks; prints tables, writes JSON.

The code lives in :mod:`vectorgate_lab.bench`; ``benchmarks/bench.py`` runs this same command.
"""

from __future__ import annotations

import argparse
import sys

HELP = (
    "Benchmark the gated residual: one gate (naive eager / naive compiled / vectorgate, vs the "
    "bandwidth floor) and BERT / Llama-like training steps (plain / naive-gated / vectorgate-gated at full "
    "rank and low rank, vs the FLOP ratio)."
)

# Defaults per device. CPU sizes are smaller so a run takes minutes, not hours.
OP_SHAPES = {
    "cuda": "8192x768,8192x1024,8192x4096,32768x1024",
    "cpu": "4096x768,1024x256",
    "quick": "256x64",
}
MODEL_SIZES = {
    # layers, hidden, heads, intermediate, batch, seq, vocab ("minilm": sizes from the checkpoint)
    "base": (12, 768, 12, 3072, 32, 256, 30522),
    "small": (2, 256, 4, 1024, 8, 128, 8000),
    "tiny": (1, 32, 2, 64, 2, 16, 100),
    "minilm": (6, 384, 12, 1536, 32, 256, 30522),
    # Llama-like pre-norm models (RMSNorm, SwiGLU; random init): where gate_source="normed" and
    # stacking apply. Intermediate = 8/3 d, rounded, as Llama sizes it.
    "llama_base": (12, 768, 12, 2048, 32, 256, 32000),
    "llama_small": (2, 256, 4, 688, 8, 128, 8000),
    "llama_tiny": (1, 32, 2, 64, 2, 16, 100),
}
#: Sizes that are Llama-like pre-norm models (the others are BERTs).
LLAMA_SIZES = ("llama_base", "llama_small", "llama_tiny")
#: CPU batch x seq where it differs from the table (BERT-base and MiniLM in minutes on 2 cores).
CPU_BATCH = {"base": (2, 128), "minilm": (4, 128), "llama_base": (2, 128)}
#: Which variants each size runs on the CPU (the naive formula only on the small sizes, where
#: it costs little time); on a GPU every size runs all four.
SIZE_VARIANTS = {
    "small": ("plain", "naive", "vectorgate", "vectorgate_r{rank}"),
    "tiny": ("plain", "naive", "vectorgate", "vectorgate_stacked", "vectorgate_r{rank}"),
    "base": ("plain", "vectorgate", "vectorgate_stacked", "vectorgate_r{rank}"),
    "minilm": ("plain", "vectorgate", "vectorgate_r{rank}"),
    # pre-norm: the gate reads x (the seed's g(x)) or norm(x), which lets it stack
    "llama": ("plain", "vectorgate", "vectorgate_normed", "vectorgate_normed_stacked", "vectorgate_r{rank}"),
}
DEFAULT_SIZES = {"cuda": "base,minilm,llama_base", "cpu": "small,base,minilm,llama_small", "quick": "tiny"}


def _shapes(text: str) -> list[tuple[int, int]]:
    shapes = []
    for part in text.split(","):
        try:
            n, d = (int(v) for v in part.lower().split("x"))
        except ValueError:
            raise argparse.ArgumentTypeError(f"shapes are NxD separated by commas (e.g. 4096x768), got {part!r}") from None
        if n < 1 or d < 1:
            raise argparse.ArgumentTypeError(f"shape sizes must be positive, got {part!r}")
        shapes.append((n, d))
    return shapes


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default=None, help="cpu or cuda[:i] (default: cuda if available)")
    parser.add_argument("--what", choices=("op", "model", "all"), default="all", help="which benchmark (default all)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, few rounds, no torch.compile (a smoke test)")
    parser.add_argument("--shapes", type=_shapes, default=None, help="op shapes NxD,... (default per device)")
    parser.add_argument("--dtype", default=None,
                        help="op dtypes, comma-separated: float32, bfloat16, float16 (default bf16 on GPU, "
                             "float32,bfloat16 on CPU)")
    parser.add_argument("--parts", default="elementwise,gate", help="op parts: elementwise,gate (default both)")
    parser.add_argument("--model-size", default=None,
                        help=f"model sizes, comma-separated, from {sorted(MODEL_SIZES)} (default "
                             f"{DEFAULT_SIZES['cuda']} on GPU, {DEFAULT_SIZES['cpu']} on CPU, tiny with --quick; "
                             "minilm is the bundled pretrained all-MiniLM-L6-v2; llama_* are random-init "
                             "Llama-like pre-norm models)")
    parser.add_argument("--rank", type=int, default=None,
                        help="rank of the low-rank gate rows (default 64; 8 with --quick)")
    parser.add_argument("--batch", type=int, default=None, help="override the BERT batch size")
    parser.add_argument("--seq", type=int, default=None, help="override the BERT sequence length")
    parser.add_argument("--amp", default=None, help="BERT autocast dtype or 'none' (default bfloat16 on GPU, none on CPU)")
    parser.add_argument("--reps", type=int, default=None, help="timed rounds (default 9 op / 10 model; 3 with --quick)")
    parser.add_argument("--no-compile", action="store_true", help="skip every torch.compile variant")
    parser.add_argument("--cold-compile", action="store_true",
                        help="disable inductor's caches so first-call figures include the full compile")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default torch's)")
    parser.add_argument("--output", "--out", dest="out", default=None, help="JSON path (default bench-results/bench-<device>.json)")


def _variant_set(size: str, on_gpu: bool) -> str:
    """Which :data:`SIZE_VARIANTS` row a size runs (on a GPU every BERT size runs all of them)."""
    if size in LLAMA_SIZES:
        return "llama"
    return "tiny" if on_gpu else size


def _model_config(args: argparse.Namespace, size: str, device: str, compile_: bool):
    from vectorgate_lab.bench import ModelBenchConfig

    on_gpu = device.startswith("cuda")
    layers, hidden, heads, inter, batch, seq, vocab = MODEL_SIZES[size]
    if not on_gpu and size in CPU_BATCH:
        batch, seq = CPU_BATCH[size]
    if args.quick:
        batch, seq = 2, 16
    amp = args.amp or ("bfloat16" if on_gpu else "none")
    if amp not in ("none", "bfloat16", "float16"):
        raise SystemExit(f"--amp must be none, bfloat16 or float16, got {amp!r}")
    rank = args.rank or (8 if args.quick else 64)
    pretrained = None
    if size == "minilm":
        from vectorgate_lab.assets import minilm_path

        pretrained = minilm_path()
    return ModelBenchConfig(
        device=device, name=size, pretrained=pretrained,
        arch="llama" if size in LLAMA_SIZES else "bert",
        variants=tuple(v.format(rank=rank) for v in SIZE_VARIANTS[_variant_set(size, on_gpu)]),
        layers=layers, hidden=hidden, heads=heads, intermediate=inter,
        batch=args.batch or batch, seq=args.seq or seq, vocab=vocab,
        amp_dtype=None if amp == "none" else amp, compile=compile_, cpu_compiled=compile_,
        reps=args.reps or (3 if args.quick else 10), warmup=1 if args.quick else 3,
    )


def _config(args: argparse.Namespace):
    import torch

    from vectorgate_lab.bench import OpBenchConfig

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("--device cuda was asked for but torch sees no CUDA device")
    if device != "cpu" and not device.startswith("cuda"):
        raise SystemExit(f"--device must be cpu or cuda[:i], got {device!r}")
    on_gpu = device.startswith("cuda")
    dtypes = tuple((args.dtype or ("bfloat16" if on_gpu else "float32,bfloat16")).split(","))
    if not dtypes or set(dtypes) - {"float32", "bfloat16", "float16"}:
        raise SystemExit(f"--dtype must list float32, bfloat16 or float16, got {args.dtype!r}")
    parts = tuple(p for p in args.parts.split(",") if p)
    if not parts or set(parts) - {"elementwise", "gate"}:
        raise SystemExit(f"--parts must list elementwise and/or gate, got {args.parts!r}")
    compile_ = not (args.no_compile or args.quick)
    shapes = args.shapes or _shapes(OP_SHAPES["quick" if args.quick else ("cuda" if on_gpu else "cpu")])
    ops = [
        OpBenchConfig(
            device=device, dtype=dtype, shapes=shapes, parts=parts, compile=compile_,
            cpu_compiled=compile_, reps=args.reps or (3 if args.quick else 9),
            warmup=1 if args.quick else 2, bandwidth_mib=16 if args.quick else 256,
        )
        for dtype in dtypes
    ]
    sizes = (args.model_size or DEFAULT_SIZES["quick" if args.quick else ("cuda" if on_gpu else "cpu")]).split(",")
    unknown = [s for s in sizes if s not in MODEL_SIZES]
    if unknown or not sizes:
        raise SystemExit(f"--model-size must list sizes from {sorted(MODEL_SIZES)}, got {args.model_size!r}")
    models = [_model_config(args, size, device, compile_) for size in sizes]
    return device, ops, models


def run(args: argparse.Namespace) -> int:
    import torch

    # Thread count and the cache switch are process-wide: put them back afterwards, so an
    # in-process call (tests, notebooks) leaves no trace.
    import torch._inductor.config as inductor_config

    threads = torch.get_num_threads()
    no_caches = inductor_config.force_disable_caches
    try:
        if args.cold_compile:
            # The config, not the environment variable: inductor has read that already.
            inductor_config.force_disable_caches = True
        if args.threads:
            torch.set_num_threads(args.threads)
        return _run(args)
    finally:
        torch.set_num_threads(threads)
        inductor_config.force_disable_caches = no_caches


def _run(args: argparse.Namespace) -> int:
    import time

    from vectorgate_lab.bench import report, run_model_bench, run_op_bench

    device, op_cfgs, model_cfgs = _config(args)

    def say(msg: str) -> None:
        print(f"[bench] {msg}", file=sys.stderr, flush=True)

    start = time.perf_counter()
    payload: dict = {"machine": report.machine(device), "command": " ".join(sys.argv)}
    if args.what in ("op", "all"):
        ops = [run_op_bench(cfg, progress=say) for cfg in op_cfgs]
        payload["op"] = {**ops[0], "rows": [r for o in ops for r in o["rows"]],
                         "configs": [o["config"] for o in ops]}
        print(f"\n## One gate ({device}, copy bandwidth {payload['op']['copy_bandwidth_gbs']:.1f} GB/s)\n")
        print(report.op_table(payload["op"]))
    if args.what in ("model", "all"):
        payload["models"] = [run_model_bench(cfg, progress=say) for cfg in model_cfgs]
        for result in payload["models"]:
            c = result["config"]
            arch = "Llama-like" if c.get("arch") == "llama" else "BERT"
            print(f"\n## {arch} training step ({result['size']}: {c['layers']} layers, d={c['hidden']}, "
                  f"batch {c['batch']}x{c['seq']}, amp {c['amp_dtype'] or 'none'})\n")
            print(report.model_table(result))
        print("\n## Gated / plain against the FLOP ratio\n")
        print(report.model_summary_table(payload["models"]))
    payload["wall_s"] = time.perf_counter() - start
    out = report.write_json(args.out or f"bench-results/bench-{device.replace(':', '')}.json", payload)
    print(f"\nJSON: {out} ({payload['wall_s']:.0f} s)")
    return 0
