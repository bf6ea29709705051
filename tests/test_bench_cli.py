"""`eimsdk bench`: manifest generation, a run, the report rebuilt from a finished run, and clear errors."""

from __future__ import annotations

import json

import pytest

from eimsdk.cli import main
from test_bench_world import clean_items, fake_model


def test_manifest_only_writes_the_toy_manifest(tmp_path, capsys):
    assert main(["bench", "toy:2", "--out", str(tmp_path), "--manifest-only"]) == 0
    lines = (tmp_path / "manifest.jsonl").read_text().splitlines()
    assert len(lines) == 10 and "10 items" in capsys.readouterr().out
    assert main(["bench", "toy:2", "--limit", "3", "--out", str(tmp_path / "l"), "--manifest-only"]) == 0
    assert len((tmp_path / "l" / "manifest.jsonl").read_text().splitlines()) == 3


def test_run_then_rebuild_the_report(tmp_path, capsys, fakes_installed):
    from eimsdk.bench.manifest import write_manifest

    manifest = write_manifest(clean_items(1), tmp_path / "m.jsonl")
    model = fake_model(tmp_path / "fake")
    out = tmp_path / "out"
    args = ["bench", str(manifest), "--models", model, "--methods", "fake-oracle", "fake-null", "--manipulator",
            "fake-add", "--strengths", "0.5", "1", "--out", str(out), "--no-progress"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "fake-oracle" in printed and "success 1.0" in printed and "report.md" in printed
    (out / "report.md").unlink()
    assert main(["bench", "--out", str(out), "--report-only"]) == 0
    assert "| fake | fake-oracle | 1.00 [0.57, 1.00] | 1.00 [0.57, 1.00] | 1.00 [0.57, 1.00] |" in (out / "report.md").read_text()
    assert json.loads((out / "config.json").read_text())["strengths"] == [0.5, 1.0]

    # Named methods pick a subset of the finished units (or units merged in from another run).
    assert main(["bench", "--out", str(out), "--report-only", "--methods", "fake-null"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["methods"] == ["fake-null"] and list(summary["table"]["fake"]) == ["fake-null"]
    assert main(["bench", "--out", str(out), "--report-only", "--methods", "fake-oracle", "hsds"]) == 2
    assert "missing" in capsys.readouterr().err


def test_examples_grid_says_which_images_a_merged_unit_lacks(tmp_path, monkeypatch, fakes_installed):
    """A unit copied from another run's items/ has no images here: the grid says so instead of drawing blanks."""
    import eimsdk.bench.report as report
    from eimsdk.bench.manifest import write_manifest

    manifest = write_manifest(clean_items(1), tmp_path / "m.jsonl")
    out = tmp_path / "out"
    assert main(["bench", str(manifest), "--models", fake_model(tmp_path / "fake"), "--methods", "fake-oracle",
                 "--manipulator", "fake-add", "--strengths", "1", "--out", str(out), "--no-progress"]) == 0
    results = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    titles = []
    monkeypatch.setattr(report, "_save", lambda fig, path: titles.append(fig._suptitle.get_text()) or path.name)
    report.plot_examples(out, results, "fake", 1.0, tmp_path / "a.png")
    assert "not in this output folder" not in titles[-1]
    (out / results[0]["edits"][0]["image"]).unlink()
    report.plot_examples(out, results, "fake", 1.0, tmp_path / "b.png")
    assert "(1 image(s) not in this output folder)" in titles[-1]


@pytest.mark.parametrize("argv, match", [
    (["bench", "--out", "{tmp}"], "give a MANIFEST"),
    (["bench", "{tmp}/none.jsonl", "--out", "{tmp}"], "none.jsonl' does not exist"),
    (["bench", "--out", "{tmp}", "--report-only"], "no config.json"),
    (["bench", "toy:1", "--out", "{tmp}", "--limit", "0"], "--limit"),
    (["bench", "toy:1", "--out", "{tmp}", "--reader-set", "oops"], "--reader-set expects key=value"),
    (["bench", "toy:1", "--out", "{tmp}", "--metrics", "nope"], "no metric named 'nope' is installed"),
    (["bench", "toy:1", "--out", "{tmp}", "--metrics", "psnr:window=3"], "metric 'psnr:window=3': invalid metric"),
])
def test_errors_name_the_argument(tmp_path, capsys, argv, match):
    assert main([a.replace("{tmp}", str(tmp_path)) for a in argv]) == 2
    assert match in capsys.readouterr().err


@pytest.mark.parametrize("env, match", [
    ({"RANK": "0", "WORLD_SIZE": "2"}, "MASTER_ADDR and MASTER_PORT are not"),
    ({"RANK": "1", "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1"}, "MASTER_PORT is not"),
    ({"RANK": "2", "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29500"}, "0 <= RANK < WORLD_SIZE"),
    ({"RANK": "one"}, "RANK='one' is not an integer"),
])
def test_a_hand_set_rank_is_refused_before_any_edit(tmp_path, capsys, monkeypatch, fakes_installed, env, match):
    """Ranks meet through torch.distributed when they finish: without its address the run is refused up front
    (exit 2, no unit edited), not after every edit with a traceback."""
    from eimsdk.bench.manifest import write_manifest

    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    manifest = write_manifest(clean_items(1), tmp_path / "m.jsonl")
    out = tmp_path / "out"
    assert main(["bench", str(manifest), "--models", fake_model(tmp_path / "fake"), "--methods", "fake-oracle",
                 "--manipulator", "fake-add", "--strengths", "1", "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert match in err and "Traceback" not in err
    assert not list(out.glob("items/*/*/*.json"))  # nothing edited
