"""Save and load only the gates of a patched model (PEFT's adapter habit).

A gate directory holds two files, written as one unit:

- ``gates-<hash>.safetensors``: every gate parameter, keyed by its qualified name in the
  model (e.g. ``bert.encoder.layer.0.output.gate.curvature``), plus the parameters of any
  ``modules_to_save`` (e.g. the classifier head a gate-only adapter trained). The name
  carries the first 16 hex digits of the file's SHA-256.
- ``vectorgate_config.json``: the :class:`~vectorgate.patching.config.GateConfig`, the gated
  layers and gate dimensions, the model class, how many layers of the family the model has
  and its transformers ``model_type`` (:func:`load_gates` refuses a model of another depth or
  architecture), the library version, and the name and SHA-256 of the weights file.

The config is the commit record: the weights go to a new, content-named file first, then the
config is replaced atomically (temporary file + ``os.replace``), then stale weights files are
removed. A crash at any point leaves either the old pair or the new pair, never a mix; the
loader checks the weights against the recorded hash.

Directories written by vectorgate 0.1 and 0.2 (``format_version`` 1, a fixed
``gates.safetensors``) still load, and so do format-2 files without the layer count and
model type (vectorgate 0.3 to 0.4.0), without those two checks.

Models built with gated layers (timm's :class:`~vectorgate.integrations.timm.GatedBlock`
as ``block_fn``), never patched, save and load too: their family describes the gates as
:func:`vectorgate.patch` would have recorded them
(:meth:`~vectorgate.patching.families.Family.built_in_config`), so gates move between such a
model and a plain one patched alike.
"""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
import tempfile
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from vectorgate._optional import require
from vectorgate._version import __version__
from vectorgate.depth import DEFAULT_LOG_GAIN_BUDGET
from vectorgate.discovery import gate_parameter_names, gates
from vectorgate.patching.config import GateConfig
from vectorgate.patching.core import patch, patch_state, unpatch
from vectorgate.patching.families import FAMILIES, Family, check_model, load_integrations
from vectorgate.patching.training import matches_module
from vectorgate.variants import DEPTH_AWARE_VARIANTS

__all__ = [
    "CONFIG_NAME",
    "FORMAT_VERSION",
    "LEGACY_WEIGHTS_NAME",
    "GateFile",
    "load_gates",
    "read_gate_config",
    "save_gates",
    "weights_path",
]

CONFIG_NAME = "vectorgate_config.json"
#: The weights file of format 1 (vectorgate 0.1/0.2).
LEGACY_WEIGHTS_NAME = "gates.safetensors"
FORMAT_VERSION = 2
_WEIGHTS_PREFIX, _WEIGHTS_SUFFIX = "gates-", ".safetensors"

#: The keys of a format-2 config file; all required but those in ``_OPTIONAL``.
_KEYS = ("format_version", "vectorgate_version", "config", "model_class", "layer_names", "dims",
         "weights_file", "weights_sha256", "num_parameters", "extra_tensors", "num_layers", "model_type")
#: Added after 0.4.0: the saved model's number of layers of the family, its transformers
#: ``model_type`` (null for other models). Files without them load without those checks.
_OPTIONAL = ("num_layers", "model_type")
#: The keys vectorgate 0.2 wrote (format 1); 0.1 files lack the last two.
_V1_KEYS = ("format_version", "vectorgate_version", "family", "variant", "sites", "layers", "layer_names",
            "gate_kwargs", "dims", "model_class", "num_parameters", "modules_to_save", "extra_tensors")
_V1_OPTIONAL = ("modules_to_save", "extra_tensors")


def _safetensors():
    return require("safetensors.torch", extra="transformers", needed_by="saving/loading gates")


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


