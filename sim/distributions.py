"""Distribution helpers shared by workloads (token lengths) and the fleet (cold-start durations)."""

from __future__ import annotations

import numpy as np


def lognormal(rng: np.random.Generator, *, mean: float, cv: float, size: int | None = None) -> np.ndarray:
    """Lognormal draws with the given mean and coefficient of variation (std / mean)."""
    sigma2 = np.log1p(cv**2)
    return np.asarray(rng.lognormal(np.log(mean) - sigma2 / 2, np.sqrt(sigma2), size))
