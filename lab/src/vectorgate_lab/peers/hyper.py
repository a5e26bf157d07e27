"""Hyper-Connections (HC) and manifold-constrained Hyper-Connections (mHC): n residual streams.

Zhu et al., 2025, "Hyper-Connections" (ICLR 2025, arXiv:2409.19606) replace the one
residual stream ``x`` by n copies ``H = (h_1 .. h_n)`` and learn, per residual site, how the
copies mix into the branch input (``A_m``), with each other (``A_r``) and how the branch
output is written back (``B``)::

    branch input  h   = sum_j A_m[j] h_j
    new streams   h_i' = sum_j A_r[j, i] h_j + B[i] f(h)

*Static* HC learns ``A_m, A_r, B`` as plain parameters; *dynamic* HC adds input-dependent
terms ``tanh(norm(H) W) * s`` (``W`` zero at init). At init ``A_m`` picks stream
``layer_index mod n``, ``A_r = I`` and ``B = 1``, so every stream equals the plain
pre-norm residual stream.

mHC (DeepSeek-AI, 2025, "mHC: Manifold-Constrained Hyper-Connections", arXiv:2512.24880)
constrains the mixes: ``A_r`` is projected onto the doubly stochastic matrices by Sinkhorn
iterations (so mixing streams can neither blow up nor vanish), and the read/write weights go
through sigmoids (``A_m`` in (0, 1), ``B`` in (0, 2)). It has no identity at init.

The math is lucidrains' ``hyper-connections`` package (``HyperConnections``,
``ManifoldConstrainedHyperConnections``, ``get_expand_reduce_stream_functions``), wrapped
here, not rewritten. Streams travel as the package keeps them, stacked along the batch
dimension: ``(batch * n, ..., d)``.

Why this is not a ``(x, f_x) -> y`` gate: a site needs the n streams *before* the branch runs
(the branch reads their mix, not x), and the stream must be widened once before the first
layer and summed after the last. So a stream variant takes three things from its host, which
:func:`hyper_connect` provides with forward hooks (nothing of the host's forward is copied):

- the first layer's input is expanded to n streams, the last layer's output is reduced
  (the streams' mean; the papers sum, which differs by the factor n a final norm removes);
- at each site, the module the host calls first on the residual stream (the pre-norm) gets
  the HC branch input instead of the streams;
- the module whose output the host adds to the stream returns the streams' update instead
  (``H + delta`` is then the new streams; at init ``delta`` is exactly the branch output).

``vectorgate.patch()`` cannot do this, so these variants live in the lab, not in
:data:`vectorgate.variants.VARIANTS` (``GateConfig(variant="hc")`` is refused with a message
naming :func:`hyper_connect`); :data:`STREAM_VARIANTS` builds them by name, and a stream site
must know its depth, ``layer_index``, which only a host passes. A model written from scratch
can also call a site directly: ``streams = site(streams, branch)``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from vectorgate.base import ResidualGate
from vectorgate.discovery import count_parameters

__all__ = [
    "STREAM_VARIANTS",
    "HyperConnectionSite",
    "HyperConnectionsHost",
    "hyper_connect",
    "hyper_connections",
    "hyper_connections_dynamic",
    "is_stream_variant",
    "manifold_hyper_connections",
    "stream_functions",
]

# The HC parameters that only the dynamic form uses (the static form keeps them as zero buffers).
_DYNAMIC = ("dynamic_alpha_fn", "dynamic_alpha_scale", "dynamic_beta_fn", "dynamic_beta_scale")


def _package():
    try:
        import hyper_connections
    except ImportError as err:
        raise ImportError(
            "the hc / hc_dynamic / mhc variants wrap lucidrains' hyper-connections package: "
            "`pip install hyper-connections`"
        ) from err
    return hyper_connections


def stream_functions(n: int) -> tuple[nn.Module, nn.Module]:
    """The package's ``(expand, reduce)``: ``(b, ..., d) -> (b * n, ..., d)`` (n copies) and back (sum)."""
    expand, reduce = _package().get_expand_reduce_stream_functions(n)
    return expand, reduce