def _sha256(path: pathlib.Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


class GateFile:
    """The parsed ``vectorgate_config.json`` of a gate directory (either format).

    Attributes:
        config: the resolved :class:`GateConfig` the gates were patched with.
        model_class: class name of the model they were saved from.
        layer_names: qualified names of its gated layers.
        dims: qualified gate module name -> feature dimension.
        weights_file: name of the weights file in the directory.
        weights_sha256: its SHA-256, or None for format-1 files.
        extra_tensors: names of the non-gate tensors saved with ``modules_to_save``.
        num_layers: how many layers of the family the saved model had (gated or not); None
            in files written by vectorgate 0.4.0 and older.
        model_type: the saved model's transformers ``config.model_type`` (``"llama"``,
            ``"qwen2"``, ...); None for other models and in files written by 0.4.0 and older.
        vectorgate_version: the version that wrote the file.
    """

    def __init__(self, directory: pathlib.Path, raw: Mapping[str, Any]) -> None:
        self.directory = directory
        self.raw = dict(raw)
        path = directory / CONFIG_NAME
        version = raw.get("format_version")
        if version == 1:
            self._check_keys(raw, _V1_KEYS, optional=_V1_OPTIONAL, path=path)
            self.config = _config_from_v1(raw, path)
            self.weights_file, self.weights_sha256 = LEGACY_WEIGHTS_NAME, None
        elif version == FORMAT_VERSION:
            self._check_keys(raw, _KEYS, optional=_OPTIONAL, path=path)
            self.config = GateConfig.from_dict(raw["config"], source=f"{path} (field 'config')")
            self.weights_file, self.weights_sha256 = raw["weights_file"], raw["weights_sha256"]
            if pathlib.Path(self.weights_file).name != self.weights_file:
                raise ValueError(f"{path}: weights_file must be a file name in the directory, got {self.weights_file!r}")
        else:
            raise ValueError(
                f"{path} has format_version {version!r}; this vectorgate reads 1 and {FORMAT_VERSION} "
                f"(written by vectorgate {raw.get('vectorgate_version', '?')})"
            )
        self.model_class: str = raw["model_class"]
        self.layer_names: list[str] = list(raw["layer_names"])
        self.dims: dict[str, int] = dict(raw["dims"])
        self.extra_tensors: list[str] = list(raw.get("extra_tensors", []))
        self.vectorgate_version: str = str(raw["vectorgate_version"])
        self.num_layers: int | None = raw.get("num_layers")
        self.model_type: str | None = raw.get("model_type")
        n = self.num_layers
        if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
            raise ValueError(f"{path}: num_layers must be a positive int or null, got {n!r}")
        if self.model_type is not None and not isinstance(self.model_type, str):
            raise ValueError(f"{path}: model_type must be a string or null, got {self.model_type!r}")

    @staticmethod
    def _check_keys(raw: Mapping[str, Any], keys: Sequence[str], *, optional: Sequence[str], path: pathlib.Path) -> None:
        unknown = sorted(set(raw) - set(keys))
        missing = [k for k in keys if k not in raw and k not in optional]
        if unknown or missing:
            raise ValueError(
                f"{path} (format_version {raw.get('format_version')}) has unknown fields {unknown} and "
                f"misses fields {missing}; expected {list(keys)}"
            )

    @property
    def weights_path(self) -> pathlib.Path:
        """Path of the weights file this config names."""
        return self.directory / self.weights_file


def _config_from_v1(raw: Mapping[str, Any], path: pathlib.Path) -> GateConfig:
    """The GateConfig a format-1 file describes, with the gate kwargs as the saving version meant them.

    vectorgate 0.1 had one init (random g, c = 0); 0.2 made ``init="zero_output"`` the
    default. A 0.1 file names no init, so it gets 0.1's (its saved ``init_curvature=0.0``
    would be refused by the new default, and the gates must be built as they were saved).
    """
    kwargs = dict(raw["gate_kwargs"])
    if str(raw.get("vectorgate_version", "0.1.0")).startswith("0.1.") and raw["variant"].startswith("vectorgate"):
        kwargs.setdefault("init", "random")
    data = {
        "variant": raw["variant"], "sites": raw["sites"], "layers": raw["layers"], "family": raw["family"],
        "gate_kwargs": kwargs, "modules_to_save": raw.get("modules_to_save", []),
    }
    return GateConfig.from_dict(data, source=str(path))


def read_gate_config(directory: str | os.PathLike) -> GateFile:
    """Parse the ``vectorgate_config.json`` of a gate directory.

    Raises:
        FileNotFoundError: no config in ``directory``.
        ValueError: the file is not valid JSON, has an unknown format version, or has
            unknown or missing fields.
    """
    directory = pathlib.Path(directory)
    path = directory / CONFIG_NAME
    if not path.is_file():
        raise FileNotFoundError(f"no {CONFIG_NAME} in {directory}: not a directory written by save_gates")
    try:
        raw = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path} is not valid JSON (truncated or corrupted?): {err}") from err
    if not isinstance(raw, dict):
        raise ValueError(f"{path} must hold a JSON object, got {type(raw).__name__}")
    return GateFile(directory, raw)


