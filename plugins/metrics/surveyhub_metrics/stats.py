"""Small statistics shared by the metrics: proportions, means and 95% margins of error."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping
from collections.abc import Sequence

Z95 = 1.959964  # two-sided 95% normal quantile
# Two-sided 95% Student t quantiles for 1..30 degrees of freedom; beyond, z is close enough.
T95 = (
    12.706205, 4.302653, 3.182446, 2.776445, 2.570582, 2.446912, 2.364624, 2.306004,
    2.262157, 2.228139, 2.200985, 2.178813, 2.160369, 2.144787, 2.131450, 2.119905,
    2.109816, 2.100922, 2.093024, 2.085963, 2.079614, 2.073873, 2.068658, 2.063899,
    2.059539, 2.055529, 2.051831, 2.048407, 2.045230, 2.042272,
)  # fmt: skip


def percent(part: int, n: int) -> float | None:
    """`part` as a percentage of `n` (None when there is nothing to divide)."""
    return 100.0 * part / n if n else None


def proportion_margin(part: int, n: int) -> float | None:
    """95% margin of error, in percentage points, of the share `part / n`.

    Half the width of the Wilson score interval: unlike the plain normal approximation it
    does not shrink to ±0 when every answer is in the same group.
    """
    if n < 2:
        return None
    p = part / n
    z2 = Z95 * Z95
    half = Z95 * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    return 100.0 * half


def net_margin(plus: int, minus: int, n: int) -> float | None:
    """95% margin of error, in points, of `%plus - %minus` (e.g. NPS) over `n` answers."""
    if n < 2:
        return None
    p_plus, p_minus = plus / n, minus / n
    variance = p_plus + p_minus - (p_plus - p_minus) ** 2
    return 100.0 * Z95 * math.sqrt(variance / n)


def mean_and_margin(values: Sequence[int]) -> tuple[float | None, float | None]:
    """The mean and its 95% margin of error (Student t, sample standard deviation)."""
    return mean_and_margin_of(Counter(values))


def mean_and_margin_of(counts: Mapping[int, int]) -> tuple[float | None, float | None]:
    """`mean_and_margin` of the values `counts` stands for (value → how many).

    Sums of the (integer) values and of their squares are exact, so the variance is
    computed without rounding until its final division: the same numbers from a list of
    five answers or from the counts of a million.
    """
    n = sum(counts.values())
    if n == 0:
        return None, None
    total = sum(value * count for value, count in counts.items())
    mean = total / n
    if n < 2:
        return mean, None
    squares = sum(value * value * count for value, count in counts.items())
    variance = (n * squares - total * total) / (n * (n - 1))
    quantile = T95[n - 2] if n - 1 <= len(T95) else Z95
    return mean, quantile * math.sqrt(variance / n)
