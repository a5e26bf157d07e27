"""The bad-input catalogue: what every public entry point does with input it cannot use.

Each case checks one documented behaviour: a ``ValueError``/``TypeError`` whose message
says what was expected and what arrived, or (for NaN/Inf, empty and meta tensors) a
defined result. Where an operation changes a model or a file, the case also checks that a
failure leaves it unchanged. The core's basic argument checks live in
``tests/core/test_errors.py``; this file does not repeat them.
"""

from __future__ import annotations

import copy
import math
import warnings

import pytest
import torch
from torch import nn

from vectorgate import GatedResidual, VectorGate, gated_residual
from vectorgate.functional import exp_gated_residual
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


@pytest.mark.parametrize(("x_dtype", "gate_dtype"), [(torch.float32, torch.bfloat16), (torch.float64, torch.float32),
                                                   (torch.float16, torch.bfloat16)])
def test_an_input_wider_than_the_gate_outside_autocast_is_named(x_dtype, gate_dtype):
    # Casting x down would round it silently: the error names both dtypes and the ways out.
    gate = _gate(dtype=gate_dtype)
    with pytest.raises(TypeError, match=rf"x has dtype {x_dtype} but the gate's parameters are {gate_dtype}.*gate\.to"):
        gate(torch.randn(2, D).to(x_dtype))


@pytest.mark.parametrize("x_dtype", [torch.bfloat16, torch.float16])
def test_a_half_input_to_a_float32_gate_is_computed_in_float32_and_keeps_its_dtype(x_dtype):
    gate = _gate()
    with torch.no_grad():
        gate.proj.weight.normal_()
    x, f_x = torch.randn(2, D).to(x_dtype), torch.randn(2, D).to(x_dtype)
    alpha, _, s = gate(x)
    assert alpha.dtype == x_dtype and s.dtype == x_dtype
    torch.testing.assert_close(s.float(), gate(x.float()).s, atol=1e-2, rtol=1e-2)
    assert gate.residual(x, f_x).dtype == x_dtype


def test_a_bf16_model_patched_with_float32_gates_runs_them_in_float32():
    transformers = pytest.importorskip("transformers")
    from vectorgate import gates, patch

    cfg = transformers.LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=4)
    model = transformers.LlamaForCausalLM(cfg).to(torch.bfloat16)
    ids = torch.randint(0, 64, (2, 8))
    before = model(ids).logits
    patch(model, dtype=torch.float32)
    assert {p.dtype for _, g in gates(model) for p in g.parameters()} == {torch.float32}
    after = model(ids).logits
    assert after.dtype == torch.bfloat16 and torch.equal(after, before)  # identity at init, in bf16
    model(ids, labels=ids).loss.backward()
    assert all(g.proj.weight.grad.dtype == torch.float32 and g.proj.weight.grad.any() for _, g in gates(model))


def test_patch_builds_the_gates_in_the_dtype_it_is_asked_for():
    transformers = pytest.importorskip("transformers")
    from vectorgate import gates, patch
    from vectorgate.patching import gate_config

    cfg = transformers.LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=4)
    model = patch(transformers.LlamaForCausalLM(cfg), dtype=torch.bfloat16)
    assert {p.dtype for _, g in gates(model) for p in g.parameters()} == {torch.bfloat16}
    assert gate_config(model).gate_kwargs["dtype"] == torch.bfloat16
    plain = patch(transformers.LlamaForCausalLM(cfg).to(torch.bfloat16))  # no dtype: the layer's
    assert {p.dtype for _, g in gates(plain) for p in g.parameters()} == {torch.bfloat16}


@pytest.mark.parametrize("rank", [32, 64])
def test_a_rank_at_or_above_the_width_is_not_low(rank):
    with pytest.raises(ValueError, match=rf"rank={rank} is not a low rank for dim=32.*rank < dim"):
        VectorGate(32, rank=rank)


def test_mixed_half_and_float_inputs_promote_like_pytorch():
    x = torch.randn(2, D, dtype=torch.bfloat16)
    f_x = torch.randn(2, D)
    y = exp_gated_residual(x, f_x, torch.randn(2, D, dtype=torch.float16), torch.zeros(D, dtype=torch.float64))
    assert y.dtype == torch.promote_types(x.dtype, f_x.dtype)
    torch.testing.assert_close(y, x.float() + f_x)


# --- empty, zero-size and 0-dim tensors -------------------------------------------------