def weights_path(directory: str | os.PathLike) -> pathlib.Path:
    """The weights file that the config in ``directory`` names."""
    return read_gate_config(directory).weights_path


@dataclass
class _Gated:
    """Where the gates of a model are: what its patch recorded, or what its family says of
    the layers it was built with (``built_in``)."""

    config: GateConfig
    layer_names: tuple[str, ...]
    dims: dict[str, int]
    built_in: bool = False


def _model_type(model: nn.Module) -> str | None:
    """A transformers model's ``config.model_type`` (``"llama"``, ``"qwen2"``), else None."""
    value = getattr(getattr(model, "config", None), "model_type", None)
    return value if isinstance(value, str) and value else None


def _family(name: str, directory: Any = None) -> Family:
    load_integrations()
    if name not in FAMILIES:
        where = f"the gates in {directory} were saved with" if directory is not None else "the model is patched with"
        raise ValueError(
            f"{where} family {name!r}, which is not registered here (registered: {', '.join(FAMILIES)}); "
            "install or import the package that registers it"
        )
    return FAMILIES[name]


def _built_in(model: nn.Module) -> _Gated | None:
    """The gates of a model built with gated layers (e.g. timm ``GatedBlock``), described as
    :func:`patch` would have recorded them; None when no family knows such layers in it.

    Raises:
        ValueError: its gated layers were built with different gates (one GateConfig cannot
            describe them).
    """
    load_integrations()
    for fam in FAMILIES.values():
        layers = fam.all_layers(model)
        built = [(i, name, cfg) for i, (name, layer) in enumerate(layers)
                 if (cfg := fam.built_in_config(layer)) is not None]
        if not built:
            continue
        kinds = {json.dumps(cfg.to_dict(), sort_keys=True): name for _, name, cfg in built}
        if len(kinds) > 1:
            raise ValueError(
                f"the gated {fam.name} layers of {type(model).__name__} were built with different gates "
                f"(e.g. {sorted(kinds.values())[:2]}); a gate file records one GateConfig per model"
            )
        names = tuple(name for _, name, _ in built)
        config = built[0][2].replace(family=fam.name, layers=tuple(i for i, _, _ in built))
        dims = {n: g.dim for n, g in gates(model)
                if any(not layer or n.startswith(layer + ".") for layer in names)}
        return _Gated(config, names, dims, built_in=True)
    return None


