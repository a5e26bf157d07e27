"""The edits that make a site whose branch is one token-wise module skip tokens."""

from __future__ import annotations

from typing import Any

from torch import nn

from vectorgate.patching import Change, GateSite, SetAttribute
from vectorgate.skip.decision import SkipSite
from vectorgate.skip.gather import run_on_kept

__all__ = ["branch_skip_changes"]


def branch_skip_changes(branch: nn.Module, site: GateSite, skip: SkipSite) -> list[Change]:
    """Skip tokens in ``branch``, a token-wise module (an MLP) gated by forward hooks.

    The site's hooks put what the gate reads on the site (``site.inflight``: x, or the
    pre-norm's output) before the branch runs, and turn the branch's output (or that of the
    module right after it, such as timm's LayerScale) into the gate's delta. Here
    ``branch.forward`` is overridden on the instance: it asks ``skip`` which tokens to keep,
    runs the class's own forward on those rows only and returns zeros for the others; the
    site then takes the z the decision computed, so x is projected once. A skipped token's
    delta is the gate's term on x alone (``expm1(s) * x`` for VectorGate: y = alpha * x).
    """
    dense_forward = type(branch).forward

    def skipping_forward(h: Any, *args: Any, **kwargs: Any) -> Any:
        gate_in = site.inflight
        _, keep = (None, None) if gate_in is None else skip.decide(gate_in)
        if keep is None:
            return dense_forward(branch, h, *args, **kwargs)
        return run_on_kept(lambda rows: dense_forward(branch, rows, *args, **kwargs), h, keep)

    return [SetAttribute(branch, "forward", skipping_forward), SetAttribute(site, "skip", skip)]
