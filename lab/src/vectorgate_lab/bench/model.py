"""Model-level benchmark: one training step, plain vs gated, against the FLOP ratio.

The model is a random-init ``transformers`` BERT (post-LN; nothing is downloaded) or, with
``pretrained``, a local checkpoint such as the bundled MiniLM; or, with ``arch="llama"``, a
random-init Llama-like pre-norm model. "Gated" means both residuals of every layer gated
through :func:`vectorgate.patch` with the default gate:

- ``naive``: :class:`vectorgate_lab.bench.naive.NaiveVectorGate` (the hand-written formula);
- ``vectorgate``: the fused op, full-rank g;
- ``vectorgate_r<k>``: the fused op, rank-``k`` g (``d -> k -> d``);
- ``..._normed``: the gate reads the pre-norm's output (``gate_source="normed"``, pre-norm only);
- ``..._stacked``: the same with each gate's first projection computed in one GEMM with the
  branch's first projection (BERT: Q, intermediate dense; Llama, normed: q_proj, gate_proj), see
  :func:`vectorgate.patching.stack_gate_projections`.

Each variant runs eager and under ``torch.compile``; all are timed in interleaved rounds in
one process and reported as ratios to the plain model in the same mode, next to the ratio
of their FLOPs: one training step (forward + backward) counted by
:class:`torch.utils.flop_counter.FlopCounterMode`, which counts the matrix products (linear
layers, attention) - the floor a gate cannot go under.

Memory: ``saved_mib`` is what autograd keeps for backward over one forward (saved-tensor
hooks, parameters included). ``peak_gib`` is the model's own footprint (parameters and AdamW
state) plus the peak allocated above it during one step, so variants held in the same
process do not count each other: on CUDA from the allocator's statistics, on the CPU from
the profiler's memory records (net allocation of each top-level op in time order, so a
transient inside one op is not seen).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from typing import NamedTuple

import torch
from torch import nn

from vectorgate.discovery import count_parameters
from vectorgate_lab.bench.naive import naive_variant
from vectorgate_lab.bench.timing import (
    env,
    interleaved_medians,
    saved_for_backward,
    sync,
    time_once,
)

VARIANTS = ("plain", "naive", "vectorgate")


class BenchVariant(NamedTuple):
    """A parsed variant name (see :func:`parse_variant`)."""

    base: str
    rank: int | None
    normed: bool
    stacked: bool


def parse_variant(variant: str) -> BenchVariant:
    """What a variant name asks for: ``<base>[_r<rank>][_normed][_stacked]``.

    ``vectorgate_r64`` -> rank 64; ``vectorgate_stacked``: the gate projections stacked with
    the branch's first projection (:func:`vectorgate.patching.stack_gate_projections`);
    ``vectorgate_normed``: the gate reads the pre-norm's output
    (``GateConfig(gate_source="normed")``, pre-norm models only), which pre-norm stacking needs.
    """
    name, stacked = (variant.removesuffix("_stacked"), True) if variant.endswith("_stacked") else (variant, False)
    name, normed = (name.removesuffix("_normed"), True) if name.endswith("_normed") else (name, False)
    rank = None
    if name.startswith("vectorgate_r") and name[len("vectorgate_r"):].isdigit():
        name, rank = "vectorgate", int(name[len("vectorgate_r"):])
    if name not in VARIANTS or ((stacked or normed) and name == "plain"):
        raise ValueError(
            f"variant must be one of {VARIANTS} or vectorgate_r<rank>, optionally + _normed, + _stacked; got {variant!r}"
        )
    return BenchVariant(name, rank, normed, stacked)


def rank_of(variant: str) -> int | None:
    """The gate rank a variant name asks for (``vectorgate_r64`` -> 64), None for full rank."""
    return parse_variant(variant).rank


@dataclass
class ModelBenchConfig:
    """BERT size and step settings. The defaults are BERT-base at BASELINES.md's batch."""

    device: str = "cpu"
    name: str = "base"  # a label for tables
    arch: str = "bert"  # "bert" (post-LN) or "llama" (pre-norm, RMSNorm, SwiGLU)
    pretrained: str | None = None  # a local BERT checkpoint; its config replaces the sizes
    variants: tuple[str, ...] = VARIANTS
    layers: int = 12
    hidden: int = 768
    heads: int = 12
    intermediate: int = 3072
    batch: int = 32
    seq: int = 256
    vocab: int = 30522
    amp_dtype: str | None = "bfloat16"  # autocast dtype; None for plain fp32
    reps: int = 10
    warmup: int = 3
    compile: bool = True
    cpu_compiled: bool = True  # on the CPU, also vectorgate eager with VECTORGATE_CPU_COMPILE=1
    init_curvature: float | None = None  # None: the default gate's


