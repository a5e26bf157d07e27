"""Save and load only the gates of a patched model (PEFT's adapter habit).

A gate directory holds two files:

- ``gates.safetensors``: every gate parameter, keyed by its qualified name in the model
  (e.g. ``bert.encoder.layer.0.output.gate.curvature``), plus the parameters of any
  ``modules_to_save`` (e.g. the classifier head a gate-only adapter trained).
- ``vectorgate_config.json``: what :func:`vectorgate.patch` was called with (family,
  variant, sites, layers, gate kwargs), the gate dimensions, the model class and the
  library version, so :func:`load_gates` can re-patch a fresh base model and refuse a
  model that does not fit.

Both files are written atomically (temporary file + ``os.replace``).
"""

from __future__ import annotations

import json
import os
import pathlib
import tempfile
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from vectorgate.patching import _matches, gates, patch, patch_state, unpatch

__all__ = ["CONFIG_NAME", "WEIGHTS_NAME", "load_gates", "read_gate_config", "save_gates"]

WEIGHTS_NAME = "gates.safetensors"
CONFIG_NAME = "vectorgate_config.json"
FORMAT_VERSION = 1


def _safetensors():
    try:
        import safetensors.torch
    except ImportError as err:
        raise ImportError(
            "saving/loading gates needs safetensors: `pip install vectorgate[transformers]`"
        ) from err
    return safetensors.torch


