"""The embedded default: `eimsdk demo` on the shipped toy PixArt (no download) writes a grid and a measured report."""

from __future__ import annotations

import json

from PIL import Image

from eimsdk.cli import main
from eimsdk_toy.demo import METHODS, STRENGTHS


def test_demo_writes_grid_report_and_direction(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    assert "grid.png" in printed and "report.json" in printed
    report = json.loads((tmp_path / "report.json").read_text())
    assert set(report["methods"]) == set(METHODS)
    for method in METHODS:
        edits = report["methods"][method]["edits"]
        assert [e["strength"] for e in edits] == list(STRENGTHS)
        assert all(e["cost"]["model_evals"] > 0 for e in edits)
        zero = edits[0]
        # strength 0 is the inversion round trip of the source: the readers must see the source scene again
        assert zero["read"] == report["source_attributes"], zero
    assert report["methods"]["hsds"]["find_cost"]["model_evals"] > 0
    grid = Image.open(tmp_path / "grid.png")
    assert grid.width > grid.height  # source + one column per strength, one row per method
    assert (tmp_path / "direction.safetensors").is_file() and (tmp_path / "direction.json").is_file()
