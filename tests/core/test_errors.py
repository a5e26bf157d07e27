"""Bad input to the core API raises an error that names what was expected and what arrived."""

from __future__ import annotations

import pytest
import torch

from vectorgate import GatedResidual, VectorGate, gated_residual
from vectorgate.functional import exp_gated_residual


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"dim": 0}, "dim must be a positive int"),
        ({"dim": 4.0}, "dim must be a positive int"),
        ({"dim": 4, "rank": 0}, "rank must be None or a positive int"),
        ({"dim": 4, "curvature": "matrix"}, "curvature must be 'vector' or 'scalar'"),
        ({"dim": 4, "init_curvature": float("nan")}, "init_curvature must be finite"),
        ({"dim": 4, "max_curvature": -1.0}, "max_curvature must be None or a positive"),
        ({"dim": 4, "init_curvature": 2.0, "max_curvature": 1.0}, "below max_curvature"),
    ],
)
def test_bad_constructor_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        VectorGate(**kwargs)


def test_wrong_last_dimension_names_both_shapes():
    with pytest.raises(ValueError, match=r"shape \(\.\.\., 8\).*got shape \(2, 7\)"):
        VectorGate(8)(torch.randn(2, 7))


def test_zero_dim_input_is_rejected():
    with pytest.raises(ValueError, match=r"shape \(\.\.\., 8\)"):
        VectorGate(8)(torch.tensor(1.0))


@pytest.mark.parametrize("dtype", [torch.int64, torch.bool, torch.complex64])
def test_non_floating_input_is_rejected(dtype):
    x = torch.zeros(2, 4, dtype=dtype)
    with pytest.raises(TypeError, match="floating-point tensor"):
        VectorGate(4)(x)
    with pytest.raises(TypeError, match="floating-point tensor"):
        exp_gated_residual(x, x, x, torch.zeros(4))


def test_mismatched_x_and_branch_output_shapes_are_not_broadcast():
    x = torch.randn(2, 3, 4)
    with pytest.raises(ValueError, match=r"same shape.*\(2, 3, 4\).*\(1, 3, 4\)"):
        exp_gated_residual(x, torch.randn(1, 3, 4), x, torch.zeros(4))
    with pytest.raises(ValueError, match="same shape"):
        gated_residual(x, torch.randn(3, 4), torch.ones(4), torch.ones(4))
    with pytest.raises(ValueError, match="same shape"):
        VectorGate(4).residual(x, torch.randn(2, 1, 4))


def test_branch_changing_the_shape_is_reported():
    block = GatedResidual(torch.nn.Linear(4, 4), 4)
    block.fn = torch.nn.Linear(4, 4)
    with pytest.raises(ValueError, match=r"shape \(\.\.\., 4\)"):
        block(torch.randn(2, 5))


@pytest.mark.parametrize("c_shape", [(3,), (2, 4), ()])
def test_bad_curvature_shape(c_shape):
    x = torch.randn(2, 4)
    with pytest.raises(ValueError, match=r"c \(curvature\) must be a 1-D tensor of shape \(4,\) or \(1,\)"):
        exp_gated_residual(x, x, x, torch.zeros(c_shape))


def test_alpha_that_does_not_broadcast():
    x = torch.randn(2, 4)
    with pytest.raises(ValueError, match=r"alpha must broadcast.*\(2, 4\).*got shape \(3,\)"):
        gated_residual(x, x, torch.ones(3), torch.ones(4))
    with pytest.raises(ValueError, match="beta must broadcast"):
        gated_residual(x, x, torch.ones(4), torch.ones(5))


def test_non_tensor_input_is_rejected():
    with pytest.raises(TypeError, match=r"must be a torch\.Tensor"):
        gated_residual([1.0], torch.ones(1), torch.ones(1), torch.ones(1))