def _gate_kwargs(cfg: ModelBenchConfig, variant: str) -> dict:
    kwargs: dict = {} if cfg.init_curvature is None else {"init_curvature": cfg.init_curvature}
    rank = rank_of(variant)
    if rank is not None:
        kwargs["rank"] = rank
    return kwargs


def _backbone(cfg: ModelBenchConfig) -> nn.Module:
    try:
        from transformers import BertConfig, BertModel, LlamaConfig, LlamaModel
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(
            "the model-level benchmark builds transformers models: pip install vectorgate[transformers]"
        ) from err
    if cfg.arch == "llama":
        return LlamaModel(LlamaConfig(
            vocab_size=cfg.vocab, hidden_size=cfg.hidden, num_hidden_layers=cfg.layers,
            num_attention_heads=cfg.heads, num_key_value_heads=cfg.heads,
            intermediate_size=cfg.intermediate, max_position_embeddings=max(512, cfg.seq),
        ))
    if cfg.arch != "bert":
        raise ValueError(f"arch must be 'bert' or 'llama', got {cfg.arch!r}")
    if cfg.pretrained:
        model = BertModel.from_pretrained(cfg.pretrained, add_pooling_layer=False)
    else:
        model = BertModel(
            BertConfig(
                vocab_size=cfg.vocab, hidden_size=cfg.hidden, num_hidden_layers=cfg.layers,
                num_attention_heads=cfg.heads, intermediate_size=cfg.intermediate,
                max_position_embeddings=max(512, cfg.seq),
            ),
            add_pooling_layer=False,
        )
    return model


def _model(cfg: ModelBenchConfig, variant: str, device: torch.device) -> nn.Module:
    import vectorgate

    torch.manual_seed(0)
    model = _backbone(cfg)
    kwargs = _gate_kwargs(cfg, variant)
    parsed = parse_variant(variant)
    if parsed.normed:
        kwargs["gate_source"] = "normed"
    if parsed.base == "naive":
        with naive_variant() as naive:
            vectorgate.patch(model, variant=naive, **kwargs)
    elif parsed.base != "plain":
        vectorgate.patch(model, **kwargs)
    if parsed.stacked:
        from vectorgate.patching.stacking import stack_gate_projections

        stack_gate_projections(model)
    return model.to(device).train()


def _sizes_from(cfg: ModelBenchConfig) -> ModelBenchConfig:
    """``cfg`` with layers/hidden/heads/intermediate/vocab read from ``cfg.pretrained``."""
    if not cfg.pretrained:
        return cfg
    from transformers import BertConfig

    hf = BertConfig.from_pretrained(cfg.pretrained)
    return replace(
        cfg, layers=hf.num_hidden_layers, hidden=hf.hidden_size, heads=hf.num_attention_heads,
        intermediate=hf.intermediate_size, vocab=hf.vocab_size,
        seq=min(cfg.seq, hf.max_position_embeddings),
    )


class _Trainer:
    """One model, its AdamW and a fixed batch; ``step()`` is one training step."""

    def __init__(
        self, model: nn.Module, cfg: ModelBenchConfig, device: torch.device, compiled: bool,
        cpu_compile: bool = False,
    ):
        self.model = model
        self.cpu_compile = cpu_compile
        self.forward = torch.compile(model) if compiled else model
        self.opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
        gen = torch.Generator().manual_seed(1)
        self.ids = torch.randint(0, cfg.vocab, (cfg.batch, cfg.seq), generator=gen).to(device)
        self.device = device
        self.amp = getattr(torch, cfg.amp_dtype) if cfg.amp_dtype else None

    def loss(self) -> torch.Tensor:
        with torch.autocast(self.device.type, dtype=self.amp or torch.float32, enabled=self.amp is not None):
            hidden = self.forward(input_ids=self.ids).last_hidden_state
        return hidden.float().square().mean()

    def step(self) -> None:
        with env("VECTORGATE_CPU_COMPILE", "1" if self.cpu_compile else None):
            self.loss().backward()
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)

    def state_bytes(self) -> int:
        params = sum(p.numel() * p.element_size() for p in self.model.parameters())
        opt = sum(
            t.numel() * t.element_size()
            for s in self.opt.state.values() for t in s.values() if torch.is_tensor(t)
        )
        return params + opt

    def peak_bytes(self) -> int:
        """State bytes plus the peak allocated above them during one step."""
        if self.device.type != "cuda":
            return self.state_bytes() + _cpu_step_peak(self.step)
        sync(self.device)
        base = torch.cuda.memory_allocated(self.device)
        torch.cuda.reset_peak_memory_stats(self.device)
        self.step()
        sync(self.device)
        return self.state_bytes() + torch.cuda.max_memory_allocated(self.device) - base

    def flops(self) -> int:
        """FLOPs of one forward + backward, as FlopCounterMode counts them (eager model)."""
        from torch.utils.flop_counter import FlopCounterMode

        with FlopCounterMode(display=False) as counter:
            with torch.autocast(self.device.type, dtype=self.amp or torch.float32, enabled=self.amp is not None):
                hidden = self.model(input_ids=self.ids).last_hidden_state
            hidden.float().square().mean().backward()
        self.opt.zero_grad(set_to_none=True)
        return counter.get_total_flops()


