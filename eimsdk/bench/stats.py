"""Statistics of benchmark reports: Wilson score intervals on rates, exact McNemar tests between paired methods.

Every rate in a report is a proportion of edit tasks, so it carries a Wilson score interval (Wilson, 1927; the
interval Newcombe, 1998, recommends over the Wald interval for small counts and rates near 0 or 1). Two methods
run on the same tasks are compared by the exact two-sided McNemar test: only the discordant tasks (one method
succeeds, the other fails) carry information, and under the null hypothesis each discordant task is a fair coin,
so the test is a two-sided sign test on ``b`` successes of one method out of ``b + c`` discordant tasks.

Two samples of class labels (what a model generates against what its training data holds) are compared by their
total variation distance and a permutation test of it (:func:`distribution_test`): under the null hypothesis
that both come from one distribution the labels are exchangeable, so the p-value is the share of random
relabellings whose distance is at least the observed one.
"""

from __future__ import annotations

import math
from itertools import combinations
from statistics import NormalDist
from typing import Any, Iterable, Mapping

CONFIDENCE = 0.95


def wilson_interval(successes: int, n: int, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Wilson score interval of a proportion ``successes / n``; ``(0, 1)`` when ``n = 0``."""
    if n < 0 or not 0 <= successes <= n:
        raise ValueError(f"need 0 <= successes <= n, got successes={successes}, n={n}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")
    if n == 0:
        return 0.0, 1.0
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


def mcnemar_exact(only_a: int, only_b: int) -> float:
    """Exact two-sided McNemar p-value from the discordant counts: ``P(X <= min) * 2`` for ``X ~ Bin(b + c, 1/2)``."""
    if only_a < 0 or only_b < 0:
        raise ValueError(f"discordant counts must be non-negative, got {only_a} and {only_b}")
    n = only_a + only_b
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(min(only_a, only_b) + 1)) / 2**n
    return min(1.0, 2 * tail)


def rate_interval(values: Iterable[Any], confidence: float = CONFIDENCE) -> list[float] | None:
    """``[low, high]`` Wilson interval of the rate of true values (``None`` entries are left out), or None if empty."""
    outcomes = [bool(v) for v in values if v is not None]
    if not outcomes:
        return None
    low, high = wilson_interval(sum(outcomes), len(outcomes), confidence)
    return [round(low, 4), round(high, 4)]


def paired_test(a: Mapping[str, bool], b: Mapping[str, bool]) -> dict[str, Any]:
    """McNemar test of two methods' outcomes per task, on the tasks both have."""
    common = [k for k in a if k in b]
    only_a = sum(bool(a[k]) and not b[k] for k in common)
    only_b = sum(bool(b[k]) and not a[k] for k in common)
    n = len(common)
    rate_a = sum(bool(a[k]) for k in common) / n if n else None
    rate_b = sum(bool(b[k]) for k in common) / n if n else None
    return {"n": n, "only_a": only_a, "only_b": only_b,
            "rate_a": None if rate_a is None else round(rate_a, 4),
            "rate_b": None if rate_b is None else round(rate_b, 4),
            "difference": None if n == 0 else round(rate_a - rate_b, 4),
            "p_value": round(mcnemar_exact(only_a, only_b), 6)}


def format_p(p_value: float) -> str:
    """A p-value of :func:`paired_test` for a table: it is rounded to 6 places, so 0 means below ``1e-6``."""
    return "< 1e-6" if p_value == 0 else f"{p_value:.3g}"


def paired_tests(outcomes: Mapping[str, Mapping[str, bool]]) -> list[dict[str, Any]]:
    """A McNemar test for every pair of methods: ``outcomes`` is method -> task id -> outcome (e.g. precise)."""
    return [{"a": a, "b": b, **paired_test(outcomes[a], outcomes[b])} for a, b in combinations(outcomes, 2)]


def distribution_test(a: Iterable[str], b: Iterable[str], *, resamples: int = 2000, seed: int = 0) -> dict[str, Any]:
    """Total variation distance between the class frequencies of two label samples and its permutation p-value
    (``(1 + #{permuted >= observed}) / (1 + resamples)``, so never 0). A small distance with a large p means no
    difference the sample sizes can detect, not proof of equality."""
    import numpy as np

    a, b = list(a), list(b)
    if not a or not b:
        raise ValueError(f"both samples need labels, got {len(a)} and {len(b)}")
    if resamples < 1:
        raise ValueError(f"resamples must be positive, got {resamples}")
    classes, codes = np.unique(np.array(a + b, dtype=object).astype(str), return_inverse=True)
    k, n = len(classes), len(a)

    def distance(first: np.ndarray) -> np.ndarray:  # (R, n_a + n_b) codes -> (R,) TV distances
        in_a = np.stack([np.bincount(row[:n], minlength=k) for row in first]) / n
        in_b = np.stack([np.bincount(row[n:], minlength=k) for row in first]) / len(b)
        return 0.5 * np.abs(in_a - in_b).sum(axis=1)

    observed = float(distance(codes[None])[0])
    rng = np.random.default_rng(seed)
    permuted = distance(np.stack([rng.permutation(codes) for _ in range(resamples)]))
    p_value = (1 + int((permuted >= observed - 1e-12).sum())) / (1 + resamples)
    return {"tv": round(observed, 4), "p_value": round(p_value, 6), "n_a": n, "n_b": len(b)}
