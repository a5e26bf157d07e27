"""The bad-input catalogue: what every public entry point does with input it cannot use.

Each case checks one documented behaviour: a ``ValueError``/``TypeError`` whose message
says what was expected and what arrived, or (for NaN/Inf, empty and meta tensors) a
defined result. Where an operation changes a model or a file, the case also checks that a
failure leaves it unchanged. The core's basic argument checks live in
``tests/test_core_errors.py``; this file does not repeat them.
"""

from __future__ import annotations

import copy
import math
import warnings

import pytest
import torch
from torch import nn

from vectorgate import GatedResidual, VectorGate, exp_gated_residual, gated_residual
from vectorgate.stability import (
    NonFiniteError,
    UnstableGateWarning,
    assert_finite,
    check_gates,
)
from vectorgate.variants import build_gate

D = 8


def _gate(**kwargs) -> VectorGate:
    torch.manual_seed(0)
    return VectorGate(D, **kwargs)


# --- wrong dimension and mismatched shapes ----------------------------------------------


def re_shape(shape: tuple[int, ...]) -> str:
    """The regex for how an error message prints ``shape``, e.g. ``(2, 9)``."""
    return r"\(" + r", ".join(str(n) for n in shape) + r"\)"


@pytest.mark.parametrize("shape", [(2, D + 1), (D, 2), (3, 1)])
def test_gated_residual_block_with_wrong_last_dim(shape):
    block = GatedResidual(nn.Linear(D, D), D)
    with pytest.raises(ValueError, match=rf"shape \(\.\.\., {D}\).*got shape {re_shape(shape)}"):
        block(torch.randn(shape))


def test_residual_with_wrong_last_dim_names_x():
    with pytest.raises(ValueError, match=rf"x must have shape \(\.\.\., {D}\)"):
        _gate().residual(torch.randn(2, D - 1), torch.randn(2, D - 1))


def test_pre_activation_of_another_shape_is_rejected():
    x = torch.randn(2, 3, D)
    with pytest.raises(ValueError, match=r"x and z must have the same shape.*\(2, 3, 8\).*\(3, 8\)"):
        _gate().residual(x, x, z=torch.randn(3, D))


def test_branch_returning_a_tuple_names_the_branch():
    class TupleBranch(nn.Module):
        def forward(self, x):
            return x, x

    with pytest.raises(TypeError, match=r"branch fn must return a Tensor.*got tuple"):
        GatedResidual(TupleBranch(), D)(torch.randn(2, D))


def test_branch_changing_the_width_names_both_shapes():
    block = GatedResidual(nn.Linear(D, D + 2), D)
    with pytest.raises(ValueError, match=r"x and f_x must have the same shape.*\(2, 8\).*\(2, 10\)"):
        block(torch.randn(2, D))


def test_non_callable_branch():
    with pytest.raises(TypeError, match="fn must be a callable module, got int"):
        GatedResidual(3, D)


# --- dtypes --------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.int32, torch.bool, torch.complex64, torch.uint8])
def test_non_floating_branch_output_names_f_x(dtype):
    x = torch.randn(2, D)
    with pytest.raises(TypeError, match=rf"f_x must be a floating-point tensor.*got dtype {dtype}"):
        _gate().residual(x, torch.zeros(2, D, dtype=dtype))


@pytest.mark.parametrize("which", ["alpha", "beta"])
def test_integer_gates_to_gated_residual(which):
    x = torch.randn(2, D)
    gates = {"alpha": torch.ones(D), "beta": torch.ones(D)}
    gates[which] = torch.ones(D, dtype=torch.int64)
    with pytest.raises(TypeError, match=rf"{which} must be a floating-point tensor.*int64"):
        gated_residual(x, x, **gates)


@pytest.mark.parametrize("c", [torch.zeros(D, dtype=torch.complex64), torch.zeros(D, dtype=torch.int64)])
def test_non_floating_curvature(c):
    x = torch.randn(2, D)
    with pytest.raises(TypeError, match=r"c \(curvature\) must be a floating-point tensor"):
        exp_gated_residual(x, x, x, c)


def test_python_float_curvature_is_not_a_tensor():
    x = torch.randn(2, D)
    with pytest.raises(TypeError, match=r"c \(curvature\) must be a torch.Tensor, got float"):
        exp_gated_residual(x, x, x, 0.5)


def test_numpy_input_to_the_gate():
    with pytest.raises(TypeError, match=r"x must be a torch\.Tensor, got ndarray"):
        _gate()(torch.randn(2, D).numpy())


