"""Residual peers that are not ``(x, f) -> y`` gates, so not library variants.

Hyper-Connections and mHC (:mod:`vectorgate_lab.peers.hyper`) keep n copies of the residual
stream: ``vectorgate.patch()`` cannot install them and ``vectorgate.variants.VARIANTS`` does
not hold them. ``hyper_connect`` installs them in a block stack; the comparison harness runs
them as the arms ``hc``, ``hc_dynamic`` and ``mhc`` (``STREAM_VARIANTS``). Every name of
:mod:`vectorgate_lab.peers.hyper` is importable from here.
"""

from vectorgate_lab.peers import hyper as _hyper
from vectorgate_lab.peers.hyper import *  # noqa: F403  (its __all__, below)

__all__ = list(_hyper.__all__)
