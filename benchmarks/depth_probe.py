"""What happens in the first steps of a deep gated model trained from scratch (issue 21).

A Llama-like (or, with ``--family gpt2``, the comparison harness's GPT-2) character LM built from a transformers config (the model a new user builds),
patched with ``vectorgate.patch`` and trained with AdamW on the Shakespeare corpus. Every
step records the loss, the global gradient norm and the compound gain of the residual
stream (:class:`vectorgate.compound_gain.CompoundGainMonitor`: the product of alpha along
the stream, its max and min over tokens and channels, the saturated share of tanh(g(x)),
each gated layer's gradient norm). Arms, all from the same seed, data order and backbone:

- ``plain``: no gates;
- ``no_budget``: ``patch(model, log_gain_budget=None)``, vectorgate 0.4's default (c = 1);
- ``default``: ``patch(model)``, the depth-aware default (c capped at budget / n_sites).

    .venv/bin/python benchmarks/depth_probe.py --layers 32 --hidden 64 --lr 3e-3 --steps 40
    .venv/bin/python benchmarks/depth_probe.py --family gpt2 --layers 16 --hidden 128 --batch 32 \
        --steps 20 --out docs/results/depth/probe_gpt2_16l.jsonl

Writes one JSON line per arm and step to ``--out`` and a picture next to it.
"""

from __future__ import annotations

import argparse
import json
import math
import pathlib
import time

import torch

import vectorgate
from vectorgate.compound_gain import CompoundGainMonitor
from vectorgate.compound_gain_plot import plot_compound_gain
from vectorgate_lab.assets import load_shakespeare

ARMS = {"plain": None, "no_budget": {"log_gain_budget": None}, "default": {}}


def build(arm: str, args: argparse.Namespace, vocab: int) -> torch.nn.Module:
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(args.seed)
    if args.family == "gpt2":  # the char-LM of the comparison harness (charlm_sweep_*)
        model = GPT2LMHeadModel(GPT2Config(
            vocab_size=vocab, n_positions=args.context, n_embd=args.hidden, n_layer=args.layers, n_head=4,
            resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0))
    else:
        model = LlamaForCausalLM(LlamaConfig(
            vocab_size=vocab, hidden_size=args.hidden, intermediate_size=4 * args.hidden,
            num_hidden_layers=args.layers, num_attention_heads=4, num_key_value_heads=4,
            max_position_embeddings=args.context))
    if ARMS[arm] is not None:
        with torch.random.fork_rng(devices=[]):
            vectorgate.patch(model, **ARMS[arm])
    return model


def run(arm: str, args: argparse.Namespace, data: torch.Tensor, vocab: int, out) -> list:
    model = build(arm, args, vocab)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.1)
    gen = torch.Generator().manual_seed(args.seed)
    monitor = CompoundGainMonitor(model) if arm != "plain" else None
    history = []
    start = time.perf_counter()
    for step in range(1, args.steps + 1):
        starts = torch.randint(len(data) - args.context - 1, (args.batch,), generator=gen)
        batch = torch.stack([data[s : s + args.context + 1] for s in starts])
        if monitor is not None:
            monitor.start()
        out_ = model(input_ids=batch[:, :-1], output_hidden_states=True)
        loss = torch.nn.functional.cross_entropy(out_.logits.flatten(0, 1), batch[:, 1:].flatten())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = float(torch.nn.utils.get_total_norm([p.grad for p in model.parameters() if p.grad is not None]))
        row = {"arm": arm, "step": step, "loss": loss.item(), "grad_norm": grad_norm,
               # mean(h^2) of the stream entering the final norm: what overflowed in the run
               "final_stream_ms": out_.hidden_states[-2].detach().float().pow(2).mean().item() if args.layers else None}
        if monitor is not None:
            report = monitor.report()
            monitor.stop()
            history.append((step, report))
            row.update(report.scalars(prefix=""), min_gain=report.min_gain, max_gain=report.max_gain,
                       within_budget=report.within_budget)
        opt.step()
        row["seconds"] = time.perf_counter() - start
        out.write(json.dumps(row) + "\n")
        out.flush()
        if step % max(1, args.steps // 10) == 0 or step <= 10:
            gain = f" gain {row['min_gain']:.2g}..{row['max_gain']:.2g} sat {row['saturated']:.2f}" if monitor else ""
            print(f"{arm:>9} step {step:3d} loss {row['loss']:.3f} |g| {grad_norm:.3g}{gain}", flush=True)
    return history


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--family", choices=("llama", "gpt2"), default="llama")
    parser.add_argument("--layers", type=int, default=32)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--context", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--arms", default="plain,no_budget,default")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default="docs/results/depth/probe.jsonl")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    text = load_shakespeare(2_000_000)
    chars = sorted(set(text))
    lookup = {ch: i for i, ch in enumerate(chars)}
    data = torch.tensor([lookup[ch] for ch in text], dtype=torch.long)
    print(f"{args.layers} layers, hidden {args.hidden}, lr {args.lr}, ln(vocab) = {math.log(len(chars)):.3f}")
    path = pathlib.Path(args.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    histories = {}
    with path.open("w") as out:
        for arm in args.arms.split(","):
            history = run(arm, args, data, len(chars), out)
            if history:
                histories[arm] = history
    if histories:
        name = "Llama-like" if args.family == "llama" else "GPT-2"
        plot_compound_gain(histories, path.with_suffix(".png"),
                           title=f"{args.layers}-layer {name} char-LM, hidden {args.hidden}, AdamW lr {args.lr:g}")
    print(f"wrote {path} and {path.with_suffix('.png')}")


if __name__ == "__main__":
    main()
