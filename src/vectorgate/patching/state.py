"""What vectorgate did to a model: one typed object, a stack of edit groups.

Every edit vectorgate makes to a model belongs to a group: the gates themselves
(:func:`vectorgate.patch`), the stacked projections (:func:`vectorgate.patching.stack_gate_projections`)
and token skipping (:func:`vectorgate.skip.enable_skipping`). Groups are pushed all or nothing
and popped from the top (each undone in reverse order), so ``unpatch`` undoes skipping and
stacking before the gates, whatever order the user thinks of.

The :class:`ModelState` is the only thing vectorgate keeps on a model (one attribute, set and
read in this module alone; the architecture tests check that no other module hides state on
a model or a gate).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from torch import nn

from vectorgate.patching.changes import Change, apply_all

__all__ = ["EDIT_KINDS", "EditGroup", "ModelState", "model_state"]

EditKind = Literal["patch", "stack", "skip"]
#: The kinds of edit group, in the only order they can be stacked.
EDIT_KINDS: tuple[str, ...] = ("patch", "stack", "skip")

#: The one attribute vectorgate sets on a model (see the module docstring).
_ATTR = "_vectorgate_state"


@dataclass
class EditGroup:
    """Edits applied together and undone together.

    Attributes:
        kind: ``"patch"``, ``"stack"`` or ``"skip"``.
        changes: the applied edits, in the order applied.
        owner: what the group's feature keeps: the
            :class:`~vectorgate.patching.core.PatchState` of a patch, the
            :class:`~vectorgate.skip.SkipController` of skipping, None for stacking.
    """

    kind: EditKind
    changes: list[Change] = field(default_factory=list, repr=False)
    owner: Any = None


@dataclass
class ModelState:
    """The stack of :class:`EditGroup` on one model (see :func:`model_state`)."""

    groups: list[EditGroup] = field(default_factory=list)

    def find(self, kind: EditKind) -> EditGroup | None:
        """The group of this kind, if the model has one."""
        return next((g for g in self.groups if g.kind == kind), None)

    def owner(self, kind: EditKind) -> Any:
        """The owner of the group of this kind, else None."""
        group = self.find(kind)
        return None if group is None else group.owner


def model_state(model: nn.Module) -> ModelState | None:
    """The :class:`ModelState` of ``model``, or None when vectorgate has not edited it."""
    return getattr(model, "__dict__", {}).get(_ATTR)


def owner(model: nn.Module, kind: EditKind) -> Any:
    """The owner of ``model``'s edit group of this kind, else None."""
    state = model_state(model)
    return None if state is None else state.owner(kind)


def push(model: nn.Module, kind: EditKind, changes: Sequence[Change], owner: Any = None) -> EditGroup:
    """Apply ``changes`` all or nothing and record them as the top group of ``model``.

    Raises:
        ValueError: the model has a group of this kind already, or one that must stay above
            it (e.g. stacking while tokens are skipped).
    """
    state = model_state(model) or ModelState()
    if state.find(kind) is not None:
        raise ValueError(f"this model has vectorgate {kind} edits already")
    above = [g.kind for g in state.groups if EDIT_KINDS.index(g.kind) > EDIT_KINDS.index(kind)]
    if above:
        raise ValueError(f"vectorgate {kind} edits go below {above}: undo those first")
    group = EditGroup(kind, list(changes), owner)

    def record() -> None:
        state.groups.append(group)
        object.__setattr__(model, _ATTR, state)  # a plain attribute, not a submodule

    apply_all(group.changes, record)
    return group


def pop(model: nn.Module, kind: EditKind) -> EditGroup:
    """Undo ``model``'s group of this kind and every group above it (top first).

    Raises:
        ValueError: the model has no group of this kind.
    """
    state = model_state(model)
    group = None if state is None else state.find(kind)
    if state is None or group is None:
        raise ValueError(f"{type(model).__name__} has no vectorgate {kind} edits")
    while state.groups:
        top = state.groups.pop()
        for change in reversed(top.changes):
            change.revert()
        if top is group:
            break
    if not state.groups:
        del model.__dict__[_ATTR]
    return group
