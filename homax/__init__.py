"""homax: the homogeneity-driven training rule as an optax transformation.

The public API is this module. See ``README.md`` and ``SPEC`` notes in the
docstrings for the equations.
"""

from homax import lambda_schedules
from homax._src.derivative import RULES
from homax._src.derivative import homogeneity_derivative
from homax._src.derivative import similarity
from homax._src.derivative import sums
from homax._src.forward import forward_gradient
from homax._src.paper import VARIANTS
from homax._src.paper import Variant
from homax._src.paper import lambda_schedule_for
from homax._src.paper import paper_homogeneity_learning_rate
from homax._src.paper import paper_optimizer
from homax._src.paper import total_steps
from homax._src.schedules import dynamic_homogeneity_lr
from homax._src.transform import HomogeneityState
from homax._src.transform import find_state
from homax._src.transform import homogeneity
from homax._src.transform import metrics

__version__ = "0.1.0"

__all__ = (
    "RULES",
    "VARIANTS",
    "HomogeneityState",
    "Variant",
    "dynamic_homogeneity_lr",
    "find_state",
    "forward_gradient",
    "homogeneity",
    "homogeneity_derivative",
    "lambda_schedule_for",
    "lambda_schedules",
    "metrics",
    "paper_homogeneity_learning_rate",
    "paper_optimizer",
    "similarity",
    "sums",
    "total_steps",
)
