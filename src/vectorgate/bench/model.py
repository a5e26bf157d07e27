"""Model-level benchmark: one BERT training step, plain vs naive-gated vs vectorgate-gated.

The encoder comes from a random-init ``transformers.BertConfig`` (nothing is downloaded);
"gated" means both residuals of every layer gated with a full-rank gate through
:func:`vectorgate.patch`: ``naive`` with :class:`vectorgate.bench.naive.NaiveVectorGate`
(the hand-written formula), ``vectorgate`` with the default fused op. Each variant runs
eager and under ``torch.compile``; all are timed in interleaved rounds in one process, and
reported as ratios to the plain model in the same mode.

Memory: ``saved_mib`` is what autograd keeps for backward over one forward (saved-tensor
hooks; works on any device). On CUDA ``peak_gib`` is the model's own footprint (parameters
and AdamW state) plus the peak allocated above it during one step, so variants held in the
same process do not count each other.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch
from torch import nn

from vectorgate.bench.naive import ensure_registered
from vectorgate.bench.timing import env, interleaved_medians, saved_for_backward, sync, time_once

VARIANTS = ("plain", "naive", "vectorgate")


@dataclass
class ModelBenchConfig:
    """BERT size and step settings. The defaults are BERT-base at BASELINES.md's batch."""

    device: str = "cpu"
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
    init_curvature: float = 0.1


def _bert(cfg: ModelBenchConfig, variant: str, device: torch.device) -> nn.Module:
    try:
        from transformers import BertConfig, BertModel
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(
            "the model-level benchmark builds a BERT: pip install vectorgate[transformers]"
        ) from err
    import vectorgate

    torch.manual_seed(0)
    model = BertModel(
        BertConfig(
            vocab_size=cfg.vocab, hidden_size=cfg.hidden, num_hidden_layers=cfg.layers,
            num_attention_heads=cfg.heads, intermediate_size=cfg.intermediate,
            max_position_embeddings=max(512, cfg.seq),
        ),
        add_pooling_layer=False,
    )
    if variant == "naive":
        vectorgate.patch(model, variant=ensure_registered(), init_curvature=cfg.init_curvature)
    elif variant == "vectorgate":
        vectorgate.patch(model, init_curvature=cfg.init_curvature)
    elif variant != "plain":
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
    return model.to(device).train()


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

    def peak_bytes(self) -> int | None:
        if self.device.type != "cuda":
            return None
        sync(self.device)
        base = torch.cuda.memory_allocated(self.device)
        torch.cuda.reset_peak_memory_stats(self.device)
        self.step()
        sync(self.device)
        return self.state_bytes() + torch.cuda.max_memory_allocated(self.device) - base


def run_model_bench(cfg: ModelBenchConfig, progress: Callable[[str], None] | None = None) -> dict:
    """Time (and weigh) every variant eager and compiled. Returns a JSON-ready dict."""
    device = torch.device(cfg.device)
    say = progress or (lambda msg: None)
    modes = ("eager", "compiled") if cfg.compile else ("eager",)
    trainers: dict[tuple[str, str], _Trainer] = {}
    first: dict[tuple[str, str], float] = {}
    for variant in VARIANTS:
        model = _bert(cfg, variant, device)
        variant_modes = list(modes)
        if variant == "vectorgate" and device.type == "cpu" and cfg.cpu_compiled:
            variant_modes.append("eager+cpu_compile")
        for mode in variant_modes:
            # The modes share one model (and its weights), not its optimizer state.
            trainer = _Trainer(
                model, cfg, device, compiled=mode == "compiled", cpu_compile=mode == "eager+cpu_compile"
            )
            say(f"{variant} {mode}: first step")
            first[variant, mode] = time_once(trainer.step, device)
            trainers[variant, mode] = trainer
    say(f"timing {len(trainers)} configurations x {cfg.reps} rounds")
    ms = interleaved_medians({k: t.step for k, t in trainers.items()}, device, cfg.reps, cfg.warmup)
    rows = []
    for (variant, mode), trainer in trainers.items():
        with env("VECTORGATE_CPU_COMPILE", "1" if trainer.cpu_compile else None):
            saved = saved_for_backward(trainer.loss, trainer.ids, ())
        peak = trainer.peak_bytes()
        rows.append({
            "variant": variant, "mode": mode, "step_ms": ms[variant, mode],
            "first_step_s": first[variant, mode], "saved_mib": saved.total_bytes / 2**20,
            "peak_gib": None if peak is None else peak / 2**30,
            "params_m": sum(p.numel() for p in trainer.model.parameters()) / 1e6,
        })
    plain = {r["mode"]: r for r in rows if r["variant"] == "plain"}
    for r in rows:
        base = plain[r["mode"].split("+")[0]]
        r["step_vs_plain"] = r["step_ms"] / base["step_ms"]
        r["saved_vs_plain"] = r["saved_mib"] / base["saved_mib"]
        r["peak_vs_plain"] = None if r["peak_gib"] is None else r["peak_gib"] / base["peak_gib"]
    return {"config": asdict(cfg), "rows": rows}