@pytest.mark.parametrize("shape", [(0, D), (2, 0, D), (0, 0, D)])
def test_zero_size_inputs_give_empty_outputs_and_zero_curvature_gradient(shape):
    block = GatedResidual(nn.Linear(D, D), D, init="random", init_curvature=0.5, return_gates=True)
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
    block = GatedResidual(nn.Linear(D, D), D, init="random", init_curvature=0.5)
    x = torch.randn(4, D)
    clean = block(x)
    x[1, 3] = math.nan
    y = block(x)
    assert torch.isnan(y[1]).all()
    assert torch.equal(y[[0, 2, 3]], clean[[0, 2, 3]])


@pytest.mark.parametrize("value", [math.inf, -math.inf])
def test_inf_in_branch_output_stays_in_its_element(value):
    gate = _gate(init="random", init_curvature=0.5)
    x, f_x = torch.randn(3, D), torch.randn(3, D)
    f_x[2, 5] = value
    y = gate.residual(x, f_x)
    assert y[2, 5] == value
    mask = torch.ones_like(y, dtype=torch.bool)
    mask[2, 5] = False
    assert torch.isfinite(y[mask]).all()


def test_finite_inputs_with_large_curvature_give_finite_gates():
    # |s| <= |c| and exp runs in float32: e^|c| at |c| = 80 is ~5.5e34, still finite.
    gate = _gate(init="random", init_curvature=80.0)
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
    model = nn.Sequential(*(GatedResidual(nn.Linear(D, D), D, init="random", init_curvature=0.1) for _ in range(3)))
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
    model = nn.ModuleList(VectorGate(4, init="random", init_curvature=1.0) for _ in range(48))
    with pytest.warns(UnstableGateWarning, match=r"e\^48.*max_curvature <= 0\.231"):
        check_gates(model)


def test_one_gate_past_fp16_range_warns_and_small_caps_do_not():
    with pytest.warns(UnstableGateWarning, match=r"e\^12 .*max_curvature <= 11\.1 \(= 11\.1 / 1 gates\)"):
        check_gates(nn.ModuleList([VectorGate(4, init="random", init_curvature=12.0)]))
    # The suggested fix: caps whose sum stays below log(65504) silence it for good.
    capped = nn.ModuleList(VectorGate(4, init="random", init_curvature=0.2, max_curvature=0.23) for _ in range(48))
    with torch.no_grad():
        for gate in capped:
            gate.curvature.fill_(1e3)  # however far training pushes the raw parameter
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        report = check_gates(capped)
    assert report.log_amplification_bound < math.log(65504)


# --- registry -----------------------------------------------------------------------------


def test_unknown_variant_lists_the_available_ones():
    with pytest.raises(ValueError, match=r"unknown variant 'vectorgatee'; available: .*vectorgate"):
        build_gate("vectorgatee", D)


def test_bool_dim_is_not_an_int():
    with pytest.raises(ValueError, match="dim must be a positive int, got True"):
        VectorGate(True)


# --- model state is unchanged by a failed call -------------------------------------------


def test_failed_forward_leaves_the_gate_unchanged():
    gate = _gate(init="random", init_curvature=0.3)
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
        (["inspect", "--base", "minilm", "--output-dir", "o"], "the following arguments are required: --gates"),
        (["inspect", "--base", "minilm", "--gates", "g", "--output-dir", "o", "--text", "hi",
          "--batch-size", "0"], "--batch-size must be >= 1"),
        (["inspect", "--base", "minilm", "--gates", "g", "--output-dir", "o"], "give some text"),
        (["inspect", "--base", "minilm", "--gates", "/no/such/dir", "--output-dir", "o",
          "--text", "hi"], "--gates /no/such/dir: no vectorgate_config.json"),
    ],
)
def test_bad_cli_arguments(argv, message, capsys):
    from vectorgate.cli import main

    with pytest.raises(SystemExit) as exc:
        main(argv)
    err = capsys.readouterr().err + str(exc.value.code)
    assert exc.value.code != 0
    assert message in err


