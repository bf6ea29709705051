"""The example third-party package (examples/eimsdk-plugin-example) extends eimsdk without touching core."""

from __future__ import annotations

import importlib.metadata as md

import pytest
import torch

from eimsdk import Editor


def test_example_package_is_installed_and_listed(fresh_plugin_manager):
    dist = md.distribution("eimsdk-plugin-example")
    assert dist.version == "0.1.0"
    report = {r["name"]: r for r in fresh_plugin_manager.report()}
    assert report["example"]["status"] == "ok"
    assert report["example"]["distribution"] == "eimsdk-plugin-example"
    assert report["example"]["provides"] == {"finder": ["unit-text"], "metric": ["brightness-change"]}


def test_example_finder_runs_through_editor(tiny_pipeline_path, scene_image):
    editor = Editor.from_pretrained(tiny_pipeline_path("pixart"))
    src, tgt = "a photo of a red circle", "a photo of a blue circle"
    d = editor.find_direction(scene_image, src, tgt, method="unit-text", relative_norm=0.25, size=(32, 32))
    assert d.meta["method"] == "unit-text" and torch.count_nonzero(d.dz) == 0
    c = editor.encoder.encode_prompts([src]).masked()
    assert float(d.dc.norm()) == pytest.approx(0.25 * float(c.norm()), rel=1e-4)
    result = editor.apply(scene_image, src, d, strength=1.0, size=(32, 32))
    assert result.image.size == (32, 32)
    with pytest.raises(Exception, match="relative_norm"):
        editor.find_direction(scene_image, src, tgt, method="unit-text", relative_norm=-1.0, size=(32, 32))


def test_example_metric_is_a_column_of_the_bench_report(tmp_path, monkeypatch, capsys):
    import json

    import numpy as np

    import eimsdk.plugins
    from eimsdk.bench.manifest import write_manifest
    from eimsdk.cli import main
    from test_bench_world import clean_items, fake_model, parse_caption, plugin_manager
    from eimsdk_toy.scenes import render

    monkeypatch.setattr(eimsdk.plugins, "_MANAGER", plugin_manager())
    items = clean_items(1)
    out = tmp_path / "out"
    assert main(["bench", str(write_manifest(items, tmp_path / "m.jsonl")), "--models", fake_model(tmp_path / "fake"),
                 "--methods", "fake-oracle", "fake-null", "--manipulator", "fake-add", "--metrics", "psnr",
                 "brightness-change", "--out", str(out), "--no-progress", "--no-images"]) == 0
    header = next(line for line in (out / "report.md").read_text().splitlines() if line.startswith("| model | method"))
    assert all(f"| {column} |" in header for column in ("psnr", "psnr_outside", "brightness_change"))
    # The oracle's edit is the target scene exactly, so its brightness change is that of the two renders.
    changes = [(np.asarray(render(parse_caption(i.target_prompts[0])), float).mean()
                - np.asarray(render(parse_caption(i.source_prompt)), float).mean()) / 255 for i in items]
    summary = json.loads((out / "summary.json").read_text())
    oracle, null = (summary["table"]["fake"][m]["by_strength"]["1"]["metrics"] for m in ("fake-oracle", "fake-null"))
    assert oracle["brightness_change"] == pytest.approx(float(np.mean(changes)), abs=1e-4)
    assert any(abs(c) > 1e-3 for c in changes) and null["brightness_change"] == 0.0
    assert "brightness_change" in summary["metrics"]
