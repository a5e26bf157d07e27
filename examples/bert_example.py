"""Fine-tune a real pretrained BERT with and without VectorGate, side by side, fully offline.

The pretrained all-MiniLM-L6-v2 BERT (6 layers, d=384) is fine-tuned on real Rotten Tomatoes
review snippets (fresh vs rotten) twice, with the same seed, the same batches in the same
order and the same number of steps: once plain, once with both residuals of every layer
gated by ``vectorgate.patch`` (identity at init, so both start from the same function; the
default gate's projection trains from the first step).

    python examples/bert_example.py                     # default: 80 steps of 32 per model
    python examples/bert_example.py --mode gates-only   # train only gates + classifier head

Writes ``results.json``, ``curves.png`` (training loss, validation accuracy) and
``curvature.png`` (learned |c| per layer and site) to ``--output-dir`` and ends with a
table and a verdict from McNemar's exact test on the held-out test split (the two models
answer the same examples, so the test is paired): a difference is called only when the
test rejects at 5%.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import pathlib
import time
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from vectorgate import write_report
from vectorgate.patching import (
    count_parameters,
    gates,
    mark_only_gates_trainable,
    param_groups,
    patch,
    save_gates,
)
from vectorgate_lab.assets import load_rotten_tomatoes, minilm_path, split_indices

SPLIT_SEED = 1234  # the train/val/test split is fixed, whatever --seed is
SPLIT = (0.8, 0.1, 0.1)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--steps", type=int, default=80, help="optimizer steps per model")
    p.add_argument("--batch-size", type=int, default=32, help="training batch size")
    p.add_argument("--lr", type=float, default=1e-4, help="learning rate of the pretrained backbone (and of the head in full mode)")
    p.add_argument("--gate-lr", type=float, default=None,
                   help="learning rate of the gates (and of the head in gates-only mode); default: --lr in full mode, "
                        "2e-3 in gates-only mode (the settings of docs/results.md)")
    p.add_argument("--weight-decay", type=float, default=0.01, help="AdamW decay on matrices (not on curvature, biases, norms)")
    p.add_argument("--seed", type=int, default=0, help="seed of the head init, data order and dropout (same for both models)")
    p.add_argument("--device", default="auto", help="'auto' (cuda if available), 'cpu', 'cuda', 'cuda:1', ...")
    p.add_argument("--mode", choices=("full", "gates-only"), default="full",
                   help="full: fine-tune everything; gates-only: freeze the backbone and train the gates and the "
                        "classifier head (the plain model then trains its head only: a linear probe)")
    p.add_argument("--max-length", type=int, default=64, help="truncate snippets to this many tokens")
    p.add_argument("--val-size", type=int, default=128, help="validation examples evaluated during training (0: none)")
    p.add_argument("--test-size", type=int, default=0, help="test examples evaluated at the end (0: the whole test split)")
    p.add_argument("--eval-every", type=int, default=20, help="steps between validation evaluations")
    p.add_argument("--eval-batch-size", type=int, default=64, help="batch size of evaluation")
    p.add_argument("--output-dir", default="outputs/bert_example", help="where results.json and the PNGs go")
    p.add_argument("--report-texts", type=int, default=128,
                   help="test snippets recorded for the gate report (gates/ + gate_report/ PNGs); 0: skip")
    p.add_argument("--no-progress", action="store_true", help="hide the tqdm progress bars")
    args = p.parse_args(argv)
    for name in ("steps", "batch_size", "max_length", "eval_every", "eval_batch_size"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be a positive integer, got {getattr(args, name)}")
    for name in ("val_size", "test_size", "report_texts"):
        if getattr(args, name) < 0:
            p.error(f"--{name.replace('_', '-')} must be >= 0, got {getattr(args, name)}")
    for name in ("lr", "gate_lr"):
        value = getattr(args, name)
        if value is not None and not (math.isfinite(value) and value > 0):
            p.error(f"--{name.replace('_', '-')} must be a positive number, got {value}")
    if args.gate_lr is None:
        args.gate_lr = args.lr if args.mode == "full" else 2e-3
    return args


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"--device {name}: CUDA is not available on this machine")
    return device


class Batches:
    """Tokenises text batches on demand (dynamic padding: short snippets stay cheap)."""

    def __init__(self, tokenizer: Any, texts: list[str], labels: torch.Tensor, max_length: int, device: torch.device):
        self.tokenizer, self.texts, self.labels = tokenizer, texts, labels
        self.max_length, self.device = max_length, device

    def get(self, idx: torch.Tensor) -> dict[str, torch.Tensor]:
        enc = self.tokenizer([self.texts[i] for i in idx.tolist()], padding=True, truncation=True,
                             max_length=self.max_length, return_tensors="pt")
        enc = {k: v.to(self.device) for k, v in enc.items()}
        enc["labels"] = self.labels[idx].to(self.device)
        return enc


@torch.no_grad()
def evaluate(model: nn.Module, data: Batches, idx: torch.Tensor, batch_size: int) -> dict[str, Any]:
    """Accuracy and mean cross-entropy of ``model`` on the examples ``idx``, and which it got
    right (``"correct"``, a bool tensor in ``idx``'s order, for the paired test)."""
    model.eval()
    loss_sum, hits = 0.0, []
    for start in range(0, len(idx), batch_size):
        batch = data.get(idx[start : start + batch_size])
        out = model(**batch)
        loss_sum += out.loss.item() * len(batch["labels"])
        hits.append((out.logits.argmax(-1) == batch["labels"]).cpu())
    correct = torch.cat(hits)
    return {"accuracy": float(correct.float().mean()), "loss": loss_sum / len(idx), "correct": correct}


def train_order(n_train: int, steps: int, batch_size: int, seed: int) -> list[torch.Tensor]:
    """The batches (indices into the training split) both models see, in order: epochs of
    fresh permutations from one seeded generator."""
    g = torch.Generator().manual_seed(seed)
    order: list[torch.Tensor] = []
    perm = torch.randperm(n_train, generator=g)
    pos = 0
    for _ in range(steps):
        if pos + batch_size > n_train:
            perm, pos = torch.randperm(n_train, generator=g), 0
        order.append(perm[pos : pos + batch_size])
        pos += batch_size
    return order


def make_optimizer(model: nn.Module, args: argparse.Namespace, gated: bool) -> tuple[torch.optim.Optimizer, Any]:
    head_lr = args.gate_lr if args.mode == "gates-only" else args.lr
    if args.mode == "gates-only":
        if gated:
            mark_only_gates_trainable(model, extra=("classifier",))
        else:  # the plain counterpart: a linear probe on the frozen backbone
            for name, p in model.named_parameters():
                p.requires_grad_(name.startswith("classifier."))
    # In full mode head_lr is the backbone's lr; groups of frozen parameters are left out.
    groups = param_groups(model, weight_decay=args.weight_decay, lr=head_lr, gate_lr=args.gate_lr)
    opt = torch.optim.AdamW(groups)
    warmup = max(1, args.steps // 10)

    def schedule(step: int) -> float:  # linear warmup, then linear decay to 0 (BERT's recipe)
        return min((step + 1) / warmup, max(0.0, (args.steps - step) / max(1, args.steps - warmup)))

    return opt, torch.optim.lr_scheduler.LambdaLR(opt, schedule)


def train(name: str, model: nn.Module, args: argparse.Namespace, data: Batches, order: list[torch.Tensor],
          val_idx: torch.Tensor, gated: bool) -> dict[str, Any]:
    from tqdm.auto import tqdm

    opt, sched = make_optimizer(model, args, gated)
    torch.manual_seed(args.seed)  # same dropout masks for both models
    history: dict[str, list] = {"step": [], "train_loss": [], "val_step": [], "val_accuracy": [], "val_loss": []}
    start = time.perf_counter()
    bar = tqdm(order, desc=f"{name:>5}", disable=args.no_progress, dynamic_ncols=True)
    for step, idx in enumerate(bar, 1):
        model.train()
        loss = model(**data.get(idx)).loss
        if not torch.isfinite(loss):
            raise FloatingPointError(f"{name}: the training loss is {loss.item()} at step {step}; lower --lr/--gate-lr")
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        history["step"].append(step)
        history["train_loss"].append(loss.item())
        if len(val_idx) and (step % args.eval_every == 0 or step == args.steps):
            val = evaluate(model, data, val_idx, args.eval_batch_size)
            val.pop("correct")
            history["val_step"].append(step)
            history["val_accuracy"].append(val["accuracy"])
            history["val_loss"].append(val["loss"])
            bar.set_postfix(loss=f"{loss.item():.3f}", val_acc=f"{val['accuracy']:.3f}")
    return {"history": history, "train_seconds": time.perf_counter() - start}


def curvature_by_layer(model: nn.Module) -> dict[str, list[float]]:
    """Mean |c| of each gate, grouped by site, in layer order."""
    out: dict[str, list[float]] = {"attention": [], "mlp": []}
    for name, gate in gates(model):
        site = "attention" if ".attention." in name else "mlp"
        out[site].append(gate.effective_curvature().detach().abs().mean().item())
    return out


def plot(results: dict[str, Any], output_dir: pathlib.Path) -> list[pathlib.Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(11, 4))
    for name, color in (("plain", "tab:gray"), ("gated", "tab:blue")):
        h = results["models"][name]["history"]
        window = max(1, len(h["train_loss"]) // 20)
        smooth = torch.tensor(h["train_loss"]).unfold(0, window, 1).mean(1).tolist() if len(h["train_loss"]) >= window else h["train_loss"]
        ax_loss.plot(h["step"][window - 1 :], smooth, color=color, label=name)
        if h["val_step"]:
            ax_acc.plot(h["val_step"], [100 * a for a in h["val_accuracy"]], "o-", color=color, label=name)
    ax_loss.set(xlabel="step", ylabel=f"training loss (moving mean of {window})", title="Training loss")
    ax_acc.set(xlabel="step", ylabel="accuracy (%)", title="Validation accuracy")
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(f"MiniLM BERT on Rotten Tomatoes ({results['args']['mode']}, seed {results['args']['seed']})")
    fig.tight_layout()
    curves = output_dir / "curves.png"
    fig.savefig(curves, dpi=120)
    plt.close(fig)

    c = results["models"]["gated"]["curvature"]
    fig, ax = plt.subplots(figsize=(6, 4))
    n = max(len(v) for v in c.values())
    width = 0.4
    for k, (site, values) in enumerate(c.items()):
        ax.bar([i + (k - 0.5) * width for i in range(len(values))], values, width, label=site)
    ax.set(xlabel="layer", ylabel="mean |c| over dimensions", title="Learned curvature per layer", xticks=range(n))
    ax.legend()
    ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    curvature = output_dir / "curvature.png"
    fig.savefig(curvature, dpi=120)
    plt.close(fig)
    return [curves, curvature]


def report(results: dict[str, Any]) -> str:
    """The final table and verdict, as text."""
    rows = [("model", "test acc", "test loss", "trainable", "train time")]
    for name in ("plain", "gated"):
        r = results["models"][name]
        rows.append((name, f"{100 * r['test']['accuracy']:.2f}%", f"{r['test']['loss']:.4f}",
                     f"{r['trainable_parameters']:,}", f"{r['train_seconds']:.1f} s"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    v = results["verdict"]
    lines.append("")
    lines.append(
        f"Test split ({v['test_examples']} examples): gated {100 * v['gated_accuracy']:.2f}% vs plain "
        f"{100 * v['plain_accuracy']:.2f}% ({100 * v['difference']:+.2f} points). McNemar's exact test: "
        f"{v['gated_only']} examples only the gated model got right, {v['plain_only']} only the plain one, "
        f"p = {v['p_value']:.3g}: {v['summary']}."
    )
    g = results["models"]["gated"]["gates"]
    lines.append(
        f"The gates moved: beta = exp(-s) on the test texts spans {g['beta_min']:.3f} to {g['beta_max']:.3f} "
        f"(1 at init), root-mean-square s {g['rms_s']:.4f} (0 at init); mean |c| {g['mean_abs_c']:.3f} "
        f"({g['init_abs_c']:.3g} at init). Compound gain along the residual stream (the product of alpha "
        f"over the gated sites): {g['compound_gain_min']:.3g} to {g['compound_gain_max']:.3g}."
    )
    return "\n".join(lines)


def verdict(plain_correct: torch.Tensor, gated_correct: torch.Tensor) -> dict[str, Any]:
    """McNemar's exact test on the per-example outcomes of two models on the same test examples."""
    from vectorgate_lab.compare.stats import mcnemar_exact

    gated_only, plain_only, p = mcnemar_exact(gated_correct.tolist(), plain_correct.tolist())
    p_acc, g_acc = float(plain_correct.float().mean()), float(gated_correct.float().mean())
    if p >= 0.05:
        summary = "no significant difference at the 5% level"
    else:
        summary = f"the gated model is significantly {'better' if g_acc > p_acc else 'worse'} (5% level)"
    return {
        "gated_beat_plain": g_acc > p_acc and p < 0.05,
        "significant": p < 0.05,
        "summary": summary,
        "gated_accuracy": g_acc,
        "plain_accuracy": p_acc,
        "difference": g_acc - p_acc,
        "gated_only": gated_only,
        "plain_only": plain_only,
        "p_value": p,
        "test_examples": len(plain_correct),
    }


@torch.no_grad()
def gate_movement(model: nn.Module, data: Batches, idx: torch.Tensor, batch_size: int) -> dict[str, float]:
    """How far the trained gates are from the identity on real text: range of beta, mean |s|, mean |c|."""
    from vectorgate.compound_gain import CompoundGainMonitor
    from vectorgate.recorder import GateRecorder

    model.eval()
    recorder, monitor = GateRecorder(model), CompoundGainMonitor(model)
    gain_lo, gain_hi = 1.0, 1.0  # the product of alpha along the residual stream, over all test texts
    for start in range(0, len(idx), batch_size):
        batch = data.get(idx[start : start + batch_size])
        with recorder, monitor, recorder.masked(batch["attention_mask"]):
            model(**{k: v for k, v in batch.items() if k != "labels"})
        gain = monitor.report(grads=False)
        gain_lo, gain_hi = min(gain_lo, gain.min_gain), max(gain_hi, gain.max_gain)
    overall = [st.overall() for st in recorder.stats().values()]
    cs = torch.cat([g.effective_curvature().detach().abs().flatten() for _, g in gates(model)])
    return {
        "beta_min": math.exp(-max(o["max_s"] for o in overall)),
        "beta_max": math.exp(-min(o["min_s"] for o in overall)),
        "rms_s": math.sqrt(sum(o["std_s"] ** 2 + o["mean_s"] ** 2 for o in overall) / len(overall)),
        "mean_abs_c": float(cs.mean()),
        "init_abs_c": float(next(iter(gates(model)))[1].init_curvature),
        "compound_gain_min": gain_lo,
        "compound_gain_max": gain_hi,
    }


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run the comparison; returns the results that are also written to results.json."""
    args = parse_args(argv)
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from transformers.utils import logging as hf_logging

    device = resolve_device(args.device)
    output_dir = pathlib.Path(args.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)

    data = load_rotten_tomatoes()
    train_idx, val_idx, test_idx = split_indices(len(data), SPLIT, seed=SPLIT_SEED)
    val_idx = val_idx[: args.val_size]
    test_idx = test_idx[: args.test_size] if args.test_size else test_idx
    path = minilm_path()
    tokenizer = AutoTokenizer.from_pretrained(path)
    batches = Batches(tokenizer, data.texts, data.labels, args.max_length, device)
    order = [train_idx[i] for i in train_order(len(train_idx), args.steps, args.batch_size, args.seed)]

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # "classifier.* newly initialised" is expected here
    try:
        torch.manual_seed(args.seed)  # the same classifier head for both models
        plain = AutoModelForSequenceClassification.from_pretrained(path, num_labels=2).to(device)
    finally:
        hf_logging.set_verbosity(verbosity)
    gated = patch(copy.deepcopy(plain))
    print(f"device {device}; train/val/test = {len(train_idx)}/{len(val_idx)}/{len(test_idx)} examples; "
          f"{args.steps} steps of {args.batch_size}; mode {args.mode}; lr {args.lr:g}, gate lr {args.gate_lr:g}")

    results: dict[str, Any] = {"args": vars(args), "device": str(device), "models": {}}
    correct: dict[str, torch.Tensor] = {}
    for name, model in (("plain", plain), ("gated", gated)):
        run = train(name, model, args, batches, order, val_idx, gated=model is gated)
        run["test"] = evaluate(model, batches, test_idx, args.eval_batch_size)
        correct[name] = run["test"].pop("correct")
        run["trainable_parameters"] = count_parameters(model, trainable_only=True)
        run["total_parameters"] = count_parameters(model)
        if model is gated:
            run["curvature"] = curvature_by_layer(model)
            run["gates"] = gate_movement(model, batches, test_idx, args.eval_batch_size)
        results["models"][name] = run

    results["verdict"] = verdict(correct["plain"], correct["gated"])
    (output_dir / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    figures = plot(results, output_dir)
    figures.append(save_gates(gated, output_dir / "gates"))
    if args.report_texts:
        # What the trained gates do, per layer, dimension and token (see docs/inspect.md).
        texts = [data.texts[i] for i in test_idx[: args.report_texts].tolist()]
        gated.eval()
        write_report(gated, tokenizer, texts, output_dir / "gate_report", max_length=args.max_length,
                     progress=not args.no_progress)
        figures.append(output_dir / "gate_report")
    print()
    print(report(results))
    print(f"\nwrote {output_dir / 'results.json'}, " + ", ".join(str(f) for f in figures))
    return results


if __name__ == "__main__":
    main()