class HyperConnectionSite(ResidualGate):
    """One residual site of Hyper-Connections or mHC, around the package's module.

    Built by name (``hc``, ``hc_dynamic``, ``mhc``) from :data:`STREAM_VARIANTS`;
    ``layer_index`` (the site's position in the forward order, both sites of a block
    counted) is required and picks the stream the branch reads at init (``layer_index mod n``).

    Args:
        dim: feature dimension d of one stream.
        n: number of residual streams (expansion rate; 2 or 4 in the papers).
        kind: ``"hc"`` (Hyper-Connections) or ``"mhc"`` (Sinkhorn-constrained).
        dynamic: HC only: learn the input-dependent terms too (mHC is always dynamic).
        layer_index: the site's depth index (required).
        sinkhorn_iters: mHC only: Sinkhorn iterations projecting ``A_r`` (20, as the paper).

    Parameters per site (n streams, width d): static HC ``n^2 + 2n``; dynamic HC
    ``n^2 + 2n + (n + 3) d + 2``; mHC ``n^2 + 2n + (n + 3) d + 3``.

    Shapes:
        ``forward(streams, branch)``: streams ``(b * n, ..., d)`` -> ``(b * n, ..., d)``;
        ``branch`` maps ``(b, ..., d) -> (b, ..., d)``.
        ``begin(streams)`` -> branch input ``(b, ..., d)``; ``end(f)`` -> the streams'
        update ``(b * n, ..., d)`` (see :func:`hyper_connect`).
    """

    expands_stream = True

    def __init__(self, dim: int, *, n: int = 4, kind: str = "hc", dynamic: bool = True,
                 layer_index: int | None = None, sinkhorn_iters: int = 20, device=None, dtype=None) -> None:
        super().__init__()
        if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
            raise ValueError(f"dim must be a positive int, got {dim!r}")
        self.dim = dim
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"n (the number of residual streams) must be a positive int, got {n!r}")
        if kind not in ("hc", "mhc"):
            raise ValueError(f"kind must be 'hc' or 'mhc', got {kind!r}")
        name = {"hc": "hc_dynamic" if dynamic else "hc", "mhc": "mhc"}[kind]
        if layer_index is None:
            raise ValueError(
                f"variant {name!r} keeps n copies of the residual stream: it needs a host that widens "
                "the stream before the first layer, feeds each branch the streams' mix and sums the "
                "streams after the last layer. vectorgate.patch() and GatedResidual cannot do that. "
                "Use vectorgate_lab.peers.hyper_connect(...) (the compare harness's charlm and "
                "vit tasks do), or build it with layer_index=i (STREAM_VARIANTS[name](dim, "
                "layer_index=i)) for a model that calls site(streams, branch) itself."
            )
        if isinstance(layer_index, bool) or not isinstance(layer_index, int) or layer_index < 0:
            raise ValueError(f"layer_index must be an int >= 0, got {layer_index!r}")
        self.num_streams, self.kind, self.layer_index = n, kind, layer_index
        self.dynamic = bool(dynamic) or kind == "mhc"
        self.variant = name
        package = _package()
        if kind == "hc":
            module = package.HyperConnections(n, dim=dim, layer_index=layer_index)
        else:
            module = package.ManifoldConstrainedHyperConnections(
                n, dim=dim, layer_index=layer_index, sinkhorn_iters=sinkhorn_iters
            )
        if not self.dynamic:
            # Static HC: the dynamic terms are tanh(norm(H) @ 0) * s = 0 exactly; keep them as
            # zero buffers so they neither train nor count (and the norm's gain with them).
            for attr in _DYNAMIC:
                value = getattr(module, attr).detach().clone()
                delattr(module, attr)
                module.register_buffer(attr, value)
            gain = module.norm.gamma.detach().clone()
            del module.norm.gamma
            module.norm.register_buffer("gamma", gain)
        self.hc = module.to(device=device, dtype=dtype)
        self._pending: tuple[Tensor, Tensor, dict[str, Any]] | None = None

    @property
    def num_parameters(self) -> int:
        """Trainable parameters of this site (see the class docstring for the formula)."""
        return count_parameters(self)

    def forward(self, streams: Tensor, branch: Callable[..., Tensor], *args: Any, **kwargs: Any) -> Tensor:
        """New streams: the branch runs on the streams' mix (``branch(h, *args, **kwargs)``)."""
        self._check_streams(streams)
        branch_input, add_residual = self.hc(streams)
        return add_residual(branch(branch_input, *args, **kwargs))

    def begin(self, streams: Tensor) -> Tensor:
        """The branch input (the streams' mix) for a host that runs the branch itself.

        Holds the streams until :meth:`end` is called with the branch output.
        """
        self._check_streams(streams)
        branch_input, mixed, extra = self.hc.width_connection(streams)
        self._pending = (streams, mixed, extra)
        return branch_input

    def end(self, f: Tensor) -> Tensor:
        """The streams' update ``delta`` for a host that computes ``streams + delta`` itself.

        ``delta = (A_r-mixed streams - streams) + B f``: at init the first term is exactly 0
        (``A_r = I``) and ``B = 1``, so ``delta`` is ``f`` broadcast to every stream and the
        host's sum is bit for bit the plain residual stream.
        """
        if self._pending is None:
            raise RuntimeError(
                f"{self.variant} site {self.layer_index}: the branch returned before the stream "
                "was read (begin() was not called); the host does not call its modules in the "
                "order hyper_connect() was told"
            )
        streams, mixed, extra = self._pending
        self._pending = None
        if f.shape[0] * self.num_streams != streams.shape[0] or f.shape[1:] != streams.shape[1:]:
            raise ValueError(
                f"branch output of shape {tuple(f.shape)} does not match {self.num_streams} streams "
                f"of shape {tuple(streams.shape)} (expected ({streams.shape[0] // self.num_streams}, "
                f"{', '.join(map(str, streams.shape[1:]))}))"
            )
        # The package's depth connection computes ``B f + residuals``; handing it
        # ``mixed - streams`` as the residuals makes it return the update instead.
        return self.hc.depth_connection(f, mixed - streams, **extra)

    # Forward hooks installed by hyper_connect (bound methods, so a deep copy of the model
    # calls the copied site).
    def _read_hook(self, module: nn.Module, args: tuple, kwargs: dict[str, Any]) -> tuple:
        streams, rebuild = _first_tensor(args, kwargs, type(module).__name__)
        return rebuild(self.begin(streams))

    def _write_hook(self, module: nn.Module, args: tuple, kwargs: dict[str, Any], output: Any) -> Any:
        return _map_first(output, self.end)

    def _check_streams(self, streams: Tensor) -> None:
        if not torch.is_floating_point(streams):
            raise TypeError(f"streams must be a floating tensor, got {streams.dtype}")
        if streams.shape[-1] != self.dim:
            raise ValueError(f"streams must have last dimension {self.dim}, got shape {tuple(streams.shape)}")
        if streams.shape[0] % self.num_streams:
            raise ValueError(
                f"streams are stacked along the batch dimension (batch * {self.num_streams}); "
                f"got a first dimension of {streams.shape[0]}: expand the input first "
                "(stream_functions(n)[0])"
            )

    def residual(self, x: Tensor, f_x: Tensor) -> Tensor:
        """Not available: a stream site needs the streams before the branch runs (see the module docs)."""
        raise TypeError(self._not_a_gate())

    def residual_delta(self, x: Tensor, f_x: Tensor) -> Tensor:
        """Not available, as :meth:`residual`."""
        raise TypeError(self._not_a_gate())

    def _not_a_gate(self) -> str:
        return (f"{self.variant} is a stream-expanding residual (n = {self.num_streams} streams): it cannot "
                "combine a finished branch output with x. Install it with "
                "vectorgate_lab.peers.hyper_connect(model, ...); vectorgate.patch() cannot.")

    def extra_repr(self) -> str:
        return (f"dim={self.dim}, n={self.num_streams}, variant={self.variant}, "
                f"layer_index={self.layer_index}, params={self.num_parameters:,}")


