"""Put a variant into a model's residuals via ``vectorgate.patch`` (shared by the built-in tasks)."""

from __future__ import annotations

from torch import nn

from vectorgate.patching import gates, mark_only_gates_trainable, patch
from vectorgate_lab.compare.spec import VariantSpec


def patch_variant(model: nn.Module, spec: VariantSpec, seed: int, *, stream_layers=None, dim: int | None = None) -> nn.Module:
    """Patch every residual of ``model`` with ``spec``'s variant.

    The gates are drawn from their own RNG stream (seeded by ``seed``), so the backbone
    initialisation and the training data order do not depend on the variant.

    Stream-expanding variants (``hc``, ``hc_dynamic``, ``mhc``) are installed with
    :func:`vectorgate_lab.peers.hyper.hyper_connect` instead: ``stream_layers(model)`` gives
    the ``(layer, [(norm, branch), ...])`` list and ``dim`` the stream width; a task that
    passes neither does not host them.
    """
    import torch

    from vectorgate_lab.peers.hyper import hyper_connect, is_stream_variant

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(10_000 + seed)
        if is_stream_variant(spec.variant):
            if stream_layers is None or dim is None:
                raise ValueError(f"{spec.label!r} widens the residual stream; this task's model does not host it")
            hyper_connect(model, stream_layers(model), dim=dim, variant=spec.variant, **spec.kwargs)
            return model
        return patch(model, variant=spec.variant, **spec.kwargs)


def freeze_all_but_gates(model: nn.Module, keep: tuple[str, ...]) -> None:
    """Gate-only training; for a variant without parameters (``plain``) only ``keep`` trains."""
    if any(p.numel() for _, gate in gates(model) for p in gate.parameters()):
        mark_only_gates_trainable(model, extra=keep)
        return
    for name, p in model.named_parameters():
        p.requires_grad_(any(k in name.split(".") for k in keep))
