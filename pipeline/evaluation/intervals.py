"""Confidence intervals for the accuracies every table prints (one definition for the whole project)."""
from __future__ import annotations

import math

Z95 = 1.959964


def wilson(correct: int, n: int, z: float = Z95) -> tuple[float, float]:
    """95 % Wilson score interval for `correct` successes in `n` trials; (0, 1) when n = 0 (nothing is known)."""
    if n == 0:
        return 0.0, 1.0
    p = correct / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


MIN_N = 30  # a table cell resting on fewer targets shows "—": its interval would be wider than any effect
