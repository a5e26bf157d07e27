"""Training helpers for gated models: optimizer groups, gate-only adaptation, re-initialisation."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from typing import Any

from torch import nn

from vectorgate.discovery import gate_parameter_names, gates
from vectorgate.patching.config import GateConfig
from vectorgate.patching.core import is_patched, patch, patch_state
from vectorgate.patching.families import check_model

__all__ = [
    "TASK_HEAD_NAMES",
    "make_gate_adapter",
    "mark_only_gates_trainable",
    "matches_module",
    "param_groups",
    "reset_gates",
    "task_heads",
]

logger = logging.getLogger(__name__)

#: Names of the task heads a gate adapter trains by default: modules that a task adds on
#: top of a pretrained backbone and that start untrained (PEFT's task types keep the same):
#: ``classifier`` (sequence and token classification: BERT-likes, DistilBERT, ViT),
#: ``pre_classifier`` (DistilBERT), ``score`` (sequence and token classification of GPT-2,
#: Llama, Qwen2, Mistral), ``qa_outputs`` (question answering), ``head`` (timm's classifier).
#: A language-model head (``lm_head``) is pretrained and never a default.
TASK_HEAD_NAMES: tuple[str, ...] = ("pre_classifier", "classifier", "score", "qa_outputs", "head")


def reset_gates(model: nn.Module) -> int:
    """Re-apply every gate's own initialisation (``reset_parameters``); returns how many.

    Puts trained gates back to their start (the identity, with the default init). Not needed
    after ``from_pretrained``: a ``PreTrainedModel`` subclass that builds gates in ``__init__``
    gets the gates' own init for every gate parameter the checkpoint lacks (see
    :class:`vectorgate.base.ResidualGate`).

    Raises:
        TypeError: a gate has no ``reset_parameters``.
    """
    n = 0
    for _, gate in gates(model):
        reset = getattr(gate, "reset_parameters", None)
        if not callable(reset):
            raise TypeError(f"{type(gate).__name__} has no reset_parameters() to re-initialise it")
        reset()
        n += 1
    return n


def matches_module(param_name: str, module_name: str) -> bool:
    """Whether ``param_name`` lies inside a module called ``module_name`` (by path components:
    ``"classifier"`` matches ``classifier.weight`` and ``model.classifier.dense.bias``)."""
    parts = param_name.split(".")
    target = module_name.split(".")
    return any(parts[i : i + len(target)] == target for i in range(len(parts) - len(target)))


def task_heads(model: nn.Module) -> tuple[str, ...]:
    """The task heads ``model`` has (names from :data:`TASK_HEAD_NAMES`, in that order):
    modules with parameters whose name is one of them, e.g. ``("classifier",)`` for a
    ``BertForSequenceClassification``, ``("score",)`` for a ``LlamaForSequenceClassification``,
    ``()`` for a ``LlamaForCausalLM`` or a ``GPT2LMHeadModel``. A module that shares a
    parameter with the input embeddings (a tied output layer) is not a task head."""
    embed = getattr(model, "get_input_embeddings", None)
    try:
        embeddings = embed() if callable(embed) else None
    except (NotImplementedError, AttributeError):
        embeddings = None
    tied = {id(p) for p in embeddings.parameters()} if isinstance(embeddings, nn.Module) else set()
    found = set()
    for name, module in model.named_modules():
        last = name.rsplit(".", 1)[-1]
        params = list(module.parameters())
        if last in TASK_HEAD_NAMES and params and not any(id(p) in tied for p in params):
            found.add(last)
    return tuple(n for n in TASK_HEAD_NAMES if n in found)


def _top_modules(model: nn.Module) -> list[str]:
    """The model's direct children that own parameters (as ``named_parameters`` names them:
    a tied output layer owns none), for error messages."""
    return list(dict.fromkeys(name.split(".")[0] for name, _ in model.named_parameters()))


def mark_only_gates_trainable(model: nn.Module, extra: Sequence[str] | None = None) -> int:
    """Freeze everything but the gates (and the modules named in ``extra``), PEFT-style.

    Args:
        model: a model holding gates (see :func:`patch`).
        extra: module names to keep trainable too, matched against path components of
            parameter names (``"classifier"`` matches ``classifier.weight`` and
            ``model.classifier.dense.bias``). A name that matches nothing gets a warning.
            None (default): the model's task heads (:func:`task_heads`: a classifier or
            ``score`` head, none for a causal LM).

    Returns:
        The number of trainable parameters left.

    Raises:
        ValueError: the model holds no gate.
    """
    gate_params = gate_parameter_names(model)
    if not gate_params:
        raise ValueError(f"{type(model).__name__} holds no vectorgate gate: call vectorgate.patch(model) first")
    if extra is None:
        extra = task_heads(model)
    elif isinstance(extra, str):
        extra = (extra,)
    used = dict.fromkeys(extra, False)
    trainable = 0
    for name, p in model.named_parameters():
        keep = name in gate_params
        for e in extra:
            if matches_module(name, e):
                keep = used[e] = True
        p.requires_grad_(keep)
        trainable += p.numel() if keep else 0
    missing = [e for e, hit in used.items() if not hit]
    if missing:
        warnings.warn(
            f"mark_only_gates_trainable: no parameter of {type(model).__name__} lies in a module "
            f"named {missing}; those stay frozen (its modules with parameters: {_top_modules(model)})",
            stacklevel=2,
        )
    return trainable


def make_gate_adapter(
    model: nn.Module,
    config: GateConfig | None = None,
    /,
    *,
    modules_to_save: Sequence[str] | None = None,
    **patch_kwargs: Any,
) -> nn.Module:
    """Gate-only adaptation in one call: gate ``model`` and freeze everything else.

    Patches ``model`` (unless it is patched already), then leaves trainable only the gates
    and the modules named in ``modules_to_save`` (by default the model's task head, e.g. a
    new classifier; none for a causal LM), PEFT-style.
    :func:`vectorgate.save_gates` then saves exactly what trained (gates + those modules)
    and :func:`vectorgate.load_gates` puts it back onto a fresh base model::

        model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=2)
        vectorgate.make_gate_adapter(model)                 # 1.78M trainable of 24.5M (MiniLM)
        opt = torch.optim.AdamW(vectorgate.param_groups(model, lr=2e-3))
        ...                                                 # train
        vectorgate.save_gates(model, "adapter/")            # gates + classifier

    Args:
        model: a supported model (see :func:`patch`), patched or not.
        config: the :class:`GateConfig` to patch with (or give its fields as ``patch_kwargs``).
        modules_to_save: non-gate modules that train too, matched by name component. None
            (default): the task heads the model has (:func:`task_heads`: ``classifier``,
            ``score``, ``qa_outputs``, ...; none for ``LlamaForCausalLM`` or
            ``GPT2LMHeadModel``, whose language-model head is pretrained). What was chosen is
            logged (``logging``, logger ``vectorgate.patching.training``) and recorded in
            ``vectorgate.patching.gate_config(model).modules_to_save``.
        **patch_kwargs: passed to :func:`patch` (``sites``, ``layers``, ``rank``, ...);
            only when the model is not patched yet.

    Returns:
        ``model``, patched, with only the adapter trainable.

    Raises:
        ValueError: ``patch_kwargs`` given for an already patched model, or a name in
            ``modules_to_save`` that matches no parameter (the message lists the model's
            modules).
    """
    if isinstance(modules_to_save, str):
        modules_to_save = (modules_to_save,)
    if is_patched(model):
        if patch_kwargs or config is not None:
            given = sorted(patch_kwargs) if patch_kwargs else "a GateConfig"
            raise ValueError(f"{type(model).__name__} is already patched; patch options {given} "
                             "would be ignored. Pass them only for an unpatched model.")
    else:
        check_model(model, "make_gate_adapter")
    # Checked before patching: a bad name leaves the model as it was.
    if modules_to_save is None:
        modules_to_save = task_heads(model)
        logger.info(
            "make_gate_adapter: %s trains its gates and %s (modules_to_save, chosen from the task heads "
            "it has; pass modules_to_save=... to choose)", type(model).__name__,
            f"the task head(s) {list(modules_to_save)}" if modules_to_save else "no other module",
        )
    names = [n for n, _ in model.named_parameters()]
    missing = [m for m in modules_to_save if not any(matches_module(n, m) for n in names)]
    if missing:
        raise ValueError(
            f"modules_to_save: {type(model).__name__} has no module named {missing} holding a parameter "
            f"(a tied output layer holds none of its own); its modules with parameters: {_top_modules(model)}, "
            f"task heads found: {list(task_heads(model))}"
        )
    if not is_patched(model):
        patch(model, config, **patch_kwargs)
    mark_only_gates_trainable(model, extra=tuple(modules_to_save))
    patch_state(model).modules_to_save = tuple(modules_to_save)
    return model


def param_groups(
    model: nn.Module,
    *,
    weight_decay: float = 0.01,
    lr: float | None = None,
    gate_lr: float | None = None,
    gate_weight_decay: float | None = 0.0,
    gate_lr_width_ref: int | None = None,
) -> list[dict[str, Any]]:
    """Optimizer parameter groups: weight decay only on matrices, gates on their own lr.

    nanoGPT's rule: tensors with ``dim >= 2`` (Linear weights, embeddings) are decayed;
    biases, norm weights and the gates' curvature (all ``dim < 2``) are not. The gates
    get their own groups so they can use a larger learning rate: at a backbone lr such as
    5e-5 the curvature barely leaves zero during fine-tuning.

    Args:
        model: any model; only parameters with ``requires_grad`` are included.
        weight_decay: decay of the backbone's matrices.
        lr: backbone learning rate (omitted from the groups when None: the optimizer's default).
        gate_lr: learning rate of the gates (defaults to ``lr``).
        gate_weight_decay: decay of the gates' matrices; default 0 (the gates start at the
            identity, and decay would only pull them back there). ``None``: ``weight_decay``.
        gate_lr_width_ref: width-aware gate learning rate. When set, ``gate_lr`` is the
            rate of a gate of width ``gate_lr_width_ref`` and the matrices of a gate of
            width d train at ``gate_lr * gate_lr_width_ref / d`` (vectors such as c and
            biases keep ``gate_lr``). Why: under Adam every weight moves by about the lr per
            step, so the change of z = W x grows with the d inputs it sums; scaling by 1/d
            (as muP does for hidden matrices) keeps the per-step change of the gate
            pre-activation the same at d = 384 and d = 4096. Our measurements tuned
            ``gate_lr`` at MiniLM's d = 384, so 384 is the reference to use with them.

    Returns:
        Groups (empty ones dropped), each ``{"params", "weight_decay", ["lr"], "name"}``: the
        backbone's and the gates' matrices and vectors (the gates' matrices once per width
        when ``gate_lr_width_ref`` is set); pass them to ``torch.optim.AdamW``.

    Raises:
        ValueError: no trainable parameter, or ``gate_lr_width_ref`` set without a gate lr
            (neither ``gate_lr`` nor ``lr``) or not a positive int.
    """
    gate_lr = gate_lr if gate_lr is not None else lr
    if gate_lr_width_ref is not None:
        if isinstance(gate_lr_width_ref, bool) or not isinstance(gate_lr_width_ref, int) or gate_lr_width_ref < 1:
            raise ValueError(f"gate_lr_width_ref must be None or a positive int, got {gate_lr_width_ref!r}")
        if gate_lr is None:
            raise ValueError("gate_lr_width_ref scales the gate learning rate: pass gate_lr (or lr)")
    gate_dims = {name: getattr(gate, "dim", None) for name, gate in gate_parameter_names(model).items()}
    # (is_gate, decay, width the lr is scaled for or None) -> parameters
    buckets: dict[tuple[bool, bool, int | None], list[nn.Parameter]] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        is_gate, decay = name in gate_dims, p.dim() >= 2
        width = gate_dims.get(name) if is_gate and decay and gate_lr_width_ref is not None else None
        buckets.setdefault((is_gate, decay, width), []).append(p)
    groups = []
    for (is_gate, decay, width), params in sorted(buckets.items(), key=lambda kv: (kv[0][0], not kv[0][1], kv[0][2] or 0)):
        wd = (weight_decay if gate_weight_decay is None else gate_weight_decay) if is_gate else weight_decay
        label = f"{'gates' if is_gate else 'backbone'}/{'decay' if decay else 'no_decay'}"
        group: dict[str, Any] = {"params": params, "weight_decay": wd if decay else 0.0, "name": label}
        group_lr = gate_lr if is_gate else lr
        if width is not None:
            group_lr = gate_lr * gate_lr_width_ref / width
            group["name"] = f"{label}/d={width}"
        if group_lr is not None:
            group["lr"] = group_lr
        groups.append(group)
    if not groups:
        raise ValueError(f"{type(model).__name__} has no trainable parameter")
    return groups


