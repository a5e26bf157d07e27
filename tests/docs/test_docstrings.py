"""Every public name has a docstring.

Public means: each name in ``__all__`` of ``vectorgate`` and of the public modules below
(the modules the API reference in ``docs/api/`` renders), resolved by importing it. For a
module, function or class its own docstring must be non-empty; for a class, so must each of
its public methods and properties (defined in the class itself, not starting with ``_``).
A method may inherit its docstring from a vectorgate base class it overrides (the base's
words describe it, as in the API reference), never from torch or another library:
``nn.Module.forward``'s generic text says nothing about what a gate does.

``extra_repr`` is exempt: it is torch's hook for ``repr(module)``, whose output documents it.

Data constants (``VARIANTS``, ``__version__``, ...) cannot carry a docstring at run time and
are not checked here. The test fails once, listing every missing docstring.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import types

import pytest

# Keep in step with docs/api/ and the nav in mkdocs.yml (tests/docs/test_docs_site.py checks that).
PUBLIC_MODULES = [
    "vectorgate",
    "vectorgate.gate",
    "vectorgate.functional",
    "vectorgate.residual",
    "vectorgate.base",
    "vectorgate.discovery",
    "vectorgate.variants",
    "vectorgate.variants.laurel",
    "vectorgate.patching",
    "vectorgate.patching.config",
    "vectorgate.patching.core",
    "vectorgate.patching.changes",
    "vectorgate.patching.gate_site",
    "vectorgate.patching.state",
    "vectorgate.patching.families",
    "vectorgate.patching.files",
    "vectorgate.patching.stacking",
    "vectorgate.patching.training",
    "vectorgate.recorder",
    "vectorgate.plotting",
    "vectorgate.skip",
    "vectorgate.stability",
    "vectorgate.depth",
    "vectorgate.compound_gain",
    "vectorgate.compound_gain_plot",
    "vectorgate.distributed",
    "vectorgate.integrations.transformers",
    "vectorgate.integrations.transformers.report",
    "vectorgate.integrations.transformers.trainer",
    "vectorgate.integrations.transformers.callbacks",
    "vectorgate.integrations.timm",
    "vectorgate.integrations.accelerate",
    # The lab (lab/src/vectorgate_lab): not in the library, rendered under "The lab".
    "vectorgate_lab.compare",
    "vectorgate_lab.peers.hyper",
]


# torch's nn.Module hooks that are not part of a class's own API.
EXEMPT_METHODS = {"extra_repr"}


def _own_doc(obj: object) -> str:
    doc = obj.__doc__ if isinstance(obj.__doc__, str) else ""
    return doc.strip()


def _is_generated_doc(cls: type, doc: str) -> bool:
    """dataclasses and NamedTuple write ``Name(field, ...)`` when the class has no docstring."""
    return doc.startswith(f"{cls.__name__}(") and (
        dataclasses.is_dataclass(cls) or issubclass(cls, tuple)
    )


def _member_doc(cls: type, name: str) -> tuple[str, type | None]:
    """The docstring of ``cls.name`` and the class that supplies it, walking the MRO."""
    for klass in cls.__mro__:
        if name not in vars(klass):
            continue
        attr = vars(klass)[name]
        if isinstance(attr, (staticmethod, classmethod)):
            attr = attr.__func__
        if isinstance(attr, property):
            attr = attr.fget
        doc = _own_doc(attr) if attr is not None else ""
        if doc:
            return doc, klass
    return "", None


def _is_method_like(attr: object) -> bool:
    return isinstance(
        attr, (types.FunctionType, staticmethod, classmethod, property, types.MethodType)
    ) or inspect.isroutine(attr)


def _defined_name(obj: object, fallback: str) -> str:
    """Where ``obj`` is defined (``module.Qualname``), so a re-exported name is reported once."""
    module, qualname = getattr(obj, "__module__", None), getattr(obj, "__qualname__", None)
    return f"{module}.{qualname}" if module and qualname else fallback


def _missing_in_class(cls: type, exported_as: str) -> list[str]:
    qualname = _defined_name(cls, exported_as)
    missing = []
    doc = _own_doc(cls)
    if not doc or _is_generated_doc(cls, doc):
        missing.append(f"{qualname} (class)")
    for name, attr in vars(cls).items():
        if name.startswith("_") or name in EXEMPT_METHODS or not _is_method_like(attr):
            continue
        doc, owner = _member_doc(cls, name)
        if not doc:
            missing.append(f"{qualname}.{name}")
        elif not (owner.__module__ or "").startswith("vectorgate"):
            missing.append(f"{qualname}.{name} (only {owner.__module__}.{owner.__qualname__}'s docstring)")
    return missing


def _missing_in_module(module_name: str) -> list[str]:
    module = importlib.import_module(module_name)
    missing = [] if _own_doc(module) else [f"{module_name} (module)"]
    names = getattr(module, "__all__", None)
    if names is None:
        return [*missing, f"{module_name} has no __all__"]
    for name in names:
        exported_as = f"{module_name}.{name}"
        try:
            obj = getattr(module, name)
        except (AttributeError, ImportError) as err:
            missing.append(f"{exported_as} (in __all__ but not importable: {err})")
            continue
        if isinstance(obj, types.ModuleType):
            if not _own_doc(obj):
                missing.append(f"{obj.__name__} (module)")
        elif inspect.isclass(obj):
            missing.extend(_missing_in_class(obj, exported_as))
        elif callable(obj) and not _own_doc(obj):
            missing.append(_defined_name(obj, exported_as))
    return missing


def test_public_module_list_is_importable():
    broken = []
    for name in PUBLIC_MODULES:
        try:
            importlib.import_module(name)
        except Exception as err:
            broken.append(f"{name}: {type(err).__name__}: {err}")
    assert not broken, "public modules that do not import:\n  " + "\n  ".join(broken)


def test_every_public_name_has_a_docstring():
    missing: list[str] = []
    for module_name in PUBLIC_MODULES:
        try:
            missing.extend(_missing_in_module(module_name))
        except Exception as err:
            missing.append(f"{module_name} (does not import: {type(err).__name__}: {err})")
    # Named where defined, so a name re-exported by several modules is listed once.
    missing = sorted(set(missing))
    assert not missing, f"{len(missing)} public names without a docstring:\n  " + "\n  ".join(missing)


@pytest.mark.parametrize(
    "cls_doc, expected",
    [("Point(x: int, y: int)", True), ("A point in the plane.", False)],
)
def test_generated_dataclass_docstrings_count_as_missing(cls_doc, expected):
    @dataclasses.dataclass
    class Point:
        x: int
        y: int

    assert _is_generated_doc(Point, cls_doc) is expected
