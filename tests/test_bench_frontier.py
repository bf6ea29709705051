"""The cost-quality frontier script: points per method and the Pareto frontier through the undominated ones."""

from __future__ import annotations

import pytest

SCRIPT_NAME = "frontier"


@pytest.fixture(scope="module")
def frontier(benchmark_script):
    return benchmark_script


def _summary(rows):
    return {"reference_strength": 1.0, "table": {"toy": {
        name: {"n": 10, "find_model_evals": find, "by_strength": {"1": {"precise": precise, "apply_model_evals": apply,
                                                                       "precise_ci": [0.1, 0.9],
                                                                       "metrics": {"psnr_outside": 40.0 + find}}}}
        for name, (find, apply, precise) in rows.items()}}}


def test_points_cost_find_plus_apply_and_mark_the_undominated(frontier, tmp_path):
    rows = {"text": (0, 40, 0.3), "dds": (8, 40, 0.8), "swap": (0, 40, 0.6), "hsds": (80, 40, 0.75),
            "hsds-big": (320, 40, 0.9)}
    (points,) = frontier.frontier_points([_summary(rows)]).values()
    by = {p["method"]: p for p in points}
    assert by["dds"]["evals"] == 48 and by["hsds-big"]["evals"] == 360
    # text costs what swap costs and edits less; hsds costs more than dds and edits less
    assert {m for m, p in by.items() if p["frontier"]} == {"swap", "dds", "hsds-big"}
    assert [p["method"] for p in points] == ["swap", "text", "dds", "hsds", "hsds-big"]  # by cost, then quality
    frontier.plot({"toy": points}, tmp_path / "f.png")
    assert (tmp_path / "f.png").stat().st_size > 1000
    table = frontier.markdown_table({"toy": points})
    assert "| toy | hsds | 120 | 0.75 [0.10, 0.90] | 120.0 |  |" in table
