"""Metrics of slide-level predictions."""

from __future__ import annotations

import numpy as np
from lifelines.utils import concordance_index


def c_index(time, risk, event) -> float:
    """Harrell's C-index of ``risk`` (higher = worse), computed by lifelines.

    lifelines expects scores where higher means longer survival, so the risk is negated here:
    mixing the two conventions silently gives 1 − C.

    >>> c_index([1, 2, 3], [3.0, 2.0, 1.0], [1, 1, 1])
    1.0
    """
    return float(concordance_index(np.asarray(time), -np.asarray(risk, dtype=float), np.asarray(event)))