def hyper_connections(dim: int, *, n: int = 4, **kwargs: Any) -> HyperConnectionSite:
    """Static Hyper-Connections (``hc[n=N]``): learned ``A_m, A_r, B`` only; ``n^2 + 2n`` parameters."""
    return HyperConnectionSite(dim, n=n, kind="hc", dynamic=False, **kwargs)


def hyper_connections_dynamic(dim: int, *, n: int = 4, **kwargs: Any) -> HyperConnectionSite:
    """Dynamic Hyper-Connections (``hc_dynamic[n=N]``): ``n^2 + 2n + (n + 3) d + 2`` parameters."""
    return HyperConnectionSite(dim, n=n, kind="hc", dynamic=True, **kwargs)


def manifold_hyper_connections(dim: int, *, n: int = 4, **kwargs: Any) -> HyperConnectionSite:
    """mHC (``mhc[n=N]``): Sinkhorn-projected ``A_r``; ``n^2 + 2n + (n + 3) d + 3`` parameters."""
    return HyperConnectionSite(dim, n=n, kind="mhc", **kwargs)


#: The stream-expanding variants by name (the lab's own registry: not in
#: :data:`vectorgate.variants.VARIANTS`, which holds ``(x, f) -> y`` gates only).
STREAM_VARIANTS: dict[str, Callable[..., HyperConnectionSite]] = {
    "hc": hyper_connections, "hc_dynamic": hyper_connections_dynamic, "mhc": manifold_hyper_connections,
}
for _factory in STREAM_VARIANTS.values():
    _factory.expands_stream = True  # type: ignore[attr-defined]


