"""Tables, JSON and the machine description for benchmark results."""

from __future__ import annotations

import json
import os
import platform
from collections.abc import Sequence
from pathlib import Path

import torch


def machine(device: str) -> dict:
    """What the figures were measured on (goes into every JSON and docs table)."""
    info = {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "device": device,
    }
    try:
        import triton

        info["triton"] = triton.__version__
    except ImportError:
        info["triton"] = None
    if device.startswith("cuda") and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(torch.device(device))
        info["cuda"] = torch.version.cuda
    return info


def _fmt(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 100 else f"{value:.0f}"
    return str(value)


def table(rows: Sequence[dict], columns: Sequence[tuple[str, str]]) -> str:
    """A markdown table of ``rows`` with ``(key, header)`` columns (pastes into docs as is)."""
    head = "| " + " | ".join(h for _, h in columns) + " |"
    rule = "|" + "|".join("---" for _ in columns) + "|"
    body = ["| " + " | ".join(_fmt(r.get(k)) for k, _ in columns) + " |" for r in rows]
    return "\n".join([head, rule, *body])


OP_COLUMNS = [
    ("part", "part"), ("shape", "n x d"), ("dtype", "dtype"), ("impl", "impl"),
    ("backend", "backend"), ("fwd_ms", "fwd ms"), ("fwd_bwd_ms", "fwd+bwd ms"),
    ("floor_fwd_bwd_ms", "floor fwd+bwd ms"), ("fwd_bwd_vs_floor", "x floor"),
    ("fwd_bwd_vs_naive", "x naive eager"), ("saved_extra_like_x", "extra saved (x-size)"),
    ("first_call_s", "first call s"),
]
MODEL_COLUMNS = [
    ("variant", "variant"), ("mode", "mode"), ("step_ms", "step ms"),
    ("step_vs_plain", "x plain"), ("flop_vs_plain", "FLOP x plain"), ("saved_mib", "saved MiB"),
    ("saved_vs_plain", "saved x plain"), ("peak_gib", "peak GiB"), ("peak_vs_plain", "peak x plain"),
    ("first_step_s", "first step s"),
]
SUMMARY_COLUMNS = [
    ("model", "model"), ("gate", "gate"), ("mode", "mode"), ("flop_vs_plain", "FLOP x plain"),
    ("step_vs_plain", "step x plain"), ("step_vs_flop_ratio", "step / FLOP ratio"),
    ("peak_vs_plain", "peak mem x plain"), ("saved_vs_plain", "saved x plain"),
]


def op_table(result: dict) -> str:
    rows = [{**r, "shape": f"{r['n']}x{r['d']}"} for r in result["rows"]]
    return table(rows, OP_COLUMNS)


def model_table(result: dict) -> str:
    return table(result["rows"], MODEL_COLUMNS)


def model_summary_table(results: Sequence[dict]) -> str:
    """One row per gated variant and mode of every model: its ratios to plain, side by side."""
    rows = []
    for result in results:
        for r in result["rows"]:
            if r["variant"] == "plain":
                continue
            gate = "naive formula" if r["variant"] == "naive" else (
                "full rank" if r["rank"] is None else f"rank {r['rank']}")
            if r.get("normed"):
                gate += ", reads norm(x)"
            if r.get("stacked"):
                gate += ", stacked"
            rows.append({**r, "gate": gate})
    return table(rows, SUMMARY_COLUMNS)


def write_json(path: str | Path, payload: dict) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    return path
