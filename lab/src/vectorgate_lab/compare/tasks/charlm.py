"""A small character-level Transformer LM (GPT-2 architecture, random init) on Shakespeare; metric: validation bits per character."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from vectorgate_lab.assets import load_shakespeare
from vectorgate_lab.compare.spec import VariantSpec
from vectorgate_lab.compare.task import Task
from vectorgate_lab.compare.tasks._patching import patch_variant


@dataclass
class CharLMShakespeareTask(Task):
    """Next-character prediction on the Shakespeare corpus (first 90% train, last 10% validation).

    The model is a transformers ``GPT2LMHeadModel`` from a tiny config (pre-LN, learned
    positions, no dropout), patched with the variant on both residuals of every block.
    Validation: mean cross-entropy over ``eval_windows`` fixed windows, in bits per character.
    """

    name: str = "charlm_shakespeare"
    metric: str = "val_bpc"
    higher_is_better: bool = False
    steps: int = 350
    batch_size: int = 32
    lr: float = 3e-3
    weight_decay: float = 0.1
    context: int = 64
    n_embd: int = 96
    n_layer: int = 4
    n_head: int = 4
    eval_windows: int = 64
    max_chars: int | None = 2_000_000

    def configure(self, *, quick: bool = False, scale: float = 1.0) -> None:
        super().configure(quick=quick, scale=scale)
        if quick:
            self.context, self.n_embd, self.n_layer, self.n_head = 16, 16, 1, 2
            self.eval_windows, self.max_chars = 4, 20_000

    def load(self) -> None:
        text = load_shakespeare(self.max_chars)
        chars = sorted(set(text))
        lookup = {ch: i for i, ch in enumerate(chars)}
        data = torch.tensor([lookup[ch] for ch in text], dtype=torch.long)
        cut = int(0.9 * len(data))
        self.vocab_size = len(chars)
        self.train_data, self.val_data = data[:cut], data[cut:]
        # Fixed, evenly spaced validation windows: every arm is scored on the same text.
        starts = torch.linspace(0, len(self.val_data) - self.context - 2, self.eval_windows).long()
        self.val_windows = torch.stack([self.val_data[s : s + self.context + 1] for s in starts])
        # Skip-threshold calibration: windows half a spacing after each scored one (disjoint text
        # when the spacing exceeds two contexts, as it does at the default sizes).
        shift = int((starts[1] - starts[0]) // 2) if len(starts) > 1 else self.context + 1
        cal_starts = (starts + shift).clamp(max=len(self.val_data) - self.context - 2)
        self.calibration_windows = torch.stack([self.val_data[s : s + self.context] for s in cal_starts])

    def calibration_batches(self) -> list[Tensor]:
        return list(self.calibration_windows.to(self.device).split(32))

    def skip_forward(self, model: nn.Module, batch: Tensor) -> object:
        return model(input_ids=batch)

    def build_model(self, spec: VariantSpec, seed: int) -> nn.Module:
        try:
            from transformers import GPT2Config, GPT2LMHeadModel
        except ImportError as err:
            raise ImportError("the charlm task needs transformers: `pip install vectorgate[transformers]`") from err
        config = GPT2Config(
            vocab_size=self.vocab_size, n_positions=self.context, n_embd=self.n_embd,
            n_layer=self.n_layer, n_head=self.n_head, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
        )
        return patch_variant(GPT2LMHeadModel(config), spec, seed, dim=self.n_embd, stream_layers=_gpt2_sites)

    def batch(self, step: int, generator: torch.Generator) -> Tensor:
        starts = torch.randint(len(self.train_data) - self.context - 1, (self.batch_size,), generator=generator)
        return torch.stack([self.train_data[s : s + self.context + 1] for s in starts]).to(self.device)

    def loss(self, model: nn.Module, batch: Tensor) -> Tensor:
        logits = model(input_ids=batch[:, :-1]).logits
        return nn.functional.cross_entropy(logits.flatten(0, 1), batch[:, 1:].flatten())

    @torch.no_grad()
    def evaluate(self, model: nn.Module) -> float:
        total = 0.0
        for chunk in self.val_windows.split(32):
            total += float(self.loss(model, chunk.to(self.device))) * len(chunk)
        return total / len(self.val_windows) / math.log(2)


def _gpt2_sites(model: nn.Module) -> list:
    """GPT-2's residual sites for stream-expanding variants: ``(block, [(ln_1, attn), (ln_2, mlp)])``."""
    return [(b, [(b.ln_1, b.attn), (b.ln_2, b.mlp)]) for b in model.transformer.h]