def save_gates(
    model: nn.Module, directory: str | os.PathLike, *, modules_to_save: Sequence[str] | None = None
) -> pathlib.Path:
    """Write the gates of a model patched by :func:`vectorgate.patch` to ``directory``.

    A model built with gated layers that its family knows (timm's ``GatedBlock`` as
    ``block_fn``) saves too: its gates are recorded as a patch of the plain model would be,
    so they load into either kind.

    Args:
        model: the patched model (or one built with gated layers).
        directory: created if missing; gate files already in it are replaced as one unit.
        modules_to_save: names of other modules whose parameters are saved with the gates
            (matched against parameter-name components, e.g. ``"classifier"``); by default
            those of the model's :class:`GateConfig` (:func:`vectorgate.make_gate_adapter`
            sets them), else none.

    Returns:
        The directory, as a ``pathlib.Path``.

    Raises:
        TypeError: ``model`` is not an ``nn.Module``.
        ValueError: the model is not patched (and holds no gated layers a family knows), or a
            module in ``modules_to_save`` is missing.
    """
    check_model(model, "save_gates")
    state = patch_state(model)
    if state is not None:
        gated = _Gated(state.config, tuple(state.layer_names), dict(state.dims))
        default_modules = state.modules_to_save
    else:
        gated = _built_in(model)
        if gated is None:
            held = next((n for n, _ in gates(model)), None)
            why = (f": it holds gates (e.g. {held or '(root)'}), but in no layer a family knows; save its "
                   "state_dict instead" if held is not None else "")
            raise ValueError(f"{type(model).__name__} is not patched by vectorgate: nothing to save{why}")
        default_modules = ()
    st = _safetensors()
    num_layers = len(_family(gated.config.family).all_layers(model)) or None
    directory = pathlib.Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {}
    for name, gate in gates(model):
        for p_name, p in gate.state_dict().items():
            tensors[f"{name}.{p_name}" if name else p_name] = p.detach().to("cpu").contiguous()
    modules = default_modules if modules_to_save is None else tuple(modules_to_save)
    extra = _extra_parameters(model, modules)
    tensors.update({k: v.detach().to("cpu").contiguous() for k, v in extra.items()})

    previous = {p.name for p in directory.glob(f"{_WEIGHTS_PREFIX}*{_WEIGHTS_SUFFIX}")}
    # 1. the weights, under their content name
    data = st.save(tensors, metadata={"format": "pt"})
    digest = hashlib.sha256(data).hexdigest()
    weights_file = f"{_WEIGHTS_PREFIX}{digest[:16]}{_WEIGHTS_SUFFIX}"
    _atomic_write(directory / weights_file, lambda tmp: pathlib.Path(tmp).write_bytes(data))
    # 2. the config, which names them: the commit point
    config = {
        "format_version": FORMAT_VERSION,
        "vectorgate_version": __version__,
        "config": gated.config.replace(modules_to_save=modules).to_dict(),
        "model_class": type(model).__name__,
        "model_type": _model_type(model),
        "num_layers": num_layers,
        "layer_names": list(gated.layer_names),
        "dims": gated.dims,
        "weights_file": weights_file,
        "weights_sha256": digest,
        "num_parameters": sum(t.numel() for t in tensors.values()),
        "extra_tensors": sorted(extra),
    }
    try:
        _atomic_write(
            directory / CONFIG_NAME,
            lambda tmp: pathlib.Path(tmp).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n"),
        )
    except BaseException:
        if weights_file not in previous:  # the old pair stays as it was
            (directory / weights_file).unlink(missing_ok=True)
        raise
    # 3. weights files no config names any more
    for stale in [*directory.glob(f"{_WEIGHTS_PREFIX}*{_WEIGHTS_SUFFIX}"), directory / LEGACY_WEIGHTS_NAME]:
        if stale.name != weights_file and stale.exists():
            stale.unlink()
    return directory


def _extra_parameters(model: nn.Module, modules: Sequence[str]) -> dict[str, torch.Tensor]:
    """Parameters of ``model`` inside modules named ``modules`` (not gates); each name must match."""
    if isinstance(modules, str):
        modules = (modules,)
    gate_params = gate_parameter_names(model)
    out: dict[str, torch.Tensor] = {}
    for module in modules:
        found = {n: p for n, p in model.named_parameters() if n not in gate_params and matches_module(n, module)}
        if not found:
            raise ValueError(f"modules_to_save: {type(model).__name__} has no parameter inside a module named {module!r}")
        out.update(found)
    return out


def _rename(saved_layers: Sequence[str], model_layers: Sequence[str]) -> Callable[[str], str]:
    """Map a tensor name saved from one model onto another of the same backbone under a
    different head (``bert.encoder.layer.0...`` <-> ``encoder.layer.0...``).

    The gated layers are matched by position; the prefix that differs between a saved layer
    name and the model's is swapped. Names outside the layers (``modules_to_save``) keep their
    path below the common prefix.
    """
    prefixes = set()
    for s, m in zip(saved_layers, model_layers, strict=True):
        sp, mp = s.split("."), m.split(".")
        k = 0  # shared trailing components, e.g. encoder.layer.0
        while k < min(len(sp), len(mp)) and sp[-1 - k] == mp[-1 - k]:
            k += 1
        old, new = sp[: len(sp) - k], mp[: len(mp) - k]
        prefixes.add(("".join(p + "." for p in old), "".join(p + "." for p in new)))
    if len(prefixes) != 1:
        raise ValueError(f"the saved layers {list(saved_layers)[:3]} and this model's {list(model_layers)[:3]} "
                         "differ by more than one prefix")
    (old, new), = prefixes
    if old == new:
        return lambda name: name

    def rename(name: str) -> str:
        return new + name[len(old):] if name.startswith(old) else name

    return rename


