"""The Change kit: reversible edits that integrations use to gate a model's residual sites.

:func:`vectorgate.patch` builds every change first and only then applies them, undoing the
applied ones if anything fails, so a model is either fully patched or left as it was.

- :class:`ReplaceModule`: swap a child module for a gated one (post-LN output modules).
- :class:`AddModule`: register new children (the gates of a hooked layer).
- :class:`SetAttribute`: an instance attribute such as a ``forward`` override.
- :class:`GateBranchOutput`: forward hooks that turn a branch's output ``f`` into the gate's
  delta ``expm1(s) * x + exp(-s) * f`` (:meth:`GateSite.residual_delta`), for hosts that
  add the residual themselves (``x + f``): the host then computes ``alpha * x + beta * f``
  and, at the identity init, exactly ``x + f``. The residual stream ``x`` is read either from
  the branch's own input (post-LN blocks whose branch reads x) or captured by a forward
  pre-hook on the pre-norm module that reads it, held only until the branch returns.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from torch import Tensor, nn

from vectorgate.base import ResidualGate
from vectorgate.patching.gate_site import GateSite

__all__ = ["AddModule", "Change", "GateBranchOutput", "ReplaceModule", "SetAttribute", "apply_all"]


class Change:
    """One reversible edit of a model. :func:`patch` applies a list of them all-or-nothing."""

    def apply(self) -> None:
        """Make the edit. Called once, by :func:`vectorgate.patch`, after every change was built."""
        raise NotImplementedError

    def revert(self) -> None:
        """Undo :meth:`apply` exactly (by :func:`vectorgate.unpatch`, or when a later change fails)."""
        raise NotImplementedError

    def gate_sites(self) -> list[GateSite]:
        """The :class:`~vectorgate.patching.gate_site.GateSite` objects this edit installs (so
        :func:`vectorgate.patch` can name them and stacking and skipping can reach them)."""
        return []


def apply_all(changes: Sequence[Change], finish: Callable[[], None] | None = None) -> None:
    """Apply ``changes`` in order, then call ``finish`` (e.g. record what was done); if
    anything raises, revert the applied changes in reverse order and re-raise: all or nothing."""
    applied: list[Change] = []
    try:
        for change in changes:
            change.apply()
            applied.append(change)
        if finish is not None:
            finish()
    except BaseException:
        for change in reversed(applied):
            change.revert()
        raise


class ReplaceModule(Change):
    """Replace ``parent.<name>`` by ``new`` (and back on :meth:`revert`)."""

    def __init__(self, parent: nn.Module, name: str, new: nn.Module) -> None:
        self.parent, self.name, self.new = parent, name, new
        self.old = getattr(parent, name)

    def apply(self) -> None:
        setattr(self.parent, self.name, self.new)

    def revert(self) -> None:
        setattr(self.parent, self.name, self.old)

    def gate_sites(self) -> list[GateSite]:
        site = getattr(self.new, "site", None)  # a gated drop-in module keeps its site as .site
        return [site] if isinstance(site, GateSite) else []


class AddModule(Change):
    """Register ``module`` as ``parent.<name>`` (a new child: the gates of a hooked layer)."""

    def __init__(self, parent: nn.Module, name: str, module: nn.Module) -> None:
        if hasattr(parent, name):
            raise ValueError(
                f"cannot add the gates as {type(parent).__name__}.{name}: that attribute already exists"
            )
        self.parent, self.name, self.module = parent, name, module

    def apply(self) -> None:
        self.parent.add_module(self.name, self.module)

    def revert(self) -> None:
        delattr(self.parent, self.name)


class SetAttribute(Change):
    """Set an instance attribute (e.g. a ``forward`` override) and restore what was there on revert."""

    def __init__(self, obj: Any, name: str, value: Any) -> None:
        self.obj, self.name, self.value = obj, name, value
        # A flag, not a sentinel object: a deep-copied model (and its patch state) must still
        # know that there was nothing to restore.
        self.had_old, self.old = False, None

    def apply(self) -> None:
        self.had_old = self.name in self.obj.__dict__
        self.old = self.obj.__dict__.get(self.name)
        self.obj.__dict__[self.name] = self.value

    def revert(self) -> None:
        if self.had_old:
            self.obj.__dict__[self.name] = self.old
        else:
            self.obj.__dict__.pop(self.name, None)


def _first_tensor_input(args: tuple, kwargs: dict[str, Any], module: nn.Module) -> Tensor:
    """The residual stream passed to a norm or branch: its first positional argument or
    ``hidden_states=``."""
    x = args[0] if args else kwargs.get("hidden_states")
    if not isinstance(x, Tensor):
        raise TypeError(
            f"vectorgate expected {type(module).__name__} to be called with the residual stream "
            f"(a Tensor) as first argument or hidden_states=, got {type(x).__name__}"
        )
    return x


class _DeltaHooks:
    """The hook callables of one :class:`GateBranchOutput` site (a plain, picklable object).

    ``x`` is the residual stream of the call in progress: set by :meth:`capture` just before
    the branch runs and cleared by :meth:`replace_output`, so no tensor outlives the layer
    call. What the gate reads (x, or the pre-norm's output n with ``reads="normed"``) is put
    on the site as ``site.inflight`` and cleared alike. Gradient checkpointing re-runs the
    layer's forward, which re-runs the hooks in the same order, so the recomputation reads
    its own tensors.
    """

    def __init__(self, site: GateSite) -> None:
        self.site = site
        self.x: Tensor | None = None

    def capture(self, module: nn.Module, args: tuple, kwargs: dict[str, Any]) -> None:
        self.x = _first_tensor_input(args, kwargs, module)
        if self.site.reads == "x":
            self.site.inflight = self.x

    def capture_normed(self, module: nn.Module, args: tuple, kwargs: dict[str, Any], output: Any) -> None:
        if not isinstance(output, Tensor):
            raise TypeError(f"vectorgate expected {type(module).__name__} (a pre-norm) to return a Tensor, "
                            f"got {type(output).__name__}")
        self.site.inflight = output

    def replace_output(self, module: nn.Module, args: tuple, kwargs: dict[str, Any], output: Any) -> Any:
        site = self.site
        x, gate_in = self.x, site.inflight
        self.x = site.inflight = None
        if x is None or gate_in is None:
            raise RuntimeError(
                f"vectorgate: {type(module).__name__} ran before the module that reads its residual "
                "input; this layer's forward does not follow the order its family expects"
            )
        return _with_first(output, lambda f: site.residual_delta(x, f, gate_in))

    def replace_output_reading_input(
        self, module: nn.Module, args: tuple, kwargs: dict[str, Any], output: Any
    ) -> Any:
        x = _first_tensor_input(args, kwargs, module)
        return _with_first(output, lambda f: self.site.residual_delta(x, f, x))


def _with_first(output: Any, fn) -> Any:
    """Apply ``fn`` to a branch output, or to the first element of a tuple output
    (attention modules return ``(out, weights, ...)``)."""
    if isinstance(output, Tensor):
        return fn(output)
    if isinstance(output, tuple) and output and isinstance(output[0], Tensor):
        return (fn(output[0]), *output[1:])
    raise TypeError(
        f"vectorgate expected the branch to return a Tensor or a tuple starting with one, "
        f"got {type(output).__name__}"
    )


class _InstanceForward:
    """``branch.forward`` as an instance attribute that calls what was there before (the
    class's ``forward``, or an instance ``forward`` someone else set): no change in eager mode.

    Why: torch.compile does not guard on forward hooks by default
    (``torch._dynamo.config.skip_nnmodule_hook_guards``), so a graph compiled before the
    patch, for this module or another instance of its class, would be reused and the gate
    silently skipped. Dynamo does guard on an instance ``forward``, so a patched site always
    gets a graph of its own. A plain object (not a bound method), so the model still pickles.
    """

    def __init__(self, module: nn.Module) -> None:
        self.module = module
        self.inner = module.__dict__.get("forward")

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self.inner is not None:
            return self.inner(*args, **kwargs)
        return type(self.module).forward(self.module, *args, **kwargs)


class GateBranchOutput(Change):
    """Make ``branch`` return the gate's delta instead of its output ``f`` (forward hooks).

    Args:
        branch: the module whose output the host adds to the residual stream x.
        gate: the gate for this site, or its :class:`~vectorgate.patching.gate_site.GateSite`.
        capture: the module called with x just before ``branch`` (the pre-norm), or None
            when ``branch`` itself is called with x as first argument.
    """

    def __init__(self, branch: nn.Module, gate: ResidualGate | GateSite, capture: nn.Module | None) -> None:
        self.branch, self.capture = branch, capture
        self.site = gate if isinstance(gate, GateSite) else GateSite(gate)
        self.hooks = _DeltaHooks(self.site)
        self.handles: list[Any] = []
        self.recompile = SetAttribute(branch, "forward", _InstanceForward(branch))

    def read_normed(self) -> None:
        """Make the gate read the pre-norm's output instead of x (``gate_source="normed"``);
        call before :meth:`apply`.

        Raises:
            ValueError: the site has no pre-norm, or its gate cannot take a precomputed z.
        """
        gate = self.site.gate
        if self.capture is None:
            raise ValueError(f"gate_source='normed': the site of {type(self.branch).__name__} has no pre-norm to read")
        if not gate.can_skip:
            raise ValueError(
                f"gate_source='normed' needs a gate whose projection reads one tensor (pre_activation, "
                f"residual(x, f, z)); {type(gate).__name__} does not (variants that do: vectorgate, "
                "vectorgate_lowrank, vectorgate_scalar, gateskip[gate_input=x], mod_router)"
            )
        self.site.reads = "normed"

    def gate_sites(self) -> list[GateSite]:
        return [self.site]

    def apply(self) -> None:
        self.recompile.apply()
        if self.capture is None:
            self.handles.append(
                self.branch.register_forward_hook(self.hooks.replace_output_reading_input, with_kwargs=True)
            )
        else:
            self.handles.append(
                self.capture.register_forward_pre_hook(self.hooks.capture, with_kwargs=True)
            )
            if self.site.reads == "normed":
                self.handles.append(
                    self.capture.register_forward_hook(self.hooks.capture_normed, with_kwargs=True)
                )
            self.handles.append(
                self.branch.register_forward_hook(self.hooks.replace_output, with_kwargs=True)
            )

    def revert(self) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles.clear()
        self.hooks.x = self.site.inflight = None
        self.recompile.revert()