def is_stream_variant(name: str) -> bool:
    """Whether the variant ``name`` widens the residual stream (needs :func:`hyper_connect`)."""
    return name in STREAM_VARIANTS


def _first_tensor(args: tuple, kwargs: dict[str, Any], what: str) -> tuple[Tensor, Callable[[Tensor], tuple]]:
    """The residual stream a module is called with (first positional or ``hidden_states=``) and
    a function that rebuilds ``(args, kwargs)`` with a replacement."""
    if args and isinstance(args[0], Tensor):
        return args[0], lambda t: ((t, *args[1:]), kwargs)
    if isinstance(kwargs.get("hidden_states"), Tensor):
        return kwargs["hidden_states"], lambda t: (args, {**kwargs, "hidden_states": t})
    raise TypeError(f"hyper_connect expected {what} to be called with the residual stream as first "
                    "argument or hidden_states=")


def _map_first(output: Any, fn: Callable[[Tensor], Tensor]) -> Any:
    if isinstance(output, Tensor):
        return fn(output)
    if isinstance(output, tuple) and output and isinstance(output[0], Tensor):
        return (fn(output[0]), *output[1:])
    raise TypeError(f"hyper_connect expected a Tensor or a tuple starting with one, got {type(output).__name__}")


class _StreamEnds:
    """The hooks at both ends of the layer stack: expand the input, average the output streams."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.expand_fn, self.reduce_fn = stream_functions(n)

    def expand(self, module: nn.Module, args: tuple, kwargs: dict[str, Any]) -> tuple:
        x, rebuild = _first_tensor(args, kwargs, type(module).__name__)
        return rebuild(self.expand_fn(x))

    def reduce(self, module: nn.Module, args: tuple, kwargs: dict[str, Any], output: Any) -> Any:
        return _map_first(output, lambda streams: self.reduce_fn(streams) / self.n)


class HyperConnectionsHost:
    """What :func:`hyper_connect` did to a model: its sites and hooks; :meth:`remove` undoes it."""

    ATTR = "hyper_connections"

    def __init__(self, model: nn.Module, n: int, sites: list[HyperConnectionSite], handles: list[Any],
                 owners: list[nn.Module]) -> None:
        self.model, self.n, self.sites, self.handles, self.owners = model, n, sites, handles, owners

    def remove(self) -> None:
        """Remove every hook and site: the model computes its plain residuals again."""
        for handle in self.handles:
            handle.remove()
        self.handles.clear()
        for owner in self.owners:
            if self.ATTR in owner._modules:
                del owner._modules[self.ATTR]
        if getattr(self.model, "_vectorgate_streams", None) is self:
            object.__delattr__(self.model, "_vectorgate_streams")


def hyper_connect(
    model: nn.Module,
    layers: Sequence[tuple[nn.Module, Sequence[tuple[nn.Module, nn.Module]]]],
    *,
    dim: int,
    variant: str = "hc",
    **kwargs: Any,
) -> HyperConnectionsHost:
    """Give a pre-norm model ``n`` residual streams (HC / mHC), with forward hooks only.

    Args:
        model: the model (the host state is kept on it as ``model._vectorgate_streams``).
        layers: the residual layers in forward order, each as ``(layer, sites)``; ``sites``
            lists ``(norm, branch)`` per residual site in forward order: ``norm`` is the
            module the layer calls first on its residual stream (its input becomes the
            branch input), ``branch`` the module whose output the layer adds to the stream.
            E.g. GPT-2: ``(block, [(block.ln_1, block.attn), (block.ln_2, block.mlp)])``;
            timm ViT: ``(block, [(block.norm1, block.ls1), (block.norm2, block.ls2)])``.
            The first layer must receive the stream as first argument (or
            ``hidden_states=``); its input is expanded to n streams and the last layer's
            output is their mean (so the rest of the model never sees the streams).
        dim: feature dimension of the stream.
        variant: ``hc``, ``hc_dynamic`` or ``mhc`` (a name in :data:`STREAM_VARIANTS`).
        **kwargs: passed to the variant (``n``, ``sinkhorn_iters``).

    Returns:
        The :class:`HyperConnectionsHost`. The sites are registered on each layer as
        ``layer.hyper_connections`` (so they train, save and count with the model, and
        ``vectorgate.patching.gates`` finds them).

    The streams are reduced by their mean, where the papers (and the package's reduce) sum
    them: the two differ by the factor n, which the final norm of a pre-norm model
    (``ln_f``, timm's ``norm``) removes up to its epsilon; the mean keeps the scale of the
    plain model, so with ``hc``/``hc_dynamic`` at init (every stream equal to the plain
    residual stream, bit for bit) the whole model's output is the plain model's bit for bit
    (n = 2 or 4: summing n equal copies and dividing by n is exact).
    """
    if not is_stream_variant(variant):
        raise ValueError(f"{variant!r} is not a stream-expanding variant (e.g. hc, hc_dynamic, mhc)")
    if getattr(model, "_vectorgate_streams", None) is not None:
        raise ValueError(f"{type(model).__name__} already has hyper-connections")
    if not layers:
        raise ValueError("hyper_connect needs at least one layer")
    factory: dict[str, Any] = {}
    for p in model.parameters():
        if p.is_floating_point():
            factory = {"device": p.device, "dtype": p.dtype}
            break
    sites: list[HyperConnectionSite] = []
    built: list[tuple[nn.Module, list[HyperConnectionSite], Sequence[tuple[nn.Module, nn.Module]]]] = []
    for layer, layer_sites in layers:
        if HyperConnectionsHost.ATTR in layer._modules:
            raise ValueError(f"{type(layer).__name__} already holds hyper-connections")
        made = [STREAM_VARIANTS[variant](dim, layer_index=len(sites) + i, **factory, **kwargs)
                for i in range(len(layer_sites))]
        sites.extend(made)  # type: ignore[arg-type]
        built.append((layer, made, layer_sites))  # type: ignore[arg-type]
    n = sites[0].num_streams
    ends = _StreamEnds(n)
    handles: list[Any] = []
    owners = []
    for layer, made, layer_sites in built:
        layer.add_module(HyperConnectionsHost.ATTR, nn.ModuleList(made))
        owners.append(layer)
        for site, (norm, branch) in zip(made, layer_sites, strict=True):
            handles.append(norm.register_forward_pre_hook(site._read_hook, with_kwargs=True))
            handles.append(branch.register_forward_hook(site._write_hook, with_kwargs=True))
    handles.append(built[0][0].register_forward_pre_hook(ends.expand, with_kwargs=True))
    handles.append(built[-1][0].register_forward_hook(ends.reduce, with_kwargs=True))
    host = HyperConnectionsHost(model, n, sites, handles, owners)
    object.__setattr__(model, "_vectorgate_streams", host)
    return host
