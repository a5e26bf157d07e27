"""Residual variants behind one interface (:class:`vectorgate.base.ResidualGate`).

``build_gate(name, dim, **kwargs)`` builds any registered variant by name, so a block,
a ``patch()`` target or an example can swap them with a string:

=====================  ===============================================  ============  =================
name                   y                                                params        identity at init
=====================  ===============================================  ============  =================
``plain``              ``x + f``                                        0             plain residual
``vectorgate``         ``exp(s) x + exp(-s) f``, ``s = c tanh(W x+b)``  d^2 + 2d      yes [1]_
``vectorgate_scalar``  same, one shared c (xLSTM-style bound)           d^2 + d + 1   yes [1]_
``vectorgate_lowrank`` same, ``W = up @ down`` of rank r (default 16)   2dr + 2d      yes [1]_
``highway``            ``T f + (1 - T) x``, ``T = sigmoid(W x + b)``    d^2 + d       no
``rezero``             ``x + a f``, scalar a = 0                        1             no (y = x)
``layerscale``         ``x + gamma * f``, gamma = 0.1                   d             no
``gateskip``           ``x + sigmoid(W f + b) * f``                     d^2 + d       no
``mod_router``         ``x + sigmoid(w . x + b) f`` (one weight/token)  d + 1         no (b = 5: 0.993)
``laurel_rw``          ``a f + b x``, ``(a, b) = softmax(2 logits)``    2             no ((x + f) / 2)
``laurel_lr``          ``f + x + B A x``, rank r (default 16), B = 0    2dr           yes (B = 0)
``laurel_rw_lr``       ``a f + b (x + B A x)``                          2dr + 2       no ((x + f) / 2)
=====================  ===============================================  ============  =================

Hyper-Connections and mHC (``hc``, ``hc_dynamic``, ``mhc``) keep n copies of the residual
stream, so they are not ``(x, f) -> y`` gates and not variants here: they are peers in the
repository's lab (``vectorgate_lab.peers.hyper_connect``), which the library does not ship.

.. [1] By default g's output starts at zero (``init="zero_output"``), so s = 0; see
   :class:`vectorgate.VectorGate`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from vectorgate._registry import register
from vectorgate.base import ResidualGate
from vectorgate.gate import VectorGate
from vectorgate.variants.laurel import (
    LaurelLowRankResidual,
    LaurelResidual,
    LaurelWeightsResidual,
    laurel_rw_lr,
)
from vectorgate.variants.plain import PlainResidual
from vectorgate.variants.router import MoDRouterResidual
from vectorgate.variants.scaled import LayerScaleResidual, ReZeroResidual
from vectorgate.variants.sigmoid import GateSkipResidual, HighwayResidual

__all__ = [
    "DEPTH_AWARE_VARIANTS",
    "VARIANTS",
    "GateSkipResidual",
    "HighwayResidual",
    "LaurelLowRankResidual",
    "LaurelResidual",
    "LaurelWeightsResidual",
    "LayerScaleResidual",
    "MoDRouterResidual",
    "PlainResidual",
    "ReZeroResidual",
    "build_gate",
    "register_variant",
    "vectorgate_lowrank",
    "vectorgate_scalar",
]


def vectorgate_scalar(dim: int, **kwargs: Any) -> VectorGate:
    """VectorGate with one shared curvature c (the xLSTM-style scalar bound).

    Beck et al., 2024, "xLSTM: Extended Long Short-Term Memory" (arXiv:2405.04517) uses
    exponential gates with a scalar stabiliser; here the single c bounds every dimension.
    The identity at init, as VectorGate. Parameters: d^2 + d + 1. Other kwargs as :class:`VectorGate`.
    """
    return VectorGate(dim, curvature="scalar", **kwargs)


def vectorgate_lowrank(dim: int, *, rank: int = 16, **kwargs: Any) -> VectorGate:
    """VectorGate whose projection g is low rank (``d -> rank -> d``, default rank 16).

    The identity at init, as VectorGate. Parameters: 2 d r + 2 d. Where ``rank >= dim`` a
    factorised g would cost more than a full one, so g is full rank (d^2 + 2d parameters).
    Other kwargs as :class:`VectorGate`.
    """
    return VectorGate(dim, rank=rank if rank < dim else None, **kwargs)


VARIANTS: dict[str, Callable[..., ResidualGate]] = {
    "plain": PlainResidual,
    "vectorgate": VectorGate,
    "vectorgate_scalar": vectorgate_scalar,
    "vectorgate_lowrank": vectorgate_lowrank,
    "highway": HighwayResidual,
    "rezero": ReZeroResidual,
    "layerscale": LayerScaleResidual,
    "gateskip": GateSkipResidual,
    "mod_router": MoDRouterResidual,
    "laurel_rw": LaurelWeightsResidual,
    "laurel_lr": LaurelLowRankResidual,
    "laurel_rw_lr": laurel_rw_lr,
}


#: Names that were variants here and left the library in 0.6, with what they are: an unknown
#: name among them gets an error that says where it went (see :func:`unknown_variant_error`).
MOVED_VARIANTS: dict[str, str] = {
    "hc": "static Hyper-Connections", "hc_dynamic": "dynamic Hyper-Connections", "mhc": "mHC",
}


def unknown_variant_error(name: object) -> ValueError:
    """The error for a ``name`` that is not in :data:`VARIANTS`: it lists the registered
    names, or, for a name in :data:`MOVED_VARIANTS`, says where that peer went."""
    if isinstance(name, str) and name in MOVED_VARIANTS and name not in VARIANTS:
        return ValueError(
            f"variant {name!r} ({MOVED_VARIANTS[name]}) widens the residual stream to n copies, which "
            "vectorgate.patch() and GateConfig cannot describe; since 0.6 it is not a library variant "
            "but a peer in the repository's lab: install it with vectorgate_lab.peers.hyper_connect "
            "(`pip install -e lab`)"
        )
    return ValueError(f"unknown variant {name!r}; available: {', '.join(sorted(VARIANTS))}")


#: Variants that take ``depth`` and ``log_gain_budget`` (VectorGate's; see vectorgate.depth):
#: :func:`vectorgate.patch` passes them the number of sites it gates.
DEPTH_AWARE_VARIANTS = frozenset({"vectorgate", "vectorgate_scalar", "vectorgate_lowrank"})


def register_variant(name: str, factory: Callable[..., ResidualGate]) -> None:
    """Make ``factory(dim, **kwargs)`` available as ``build_gate(name, ...)``.

    Raises:
        ValueError: ``name`` is already registered.
    """
    register(VARIANTS, name, factory, kind="variant")


def build_gate(name: str, dim: int, **kwargs: Any) -> ResidualGate:
    """Build the residual variant ``name`` for feature dimension ``dim``.

    Raises:
        ValueError: unknown ``name``.
        TypeError: a keyword the variant does not take (the message names the variant).
    """
    if name not in VARIANTS:
        raise unknown_variant_error(name)
    try:
        return VARIANTS[name](dim, **kwargs)
    except TypeError as err:
        raise TypeError(f"variant {name!r} does not accept {sorted(kwargs)}: {err}") from err