def test_inspect_with_gates_of_another_width_says_so_once(minilm_path, tmp_path, capsys):
    """Gates of a 6-layer BERT of width 32 onto MiniLM (6 layers, width 384)."""
    transformers = pytest.importorskip("transformers")
    from vectorgate.cli import main
    from vectorgate.patching import patch, save_gates

    torch.manual_seed(0)
    narrow = transformers.BertModel(transformers.BertConfig(**{**TINY_BERT, "num_hidden_layers": 6}))
    gates_dir = save_gates(patch(narrow), tmp_path / "gates")
    with pytest.raises(SystemExit) as exc:
        main(["inspect", "--base", "minilm", "--gates", str(gates_dir), "--text", "hi",
              "--output-dir", str(tmp_path / "out")])
    message = str(exc.value.code)
    assert message.startswith("--base minilm: the gates in ")
    assert message.count("do not fit") == 1 and "(32, 384)" in message


# --- patch(), save_gates(), load_gates(): errors leave models and files as they were --------

TINY_BERT = {"num_hidden_layers": 2, "hidden_size": 32, "intermediate_size": 64,
             "num_attention_heads": 4, "vocab_size": 128}


def _tiny(kind: str = "bert", **overrides) -> nn.Module:
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    if kind == "gpt2":
        config = transformers.GPT2Config(n_layer=2, n_embd=32, n_head=4, vocab_size=128)
        return transformers.GPT2Model(config).eval()
    return transformers.BertModel(transformers.BertConfig(**{**TINY_BERT, **overrides})).eval()


def _snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    """State dict plus module types: a patch that was half applied changes one or the other."""
    state = {k: v.clone() for k, v in model.state_dict().items()}
    state["__modules__"] = [f"{n}:{type(m).__name__}" for n, m in model.named_modules()]
    return state


def _assert_unchanged(model: nn.Module, before: dict) -> None:
    after = _snapshot(model)
    assert after["__modules__"] == before["__modules__"]
    assert after.keys() == before.keys()
    assert all(torch.equal(before[k], after[k]) for k in before if k != "__modules__")


@pytest.fixture
def saved_gates(tmp_path):
    """A tiny BERT patched with live gates, saved to ``tmp_path / "gates"``."""
    from vectorgate.patching import gates, patch, save_gates

    model = patch(_tiny(), init="random", init_curvature=0.2)
    with torch.no_grad():
        for _, gate in gates(model):
            gate.curvature.uniform_(-0.5, 0.5)
    return save_gates(model, tmp_path / "gates")


def test_patch_on_an_unsupported_model_names_the_families():
    from vectorgate.patching import patch

    model = nn.Sequential(nn.Linear(D, D), nn.ReLU())
    before = _snapshot(model)
    with pytest.raises(ValueError, match=r"(?i)supported families: .*bert.*docs/transformers.md") as info:
        patch(model)
    assert len(str(info.value)) < 600  # family names, not every family's description
    _assert_unchanged(model, before)


@pytest.mark.parametrize(
    ("model", "message"),
    [
        ("bert-base-uncased", r" expected a torch nn.Module \(the model itself\), got the str "
                              r"'bert-base-uncased'; load the model first, e.g. model = AutoModel.from_pretrained"),
        (None, r" expected a torch nn.Module \(the model itself\), got NoneType"),
        ({"weight": torch.zeros(2)}, r" expected a torch nn.Module .*got dict"),
    ],
    ids=["model-name", "none", "state-dict"],
)
def test_patch_of_something_that_is_not_a_model(model, message):
    from vectorgate.patching import make_gate_adapter, patch

    with pytest.raises(TypeError, match="^vectorgate.patch" + message):
        patch(model)
    with pytest.raises(TypeError, match="^make_gate_adapter" + message):
        make_gate_adapter(model)


