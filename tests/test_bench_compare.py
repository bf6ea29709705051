"""The cross-model disentanglement table: D with intervals over tasks (or from a stored matrix), S over sources."""

from __future__ import annotations

import json

import pytest

from eimsdk.bench.compare import comparison_markdown, comparison_rows, load_run, main
from eimsdk.bench.report import summarize
from eimsdk.errors import InputError

ATTRS = ["shape", "colour"]


def _results(model: str, spill: int, total: int = 10) -> list[dict]:
    """``total`` edits per attribute moving their own reader; ``spill`` of them also move the other reader."""
    out = []
    for attribute in ATTRS:
        for k in range(total):
            other = ATTRS[1 - ATTRS.index(attribute)]
            changes = {attribute: 1.0, other: float(k < spill)}
            out.append({"id": f"{attribute}-{k}", "model": model, "method": "hsds", "attribute": attribute,
                        "edits": [{"strength": 1.0, "success": True, "preserved_all": k >= spill,
                                   "changes": changes, "preserved": {other: k >= spill}}]})
    return out


def test_rows_rank_models_and_carry_task_intervals(tmp_path):
    results = _results("clean", 0) + _results("leaky", 5)
    summary = summarize(results, [1.0], internal={"clean": {"hsds": {"score": 0.9, "sources": 3,
                                                                     "per_source": [0.9, 0.9, 0.9]}}})
    rows = {r["model"]: r for r in comparison_rows(summary, results, resamples=300)}
    assert rows["clean"]["D"] == pytest.approx(1.0) and rows["clean"]["D_interval"] == (1.0, 1.0)
    assert rows["leaky"]["D"] < 1.0 and rows["leaky"]["D_interval_kind"] == "tasks"
    lo, hi = rows["leaky"]["D_interval"]
    assert lo < rows["leaky"]["D"] < hi
    assert rows["clean"]["S"] == 0.9 and rows["clean"]["S_interval"] == (pytest.approx(0.9), pytest.approx(0.9))
    assert "S" not in rows["leaky"] and rows["leaky"]["precise"] == pytest.approx(0.5)
    table = comparison_markdown(list(rows.values()))
    assert "| clean | hsds | 20 | 1.000 [1.000, 1.000] |" in table


def test_stored_summary_alone_gives_matrix_intervals(tmp_path, capsys):
    results = _results("leaky", 5)
    (tmp_path / "summary.json").write_text(json.dumps(summarize(results, [1.0])))
    summary, stored = load_run(tmp_path)
    assert stored is None
    (row,) = comparison_rows(summary, stored, resamples=300)
    assert row["D_interval_kind"] == "cells" and row["D_interval"][0] < row["D"] < row["D_interval"][1]
    assert main([str(tmp_path / "summary.json")]) == 0
    assert "| leaky | hsds |" in capsys.readouterr().out
    with pytest.raises(InputError, match="summary.json"):
        load_run(tmp_path / "nothing")
