"""Fine-tuning the pretrained MiniLM BERT on Rotten Tomatoes: full fine-tuning, and gate-only vs LoRA."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from vectorgate.assets import load_rotten_tomatoes, minilm_path, split_indices
from vectorgate.compare.spec import VariantSpec
from vectorgate.compare.task import Task
from vectorgate.compare.tasks._patching import freeze_all_but_gates, patch_variant


def _transformers():
    try:
        import transformers
    except ImportError as err:
        raise ImportError("the BERT tasks need transformers: `pip install vectorgate[transformers]`") from err
    transformers.logging.set_verbosity_error()  # "newly initialized classifier" is expected
    return transformers


@dataclass
class BertRottenTomatoesTask(Task):
    """all-MiniLM-L6-v2 (pretrained, 6 layers, d=384) + a new 2-way classifier, full fine-tuning.

    Data: Rotten Tomatoes snippets (fresh/rotten), one fixed split: ``n_train`` for training,
    ``n_val`` held out. Both residuals of every layer use the variant (``vectorgate.patch``).
    Metric: validation accuracy.
    """

    name: str = "bert_rt"
    metric: str = "accuracy"
    steps: int = 60
    batch_size: int = 16
    lr: float = 1e-4
    weight_decay: float = 0.01
    max_length: int = 48
    n_train: int = 8000
    n_val: int = 400
    eval_points: int = 2
    keep_trainable: tuple[str, ...] = ("classifier",)

    def configure(self, *, quick: bool = False, scale: float = 1.0) -> None:
        super().configure(quick=quick, scale=scale)
        if quick:
            self.n_train, self.n_val, self.max_length = 64, 16, 16

    def load(self) -> None:
        data = load_rotten_tomatoes()
        train, val = split_indices(len(data), (0.8, 0.2), seed=0)
        train, val = train[: self.n_train], val[: self.n_val]
        tokenizer = _transformers().AutoTokenizer.from_pretrained(minilm_path())
        self.pad_id = tokenizer.pad_token_id
        self.train_set = self._encode(tokenizer, data.subset(train).texts, data.labels[train])
        self.val_set = self._encode(tokenizer, data.subset(val).texts, data.labels[val])

    def _encode(self, tokenizer, texts: list[str], labels: Tensor) -> tuple[Tensor, Tensor]:
        enc = tokenizer(texts, truncation=True, max_length=self.max_length, padding="max_length", return_tensors="pt")
        return enc["input_ids"], labels

    def _model_inputs(self, ids: Tensor) -> dict[str, Tensor]:
        # Trim the batch to its longest row: padding to max_length would waste most of the compute.
        mask = ids != self.pad_id
        width = int(mask.sum(1).max())
        return {"input_ids": ids[:, :width].to(self.device), "attention_mask": mask[:, :width].to(self.device)}

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

    @torch.no_grad()
    def evaluate(self, model: nn.Module) -> float:
        ids, labels = self.val_set
        correct = 0
        for i in range(0, len(ids), 100):
            logits = model(**self._model_inputs(ids[i : i + 100])).logits
            correct += int((logits.argmax(-1).cpu() == labels[i : i + 100]).sum())
        return correct / len(ids)


@dataclass
class BertGatesVsLoraTask(BertRottenTomatoesTask):
    """The same data and backbone, only small adapters trained: gates vs LoRA (PEFT).

    Gate arms train only the gates and the classifier. The ``lora[r=R]`` arm is PEFT LoRA
    on ``query``/``value`` of every layer (+ the classifier). With d = 384 and 6 layers,
    ``lora[r=8]`` (73,728 adapter parameters) matches ``vectorgate_lowrank[rank=7]`` on both
    residuals of every layer (12 x (2*384*7 + 2*384) = 73,728) exactly; ``plain`` trains
    the classifier alone (the floor).
    """

    name: str = "bert_rt_gates_vs_lora"
    steps: int = 80
    lr: float = 3e-3
    gate_only: bool = True

    def supports(self, spec: VariantSpec) -> bool:
        return spec.variant == "lora" or super().supports(spec)

    def build_model(self, spec: VariantSpec, seed: int) -> nn.Module:
        if spec.variant != "lora":
            return super().build_model(spec, seed)
        try:
            from peft import LoraConfig, get_peft_model
        except ImportError as err:
            raise ImportError("the lora arm needs peft: `pip install vectorgate[peft]`") from err
        unknown = set(spec.kwargs) - {"r", "alpha"}
        if unknown:
            raise ValueError(f"lora takes r and alpha, got {sorted(unknown)}")
        r = int(spec.kwargs.get("r", 8))
        config = LoraConfig(
            r=r, lora_alpha=spec.kwargs.get("alpha", 2 * r), target_modules=["query", "value"],
            lora_dropout=0.0, modules_to_save=list(self.keep_trainable),
        )
        base = self._pretrained()  # outside the fork: the classifier starts as in the gate arms
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(10_000 + seed)
            return get_peft_model(base, config)
