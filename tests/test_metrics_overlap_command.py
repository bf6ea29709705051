"""``eimsdk overlap``: the reader-free score of two model families on the same prompts, end to end on the tiny
Stable Diffusion (UNet) and Stable Diffusion 3 (DiT) pipelines, no reader involved."""

from __future__ import annotations

import json

import numpy as np
import pytest

from eimsdk.cli import main
from eimsdk.errors import InputError
from eimsdk.metrics.overlap_command import parse_edits
from eimsdk.testing.tiny import build_tiny_pipeline


def test_overlap_compares_sd_and_sd3_on_the_same_prompts(tmp_path, capsys):
    models = {family: tmp_path / family for family in ("sd", "sd3")}
    for family, path in models.items():
        build_tiny_pipeline(family, path)
    out = tmp_path / "overlap.json"
    code = main(["overlap", "--models", str(models["sd"]), str(models["sd3"]), "--source", "a photo of a red circle",
                 "--edit", "colour=a photo of a blue circle", "--edit", "shape=a photo of a red square",
                 "--edit", "size=a photo of a large red circle", "--images", "2", "--steps", "2",
                 "--size", "32", "32", "--json", str(out)])
    assert code == 0
    results = json.loads(out.read_text())
    assert [r["family"] for r in results] == ["sd", "sd3"]
    for r in results:
        assert r["attributes"] == ["colour", "shape", "size"] and len(r["per_source"]) == 2
        overlap = np.array(r["overlap"])
        assert overlap.shape == (3, 3) and np.allclose(np.diag(overlap), 1.0)
        assert 0.0 <= r["score"] <= 1.0
        assert np.mean(r["per_source"]) == pytest.approx(r["score"], abs=1e-5)
        assert r["interval"][0] <= np.mean(r["per_source"]) <= r["interval"][1]
    table = capsys.readouterr().out
    assert str(models["sd"]) in table and str(models["sd3"]) in table and "S_colour" in table


def test_edits_need_two_distinct_attributes():
    assert parse_edits(["a=x y", "b=y z"]) == {"a": "x y", "b": "y z"}
    with pytest.raises(InputError, match="at least two"):
        parse_edits(["a=x"])
    with pytest.raises(InputError, match="ATTRIBUTE=PROMPT"):
        parse_edits(["a", "b=y"])
    with pytest.raises(InputError, match="twice"):
        parse_edits(["a=x", "a=y"])
