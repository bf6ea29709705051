"""The imprecise-edits script: every edit at the strength counted once, as precise, missed or leaky, with the
attributes a leaky edit changed."""

from __future__ import annotations

import gzip
import json

import pytest

SCRIPT_NAME = "imprecise_edits"


@pytest.fixture(scope="module")
def script(benchmark_script):
    return benchmark_script


def _edit(success, kept, strength=1.0):
    preserved = {"colour": True, "pattern": True, "extra_shape": True}
    preserved.update(kept)
    return {"strength": strength, "success": success, "preserved": preserved,
            "preserved_all": all(preserved.values())}


def test_counts_precise_missed_and_leaky_per_method(script, tmp_path):
    items = [
        {"method": "a", "edits": [_edit(True, {}), _edit(True, {"pattern": False}, strength=0.5)]},
        {"method": "a", "edits": [_edit(True, {"pattern": False, "extra_shape": False})]},
        {"method": "a", "edits": [_edit(False, {"pattern": False})]},  # missed, not leaky, though it leaked
        {"method": "b", "edits": [_edit(True, {"extra_shape": False})]},
    ]
    path = tmp_path / "results.jsonl.gz"
    with gzip.open(path, "wt") as fh:
        fh.writelines(json.dumps(i) + "\n" for i in items)
    rows = script.breakdown(path)
    assert {k: rows["a"][k] for k in ("precise", "missed", "leaky")} == {"precise": 1, "missed": 1, "leaky": 1}
    assert rows["a"]["leaked"] == {"pattern": 1, "extra_shape": 1}
    assert rows["b"]["leaky"] == 1 and rows["b"]["precise"] == 0
    assert script.breakdown(path, strength=0.5)["a"]["leaky"] == 1
