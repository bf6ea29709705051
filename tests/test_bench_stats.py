"""Wilson intervals and exact McNemar tests against published and hand-computed values; the permutation test of
two label distributions by hand and by its error rate under the null."""

from __future__ import annotations

import math

import pytest

from eimsdk.bench.stats import (distribution_test, mcnemar_exact, paired_test, paired_tests, rate_interval,
                                wilson_interval)


@pytest.mark.parametrize("successes, n, low, high", [
    # Newcombe (1998), Statistics in Medicine 17:857, Table I, method 3 (score interval without correction)
    (81, 263, 0.2553, 0.3662),
    (15, 148, 0.0624, 0.1605),
    (0, 20, 0.0, 0.1611),
    (1, 29, 0.0061, 0.1718),
])
def test_wilson_matches_newcombe_table(successes, n, low, high):
    lo, hi = wilson_interval(successes, n)
    assert lo == pytest.approx(low, abs=1e-4)
    assert hi == pytest.approx(high, abs=1e-4)


def test_wilson_by_hand_for_half_of_four():
    # p = 1/2, n = 4, z = 1.959964: centre 1/2; half = z / (1 + z^2/4) * sqrt(1/16 + z^2/64)
    z = 1.959963984540054
    half = z / (1 + z * z / 4) * math.sqrt(1 / 16 + z * z / 64)
    lo, hi = wilson_interval(2, 4)
    assert (lo, hi) == pytest.approx((0.5 - half, 0.5 + half), abs=1e-12)
    assert lo == pytest.approx(0.1500, abs=1e-4) and hi == pytest.approx(0.8500, abs=1e-4)


def test_wilson_edges_and_confidence():
    assert wilson_interval(0, 0) == (0.0, 1.0)
    lo, hi = wilson_interval(10, 10)
    assert hi == 1.0 and lo == pytest.approx(10 / (10 + 1.959963984540054**2), abs=1e-12)  # n / (n + z^2)
    narrow, wide = wilson_interval(30, 100, 0.8), wilson_interval(30, 100, 0.99)
    assert wide[0] < narrow[0] < 0.3 < narrow[1] < wide[1]
    with pytest.raises(ValueError):
        wilson_interval(5, 4)
    with pytest.raises(ValueError):
        wilson_interval(1, 4, confidence=1.0)


@pytest.mark.parametrize("b, c, p", [
    (0, 0, 1.0),
    (0, 5, 2 / 32),  # 2 * P(X = 0), X ~ Bin(5, 1/2)
    (1, 9, 2 * 11 / 1024),  # 2 * (1 + 10) / 2^10
    (9, 1, 2 * 11 / 1024),
    (3, 3, 1.0),  # the two-sided tail is capped at 1
    (2, 8, 2 * (1 + 10 + 45) / 1024),  # 0.109375
    (0, 6, 2 / 64),  # 0.03125: six discordant tasks all one way are the fewest that reach p < 0.05
])
def test_mcnemar_exact_by_hand(b, c, p):
    assert mcnemar_exact(b, c) == pytest.approx(p, rel=1e-12)


def test_mcnemar_rejects_negative_counts():
    with pytest.raises(ValueError):
        mcnemar_exact(-1, 3)


def test_paired_test_uses_only_common_tasks_and_counts_discordant_pairs():
    a = {"t1": True, "t2": True, "t3": False, "t4": True, "extra": True}
    b = {"t1": True, "t2": False, "t3": True, "t4": False}
    res = paired_test(a, b)
    assert res["n"] == 4
    assert (res["only_a"], res["only_b"]) == (2, 1)
    assert res["rate_a"] == 0.75 and res["rate_b"] == 0.5 and res["difference"] == 0.25
    assert res["p_value"] == pytest.approx(1.0)  # 2 * P(X <= 1), X ~ Bin(3, 1/2) = 2 * 4/8


def test_paired_tests_cover_every_pair_once():
    outcomes = {"m1": {"x": True}, "m2": {"x": False}, "m3": {"x": True}}
    pairs = [(r["a"], r["b"]) for r in paired_tests(outcomes)]
    assert pairs == [("m1", "m2"), ("m1", "m3"), ("m2", "m3")]


def test_rate_interval_skips_missing_values():
    assert rate_interval([]) is None
    assert rate_interval([None, None]) is None
    lo, hi = rate_interval([True, None, False, True, False])  # 2 of 4
    assert lo == pytest.approx(0.15, abs=1e-4) and hi == pytest.approx(0.85, abs=1e-4)


def test_distribution_test_distance_by_hand_and_its_extremes():
    # a: x 1/2, y 1/2; b: x 3/4, y 1/4 -> TV = (1/4 + 1/4) / 2
    assert distribution_test(list("xxyy"), list("xxxy"))["tv"] == 0.25
    apart = distribution_test(["x"] * 30, ["y"] * 30, resamples=500)
    assert apart["tv"] == 1.0 and apart["p_value"] == pytest.approx(1 / 501, abs=1e-6)  # no relabelling separates them again
    same = distribution_test(list("xyz") * 10, list("zyx") * 10, resamples=500)
    assert same["tv"] == 0.0 and same["p_value"] == 1.0
    assert distribution_test(["x"], ["y"], resamples=50)["p_value"] == 1.0  # every relabelling is as far apart


def test_distribution_test_rejects_at_its_level_under_the_null_and_detects_a_shift():
    import numpy as np

    rng = np.random.default_rng(3)
    classes, probs = ["none", "circle", "square", "triangle"], [0.25, 0.25, 0.25, 0.25]
    null_p = [distribution_test(rng.choice(classes, 64, p=probs), rng.choice(classes, 64, p=probs),
                                resamples=199, seed=i)["p_value"] for i in range(200)]
    assert 0.01 <= np.mean(np.array(null_p) <= 0.05) <= 0.10  # a level-0.05 test rejects about 5% of true nulls
    shifted = [0.55, 0.15, 0.15, 0.15]  # a model that drops the second object too often
    power = [distribution_test(rng.choice(classes, 256, p=probs), rng.choice(classes, 256, p=shifted),
                               resamples=199, seed=i)["p_value"] for i in range(20)]
    assert np.mean(np.array(power) <= 0.05) >= 0.9


def test_distribution_test_needs_labels():
    with pytest.raises(ValueError, match="both samples"):
        distribution_test([], ["x"])
