"""Timers, copy bandwidth and saved-for-backward accounting, for CPU and CUDA alike."""

from __future__ import annotations

import contextlib
import os
import statistics
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import torch
from torch import Tensor


def sync(device: torch.device) -> None:
    """Wait for queued GPU work, so wall-clock timers measure it (no-op on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_once(fn: Callable[[], object], device: torch.device) -> float:
    """Seconds one call of ``fn`` takes, GPU work included."""
    sync(device)
    start = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - start


def median_ms(samples: Iterable[float]) -> float:
    """Median of samples in seconds, in milliseconds."""
    return 1e3 * statistics.median(samples)


def interleaved_medians(
    fns: dict[str, Callable[[], object]], device: torch.device, reps: int, warmup: int = 2
) -> dict[str, float]:
    """Median milliseconds of each function, timed in interleaved rounds.

    Round-robin timing (a, b, c, a, b, c, ...) spreads the load of a shared machine evenly
    over the candidates, so their ratios stay meaningful when absolute times drift.
    """
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    samples: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(reps):
        for name, fn in fns.items():
            samples[name].append(time_once(fn, device))
    return {name: median_ms(s) for name, s in samples.items()}


def copy_bandwidth(device: torch.device, nbytes: int, reps: int = 10) -> float:
    """Measured copy bandwidth in bytes/s, read + write counted (2 * nbytes per copy).

    This is the rate one "tensor pass" (one read or one write of a tensor) is charged at
    when the benchmarks compute a floor.
    """
    src = torch.empty(nbytes // 4, dtype=torch.float32, device=device).uniform_()
    dst = torch.empty_like(src)
    ms = interleaved_medians({"copy": lambda: dst.copy_(src)}, device, reps)["copy"]
    return 2 * src.numel() * 4 / (ms * 1e-3)


@dataclass
class SavedTensors:
    """What autograd kept for backward during one forward.

    Attributes:
        total_bytes: bytes of every distinct saved storage.
        extra_like_x: saved tensors with x's element count that are not the storage of one
            of the ``held`` tensors (the inputs the model keeps alive anyway).
        extra_bytes: bytes of storages that are not one of the ``held`` tensors.
    """

    total_bytes: int
    extra_like_x: int
    extra_bytes: int


def saved_for_backward(fn: Callable[[], object], like: Tensor, held: Iterable[Tensor]) -> SavedTensors:
    """Count what ``fn``'s forward saves for backward, through saved-tensor hooks.

    Storages are de-duplicated by data pointer, so a tensor saved by two ops counts once.
    """
    held_ptrs = {t.untyped_storage().data_ptr() for t in held}
    seen: dict[int, Tensor] = {}

    def pack(t: Tensor) -> Tensor:
        seen.setdefault(t.untyped_storage().data_ptr(), t)
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    del out
    total = extra = n_like = 0
    for ptr, t in seen.items():
        nbytes = t.untyped_storage().nbytes()
        total += nbytes
        if ptr not in held_ptrs:
            extra += nbytes
            n_like += t.numel() == like.numel()
    return SavedTensors(total, n_like, extra)


@contextlib.contextmanager
def env(name: str, value: str | None) -> Iterator[None]:
    """Set (or, with None, unset) an environment variable for the ``with`` block."""
    old = os.environ.get(name)
    if value is None:
        os.environ.pop(name, None)
    else:
        os.environ[name] = value
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = old