def test_input_dtype_other_than_the_gate_outside_autocast():
    # Outside autocast the projection needs x in the gate's dtype; torch names both dtypes.
    gate = _gate(dtype=torch.bfloat16)
    with pytest.raises(RuntimeError, match=r"(?i)dtype.*(Float|BFloat16)"):
        gate(torch.randn(2, D))


def test_mixed_half_and_float_inputs_promote_like_pytorch():
    x = torch.randn(2, D, dtype=torch.bfloat16)
    f_x = torch.randn(2, D)
    y = exp_gated_residual(x, f_x, torch.randn(2, D, dtype=torch.float16), torch.zeros(D, dtype=torch.float64))
    assert y.dtype == torch.promote_types(x.dtype, f_x.dtype)
    torch.testing.assert_close(y, x.float() + f_x)


# --- empty, zero-size and 0-dim tensors -------------------------------------------------


@pytest.mark.parametrize("shape", [(0, D), (2, 0, D), (0, 0, D)])
def test_zero_size_inputs_give_empty_outputs_and_zero_curvature_gradient(shape):
    block = GatedResidual(nn.Linear(D, D), D, init_curvature=0.5, return_gates=True)
    x = torch.randn(shape, requires_grad=True)
    y, gates = block(x)
    assert y.shape == x.shape and all(g.shape == x.shape for g in gates)
    y.sum().backward()
    assert x.grad.shape == x.shape
    assert torch.equal(block.gate.curvature.grad, torch.zeros(D))


def test_zero_dim_tensors_to_exp_gated_residual():
    t = torch.tensor(1.0)
    with pytest.raises(ValueError, match="at least one dimension, got a 0-dim tensor"):
        exp_gated_residual(t, t, t, torch.zeros(1))


def test_zero_dim_input_to_a_gated_block():
    with pytest.raises(ValueError, match=rf"x must have shape \(\.\.\., {D}\).*got shape \(\)"):
        GatedResidual(nn.Identity(), D)(torch.tensor(2.0))


# --- devices and meta tensors -----------------------------------------------------------


def test_input_on_another_device_than_the_gate():
    gate = VectorGate(D, device="meta")
    with pytest.raises(ValueError, match="same device, got x: cpu, gate_parameters: meta"):
        gate(torch.randn(2, D))


def test_fused_op_inputs_on_different_devices():
    x = torch.randn(2, D)
    with pytest.raises(ValueError, match=r"same device.*c: meta"):
        exp_gated_residual(x, x, x, torch.zeros(D, device="meta"))
    with pytest.raises(ValueError, match=r"same device.*f_x: meta"):
        gated_residual(x, torch.empty(2, D, device="meta"), torch.ones(D), torch.ones(D))


def test_meta_gate_constructs_and_propagates_shapes():
    # Documented: a gate on the meta device builds (for deferred init) and its forward
    # propagates shapes and dtypes without computing anything.
    block = GatedResidual(nn.Linear(D, D, device="meta"), D, device="meta", return_gates=True)
    x = torch.empty(3, 5, D, device="meta", dtype=torch.float32)
    y, (alpha, beta, s) = block(x)
    for t in (y, alpha, beta, s):
        assert t.device.type == "meta" and t.shape == x.shape and t.dtype == x.dtype


def test_meta_gate_materialised_with_to_empty_is_the_identity():
    gate = VectorGate(D, device="meta")
    gate.to_empty(device="cpu")
    gate.reset_parameters()
    x, f_x = torch.randn(2, D), torch.randn(2, D)
    assert torch.equal(gate.residual(x, f_x), x + f_x)


# --- NaN and Inf: documented propagation, loud detection --------------------------------


def test_nan_in_x_propagates_to_its_own_row_only():
    # Like any PyTorch op (and like x + f(x)), a NaN propagates; the gate's projection
    # mixes the features of a row, so the whole row is NaN, and other rows are untouched.
    block = GatedResidual(nn.Linear(D, D), D, init_curvature=0.5)
    x = torch.randn(4, D)
    clean = block(x)
    x[1, 3] = math.nan
    y = block(x)
    assert torch.isnan(y[1]).all()
    assert torch.equal(y[[0, 2, 3]], clean[[0, 2, 3]])