def _atomic_write(path: pathlib.Path, write: Callable[[str], None]) -> None:
    """Call ``write(tmp_path)`` then move the file into place, so a crash never leaves a
    half-written file under ``path``."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _jsonable_kwargs(gate_kwargs: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for key, value in gate_kwargs.items():
        if key == "device":
            continue  # where the gates live is the loading model's business
        if isinstance(value, torch.dtype):
            value = str(value).removeprefix("torch.")
        try:
            json.dumps(value)
        except TypeError as err:
            raise TypeError(
                f"gate kwarg {key}={value!r} cannot be saved to JSON; save_gates supports "
                "numbers, strings, booleans, None, lists and dtypes"
            ) from err
        out[key] = value
    return out


def _restore_kwargs(config: dict[str, Any]) -> dict[str, Any]:
    """The gate kwargs to re-patch with, as the saving version meant them.

    vectorgate 0.1 had one init (random g, c = 0); 0.2 made ``init="zero_output"`` the
    default. A 0.1 file names no init, so it gets 0.1's (its saved ``init_curvature=0.0``
    would be refused by the new default, and the gates must be built as they were saved).
    """
    out = dict(config["gate_kwargs"])
    if isinstance(out.get("dtype"), str):
        out["dtype"] = getattr(torch, out["dtype"])
    if str(config.get("vectorgate_version", "0.1.0")).startswith("0.1.") and config.get("variant", "").startswith("vectorgate"):
        out.setdefault("init", "random")
    return out


def save_gates(
    model: nn.Module, directory: str | os.PathLike, *, modules_to_save: Sequence[str] | None = None
) -> pathlib.Path:
    """Write the gates of a model patched by :func:`vectorgate.patch` to ``directory``.

    Args:
        model: the patched model.
        directory: created if missing; existing gate files in it are replaced.
        modules_to_save: names of other modules whose parameters are saved with the gates
            (matched against parameter-name components, e.g. ``"classifier"``); by default
            those :func:`vectorgate.make_gate_adapter` left trainable, else none.

    Returns:
        The directory, as a ``pathlib.Path``.

    Raises:
        ValueError: the model is not patched.
    """
    from vectorgate import __version__

    state = patch_state(model)
    if state is None:
        raise ValueError(f"{type(model).__name__} is not patched by vectorgate: nothing to save")
    st = _safetensors()
    directory = pathlib.Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {}
    for name, gate in gates(model):
        for p_name, p in gate.state_dict().items():
            tensors[f"{name}.{p_name}"] = p.detach().to("cpu").contiguous()
    if modules_to_save is None:
        modules_to_save = state.modules_to_save
    extra = _extra_parameters(model, modules_to_save)
    tensors.update({k: v.detach().to("cpu").contiguous() for k, v in extra.items()})
    config = {
        "format_version": FORMAT_VERSION,
        "vectorgate_version": __version__,
        "family": state.family,
        "variant": state.variant,
        "sites": list(state.sites),
        "layers": list(state.layers),
        "layer_names": list(state.layer_names),
        "gate_kwargs": _jsonable_kwargs(state.gate_kwargs),
        "dims": state.dims,
        "model_class": type(model).__name__,
        "num_parameters": sum(t.numel() for t in tensors.values()),
        "modules_to_save": list(modules_to_save),
        "extra_tensors": sorted(extra),
    }
    _atomic_write(directory / WEIGHTS_NAME, lambda tmp: st.save_file(tensors, tmp, metadata={"format": "pt"}))
    _atomic_write(
        directory / CONFIG_NAME,
        lambda tmp: pathlib.Path(tmp).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n"),
    )
    return directory


def _extra_parameters(model: nn.Module, modules: Sequence[str]) -> dict[str, torch.Tensor]:
    """Parameters of ``model`` inside modules named ``modules`` (not gates); each name must match."""
    if isinstance(modules, str):
        modules = (modules,)
    gate_params = {f"{n}.{k}" for n, g in gates(model) for k, _ in g.named_parameters()}
    out: dict[str, torch.Tensor] = {}
    for module in modules:
        found = {n: p for n, p in model.named_parameters() if n not in gate_params and _matches(n, module)}
        if not found:
            raise ValueError(f"modules_to_save: {type(model).__name__} has no parameter inside a module named {module!r}")
        out.update(found)
    return out


def read_gate_config(directory: str | os.PathLike) -> dict[str, Any]:
    """The ``vectorgate_config.json`` of a gate directory, as a dict."""
    path = pathlib.Path(directory) / CONFIG_NAME
    if not path.is_file():
        raise FileNotFoundError(f"no {CONFIG_NAME} in {directory}: not a directory written by save_gates")
    try:
        config = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path} is not valid JSON (truncated or corrupted?): {err}") from err
    if not isinstance(config, dict):
        raise ValueError(f"{path} must hold a JSON object, got {type(config).__name__}")
    if config.get("format_version") != FORMAT_VERSION:
        raise ValueError(
            f"{path} has format_version {config.get('format_version')!r}; this vectorgate reads {FORMAT_VERSION}"
        )
    return config


def load_gates(model: nn.Module, directory: str | os.PathLike) -> nn.Module:
    """Patch ``model`` as recorded in ``directory`` and load the saved gates, bit-exact.

    A model already patched with the same family, variant, sites and layers is loaded into
    as is. On any error the model is left as it was (a patch done here is undone).

    Args:
        model: a fresh base model of the same architecture (or one already patched alike).
        directory: a directory written by :func:`save_gates`.

    Returns:
        ``model``, patched, with the saved gate values.

    Raises:
        ValueError: the model does not match what was saved (family, layers, dimensions,
            or missing/unexpected gate tensors); the message lists the differences.
    """
    config = read_gate_config(directory)
    weights = pathlib.Path(directory) / WEIGHTS_NAME
    if not weights.is_file():
        raise FileNotFoundError(f"no {WEIGHTS_NAME} in {directory}")
    try:
        tensors = _safetensors().load_file(str(weights))
    except Exception as err:  # safetensors raises its own error types for a bad header
        raise ValueError(
            f"{weights} is not a readable safetensors file (truncated or corrupted?): {err}"
        ) from err
    bad = [name for name, t in tensors.items() if t.is_floating_point() and not t.isfinite().all()]
    if bad:
        raise ValueError(f"{weights} holds non-finite (NaN/Inf) values in: {', '.join(sorted(bad))}")
    state = patch_state(model)
    patched_here = state is None
    if patched_here:
        patch(
            model,
            sites=config["sites"],
            layers=config["layers"],
            variant=config["variant"],
            family=config["family"],
            **_restore_kwargs(config),
        )
        state = patch_state(model)
    try:
        saved = (config["family"], config["variant"], list(config["sites"]), list(config["layers"]))
        have = (state.family, state.variant, list(state.sites), list(state.layers))
        if saved != have:
            raise ValueError(
                f"{type(model).__name__} is patched as (family, variant, sites, layers) = {have}, "
                f"but {directory} holds gates for {saved}"
            )
        if state.dims != config["dims"]:
            diff = {
                k: (config["dims"].get(k), state.dims.get(k))
                for k in sorted(set(state.dims) | set(config["dims"]))
                if config["dims"].get(k) != state.dims.get(k)
            }
            raise ValueError(
                f"the gates in {directory} (saved from a {config['model_class']}) do not fit this "
                f"{type(model).__name__}: gate -> (saved dim, model dim): {diff}"
            )
        expected = {f"{n}.{k}": v for n, g in gates(model) for k, v in g.state_dict().items()}
        extra_names = config.get("extra_tensors", [])
        params = dict(model.named_parameters())
        absent = [k for k in extra_names if k not in params]
        if absent:
            raise ValueError(f"{directory} holds {absent[:5]} (saved with modules_to_save), which "
                             f"{type(model).__name__} does not have")
        expected.update({k: params[k] for k in extra_names})
        missing = sorted(set(expected) - set(tensors))
        unexpected = sorted(set(tensors) - set(expected))
        bad_shape = [k for k in expected.keys() & tensors.keys() if expected[k].shape != tensors[k].shape]
        if missing or unexpected or bad_shape:
            raise ValueError(
                f"{weights} does not match the gates of {type(model).__name__}: missing {missing[:5]}"
                f"{'...' if len(missing) > 5 else ''}, unexpected {unexpected[:5]}"
                f"{'...' if len(unexpected) > 5 else ''}, wrong shape {sorted(bad_shape)[:5]}"
            )
        with torch.no_grad():
            for key, target in expected.items():
                target.copy_(tensors[key])
    except BaseException:
        if patched_here:
            unpatch(model)
        raise
    return model