def _check_architecture(model: nn.Module, saved: GateFile, directory: Any) -> None:
    """Refuse a model of another family, architecture or depth than the saved one, saying
    what was saved and what the model has. (Another head of the same backbone is fine.)"""
    config, cls = saved.config, type(model).__name__
    origin = f"the gates in {directory} were saved from a {saved.model_class}"
    layers = _family(config.family, directory).all_layers(model)
    if not layers:
        raise ValueError(
            f"{origin} (family {config.family!r}), but family {config.family!r} found no layers in {cls}"
        )
    have_type = _model_type(model)
    if saved.model_type is not None and have_type is not None and saved.model_type != have_type:
        raise ValueError(
            f"{origin} (model_type {saved.model_type!r}), but this {cls} is a {have_type!r} model: gates "
            f"trained in one architecture do not fit another, even where the family ({config.family!r}) "
            "and the widths agree"
        )
    if saved.num_layers is not None and saved.num_layers != len(layers):
        gated = list(config.layers)
        raise ValueError(
            f"{origin} with {saved.num_layers} {config.family} layers (gated: layer(s) {gated}), but this "
            f"{cls} has {len(layers)}. Layer indices count in the saved model (a gate of its last layer "
            f"is at index {saved.num_layers - 1}), so here they would gate other layers than the ones they "
            f"were trained in; load them into a model with {saved.num_layers} layers"
        )


def _sets_start_values_only(key: str) -> bool:
    """Gate arguments that only set the starting values (and dtype), which loading overwrites."""
    return key.startswith("init") or key == "dtype"


def _gate_kwargs_as_built(config: GateConfig, n_gates: int) -> dict[str, Any]:
    """The arguments the gates of ``config`` were built with: :func:`patch` adds the depth
    cap's ``depth`` (its gate count) and ``log_gain_budget`` for depth-aware variants; an
    explicit ``max_curvature`` replaces that cap (:class:`vectorgate.VectorGate`)."""
    kwargs = dict(config.gate_kwargs)
    budget = config.log_gain_budget
    if budget is not None and config.variant in DEPTH_AWARE_VARIANTS:
        kwargs.setdefault("depth", n_gates)
        kwargs.setdefault("log_gain_budget", budget)
    if kwargs.get("max_curvature") is not None:
        kwargs.pop("depth", None)
        kwargs.pop("log_gain_budget", None)
    elif kwargs.get("depth") is not None:
        kwargs.setdefault("log_gain_budget", DEFAULT_LOG_GAIN_BUDGET)
    return kwargs


def _check_same_gates(model: nn.Module, where: _Gated, saved: GateFile, directory: Any) -> None:
    """Refuse saved gates that the gates already in ``model`` (patched, or built in) cannot
    hold as they are: other layers or sites, another input, other gate arguments."""
    cls, config = type(model).__name__, saved.config
    how = "is built with gated layers" if where.built_in else "is patched"
    fix = ("load them into a plain model, which load_gates patches as they were" if where.built_in
           else "call vectorgate.unpatch(model) first, and load_gates patches it as they were")
    want = (config.family, config.variant, list(config.sites or ()), list(config.layers or ()))
    have = (where.config.family, where.config.variant, list(where.config.sites or ()), list(where.config.layers or ()))
    if want != have:
        raise ValueError(
            f"{cls} {how} as (family, variant, sites, layers) = {have}, but {directory} holds gates for {want}; {fix}"
        )
    if config.gate_source != where.config.gate_source:
        raise ValueError(
            f"the gates in {directory} read {config.gate_source!r} (gate_source), the gates this {cls} {how} "
            f"with read {where.config.gate_source!r}; {fix}"
        )
    ours = _gate_kwargs_as_built(where.config, len(where.dims))
    theirs = _gate_kwargs_as_built(config, len(saved.dims))
    diff = {k: (theirs.get(k), ours.get(k)) for k in sorted(set(ours) | set(theirs))
            if not _sets_start_values_only(k) and theirs.get(k) != ours.get(k)}
    if diff:
        raise ValueError(
            f"the gates in {directory} were built with other gate arguments than those this {cls} {how} with: "
            f"argument -> (saved, model) {diff}; {fix}"
        )


