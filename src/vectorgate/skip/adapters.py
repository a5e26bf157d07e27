"""The edits that make a patched site skip tokens; used by the families' ``skip_changes``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import nn

from vectorgate.patching import Change, GateBranchOutput, SetAttribute
from vectorgate.patching.stacking import UNSTACK_BEFORE_SKIPPING
from vectorgate.skip.decision import SkipSite
from vectorgate.skip.gather import run_on_kept

__all__ = ["hooked_branch_skip_changes"]


def hooked_branch_skip_changes(
    branch: nn.Module, hooked: nn.Module, skip: SkipSite, patch_changes: Sequence[Change]
) -> list[Change]:
    """Skip tokens in a pre-norm site that :func:`vectorgate.patch` gated with forward hooks.

    The site's hooks capture the residual stream x on the pre-norm and turn the output of
    ``hooked`` (the branch itself, or the layer-scale module right after it) into the gate's
    delta. Here ``branch.forward`` is overridden on the instance: it asks ``skip`` which
    tokens to keep, runs the class's own forward on those rows only and returns zeros for
    the others; the hook then receives the z the decision computed, so x is projected once.
    A skipped token's delta is the gate's term on x alone (``expm1(s) * x`` for VectorGate:
    y = alpha * x). ``branch`` must be token-wise (an MLP).

    Raises:
        ValueError: no hook of the patch sits on ``hooked``.
    """
    hooks = next((c.hooks for c in patch_changes if isinstance(c, GateBranchOutput) and c.branch is hooked), None)
    if hooks is None or hooks.gate is not skip.gate:
        raise ValueError(f"no vectorgate hook on {type(hooked).__name__} for the gate of {skip.name}")
    if hooks.link is not None:
        raise ValueError(UNSTACK_BEFORE_SKIPPING)
    dense_forward = type(branch).forward

    def skipping_forward(h: Any, *args: Any, **kwargs: Any) -> Any:
        gate_in = hooks.gate_in  # x, or the pre-norm's output with gate_source="normed"
        _, keep = (None, None) if gate_in is None else skip.decide(gate_in)
        if keep is None:
            return dense_forward(branch, h, *args, **kwargs)
        return run_on_kept(lambda rows: dense_forward(branch, rows, *args, **kwargs), h, keep)

    return [SetAttribute(branch, "forward", skipping_forward), SetAttribute(hooks, "z_source", skip.take_z)]
