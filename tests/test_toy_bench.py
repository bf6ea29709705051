"""The toy plugin's manifest source (`toy[:SCENES[:SEED]]`) and its `demo` command, reached through the hooks."""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter

import numpy as np
import pytest

from eimsdk.bench.manifest import resolve_manifest
from eimsdk.errors import InputError
from eimsdk_toy.bench import toy_manifest


def test_toy_manifest_covers_every_attribute_with_exact_tasks(tmp_path):
    from eimsdk_toy.scenes import ATTRIBUTES, SceneSpec, caption, render

    items = toy_manifest(tmp_path)
    assert len(items) >= 200 and len({i.id for i in items}) == len(items)
    counts = Counter(i.attribute for i in items)
    assert set(counts) == set(ATTRIBUTES) and len(set(counts.values())) == 1
    for item in items[:25]:
        spec = SceneSpec(**item.meta["scene"])
        new = item.expected[item.attribute]
        assert new != getattr(spec, item.attribute) and new in ATTRIBUTES[item.attribute]
        target = spec.model_copy(update={item.attribute: new})
        assert item.source_prompt == caption(spec) and item.target_prompts == [caption(target)]
        assert item.source_values == spec.attributes()
        before, after = np.asarray(render(spec)), np.asarray(render(target))
        assert (np.asarray(item.load_source()) == before).all()  # the written image is the render, to the pixel
        region = item.region.to_mask()
        changed = (before != after).any(-1)
        assert changed.any() and region[changed].all()  # every changed pixel is in the region
        assert (before[~region] == after[~region]).all()  # nothing outside it changes


def test_toy_manifest_is_seeded(tmp_path):
    assert toy_manifest(tmp_path / "a", 2) == [i.model_copy(update={"image": i.image.replace("/b/", "/a/")})
                                               for i in toy_manifest(tmp_path / "b", 2)]
    assert toy_manifest(tmp_path, 2, seed=1) != toy_manifest(tmp_path, 2)
    assert resolve_manifest("toy:3", tmp_path) == toy_manifest(tmp_path, 3)


def test_toy_source_takes_a_scene_seed(tmp_path):
    by_seed = resolve_manifest("toy:2:5", tmp_path)
    assert by_seed == toy_manifest(tmp_path, 2, seed=5)
    assert [i.id for i in by_seed] == [i.id for i in resolve_manifest("toy:2", tmp_path)]  # ids seed the edits
    assert [i.meta["scene"] for i in by_seed] != [i.meta["scene"] for i in resolve_manifest("toy:2:0", tmp_path)]
    assert len({i.image for i in by_seed} | {i.image for i in resolve_manifest("toy:2", tmp_path)}) == 4
    for bad in ("toy:many", "toy:2:x", "toy:2:", "toy::3", "toy:3:1:1", "toy:-1"):
        with pytest.raises(InputError, match="toy:SCENES:SEED"):
            resolve_manifest(bad, tmp_path)


def _cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "eimsdk", *args], capture_output=True, text=True,
                          env={**os.environ, **env})


def test_blocking_the_toy_plugin_removes_its_manifest_and_demo_cleanly(tmp_path):
    blocked = _cli("bench", "toy:1", "--out", str(tmp_path), "--manifest-only", env={"EIMSDK_PLUGINS_BLOCK": "toy"})
    assert blocked.returncode == 2 and "Traceback" not in blocked.stderr
    assert "no manifest source 'toy' is installed (installed: " in blocked.stderr
    assert not (tmp_path / "manifest.jsonl").exists()
    assert "demo" not in _cli("--help", env={"EIMSDK_PLUGINS_BLOCK": "toy"}).stdout
    allowed = _cli("bench", "toy:1", "--out", str(tmp_path), "--manifest-only", env={})
    assert allowed.returncode == 0, allowed.stderr
    assert len((tmp_path / "manifest.jsonl").read_text().splitlines()) == 5
    assert (tmp_path / "manifest" / "toy-000.png").is_file()
