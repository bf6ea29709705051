"""The cross-model disentanglement table: D with intervals over tasks (or from a stored matrix), S over sources."""

from __future__ import annotations

import json

import pytest

from eimsdk.bench.compare import comparison_markdown, comparison_rows, load_run, main, model_pairs, pairs_markdown
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
    summary = summarize(results, [1.0], internal={"clean": {"hsds": {"score": 0.9, "sources": 5,
                                                                     "per_source": [0.9] * 5}}})
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


def test_model_pairs_test_precise_edits_and_d_on_shared_tasks(tmp_path, capsys):
    clean, leaky = _results("clean", 0), _results("leaky", 5)
    leaky[0]["edits"] = []  # a failed unit: not precise, and left out of D's shared tasks
    runs = [(summarize(clean, [1.0]), clean), (summarize(leaky, [1.0]), leaky)]
    (pair,) = model_pairs(runs, resamples=300)
    assert (pair["method"], pair["a"], pair["b"]) == ("hsds", "clean", "leaky")
    # clean is precise on all 20 tasks, leaky on 10: 10 discordant tasks all one way, p = 2 / 2**10
    assert pair["precise"]["only_a"] == 10 and pair["precise"]["only_b"] == 0
    assert pair["precise"]["p_value"] == pytest.approx(2 / 2**10, abs=1e-6)
    assert pair["D"]["tasks"] == 19 and pair["D"]["difference"] > 0 and pair["D"]["low"] > 0
    assert "| hsds | clean | leaky | 20 | 1.000 / 0.500 |" in pairs_markdown([pair])
    assert model_pairs([(summarize(clean, [1.0]), None)]) == []  # a stored summary alone has no tasks to pair
    with pytest.raises(InputError, match="two runs"):
        model_pairs([runs[0], runs[0]])
    for name, (summary, results) in zip(("a", "b"), runs):
        (tmp_path / name).mkdir()
        (tmp_path / name / "summary.json").write_text(json.dumps(summary))
        (tmp_path / name / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in results))
    assert main([str(tmp_path / "a"), str(tmp_path / "b"), "--json", str(tmp_path / "t.json")]) == 0
    assert "Paired tests between models" in capsys.readouterr().out
    assert json.loads((tmp_path / "t.json").read_text())["pairs"][0]["precise"]["only_a"] == 10


def test_model_pairs_pair_s_by_source_id():
    clean, leaky = _results("clean", 0), _results("leaky", 5)
    ids = ["a", "b", "c", "d", "e", "f"]
    s_clean = {"hsds": {"score": 0.8, "sources": 6, "per_source": [0.9, 0.8, 0.9, 0.8, 0.9, 0.7], "source_ids": ids}}
    # the same sources in another order, plus one the clean run lacks; each shared source is 0.2 or 0.3 lower
    s_leaky = {"hsds": {"score": 0.6, "sources": 6, "per_source": [0.5, 0.7, 0.6, 0.6, 0.6, 0.1],
                        "source_ids": ["b", "a", "c", "d", "e", "z"]}}
    runs = [(summarize(clean, [1.0], internal={"clean": s_clean}), clean),
            (summarize(leaky, [1.0], internal={"leaky": s_leaky}), leaky)]
    (pair,) = model_pairs(runs, resamples=500)
    assert pair["S"]["sources"] == 5 and pair["S"]["difference"] == pytest.approx(0.26)
    assert 0.2 - 1e-9 <= pair["S"]["low"] <= pair["S"]["high"] <= 0.3 + 1e-9 and pair["S"]["p_value"] == 1 / 500
    del s_leaky["hsds"]["source_ids"]  # a run from before source ids were kept: not paired, not guessed
    runs[1] = (summarize(leaky, [1.0], internal={"leaky": s_leaky}), leaky)
    assert "S" not in model_pairs(runs, resamples=50)[0]


def test_model_pairs_do_not_test_a_handful_of_tasks():
    clean, leaky = _results("clean", 0, total=2), _results("leaky", 1, total=2)  # 2 tasks per edited attribute
    s = {"hsds": {"score": 0.8, "sources": 2, "per_source": [0.9, 0.7], "source_ids": ["a", "b"]}}
    runs = [(summarize(clean, [1.0], internal={"clean": s}), clean),
            (summarize(leaky, [1.0], internal={"leaky": s}), leaky)]
    (pair,) = model_pairs(runs, resamples=100)
    assert pair["D"]["difference"] > 0 and pair["D"]["p_value"] is None and pair["D"]["low"] is None
    assert pair["S"]["p_value"] is None and pair["S"]["sources"] == 2
    assert "(too few to test) | - |" in pairs_markdown([pair])
    row = comparison_rows(*runs[1], resamples=100)[0]  # nor does one model's table give intervals on so few
    assert "D_interval" not in row and row["D_interval_kind"].startswith("none") and "S_interval" not in row
    cells = comparison_markdown([row]).splitlines()[2].split(" | ")
    assert "[" not in cells[3] and "[" not in cells[5]  # D and S alone; precise keeps its Wilson interval


def test_pairs_markdown_never_prints_a_zero_p_value():
    clean, leaky = _results("clean", 0, total=30), _results("leaky", 15, total=30)  # 30 discordant tasks, one way
    (pair,) = model_pairs([(summarize(clean, [1.0]), clean), (summarize(leaky, [1.0]), leaky)], resamples=100)
    assert pair["precise"]["p_value"] == 0  # 2 / 2**30, rounded to 6 places
    assert "| 1.000 / 0.500 | < 1e-6 |" in pairs_markdown([pair])