def test_save_and_load_gates_of_something_that_is_not_a_model(saved_gates, tmp_path):
    from vectorgate.patching import load_gates, save_gates

    with pytest.raises(TypeError, match=r"load_gates expected a torch nn.Module .*got the str 'bert-base-uncased'"):
        load_gates("bert-base-uncased", saved_gates)
    with pytest.raises(TypeError, match=r"save_gates expected a torch nn.Module .*got NoneType"):
        save_gates(None, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_patch_twice_is_refused_and_the_first_patch_kept():
    from vectorgate.patching import is_patched, patch

    model = patch(_tiny())
    before = _snapshot(model)
    with pytest.raises(ValueError, match=r"already patched by vectorgate.*unpatch"):
        patch(model, init="random", init_curvature=0.5)
    _assert_unchanged(model, before)
    assert is_patched(model)


def test_patch_with_a_bad_gate_argument_leaves_the_model_alone():
    from vectorgate.patching import is_patched, patch

    model = _tiny()
    before = _snapshot(model)
    with pytest.raises(ValueError, match="init_curvature must be finite"):
        patch(model, init_curvature=math.nan)
    _assert_unchanged(model, before)
    assert not is_patched(model)


def test_save_gates_of_an_unpatched_model_writes_nothing(tmp_path):
    from vectorgate.patching import save_gates

    with pytest.raises(ValueError, match="not patched by vectorgate: nothing to save"):
        save_gates(_tiny(), tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_save_gates_crash_mid_write_keeps_the_previous_file(saved_gates, monkeypatch):
    import pathlib

    from vectorgate.patching import patch, save_gates
    from vectorgate.patching.files import weights_path

    weights = weights_path(saved_gates)
    old = weights.read_bytes()

    def crash(path, data):  # writes half the weights, then dies
        with open(path, "wb") as fh:
            fh.write(data[: len(data) // 2])
        raise OSError("disk full")

    monkeypatch.setattr(pathlib.Path, "write_bytes", crash)
    with pytest.raises(OSError, match="disk full"):
        save_gates(patch(_tiny(), init="random", init_curvature=0.7), saved_gates)
    assert weights_path(saved_gates) == weights and weights.read_bytes() == old  # the old pair is intact
    assert sorted(p.name for p in saved_gates.iterdir()) == sorted(
        [weights.name, "vectorgate_config.json"]
    )  # no temporary file left behind


def test_load_gates_round_trip_is_bit_exact(saved_gates):
    from vectorgate.patching import gates, load_gates

    model = load_gates(_tiny(), saved_gates)
    import safetensors.torch

    from vectorgate.patching.files import weights_path

    saved = safetensors.torch.load_file(str(weights_path(saved_gates)))
    loaded = {f"{n}.{k}": v for n, g in gates(model) for k, v in g.state_dict().items()}
    assert loaded.keys() == saved.keys()
    assert all(torch.equal(loaded[k], saved[k]) for k in saved)


def test_load_gates_from_another_model_size(saved_gates):
    from vectorgate.patching import is_patched, load_gates

    model = _tiny(hidden_size=48, intermediate_size=96)
    before = _snapshot(model)
    with pytest.raises(ValueError, match=r"do not fit this BertModel.*\(32, 48\)"):
        load_gates(model, saved_gates)
    _assert_unchanged(model, before)
    assert not is_patched(model)


def test_load_gates_from_another_model_family(saved_gates):
    from vectorgate.patching import is_patched, load_gates

    model = _tiny("gpt2")
    before = _snapshot(model)
    with pytest.raises(ValueError, match=r"family 'bert' found no layers in GPT2Model"):
        load_gates(model, saved_gates)
    _assert_unchanged(model, before)
    assert not is_patched(model)


def test_load_gates_into_a_model_of_another_depth(saved_gates):
    from vectorgate.patching import is_patched, load_gates

    model = _tiny(num_hidden_layers=3)
    before = _snapshot(model)
    with pytest.raises(ValueError, match=r"saved from a BertModel with 2 bert layers \(gated: layer\(s\) \[0, 1\]\), "
                                         r"but this BertModel has 3"):
        load_gates(model, saved_gates)
    _assert_unchanged(model, before)
    assert not is_patched(model)


def test_load_gates_into_another_architecture_of_the_same_family(saved_gates):
    transformers = pytest.importorskip("transformers")
    from vectorgate.patching import is_patched, load_gates

    torch.manual_seed(0)
    model = transformers.RobertaModel(transformers.RobertaConfig(**TINY_BERT)).eval()  # BERT's layers, renamed
    before = _snapshot(model)
    with pytest.raises(ValueError, match=r"\(model_type 'bert'\), but this RobertaModel is a 'roberta' model"):
        load_gates(model, saved_gates)
    _assert_unchanged(model, before)
    assert not is_patched(model)


def test_load_gates_into_a_model_patched_differently_keeps_its_gates(saved_gates):
    from vectorgate.patching import load_gates, patch

    model = patch(_tiny(), sites=["mlp"], init="random", init_curvature=0.3)
    before = _snapshot(model)
    with pytest.raises(ValueError, match=r"is patched as .*'mlp'.* but .* holds gates for"):
        load_gates(model, saved_gates)
    _assert_unchanged(model, before)


def test_load_gates_with_a_missing_weights_file(saved_gates):
    from vectorgate.patching import load_gates
    from vectorgate.patching.files import weights_path

    weights_path(saved_gates).unlink()
    model = _tiny()
    before = _snapshot(model)
    with pytest.raises(FileNotFoundError, match=r"no gates-[0-9a-f]{16}\.safetensors in"):
        load_gates(model, saved_gates)
    _assert_unchanged(model, before)


def test_load_gates_from_a_config_of_a_newer_format(saved_gates):
    import json

    from vectorgate.patching import load_gates
    from vectorgate.patching.files import CONFIG_NAME

    path = saved_gates / CONFIG_NAME
    config = json.loads(path.read_text())
    path.write_text(json.dumps({**config, "format_version": 3, "vectorgate_version": "9.0.0"}))
    model = _tiny()
    before = _snapshot(model)
    with pytest.raises(ValueError, match=r"has format_version 3; this vectorgate reads 1 and 2 \(written by vectorgate 9.0.0\)"):
        load_gates(model, saved_gates)
    _assert_unchanged(model, before)


def test_load_gates_with_a_tensor_of_the_wrong_shape(saved_gates):
    import safetensors.torch

    from vectorgate.patching import is_patched, load_gates
    from vectorgate.patching.files import weights_path

    tensors = safetensors.torch.load_file(str(weights_path(saved_gates)))
    key = next(k for k in tensors if k.endswith("curvature"))
    tensors[key] = torch.zeros(3)
    _rewrite_weights(saved_gates, tensors)
    model = _tiny()
    before = _snapshot(model)
    with pytest.raises(ValueError, match=rf"wrong shape \['{key}'\]"):
        load_gates(model, saved_gates)
    _assert_unchanged(model, before)
    assert not is_patched(model)


def _rewrite_weights(directory, tensors) -> None:
    """Replace the weights and their recorded hash, as a buggy writer would (the hash check passes)."""
    import hashlib
    import json

    import safetensors.torch

    from vectorgate.patching.files import CONFIG_NAME, weights_path

    path = weights_path(directory)
    safetensors.torch.save_file(tensors, str(path))
    config = json.loads((directory / CONFIG_NAME).read_text())
    config["weights_sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
    (directory / CONFIG_NAME).write_text(json.dumps(config))


CORRUPTIONS = {
    "truncated-weights": ("weights", lambda b: b[: len(b) // 2]),
    "garbage-weights": ("weights", lambda b: b"not a safetensors file"),
    "garbage-config": ("vectorgate_config.json", lambda b: b"{not json"),
}


def _corrupt(directory, corruption: str) -> str:
    from vectorgate.patching.files import weights_path

    name, corrupt = CORRUPTIONS[corruption]
    path = weights_path(directory) if name == "weights" else directory / name
    path.write_bytes(corrupt(path.read_bytes()))
    return path.name


@pytest.mark.parametrize("corruption", list(CORRUPTIONS))
def test_corrupted_gate_files_raise_and_leave_the_model_alone(saved_gates, corruption):
    from vectorgate.patching import is_patched, load_gates

    _corrupt(saved_gates, corruption)
    model = _tiny()
    before = _snapshot(model)
    with pytest.raises(Exception):  # noqa: B017 - see the message test below for what is raised
        load_gates(model, saved_gates)
    _assert_unchanged(model, before)
    assert not is_patched(model)


@pytest.mark.parametrize("corruption", list(CORRUPTIONS))
def test_corrupted_gate_files_error_names_the_file(saved_gates, corruption):
    from vectorgate.patching import load_gates

    name = _corrupt(saved_gates, corruption)
    with pytest.raises(ValueError, match=name):
        load_gates(_tiny(), saved_gates)


def test_gate_file_holding_nan_is_refused_and_model_left_alone(saved_gates):
    from safetensors.torch import load_file

    from vectorgate.patching import is_patched, load_gates
    from vectorgate.patching.files import weights_path

    tensors = load_file(str(weights_path(saved_gates)))
    name = sorted(k for k in tensors if k.endswith("curvature"))[0]
    tensors[name][0] = float("nan")
    _rewrite_weights(saved_gates, tensors)
    model = _tiny()
    with pytest.raises(ValueError, match=r"non-finite \(NaN/Inf\) values in: .*curvature"):
        load_gates(model, saved_gates)
    assert not is_patched(model)
