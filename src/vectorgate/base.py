"""The interface every residual combiner implements (VectorGate and its peers).

Integrations (``patch()``, ``GatedResidual``, timm blocks) only ever call this interface,
so any variant can stand wherever a VectorGate can.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["ResidualGate"]


class ResidualGate(nn.Module):
    """Combines a residual input x and a branch output f_x into y, both ``(..., dim)``.

    Subclasses set ``self.dim`` and implement :meth:`residual`. :meth:`residual_delta`
    serves sites where the host model adds x itself (``x + delta``); override it when
    ``residual(x, f_x) - x`` would lose exactness (as VectorGate does).

    Token skipping (:mod:`vectorgate.skip`): a variant whose gate reads x alone can decide,
    before the branch runs, which tokens need it. Such a variant sets ``can_skip = True``
    and implements :meth:`pre_activation`, :meth:`skip_score` and accepts ``z=`` in
    :meth:`residual`/:meth:`residual_delta`; a skipped token's branch output is zero, so
    its y is what the gate makes of x alone.
    """

    dim: int
    can_skip: bool = False
    """Whether the gate is known before the branch runs (see :mod:`vectorgate.skip`)."""
    _hf_init_done: bool = False
    """Backs :attr:`_is_hf_initialized` (see the comment above it)."""

    def residual(self, x: Tensor, f_x: Tensor) -> Tensor:
        """y from x and f_x; shapes ``(..., dim)`` -> ``(..., dim)``."""
        raise NotImplementedError

    def residual_delta(self, x: Tensor, f_x: Tensor) -> Tensor:
        """``residual(x, f_x) - x``, for hosts that compute ``x + delta`` themselves."""
        return self.residual(x, f_x) - x

    def pre_activation(self, x: Tensor) -> Tensor:
        """What the gate computes from x alone, ``(..., k)``; the input of :meth:`skip_score`."""
        raise TypeError(self._cannot_skip())

    def skip_score(self, z: Tensor) -> Tensor:
        """How much each token needs its branch, ``(...,)`` in float32; low scores are skipped.

        Args:
            z: :meth:`pre_activation` of x, ``(..., k)``.
        """
        raise TypeError(self._cannot_skip())

    def _cannot_skip(self) -> str:
        return (f"{type(self).__name__} cannot decide to skip a token before its branch runs "
                "(its gate does not read x alone); variants that can: vectorgate, "
                "vectorgate_lowrank, vectorgate_scalar, gateskip[gate_input=x], mod_router")

    # ------------------------------------------------------------------ transformers' weight init
    # A PreTrainedModel that builds gates in its __init__ and is loaded with from_pretrained
    # (transformers 5.x) is built on the meta device; the gate parameters missing from the
    # checkpoint are then materialised *uninitialised* (torch.empty) and handed to
    # ``model.initialize_weights()``, which visits every module children-first, calls the
    # model's ``_init_weights(module)`` (it re-draws the gate's nn.Linear with the backbone's
    # init and knows nothing of the curvature) and then marks the module done with
    # ``module._is_hf_initialized = True``. That assignment is the one call transformers makes
    # on the gate itself, so the gate takes it as its cue: whatever of its parameters is not
    # flagged as loaded or initialised (``param._is_hf_initialized``) gets the gate's own init
    # (``reset_parameters``), the loaded ones are kept. Outside transformers it is a plain flag.

    @property
    def _is_hf_initialized(self) -> bool:
        """transformers' "this module's weights are initialised" flag (see the comment above)."""
        return self._hf_init_done

    @_is_hf_initialized.setter
    def _is_hf_initialized(self, value: bool) -> None:
        if value:
            self._init_parameters_not_loaded()
        self._hf_init_done = bool(value)

    def _init_parameters_not_loaded(self) -> None:
        """Re-apply the gate's own init to the parameters transformers neither loaded nor
        marked initialised; keep the others. No-op on meta tensors or without ``reset_parameters``."""
        reset = getattr(self, "reset_parameters", None)
        params = dict(self.named_parameters())
        if not callable(reset) or not params or any(p.device.type == "meta" for p in params.values()):
            return
        unset = {n for n, p in params.items() if not getattr(p, "_is_hf_initialized", False)}
        if not unset:
            return
        with torch.no_grad():
            kept = {n: p.detach().clone() for n, p in params.items() if n not in unset}
            reset()
            for n, value in kept.items():
                params[n].copy_(value)
        for p in params.values():
            p._is_hf_initialized = True
