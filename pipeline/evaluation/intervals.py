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


def accuracy_cell(p: float | None, n: int, min_n: int = MIN_N) -> str:
    """'12.3 [10.1, 14.8]' (percent, 95 % Wilson interval) or '—' when n < min_n."""
    if p is None or n < min_n:
        return "—"
    lo, hi = wilson(round(p * n), n)
    return f"{100 * p:.1f} [{100 * lo:.1f}, {100 * hi:.1f}]"
