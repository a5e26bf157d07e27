"""Helpers for gated models under ``torch.distributed`` (DDP, FSDP2 ``fully_shard``).

Gates are ordinary parameters, so DDP and FSDP train them like any other. What needs care
is getting them *out* of a sharded model: under FSDP2 each rank holds only a shard
(a ``DTensor``) of every parameter, so gathering the full tensors is a collective that
**every rank must call**, even though only rank 0 writes the file.

    torchrun --nproc_per_node=2 examples/ddp_example.py --strategy fsdp
"""

from __future__ import annotations

import os
import pathlib
from typing import Any

import torch.distributed as dist
from torch import Tensor, nn

__all__ = ["full_state_dict", "is_main_process", "save_gates", "unwrap_model"]


def is_main_process() -> bool:
    """True on rank 0, and in a process that did not initialise ``torch.distributed``."""
    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


def unwrap_model(model: nn.Module) -> nn.Module:
    """The module inside a ``DistributedDataParallel`` (or ``torch.compile``) wrapper.

    FSDP2's ``fully_shard`` works in place and needs no unwrapping.
    """
    while True:
        if isinstance(model, nn.parallel.DistributedDataParallel):
            model = model.module
        elif hasattr(model, "_orig_mod") and isinstance(model._orig_mod, nn.Module):
            model = model._orig_mod  # an OptimizedModule from torch.compile
        else:
            return model


def full_state_dict(model: nn.Module) -> dict[str, Tensor]:
    """The unsharded state dict of ``model`` on the CPU, on rank 0; ``{}`` on other ranks.

    Works for a plain module, a DDP- or compile-wrapped one and an FSDP2 (``fully_shard``)
    one; keys are those of the unwrapped module. Collective under FSDP2: call it on
    every rank.

    Args:
        model: the (possibly wrapped or sharded) model.

    Returns:
        ``{name: tensor}`` with full CPU tensors on rank 0, an empty dict elsewhere.
    """
    inner = unwrap_model(model)
    if not (dist.is_available() and dist.is_initialized()):
        return {k: v.detach().cpu().clone() for k, v in inner.state_dict().items()}
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    state: dict[str, Any] = get_model_state_dict(inner, options=options)
    if not is_main_process():
        return {}
    return {k: v.detach().clone() for k, v in state.items() if isinstance(v, Tensor)}


def _full_tensor(t: Tensor) -> Tensor:
    """The whole tensor behind an FSDP2 shard (a collective), or ``t`` itself."""
    from torch.distributed.tensor import DTensor

    return t.full_tensor() if isinstance(t, DTensor) else t


def save_gates(model: nn.Module, directory: str | os.PathLike) -> pathlib.Path | None:
    """:func:`vectorgate.save_gates` for a model trained under DDP or FSDP2: rank 0 writes.

    Call it on **every** rank: under FSDP2 the gates' shards are gathered first (a
    collective), and all ranks wait at a barrier until rank 0 has written the files, so
    any rank may read them afterwards. Without ``torch.distributed`` it is plain
    ``save_gates``.

    Args:
        model: a model patched by :func:`vectorgate.patch`, possibly wrapped in DDP or
            ``torch.compile``, or sharded by ``fully_shard``.
        directory: where rank 0 writes the gate files (see :func:`vectorgate.save_gates`).

    Returns:
        The directory on rank 0, None on the other ranks.
    """
    from vectorgate.discovery import gates
    from vectorgate.patching.files import save_gates as save_local

    inner = unwrap_model(model)
    # (module, attribute name, full tensor) for every gate tensor, gathered in module
    # order, which is the same on every rank, so the collectives line up.
    gathered = [
        (module, key, _full_tensor(t))
        for _, gate in gates(inner)
        for module in gate.modules()
        for table in (module._parameters, module._buffers)
        for key, t in table.items()
        if t is not None
    ]
    out = None
    if is_main_process():
        # save_gates reads the gates' own state dicts: show it the full tensors for the
        # duration of the write, then put the shards back.
        swapped = []
        try:
            for module, key, full in gathered:
                table = module._parameters if key in module._parameters else module._buffers
                old = table[key]
                if full is not old:
                    table[key] = nn.Parameter(full.detach(), requires_grad=False) if table is module._parameters else full
                    swapped.append((table, key, old))
            out = save_local(inner, directory)
        finally:
            for table, key, old in reversed(swapped):
                table[key] = old
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
    return out
