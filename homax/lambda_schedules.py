"""λ schedules: callables ``count -> λ`` with the seed's t = count + 2."""

from homax._src.schedules import LAMBDA_TYPES
from homax._src.schedules import dynamic
from homax._src.schedules import fixed
from homax._src.schedules import hybrid
from homax._src.schedules import linear

__all__ = ("LAMBDA_TYPES", "dynamic", "fixed", "hybrid", "linear")
