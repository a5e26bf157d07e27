"""The Triton path on a real GPU: through the custom op, autograd and torch.compile.

Skipped without CUDA. The checks live in :mod:`vectorgate_lab.bench.kernel_check` (so that
``benchmarks/gpu_check.sh`` runs them on a machine without pytest); here each is one test.
"""

from __future__ import annotations

import importlib.util

import pytest
import torch

from vectorgate_lab.bench import kernel_check as kc

pytestmark = pytest.mark.skipif(
    not torch.cuda.is_available() or importlib.util.find_spec("triton") is None,
    reason="needs a CUDA GPU and triton",
)

ALL = kc.CASES + kc.BIG_CASES


@pytest.mark.parametrize("case", ALL, ids=[c.id for c in ALL])
def test_triton_op_matches_reference(case: kc.Case) -> None:
    assert kc.check_case(case) == []


def test_dc_is_bitwise_deterministic() -> None:
    assert kc.check_dc_deterministic() == []


def test_saves_only_inputs() -> None:
    assert kc.check_saved_only_inputs() == []


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_compile_fullgraph_matches_eager(dtype: torch.dtype) -> None:
    assert kc.check_compile_fullgraph(dtype) == []


def test_autocast_bf16() -> None:
    assert kc.check_autocast() == []