@pytest.mark.parametrize("value", [math.inf, -math.inf])
def test_inf_in_branch_output_stays_in_its_element(value):
    gate = _gate(init_curvature=0.5)
    x, f_x = torch.randn(3, D), torch.randn(3, D)
    f_x[2, 5] = value
    y = gate.residual(x, f_x)
    assert y[2, 5] == value
    mask = torch.ones_like(y, dtype=torch.bool)
    mask[2, 5] = False
    assert torch.isfinite(y[mask]).all()


def test_finite_inputs_with_large_curvature_give_finite_gates():
    # |s| <= |c| and exp runs in float32: e^|c| at |c| = 80 is ~5.5e34, still finite.
    gate = _gate(init_curvature=80.0)
    alpha, beta, _ = gate(torch.randn(16, D) * 100)
    assert torch.isfinite(alpha).all() and torch.isfinite(beta).all()
    torch.testing.assert_close(alpha * beta, torch.ones_like(alpha))


def test_check_gates_names_the_gate_and_tensor_that_went_nan():
    model = nn.Sequential(*(GatedResidual(nn.Linear(D, D), D) for _ in range(3)))
    model(torch.randn(2, D)).sum().backward()
    with torch.no_grad():
        model[2].gate.curvature[4] = math.nan
    model[1].gate.proj.weight.grad[0, 0] = math.inf
    with pytest.raises(NonFiniteError, match=r"2 gate\(s\): 1\.gate: proj\.weight\.grad; 2\.gate: curvature"):
        check_gates(model)


def test_check_gates_passes_on_a_healthy_model_without_warning():
    model = nn.Sequential(*(GatedResidual(nn.Linear(D, D), D, init_curvature=0.1) for _ in range(3)))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        report = check_gates(model)
    assert [g.name for g in report.gates] == ["0.gate", "1.gate", "2.gate"]
    assert report.log_amplification_bound == pytest.approx(0.3)


def test_assert_finite_counts_nan_and_inf():
    t = torch.tensor([1.0, math.nan, math.inf, -math.inf])
    with pytest.raises(NonFiniteError, match=r"logits must be finite, got 1 NaN and 2 Inf among 4 values"):
        assert_finite("logits", t)


def test_deep_stack_whose_gates_can_overflow_fp16_warns_and_names_the_fix():
    # 48 gates with |c| = 1 can scale the stream by e^48: measured to give NaN at the first
    # fp16 step in benchmarks/stress.py. The warning names a cap that keeps it in range.
    model = nn.ModuleList(VectorGate(4, init_curvature=1.0) for _ in range(48))
    with pytest.warns(UnstableGateWarning, match=r"e\^48.*max_curvature <= 0\.231"):
        check_gates(model)


def test_uncapped_curvature_past_the_threshold_warns():
    model = nn.ModuleList([VectorGate(4, init_curvature=5.0)])
    with pytest.warns(UnstableGateWarning, match=r"\|c\| above 4 \(largest: 0, \|c\| = 5\b.*max_curvature="):
        check_gates(model, log_amplification_warn=None)
    capped = nn.ModuleList([VectorGate(4, init_curvature=5.0, max_curvature=6.0)])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_gates(capped, log_amplification_warn=None)


# --- registry -----------------------------------------------------------------------------


def test_unknown_variant_lists_the_available_ones():
    with pytest.raises(ValueError, match=r"unknown variant 'vectorgatee'; available: .*vectorgate"):
        build_gate("vectorgatee", D)


def test_bool_dim_is_not_an_int():
    with pytest.raises(ValueError, match="dim must be a positive int, got True"):
        VectorGate(True)


# --- model state is unchanged by a failed call -------------------------------------------


def test_failed_forward_leaves_the_gate_unchanged():
    gate = _gate(init_curvature=0.3)
    before = copy.deepcopy(gate.state_dict())
    for bad in (torch.randn(2, D + 1), torch.zeros(2, D, dtype=torch.int64)):
        with pytest.raises((ValueError, TypeError)):
            gate(bad)
    after = gate.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


# --- command line -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["demo", "--dim", "0"], "--dim must be a positive integer, got 0"),
        (["demo", "--dim", "abc"], "invalid int value: 'abc'"),
        (["no-such-command"], "invalid choice: 'no-such-command'"),
        (["demo", "--no-such-flag"], "unrecognized arguments: --no-such-flag"),
    ],
)
def test_bad_cli_arguments(argv, message, capsys):
    from vectorgate.cli import main

    with pytest.raises(SystemExit) as exc:
        main(argv)
    err = capsys.readouterr().err + str(exc.value.code)
    assert exc.value.code != 0
    assert message in err
