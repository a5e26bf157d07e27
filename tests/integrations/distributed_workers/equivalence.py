"""DDP / FSDP2 vs single-process equivalence for a gated timm ViT (launched by torchrun).

    torchrun --standalone --nproc_per_node=2 tests/integrations/distributed_workers/equivalence.py \
        --out /tmp/dist.pt --modes ddp fsdp ddp-gates fsdp-gates ddp-compile

Every mode trains the same model (same seed) for ``STEPS`` AdamW steps on the same real
MNIST batches; each rank takes its half of every global batch. Rank 0 writes
``{mode: full state dict}`` to ``--out``. ``ddp-compile`` is DDP under ``torch.compile``. The test imports :func:`build_model`,
:func:`global_batches` and :func:`train` to run the single-process reference.
"""

from __future__ import annotations

import argparse
import os
import pathlib

import torch
import torch.distributed as dist
from torch import Tensor, nn

STEPS = 4
GLOBAL_BATCH = 16
LR = 1e-2
MODES = ("ddp", "fsdp", "ddp-gates", "fsdp-gates", "ddp-compile")


def build_base() -> nn.Module:
    """A 2-block timm ViT (d=32), seeded.

    No qkv bias: the key bias has a true gradient of 0 (softmax ignores it), and Adam would
    normalise rounding noise there into full-size steps that differ between any two runs.
    """
    from timm.models.vision_transformer import VisionTransformer

    torch.manual_seed(0)
    return VisionTransformer(
        img_size=28, patch_size=7, in_chans=1, num_classes=10, embed_dim=32, depth=2,
        num_heads=4, mlp_ratio=2.0, init_values=0.1, qkv_bias=False,
    )


def build_model() -> nn.Module:
    """:func:`build_base` gated by ``vectorgate.patch`` with non-zero curvature, so every
    gate tensor gets gradient from the first step."""
    from vectorgate.patching import patch

    return patch(build_base(), init="random", init_curvature=0.2)


def global_batches() -> list[tuple[Tensor, Tensor]]:
    """``STEPS`` batches of ``GLOBAL_BATCH`` real MNIST digits, identical in every process."""
    from vectorgate_lab.assets import load_mnist, split_indices

    images, labels = load_mnist()
    (idx,) = split_indices(len(images), (1.0,), seed=0)
    idx = idx[: STEPS * GLOBAL_BATCH].view(STEPS, GLOBAL_BATCH)
    return [(images[i], labels[i]) for i in idx]


def train(model: nn.Module, batches: list[tuple[Tensor, Tensor]], rank: int, world: int) -> None:
    """AdamW on the mean loss; each rank uses rows ``rank::world`` of every global batch.

    DDP and FSDP average gradients over ranks; with equal shards the mean of the per-rank
    mean losses is the global mean loss, so all runs follow the same trajectory.
    """
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=LR, weight_decay=0.01)
    for x, y in batches:
        loss = nn.functional.cross_entropy(model(x[rank::world]), y[rank::world])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()


def wrap(model: nn.Module, strategy: str, variant: str = "") -> nn.Module:
    if strategy == "ddp":
        ddp = nn.parallel.DistributedDataParallel(model)
        # aot_eager: Dynamo + AOTAutograd (where hooks, custom ops and DDP's graph splitting
        # must work) without paying inductor's C++ compile time on two shared cores.
        return torch.compile(ddp, backend="aot_eager") if variant == "compile" else ddp
    from torch.distributed.fsdp import fully_shard

    for block in model.blocks:
        fully_shard(block)
    fully_shard(model)
    return model


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=pathlib.Path, required=True)
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    parser.add_argument("--save-gates", type=pathlib.Path, default=None,
                        help="also save the gates of the last mode (rank 0 writes) to this folder")
    args = parser.parse_args()
    torch.set_num_threads(1)  # two ranks share two cores
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    assert int(os.environ["WORLD_SIZE"]) == world

    from vectorgate.distributed import full_state_dict
    from vectorgate.patching import mark_only_gates_trainable

    batches = global_batches()
    results: dict[str, dict[str, Tensor]] = {}
    model = None
    for mode in args.modes:
        strategy, _, variant = mode.partition("-")
        model = build_model()
        if variant == "gates":
            mark_only_gates_trainable(model, extra=())
        model = wrap(model, strategy, variant)
        train(model, batches, rank, world)
        results[mode] = full_state_dict(model)  # collective: every rank calls it
    if args.save_gates is not None and model is not None:
        from vectorgate.distributed import save_gates

        save_gates(model, args.save_gates)  # collective under FSDP; rank 0 writes
    if rank == 0:
        torch.save(results, args.out)
    dist.barrier()  # without it a rank sometimes aborts at teardown (ASSETS.md)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
