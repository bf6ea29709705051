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
    assert report["example"]["provides"] == {"finder": ["unit-text"]}


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
