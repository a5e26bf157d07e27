"""Train a gated timm ViT on real MNIST digits with DDP or FSDP2, launched by torchrun.

    torchrun --standalone --nproc_per_node=2 examples/ddp_example.py --strategy ddp
    torchrun --standalone --nproc_per_node=2 examples/ddp_example.py --strategy fsdp --gates-only
    python examples/ddp_example.py            # one process, no torch.distributed

Each optimizer step takes one global batch and gives every rank an equal slice of it, so
the run follows the same trajectory as one process on the whole batch (this is what
tests/integrations/test_distributed.py checks). The gates are saved from rank 0 with
``vectorgate.distributed.save_gates`` (every rank calls it: under FSDP2 the gates are
sharded and must be gathered first). Backend: NCCL on GPUs, gloo on the CPU.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import time
from collections.abc import Sequence
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

from vectorgate_lab.assets import load_mnist, split_indices


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--strategy", choices=["ddp", "fsdp"], default="ddp",
                   help="DistributedDataParallel or FSDP2 fully_shard (ignored without torchrun)")
    p.add_argument("--gates-only", action="store_true",
                   help="freeze the ViT and train only the gates and the head (PEFT-style)")
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--global-batch-size", type=int, default=64, help="split evenly over the ranks")
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--gate-lr", type=float, default=None, help="learning rate of the gates (default --lr)")
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--depth", type=int, default=4)
    p.add_argument("--init", choices=("zero_output", "random"), default="zero_output",
                   help="gate init: g's output zero with c = 1 (the default), or random g with c = 0 (vectorgate 0.1)")
    p.add_argument("--init-curvature", type=float, default=None, help="initial c (default: the init's own, 1 or 0)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=pathlib.Path, default=pathlib.Path("outputs/ddp_example"),
                   help="rank 0 writes the gates here (a weights file + vectorgate_config.json)")
    args = p.parse_args(argv)
    if min(args.steps, args.global_batch_size, args.dim, args.depth) < 1:
        p.error("--steps, --global-batch-size, --dim and --depth must be positive")
    return args


def setup() -> tuple[int, int, torch.device]:
    """Join the process group torchrun describes (if any); returns (rank, world size, device)."""
    if "RANK" not in os.environ:
        return 0, 1, torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if torch.cuda.is_available():
        local = int(os.environ["LOCAL_RANK"])
        torch.cuda.set_device(local)
        dist.init_process_group("nccl")
        return dist.get_rank(), dist.get_world_size(), torch.device("cuda", local)
    dist.init_process_group("gloo")
    return dist.get_rank(), dist.get_world_size(), torch.device("cpu")


def build(args: argparse.Namespace, device: torch.device) -> nn.Module:
    from timm.models.vision_transformer import VisionTransformer

    from vectorgate.patching import mark_only_gates_trainable, patch

    torch.manual_seed(args.seed)  # identical weights on every rank
    vit = VisionTransformer(img_size=28, patch_size=7, in_chans=1, num_classes=10, embed_dim=args.dim,
                            depth=args.depth, num_heads=4, mlp_ratio=2.0, global_pool="avg",
                            class_token=False)
    patch(vit, init=args.init, init_curvature=args.init_curvature)
    if args.gates_only:
        mark_only_gates_trainable(vit, extra=("head",))
    return vit.to(device)


def wrap(model: nn.Module, strategy: str, world: int) -> nn.Module:
    if world == 1:
        return model
    if strategy == "ddp":
        return nn.parallel.DistributedDataParallel(model)
    from torch.distributed.fsdp import fully_shard

    for block in model.blocks:  # one all-gather per block, then the rest at the root
        fully_shard(block)
    return fully_shard(model)


@torch.no_grad()
def accuracy(model: nn.Module, x: Tensor, y: Tensor, rank: int, world: int) -> float:
    """Test accuracy over all ranks (each scores its slice; FSDP needs every rank in forward)."""
    model.eval()
    correct = (model(x[rank::world]).argmax(-1) == y[rank::world]).sum()
    model.train()
    if world > 1:
        dist.all_reduce(correct)
    return correct.item() / len(y)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Train; returns ``{"test_acc", "losses", "seconds", "world_size", "gates_dir"}`` (rank 0)."""
    args = parse_args(argv)
    rank, world, device = setup()
    if args.global_batch_size % world:
        raise SystemExit(f"--global-batch-size {args.global_batch_size} must divide by the {world} ranks")
    from vectorgate.distributed import save_gates
    from vectorgate.patching import param_groups

    images, labels = load_mnist()
    train_idx, test_idx = split_indices(len(images), (0.8, 0.2), seed=args.seed)
    x_train, y_train = images[train_idx].to(device), labels[train_idx].to(device)
    x_test, y_test = images[test_idx].to(device), labels[test_idx].to(device)

    model = wrap(build(args, device), args.strategy, world)
    opt = torch.optim.AdamW(param_groups(model, weight_decay=0.05, lr=args.lr, gate_lr=args.gate_lr))
    gen = torch.Generator().manual_seed(args.seed)  # every rank draws the same global batches
    bar = range(1, args.steps + 1)
    if rank == 0:
        from tqdm.auto import tqdm

        bar = tqdm(bar, desc=f"{args.strategy if world > 1 else 'single'} x{world}")
    losses: list[float] = []
    start = time.perf_counter()
    for step in bar:
        idx = torch.randint(0, len(x_train), (args.global_batch_size,), generator=gen)[rank::world]
        loss = nn.functional.cross_entropy(model(x_train[idx]), y_train[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())  # this rank's slice; rank 0 shows its own
        if rank == 0 and step % 20 == 0:
            bar.set_postfix(loss=f"{loss.item():.3f}")
    seconds = time.perf_counter() - start
    acc = accuracy(model, x_test, y_test, rank, world)
    gates_dir = save_gates(model, args.out)  # collective: every rank calls it
    if rank == 0:
        print(f"{world} process(es), {args.strategy if world > 1 else 'no'} wrapping, {args.steps} steps "
              f"in {seconds:.1f} s: test accuracy {100 * acc:.1f}%; gates saved to {gates_dir}")
    if world > 1:
        dist.barrier()  # without it a rank sometimes aborts at teardown
        dist.destroy_process_group()
    return {"test_acc": acc, "losses": losses, "seconds": seconds, "world_size": world, "gates_dir": gates_dir}


if __name__ == "__main__":
    main()
