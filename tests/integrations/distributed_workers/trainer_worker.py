"""A patched tiny BERT trained with ``transformers.Trainer`` on real Rotten Tomatoes snippets.

Imported by tests/integrations/test_trainer.py (one process) and launched by it under Accelerate:

    accelerate launch --cpu --num_processes 2 --num_machines 1 --mixed_precision no \
        --dynamo_backend no tests/integrations/distributed_workers/trainer_worker.py --out-dir /tmp/run

The model is a random-init 2-layer BERT (d=32) with the real MiniLM tokenizer; gates on
both residuals of every layer, curvature 0.1 so the gates train from the first step.
Dropout is off so that a resumed run can be compared with an uninterrupted one.
"""

from __future__ import annotations

import argparse
import json
import pathlib
from typing import Any

import torch
from torch import Tensor, nn

MAX_LENGTH = 32
N_TRAIN = 256


def build_model(gate_seed: int = 0) -> nn.Module:
    """Tiny BERT for sequence classification, seeded, then gated by ``vectorgate.patch``.

    ``gate_seed`` seeds only the gates' init, so two models can share a backbone and
    differ in their gates.
    """
    from transformers import BertConfig, BertForSequenceClassification

    from vectorgate.patching import patch

    config = BertConfig(
        vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=64, num_labels=2,
        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
    )
    torch.manual_seed(0)
    model = BertForSequenceClassification(config)
    torch.manual_seed(gate_seed)
    return patch(model, init="random", init_curvature=0.1)


class Snippets(torch.utils.data.Dataset):
    """Tokenised review snippets: dicts of ``input_ids``/``attention_mask`` ``(MAX_LENGTH,)`` and ``labels``."""

    def __init__(self, n: int = N_TRAIN) -> None:
        from transformers import AutoTokenizer

        from vectorgate_lab.assets import load_rotten_tomatoes, minilm_path, split_indices

        data = load_rotten_tomatoes()
        idx = split_indices(len(data), (0.9, 0.1), seed=0)[0][:n]
        subset = data.subset(idx)
        tokenizer = AutoTokenizer.from_pretrained(minilm_path())
        enc = tokenizer(subset.texts, padding="max_length", truncation=True, max_length=MAX_LENGTH,
                        return_tensors="pt")
        self.input_ids, self.attention_mask, self.labels = enc["input_ids"], enc["attention_mask"], subset.labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        return {"input_ids": self.input_ids[i], "attention_mask": self.attention_mask[i], "labels": self.labels[i]}


def make_trainer(model: nn.Module, out_dir: pathlib.Path, dataset: Snippets, *, max_steps: int,
                 save_steps: int, **overrides: Any):
    """A Trainer with an AdamW over ``vectorgate.param_groups`` (gates on a 10x lr, curvature not decayed)."""
    from transformers import Trainer, TrainingArguments

    from vectorgate.patching import param_groups

    args = TrainingArguments(
        output_dir=str(out_dir), max_steps=max_steps, per_device_train_batch_size=16,
        learning_rate=1e-3, save_strategy="steps", save_steps=save_steps, logging_steps=1,
        report_to="none", use_cpu=True, seed=0, dataloader_num_workers=0, disable_tqdm=True,
        **overrides,
    )
    opt = torch.optim.AdamW(param_groups(model, weight_decay=0.01, lr=1e-3, gate_lr=1e-2))
    return Trainer(model=model, args=args, train_dataset=dataset, optimizers=(opt, None))


def gate_tensors(model: nn.Module) -> dict[str, Tensor]:
    """Every gate tensor of ``model`` (unwrapped), keyed by its state-dict name, cloned to the CPU."""
    from vectorgate.distributed import unwrap_model
    from vectorgate.patching import gates

    inner = unwrap_model(model)
    return {f"{n}.{k}": v.detach().cpu().clone() for n, g in gates(inner) for k, v in g.state_dict().items()}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out-dir", type=pathlib.Path, required=True)
    parser.add_argument("--max-steps", type=int, default=4)
    args = parser.parse_args()
    torch.set_num_threads(1)
    model = build_model()
    initial = gate_tensors(model)
    trainer = make_trainer(model, args.out_dir, Snippets(), max_steps=args.max_steps, save_steps=args.max_steps)
    trainer.train()
    state = trainer.state
    final = gate_tensors(trainer.model)
    # Every rank reports its own gates: under DDP they must agree after every step.
    rank = trainer.args.process_index
    torch.save({"initial": initial, "final": final}, args.out_dir / f"gates_rank{rank}.pt")
    if trainer.is_world_process_zero():
        (args.out_dir / "summary.json").write_text(json.dumps({
            "world_size": trainer.args.world_size,
            "global_step": state.global_step,
            "losses": [h["loss"] for h in state.log_history if "loss" in h],
        }))
    trainer.accelerator.wait_for_everyone()


if __name__ == "__main__":
    main()
