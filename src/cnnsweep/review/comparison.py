"""Is it better than the baseline, and by more than seed noise?

The baseline of a sweep is the run of its composed config: the search's trial 0 (marked in its
metrics.json), else, in a grid, the job whose swept keys all have the sweep config's values (Hydra's
multirun.yaml); or a run named by the user. Every row gets its objective's difference to the baseline;
configurations run with several seeds get Welch's t-test of their objective values against the
baseline's, two-sided, for unequal variances, so a gain can be told from noise.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence

NOISE_LEVEL = 0.05  # p-values below this count as beyond seed noise


@dataclass(frozen=True)
class TTest:
    t: float
    df: float
    p_value: float  # two-sided


def welch_t_test(sample: Sequence[float], baseline: Sequence[float]) -> Optional[TTest]:
    """Welch's t-test of two samples' means; None without two values on each side or without spread."""
    if len(sample) < 2 or len(baseline) < 2:
        return None
    mean_a, mean_b = _mean(sample), _mean(baseline)
    var_a, var_b = _variance(sample, mean_a) / len(sample), _variance(baseline, mean_b) / len(baseline)
    if var_a + var_b == 0:
        return None
    t = (mean_a - mean_b) / math.sqrt(var_a + var_b)
    df = (var_a + var_b) ** 2 / ((var_a**2 / (len(sample) - 1) if var_a else 0.0)
                                 + (var_b**2 / (len(baseline) - 1) if var_b else 0.0))
    return TTest(t, df, student_t_two_sided_p(t, df))


def student_t_two_sided_p(t: float, df: float) -> float:
    """P(|T| >= |t|) for Student's t with df degrees of freedom: I_{df/(df+t^2)}(df/2, 1/2)."""
    return _regularized_beta(df / (df + t * t), df / 2.0, 0.5)


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values)


def _variance(values: Sequence[float], mean: float) -> float:
    return sum((value - mean) ** 2 for value in values) / (len(values) - 1)


def _regularized_beta(x: float, a: float, b: float) -> float:
    """The regularized incomplete beta function I_x(a, b), by its continued fraction (Lentz's method)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    if x > (a + 1.0) / (a + b + 2.0):  # the fraction converges fast only below this point
        return 1.0 - _regularized_beta(1.0 - x, b, a)
    return math.exp(log_front) * _beta_fraction(x, a, b) / a


def _beta_fraction(x: float, a: float, b: float) -> float:
    tiny, epsilon = 1e-300, 1e-15
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    result = d
    for m in range(1, 500):
        for numerator in (m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
                          -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))):
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + numerator / c
            c = c if abs(c) > tiny else tiny
            result *= c * d
        if abs(c * d - 1.0) < epsilon:
            break
    return result
