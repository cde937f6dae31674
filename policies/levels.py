"""The checks of levels and counts that every risk function shares.

Kept apart from :mod:`policies.binomial` so that the serving path (the live bound of
:mod:`policies.confidence_sequence`) can use them without importing SciPy: a worker starts
faster and smaller without it.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = ["check_level", "error_counts"]


def check_level(name: str, value: float) -> None:
    """Refuse a level (a rate, a confidence, a share) outside the open interval (0, 1)."""
    if not (isinstance(value, int | float) and 0.0 < value < 1.0):
        raise ValueError(f"{name} must be strictly between 0 and 1, got {value!r}")


def error_counts(errors: ArrayLike, trials: ArrayLike) -> tuple[NDArray[np.float64], ...]:
    """``(k, n)`` as float arrays broadcast together; refused unless finite with ``0 <= k <= n``."""
    k = np.asarray(errors, dtype=np.float64)
    n = np.asarray(trials, dtype=np.float64)
    if np.any(~np.isfinite(k)) or np.any(~np.isfinite(n)) or np.any(k < 0) or np.any(k > n):
        raise ValueError("counts must be finite with 0 <= errors <= trials")
    k, n = np.broadcast_arrays(k, n)
    return k, n