def load_gates(model: nn.Module, directory: str | os.PathLike) -> nn.Module:
    """Patch ``model`` as recorded in ``directory`` and load the saved gates, bit-exact.

    The model may use another head of the same backbone than the one saved (gates saved
    from a ``BertForSequenceClassification`` load into a ``BertModel`` and back): the gated
    layers are matched by position. Saved ``modules_to_save`` tensors the model has no place
    for (a classifier, into a model without one) are skipped with a warning. The model must
    have as many layers of the family as the saved one, and be of the same architecture
    (transformers ``model_type``): gates of a 2-layer Llama do not load into a 4-layer one,
    nor Llama gates into a Qwen2 model.

    A model already patched with the same family, variant, sites and layers is loaded into
    as is, and so is a model built with gated layers (timm's ``GatedBlock``) holding the
    same gates. On any error the model is left as it was (a patch done here is undone).

    Args:
        model: a fresh base model of the same architecture (or one already patched alike,
            or built with gated layers alike).
        directory: a directory written by :func:`save_gates` (any vectorgate version).

    Returns:
        ``model``, patched (unless built gated), with the saved gate values.

    Raises:
        TypeError: ``model`` is not an ``nn.Module``.
        ValueError: the model does not match what was saved (family, architecture, number
            of layers, variant, sites, layers, dimensions, or missing/unexpected gate
            tensors; the message says what was saved and what the model has), or the
            weights do not match the recorded hash.
    """
    check_model(model, "load_gates")
    saved = read_gate_config(directory)
    weights = saved.weights_path
    if not weights.is_file():
        raise FileNotFoundError(f"no {saved.weights_file} in {directory} (named by its {CONFIG_NAME})")
    if saved.weights_sha256 is not None and _sha256(weights) != saved.weights_sha256:
        raise ValueError(f"{weights} does not match the SHA-256 recorded in {CONFIG_NAME} (modified or corrupted)")
    try:
        tensors = _safetensors().load_file(str(weights))
    except Exception as err:  # safetensors raises its own error types for a bad header
        raise ValueError(
            f"{weights} is not a readable safetensors file (truncated or corrupted?): {err}"
        ) from err
    bad = [name for name, t in tensors.items() if t.is_floating_point() and not t.isfinite().all()]
    if bad:
        raise ValueError(f"{weights} holds non-finite (NaN/Inf) values in: {', '.join(sorted(bad))}")
    config = saved.config
    state = patch_state(model)
    built = _built_in(model) if state is None else None
    _check_architecture(model, saved, directory)
    patched_here = state is None and built is None
    if built is not None:
        where = built
    else:
        if patched_here:
            patch(model, config.replace(modules_to_save=()))
            state = patch_state(model)
        where = _Gated(state.config, tuple(state.layer_names), dict(state.dims))
    try:
        _check_same_gates(model, where, saved, directory)
        rename = _rename(saved.layer_names, where.layer_names)
        saved_dims = {rename(k): v for k, v in saved.dims.items()}
        if where.dims != saved_dims:
            diff = {
                k: (saved_dims.get(k), where.dims.get(k))
                for k in sorted(set(where.dims) | set(saved_dims))
                if saved_dims.get(k) != where.dims.get(k)
            }
            raise ValueError(
                f"the gates in {directory} (saved from a {saved.model_class}) do not fit this "
                f"{type(model).__name__}: gate -> (saved dim, model dim): {diff}"
            )
        tensors = {rename(k): v for k, v in tensors.items()}
        expected = {f"{n}.{k}" if n else k: v for n, g in gates(model) for k, v in g.state_dict().items()}
        params = dict(model.named_parameters())
        extra_names = [rename(k) for k in saved.extra_tensors]
        absent = [k for k in extra_names if k not in params]
        if absent:
            warnings.warn(
                f"{type(model).__name__} has no place for {len(absent)} tensor(s) saved with "
                f"modules_to_save {list(config.modules_to_save)} (e.g. {absent[:3]}); loading the gates "
                "without them",
                stacklevel=2,
            )
            for k in absent:
                tensors.pop(k, None)
        expected.update({k: params[k] for k in extra_names if k in params})
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
        if patched_here and config.modules_to_save and not absent:
            state.modules_to_save = config.modules_to_save
    except BaseException:
        if patched_here:
            unpatch(model)
        raise
    return model
