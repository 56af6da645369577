"""Small statistics shared by the metrics: proportions, means and 95% margins of error."""

from __future__ import annotations

import math
from collections.abc import Sequence

Z95 = 1.959964  # two-sided 95% normal quantile


def percent(part: int, n: int) -> float | None:
    """`part` as a percentage of `n` (None when there is nothing to divide)."""
    return 100.0 * part / n if n else None


def proportion_margin(part: int, n: int) -> float | None:
    """95% margin of error, in percentage points, of the share `part / n` (Wald)."""
    if n < 2:
        return None
    p = part / n
    return 100.0 * Z95 * math.sqrt(p * (1 - p) / n)


def net_margin(plus: int, minus: int, n: int) -> float | None:
    """95% margin of error, in points, of `%plus - %minus` (e.g. NPS) over `n` answers."""
    if n < 2:
        return None
    p_plus, p_minus = plus / n, minus / n
    variance = p_plus + p_minus - (p_plus - p_minus) ** 2
    return 100.0 * Z95 * math.sqrt(variance / n)


def mean_and_margin(values: Sequence[int]) -> tuple[float | None, float | None]:
    """The mean and its 95% margin of error (sample standard deviation, n - 1)."""
    n = len(values)
    if n == 0:
        return None, None
    mean = sum(values) / n
    if n < 2:
        return mean, None
    variance = sum((v - mean) ** 2 for v in values) / (n - 1)
    return mean, Z95 * math.sqrt(variance / n)
