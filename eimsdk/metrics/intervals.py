"""Percentile bootstrap intervals for the disentanglement scores: ``D`` over edit tasks, ``S`` over source images.

``D`` (:mod:`eimsdk.metrics.disentanglement`) is a function of the matrix of mean reader changes per edited
attribute, so its interval resamples the edit tasks of each edited attribute with replacement (each row keeps its
task count) and recomputes ``D``. A benchmark's ``summary.json`` keeps only the averaged matrix and the row counts;
for it, :func:`bootstrap_dci_from_matrix` redraws each cell of a change-rate matrix as ``Binomial(n_i, M_ij) / n_i``,
cells independently (the per-task joint changes are not stored). ``S`` (:mod:`eimsdk.metrics.internal`) is the mean
of per-image scores, so its interval resamples images.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from eimsdk.errors import InputError
from eimsdk.metrics.disentanglement import ResponseMatrix, dci_disentanglement


MIN_PAIRED = 5  # fewest shared tasks per edited attribute (or shared sources) for a paired interval and p-value


def _two_sided_p(samples: np.ndarray, resamples: int) -> float:
    """Bootstrap p of "no difference": twice the smaller share of resamples on either side of 0, at least
    ``1 / resamples`` (a bootstrap cannot resolve less: report that floor, not 0)."""
    return min(1.0, max(1.0 / resamples, 2 * min(float(np.mean(samples <= 0)), float(np.mean(samples >= 0)))))


def _percentiles(samples: np.ndarray, level: float) -> tuple[float, float]:
    if not 0.0 < level < 1.0:
        raise InputError(f"level must lie in (0, 1), got {level!r}")
    lo, hi = np.nanpercentile(samples, [50 * (1 - level), 50 * (1 + level)])
    return float(lo), float(hi)


def bootstrap_dci(changes: Sequence[tuple[str, Mapping[str, float]]], rows: Sequence[str], cols: Sequence[str], *,
                  resamples: int = 2000, level: float = 0.95, seed: int = 0) -> tuple[float, float]:
    """Interval of ``D`` from per-task ``(edited attribute, {read attribute: change})``, resampling tasks per row."""
    by_row = {r: [c for a, c in changes if a == r] for r in rows}
    empty = [r for r, recs in by_row.items() if not recs]
    if empty:
        raise InputError(f"rows {empty} have no tasks; every row needs at least one")
    missing = sorted({col for recs in by_row.values() for c in recs for col in cols if col not in c})
    if missing:
        raise InputError(f"some tasks have no change for reader columns {missing}")
    tasks = [np.array([[c[col] for col in cols] for c in recs], dtype=np.float64) for recs in by_row.values()]
    rng = np.random.default_rng(seed)
    scores = np.empty(resamples)
    for b in range(resamples):
        drawn = np.stack([t[rng.integers(len(t), size=len(t))].mean(axis=0) for t in tasks])  # (rows, m)
        scores[b] = dci_disentanglement(drawn, list(rows), list(cols)).overall
    return _percentiles(scores, level)


def bootstrap_dci_from_matrix(matrix: ResponseMatrix, *, resamples: int = 2000, level: float = 0.95,
                              seed: int = 0) -> tuple[float, float]:
    """Interval of ``D`` from a change-rate matrix and its row counts alone (parametric; module docstring)."""
    m = np.asarray(matrix.matrix, dtype=np.float64)
    if len(matrix.counts) != m.shape[0] or min(matrix.counts, default=0) < 1:
        raise InputError(f"matrix needs a positive task count per row, got counts={matrix.counts}")
    if m.min() < 0 or m.max() > 1:
        raise InputError("matrix entries must be change rates in [0, 1] (categorical readers)")
    n = np.asarray(matrix.counts)[:, None]  # (rows, 1)
    rng = np.random.default_rng(seed)
    scores = np.array([dci_disentanglement(rng.binomial(n, m) / n, matrix.rows, matrix.cols).overall
                       for _ in range(resamples)])
    return _percentiles(scores, level)


def bootstrap_mean(values: Sequence[float], *, resamples: int = 2000, level: float = 0.95,
                   seed: int = 0) -> tuple[float, float]:
    """Interval of the mean of ``values`` (e.g. per-image ``S_n``), resampling them with replacement."""
    x = np.asarray(values, dtype=np.float64)
    if x.ndim != 1 or len(x) < 1:
        raise InputError(f"values must be a non-empty list of numbers, got shape {x.shape}")
    rng = np.random.default_rng(seed)
    return _percentiles(x[rng.integers(len(x), size=(resamples, len(x)))].mean(axis=1), level)


def bootstrap_dci_difference(a: Mapping[str, tuple[str, Mapping[str, float]]],
                             b: Mapping[str, tuple[str, Mapping[str, float]]], rows: Sequence[str],
                             cols: Sequence[str], *, resamples: int = 2000, level: float = 0.95,
                             seed: int = 0) -> dict[str, float | int]:
    """Paired bootstrap of ``D_a - D_b`` on the tasks both ran: task id -> ``(edited attribute, changes)``.

    Each resample draws the shared task ids of every edited attribute with replacement and scores both models on
    the *same* draw, so task difficulty cancels. Returns the difference on all shared tasks, its percentile
    interval and a two-sided bootstrap p-value (:func:`_two_sided_p`); interval and p are ``None`` (and nothing is
    resampled) when an edited attribute has fewer than ``MIN_PAIRED`` tasks.
    """
    shared = [k for k in a if k in b]
    if not shared:
        raise InputError("the two runs share no task id; compare runs of the same manifest")
    wrong = [k for k in shared if a[k][0] != b[k][0]]
    if wrong:
        raise InputError(f"task {wrong[0]!r} edits different attributes in the two runs; not the same manifest")
    by_row = {r: [k for k in shared if a[k][0] == r] for r in rows}
    empty = [r for r, ids in by_row.items() if not ids]
    if empty:
        raise InputError(f"rows {empty} have no shared tasks; every row needs at least one")
    arrays = [(np.array([[a[k][1][c] for c in cols] for k in ids], dtype=np.float64),
               np.array([[b[k][1][c] for c in cols] for k in ids], dtype=np.float64)) for ids in by_row.values()]
    result: dict[str, float | int | None] = {"difference": 0.0, "low": None, "high": None, "p_value": None,
                                             "tasks": len(shared)}

    def score(draws: list[np.ndarray]) -> float:
        da = np.stack([ta[d].mean(axis=0) for (ta, _), d in zip(arrays, draws)])
        db = np.stack([tb[d].mean(axis=0) for (_, tb), d in zip(arrays, draws)])
        return (dci_disentanglement(da, list(rows), list(cols)).overall
                - dci_disentanglement(db, list(rows), list(cols)).overall)

    result["difference"] = float(score([np.arange(len(ta)) for ta, _ in arrays]))
    # With a handful of tasks per row the resamples barely vary, so an interval and a p-value would look far surer
    # than the data are: none then.
    if min(len(ta) for ta, _ in arrays) < MIN_PAIRED:
        return result
    rng = np.random.default_rng(seed)
    diffs = np.array([score([rng.integers(len(ta), size=len(ta)) for ta, _ in arrays]) for _ in range(resamples)])
    result["low"], result["high"] = _percentiles(diffs, level)
    result["p_value"] = _two_sided_p(diffs, resamples)
    return result


def bootstrap_paired_mean(a: Mapping[str, float], b: Mapping[str, float], *, resamples: int = 2000,
                          level: float = 0.95, seed: int = 0) -> dict[str, float | int | None] | None:
    """Mean of ``a[k] - b[k]`` over the shared keys (e.g. per-source ``S`` by source id), with a bootstrap
    interval and two-sided p-value over those keys; ``None`` without shared keys, and no interval or p-value on
    fewer than ``MIN_PAIRED`` of them."""
    shared = [k for k in a if k in b]
    if not shared:
        return None
    diffs = np.array([a[k] - b[k] for k in shared], dtype=np.float64)
    result: dict[str, float | int | None] = {"difference": float(diffs.mean()), "low": None, "high": None,
                                             "p_value": None, "sources": len(shared)}
    if len(shared) < MIN_PAIRED:
        return result
    rng = np.random.default_rng(seed)
    means = diffs[rng.integers(len(diffs), size=(resamples, len(diffs)))].mean(axis=1)
    result["low"], result["high"] = _percentiles(means, level)
    result["p_value"] = _two_sided_p(means, resamples)
    return result
