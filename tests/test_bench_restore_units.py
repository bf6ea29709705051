"""The restore-units script: a stored results file written back into a run folder counts as finished units there,
so `eimsdk bench --report-only` compares a new run's method with stored ones on the same tasks."""

from __future__ import annotations

import gzip
import json
import shutil

import pytest

from eimsdk.cli import main
from test_bench_world import clean_items, fake_model

SCRIPT_NAME = "restore_units"


@pytest.fixture(scope="module")
def script(benchmark_script):
    return benchmark_script


def test_stored_results_merge_into_another_run(script, tmp_path, capsys, fakes_installed):
    from eimsdk.bench.manifest import write_manifest

    manifest = write_manifest(clean_items(1), tmp_path / "m.jsonl")
    model = fake_model(tmp_path / "fake")
    common = ["--models", model, "--manipulator", "fake-add", "--strengths", "1", "--no-progress"]
    first, second = tmp_path / "first", tmp_path / "second"
    assert main(["bench", str(manifest), "--methods", "fake-oracle", "fake-null", "--out", str(first), *common]) == 0
    stored = tmp_path / "results.jsonl.gz"
    with open(first / "results.jsonl", "rb") as src, gzip.open(stored, "wb") as dst:
        shutil.copyfileobj(src, dst)
    assert main(["bench", str(manifest), "--methods", "fake-null", "--out", str(second), *common]) == 0

    both = ["bench", str(manifest), "--methods", "fake-oracle", "fake-null", "--out", str(second), "--report-only",
            *common]
    assert main(both) == 2 and "missing" in capsys.readouterr().err  # fake-oracle never ran in `second`
    assert script.main([str(stored), str(second), "--methods", "fake-oracle"]) == 0
    assert "fake-oracle: 5 unit(s) written" in capsys.readouterr().out
    assert main(both) == 0
    summary = json.loads((second / "summary.json").read_text())
    assert summary["table"]["fake"]["fake-oracle"]["by_strength"]["1"]["precise"] == 1.0
    assert summary["paired"]["fake"]["1"][0]["n"] == 5  # paired on the same tasks

    # A unit already there is never overwritten.
    assert script.restore(stored, second) == {}


def test_refuses_a_folder_that_is_not_a_run(script, tmp_path, capsys):
    stored = tmp_path / "results.jsonl"
    stored.write_text("")
    with pytest.raises(SystemExit) as exc:
        script.main([str(stored), str(tmp_path / "nowhere")])
    assert exc.value.code == 2 and "no config.json" in capsys.readouterr().err
