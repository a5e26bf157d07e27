"""vectorgate: per-dimension exponential gating for residual connections.

    s = c * tanh(g(x)),  alpha = exp(s),  beta = exp(-s),  y = alpha * x + beta * f(x)
"""

from vectorgate.functional import exp_gated_residual, gated_residual
from vectorgate.gate import GateOutput, VectorGate
from vectorgate.residual import GatedResidual

__version__ = "0.1.0"

__all__ = [
    "GateOutput",
    "GatedResidual",
    "VectorGate",
    "__version__",
    "exp_gated_residual",
    "gated_residual",
]
