"""Fine-tuning the pretrained MiniLM BERT on real labelled text: full fine-tuning and adapters.

Two datasets ship offline (:mod:`vectorgate_lab.assets`): Rotten Tomatoes review snippets
(fresh/rotten, 11,711) and SMS spam (ham/spam, 4,837). Each has two tasks:

- ``<data>_full``: every parameter trains (the backbone at ``lr``, the gates at
  ``lr * gate_lr_mult``); arms are residual variants patched into both residuals of every
  layer (``vectorgate.patch``).
- ``<data>_adapt``: the backbone is frozen; only an adapter and the new classifier train.
  Arms: residual variants (their gates are the adapter; ``plain`` leaves the classifier
  alone, the linear-probe floor) and PEFT's ``lora[r=R]``, ``dora[r=R]`` and ``ia3``
  (:mod:`vectorgate_lab.compare.tasks.peft_arms`).

Every arm of a seed starts from the same pretrained backbone and classifier head and sees
the same batches in the same order; adapters draw their own init from a separate RNG stream.
Metric: accuracy on a fixed held-out split.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from vectorgate.skip import skip_controller
from vectorgate_lab.assets import (
    TextClassificationData,
    load_rotten_tomatoes,
    load_sms_spam,
    minilm_path,
    split_indices,
)
from vectorgate_lab.compare.spec import VariantSpec
from vectorgate_lab.compare.task import Task
from vectorgate_lab.compare.tasks._patching import freeze_all_but_gates, patch_variant
from vectorgate_lab.compare.tasks.peft_arms import PEFT_ARMS, build_peft_arm

__all__ = ["TEXT_DATASETS", "TextAdapterTask", "TextFineTuneTask"]

#: dataset key -> loader of the labelled texts.
TEXT_DATASETS: dict[str, Callable[[], TextClassificationData]] = {
    "rt": load_rotten_tomatoes,
    "sms": load_sms_spam,
}


def _transformers():
    try:
        import transformers
    except ImportError as err:
        raise ImportError("the text tasks need transformers: `pip install vectorgate[transformers]`") from err
    transformers.logging.set_verbosity_error()  # "newly initialized classifier" is expected
    return transformers


@dataclass
class TextFineTuneTask(Task):
    """all-MiniLM-L6-v2 (pretrained, 6 layers, d=384) + a new 2-way classifier, full fine-tuning.

    Data: ``dataset`` split once (seed 0) into 80% train / 20% held out; the first
    ``n_val`` held-out examples are scored. Metric: held-out accuracy.
    """

    name: str = "rt_full"
    dataset: str = "rt"
    metric: str = "accuracy"
    steps: int = 100
    batch_size: int = 16
    lr: float = 1e-4
    weight_decay: float = 0.01
    max_length: int = 64
    n_val: int = 800
    n_calibration: int = 400
    """Held-out examples after the scored ones, for calibrating skip thresholds."""
    eval_points: int = 2
    eval_batch_size: int = 100
    keep_trainable: tuple[str, ...] = ("classifier",)
    last_correct: Tensor | None = None
    """Per held-out example, whether the last evaluation got it right (for paired tests)."""

    def configure(self, *, quick: bool = False, scale: float = 1.0) -> None:
        super().configure(quick=quick, scale=scale)
        if quick:
            self.n_val, self.max_length, self.n_calibration = 16, 16, 8

    def load(self) -> None:
        if self.dataset not in TEXT_DATASETS:
            raise ValueError(f"unknown dataset {self.dataset!r}; available: {', '.join(TEXT_DATASETS)}")
        data = TEXT_DATASETS[self.dataset]()
        train, held_out = split_indices(len(data), (0.8, 0.2), seed=0)
        val, calibration = held_out[: self.n_val], held_out[self.n_val : self.n_val + self.n_calibration]
        tokenizer = _transformers().AutoTokenizer.from_pretrained(minilm_path())
        self.pad_id = tokenizer.pad_token_id
        self.train_set = self._encode(tokenizer, data.subset(train))
        self.val_set = self._encode(tokenizer, data.subset(val))
        self.calibration_set = self._encode(tokenizer, data.subset(calibration)) if len(calibration) else None

    def _encode(self, tokenizer, data: TextClassificationData) -> tuple[Tensor, Tensor]:
        enc = tokenizer(data.texts, truncation=True, max_length=self.max_length, padding="max_length",
                        return_tensors="pt")
        return enc["input_ids"], data.labels

    def _model_inputs(self, ids: Tensor) -> dict[str, Tensor]:
        # Trim the batch to its longest row: padding to max_length would waste most of the compute.
        mask = ids != self.pad_id
        width = int(mask.sum(1).max())
        return {"input_ids": ids[:, :width].to(self.device), "attention_mask": mask[:, :width].to(self.device)}

    def supports(self, spec: VariantSpec) -> bool:
        """Any residual variant ``vectorgate.patch`` installs; not the stream-expanding ones
        (``hc``, ``hc_dynamic``, ``mhc``): MiniLM's post-LN layers do not host n streams."""
        from vectorgate_lab.peers.hyper import is_stream_variant

        return super().supports(spec) and not is_stream_variant(spec.variant)

    def _pretrained(self) -> nn.Module:
        cls = _transformers().AutoModelForSequenceClassification
        return cls.from_pretrained(minilm_path(), num_labels=2)

    def build_model(self, spec: VariantSpec, seed: int) -> nn.Module:
        model = patch_variant(self._pretrained(), spec, seed)
        if self.gate_only:
            freeze_all_but_gates(model, self.keep_trainable)
        return model

    def batch(self, step: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        ids, labels = self.train_set
        idx = torch.randint(len(ids), (self.batch_size,), generator=generator)
        return ids[idx], labels[idx]

    def loss(self, model: nn.Module, batch: tuple[Tensor, Tensor]) -> Tensor:
        ids, labels = batch
        logits = model(**self._model_inputs(ids)).logits
        return nn.functional.cross_entropy(logits, labels.to(self.device))

    def token_mask(self, batch: tuple[Tensor, Tensor]) -> Tensor:
        return self._model_inputs(batch[0])["attention_mask"]

    def calibration_batches(self) -> list[dict[str, Tensor]]:
        if self.calibration_set is None:
            raise ValueError(f"task {self.name!r} has no held-out examples left for calibration")
        ids, _ = self.calibration_set
        return [self._model_inputs(ids[i : i + self.eval_batch_size]) for i in range(0, len(ids), self.eval_batch_size)]

    @torch.no_grad()
    def predict(self, model: nn.Module) -> Tensor:
        """Predicted labels of the held-out examples, in order (for paired tests per example)."""
        ids, _ = self.val_set
        controller = skip_controller(model)  # when skipping: count real tokens only
        out = []
        for i in range(0, len(ids), self.eval_batch_size):
            inputs = self._model_inputs(ids[i : i + self.eval_batch_size])
            with controller.tokens(inputs["attention_mask"]) if controller else contextlib.nullcontext():
                out.append(model(**inputs).logits.argmax(-1).cpu())
        return torch.cat(out)

    @torch.no_grad()
    def evaluate(self, model: nn.Module) -> float:
        self.last_correct = self.predict(model) == self.val_set[1]
        return float(self.last_correct.float().mean())


@dataclass
class TextAdapterTask(TextFineTuneTask):
    """The same data and backbone, frozen: only an adapter and the classifier train.

    With d = 384 and 6 layers, ``lora[r=8]`` on query/value (73,728 adapter parameters)
    matches ``vectorgate_lowrank[rank=7]`` on both residuals of every layer
    (12 x (2*384*7 + 2*384) = 73,728) exactly, and ``lora[r=193]`` (1,778,688) matches the
    full-rank ``vectorgate`` (12 x (384^2 + 2*384)).
    """

    name: str = "rt_adapt"
    lr: float = 2e-3
    gate_only: bool = True

    def supports(self, spec: VariantSpec) -> bool:
        return spec.variant in PEFT_ARMS or super().supports(spec)

    def build_model(self, spec: VariantSpec, seed: int) -> nn.Module:
        if spec.variant not in PEFT_ARMS:
            return super().build_model(spec, seed)
        base = self._pretrained()  # outside the fork: the classifier starts as in the gate arms
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(10_000 + seed)
            return build_peft_arm(base, spec, keep_trainable=self.keep_trainable)
