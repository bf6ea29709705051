"""Bootstrap intervals of the disentanglement scores: degenerate data, coverage of the estimate, width vs data."""

from __future__ import annotations

import numpy as np
import pytest

from eimsdk.errors import InputError
from eimsdk.metrics.disentanglement import ResponseMatrix, dci_disentanglement, matrix_from_changes
from eimsdk.metrics.intervals import (bootstrap_dci, bootstrap_dci_difference, bootstrap_dci_from_matrix,
                                      bootstrap_mean)

COLS = ["shape", "colour", "size"]


def _tasks(spill: int, total: int) -> list[tuple[str, dict[str, float]]]:
    """Per row ``total`` edits that move their own reader; ``spill`` of them also move the next reader."""
    out = []
    for i, row in enumerate(COLS):
        for k in range(total):
            change = {c: float(c == row or (k < spill and c == COLS[(i + 1) % 3])) for c in COLS}
            out.append((row, change))
    return out


def test_identical_tasks_give_a_point_interval():
    lo, hi = bootstrap_dci(_tasks(0, 10), COLS, COLS, resamples=200)
    assert lo == hi == pytest.approx(1.0)
    m = ResponseMatrix(np.eye(3), COLS, COLS, [10, 10, 10])
    assert bootstrap_dci_from_matrix(m, resamples=200) == (pytest.approx(1.0), pytest.approx(1.0))


def test_interval_holds_the_estimate_and_narrows_with_more_tasks():
    small, large = _tasks(3, 10), _tasks(12, 40)  # the same spill rate, 4x the tasks
    d = dci_disentanglement(matrix_from_changes(small, COLS, COLS)).overall
    assert d == pytest.approx(dci_disentanglement(matrix_from_changes(large, COLS, COLS)).overall)
    lo_s, hi_s = bootstrap_dci(small, COLS, COLS, resamples=1000)
    lo_l, hi_l = bootstrap_dci(large, COLS, COLS, resamples=1000)
    assert lo_s < d < hi_s and lo_l < d < hi_l
    assert hi_l - lo_l < 0.75 * (hi_s - lo_s)
    lo_m, hi_m = bootstrap_dci_from_matrix(matrix_from_changes(small, COLS, COLS), resamples=1000)
    assert lo_m < d < hi_m


def test_mean_interval_of_a_fair_coin():
    # 100 draws of 0/1 with mean 0.5: standard error 0.05, so the 95% interval is about 0.5 +- 0.1.
    lo, hi = bootstrap_mean([0.0, 1.0] * 50, resamples=4000)
    assert 0.38 < lo < 0.44 and 0.56 < hi < 0.62
    assert bootstrap_mean([0.7] * 5) == (pytest.approx(0.7), pytest.approx(0.7))


def test_clear_errors():
    with pytest.raises(InputError, match="no tasks"):
        bootstrap_dci(_tasks(0, 2)[:2], COLS, COLS)
    with pytest.raises(InputError, match="task count"):
        bootstrap_dci_from_matrix(ResponseMatrix(np.eye(3), COLS, COLS, []))
    with pytest.raises(InputError, match="level"):
        bootstrap_mean([1.0, 2.0], level=1.5)
    with pytest.raises(InputError, match="non-empty"):
        bootstrap_mean([])


def _by_id(tasks):
    return {f"{row}-{k}": (row, change) for k, (row, change) in enumerate(tasks)}


def test_paired_difference_separates_a_leak_and_not_a_twin():
    clean, leaky = _by_id(_tasks(0, 30)), _by_id(_tasks(9, 30))
    d_leaky = dci_disentanglement(matrix_from_changes(list(leaky.values()), COLS, COLS)).overall
    res = bootstrap_dci_difference(clean, leaky, COLS, COLS, resamples=1000)
    assert res["tasks"] == 90 and res["difference"] == pytest.approx(1.0 - d_leaky)
    assert 0 < res["low"] < res["difference"] < res["high"] and res["p_value"] < 0.01
    twin = bootstrap_dci_difference(leaky, dict(leaky), COLS, COLS, resamples=300)
    assert twin["difference"] == 0.0 and twin["low"] == twin["high"] == 0.0 and twin["p_value"] == 1.0


def test_paired_difference_uses_only_shared_tasks_and_checks_them():
    clean, leaky = _by_id(_tasks(0, 10)), _by_id(_tasks(3, 10))
    extra = {**leaky, "only-here": ("shape", {c: 1.0 for c in COLS})}
    assert bootstrap_dci_difference(clean, extra, COLS, COLS, resamples=50)["tasks"] == 30
    with pytest.raises(InputError, match="share no task"):
        bootstrap_dci_difference(clean, {"x": ("shape", {c: 0.0 for c in COLS})}, COLS, COLS)
    moved = {k: ("colour" if v[0] == "shape" else v[0], v[1]) for k, v in leaky.items()}
    with pytest.raises(InputError, match="different attributes"):
        bootstrap_dci_difference(clean, moved, COLS, COLS)