def _cpu_step_peak(step: Callable[[], None]) -> int:
    """Peak bytes allocated above the starting point while ``step`` runs, on the CPU.

    The CPU allocator keeps no statistics; the profiler records the net allocation of every
    op. Summing the top-level ops' figures in time order traces the live bytes at op
    granularity (backward nodes are top-level ops of their own).
    """
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        step()
    top = sorted((e for e in prof.events() if e.cpu_parent is None), key=lambda e: e.time_range.start)
    live = peak = 0
    for event in top:
        live += event.cpu_memory_usage
        peak = max(peak, live)
    return peak


def run_model_bench(cfg: ModelBenchConfig, progress: Callable[[str], None] | None = None) -> dict:
    """Time, weigh and count every variant eager and compiled. Returns a JSON-ready dict."""
    cfg = _sizes_from(cfg)
    device = torch.device(cfg.device)
    say = progress or (lambda msg: None)
    modes = ("eager", "compiled") if cfg.compile else ("eager",)
    trainers: dict[tuple[str, str], _Trainer] = {}
    first: dict[tuple[str, str], float] = {}
    flops: dict[str, int] = {}
    skipped = []
    for variant in cfg.variants:
        rank = rank_of(variant)
        if rank is not None and rank >= cfg.hidden:
            skipped.append(f"{variant}: rank {rank} >= d = {cfg.hidden}")
            continue
        model = _model(cfg, variant, device)
        variant_modes = list(modes)
        if variant == "vectorgate" and device.type == "cpu" and cfg.cpu_compiled:
            variant_modes.append("eager+cpu_compile")
        for mode in variant_modes:
            # The modes share one model (and its weights), not its optimizer state.
            trainer = _Trainer(
                model, cfg, device, compiled=mode == "compiled", cpu_compile=mode == "eager+cpu_compile"
            )
            if variant not in flops:
                flops[variant] = trainer.flops()
            say(f"{cfg.name} {variant} {mode}: first step")
            first[variant, mode] = time_once(trainer.step, device)
            trainers[variant, mode] = trainer
    say(f"{cfg.name}: timing {len(trainers)} configurations x {cfg.reps} rounds")
    ms = interleaved_medians({k: t.step for k, t in trainers.items()}, device, cfg.reps, cfg.warmup)
    rows = []
    for (variant, mode), trainer in trainers.items():
        with env("VECTORGATE_CPU_COMPILE", "1" if trainer.cpu_compile else None):
            saved = saved_for_backward(trainer.loss, trainer.ids, ())
            peak = trainer.peak_bytes()
        parsed = parse_variant(variant)
        rows.append({
            "model": cfg.name, "variant": variant, "rank": parsed.rank,
            "stacked": parsed.stacked, "normed": parsed.normed, "mode": mode,
            "step_ms": ms[variant, mode], "first_step_s": first[variant, mode],
            "saved_mib": saved.total_bytes / 2**20, "peak_gib": peak / 2**30,
            "params_m": count_parameters(trainer.model) / 1e6,
            "gflop": flops[variant] / 1e9,
        })
    plain = {r["mode"]: r for r in rows if r["variant"] == "plain"}
    for r in rows:
        base = plain.get(r["mode"].split("+")[0])
        r["step_vs_plain"] = None if base is None else r["step_ms"] / base["step_ms"]
        r["saved_vs_plain"] = None if base is None else r["saved_mib"] / base["saved_mib"]
        r["peak_vs_plain"] = None if base is None else r["peak_gib"] / base["peak_gib"]
        r["flop_vs_plain"] = None if base is None else r["gflop"] / base["gflop"]
        # How far the step is above the floor the extra FLOPs set (1.0 = at the floor).
        r["step_vs_flop_ratio"] = None if base is None else r["step_vs_plain"] / r["flop_vs_plain"]
    return {"config": asdict(cfg), "size": cfg.name, "rows": rows, "skipped": skipped}
