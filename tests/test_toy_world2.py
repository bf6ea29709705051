"""Toy world 2: seeded scenes whose captions never name the unnamed content, exact readers, the `toy2` source."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from eimsdk.bench.manifest import resolve_manifest
from eimsdk.errors import InputError
from eimsdk.tokenizers import WORDS
from eimsdk_toy.bench2 import toy2_manifest
from eimsdk_toy.readers2 import Toy2Reader
from eimsdk_toy.world2 import (ATTRIBUTES, KINDS, NAMED, UNNAMED, Scene2Spec, caption, layers, make_spec, random_spec,
                               render)

N = 1000


@pytest.fixture(scope="module")
def scenes():
    rng = np.random.default_rng(2026)
    specs = [random_spec(rng) for _ in range(N)]
    return specs, [render(s) for s in specs]


@pytest.fixture(scope="module")
def readings(scenes):
    return Toy2Reader().read_detailed(scenes[1])


def test_the_same_seed_gives_the_same_scene_and_pixels():
    for seed in (0, 1, 77):
        assert make_spec(seed) == make_spec(seed)
        assert (np.asarray(render(make_spec(seed))) == np.asarray(render(make_spec(seed)))).all()
    specs = [make_spec(seed) for seed in range(40)]
    assert len({s.model_dump_json() for s in specs}) == 40
    assert len({s.unnamed()["texture_phase"] for s in specs}) > 1  # the seed draws the unnamed content too
    assert make_spec(3, colour="blue", pattern="dotted").named()["pattern"] == "dotted"


def test_captions_name_only_named_attributes(scenes):
    specs, images = scenes
    for spec in specs[:200]:
        words = caption(spec).split()
        assert set(words) <= set(WORDS)
        for name in NAMED:
            if name != "outline":
                assert getattr(spec, name).split()[-1] in words
        assert ("ring" in words) == (spec.outline == "ring")
    # Two scenes with the same named attributes and different unnamed content: same caption, other pixels.
    different = 0
    for i, spec in enumerate(specs[:100]):
        other = random_spec(np.random.default_rng(10_000 + i), **spec.named())
        assert caption(other) == caption(spec)
        different += other.unnamed() != spec.unnamed()
    assert different > 80
    present = Counter(s.extra_shape != "none" for s in specs)
    assert 0.65 < present[True] / len(specs) < 0.85  # the second object is there in about 3 scenes of 4


def test_spec_rejects_inconsistent_unnamed_content():
    with pytest.raises(ValidationError, match="all 'none' or all set"):
        Scene2Spec(extra_shape="circle")
    with pytest.raises(ValidationError, match="quadrant"):
        Scene2Spec(position="top left", extra_shape="circle", extra_colour="red", extra_position="top left")
    with pytest.raises(ValidationError):
        Scene2Spec(pattern="checked")
    with pytest.raises(InputError, match="texture_colour"):
        random_spec(0, texture_colour="red")


def test_reader_reads_every_attribute_of_clean_renders(scenes, readings):
    specs, _ = scenes
    for name in ATTRIBUTES:
        accuracy = np.mean([r.values[name] == getattr(s, name) for s, r in zip(specs, readings)])
        assert accuracy >= 0.995, (name, accuracy)
    assert all(r.found for r in readings)


def _gaussian_blur(image: np.ndarray, sigma: float) -> np.ndarray:
    """A separable Gaussian blur of an (H, W, 3) image, edges replicated: a decoder's softened corners."""
    taps = np.exp(-0.5 * (np.arange(-3, 4) / sigma) ** 2)
    taps /= taps.sum()
    padded = np.pad(image, ((3, 3), (0, 0), (0, 0)), mode="edge")
    image = sum(t * padded[i:i + image.shape[0]] for i, t in enumerate(taps))
    padded = np.pad(image, ((0, 0), (3, 3), (0, 0)), mode="edge")
    return sum(t * padded[:, i:i + image.shape[1]] for i, t in enumerate(taps))


def test_second_object_shape_survives_a_softening_blur(scenes):
    # A 9 px square whose corners a decoder rounds is still a square: a 1 px Gaussian blur (which a pixel template
    # fit read as a circle in about 1 scene in 10) leaves the second object's shape readable.
    specs, images = scenes
    pairs = [(s, _gaussian_blur(np.asarray(i, dtype=np.float64), 1.0)) for s, i in zip(specs[:400], images)]
    pairs = [(s, b) for s, b in pairs if s.extra_shape != "none"]
    readings = Toy2Reader().read_detailed([b.clip(0, 255).astype(np.uint8) for _, b in pairs])
    assert len(pairs) > 250
    assert np.mean([r.values["extra_shape"] == s.extra_shape for (s, _), r in zip(pairs, readings)]) >= 0.995
    for shape, key in (("triangle", "extra_harmonic3"), ("square", "extra_harmonic4")):
        own = [r.features[key] for (s, _), r in zip(pairs, readings) if s.extra_shape == shape]
        others = [r.features[key] for (s, _), r in zip(pairs, readings) if s.extra_shape != shape]
        assert min(own) > 2 * max(others), shape  # each shape's own harmonic stands well clear of the rest


def test_reader_says_none_exactly_when_the_second_object_is_absent(scenes, readings):
    specs, _ = scenes
    absent = [r for s, r in zip(specs, readings) if s.extra_shape == "none"]
    present = [r for s, r in zip(specs, readings) if s.extra_shape != "none"]
    assert len(absent) > 100 and len(present) > 500
    read_none = [r.values["extra_shape"] == "none" and r.values["extra_position"] == "none" for r in absent]
    assert np.mean(read_none) >= 0.995
    assert np.mean([r.values["extra_colour"] != "none" for r in present]) >= 0.995


def test_reader_on_a_blank_tensor_and_through_the_plugin_hook():
    from eimsdk.plugins import PluginManager

    reader = PluginManager().load("reader", "toy2")()
    assert isinstance(reader, Toy2Reader) and reader.attributes == ATTRIBUTES
    blank = -torch.ones(1, 3, 64, 64)  # a black image in [-1, 1]
    (reading,) = reader.read_detailed(blank)
    assert not reading.found and reading.values["background"] == "black"
    assert reading.values["extra_shape"] == "none"
    assert max(reading.probabilities["shape"].values()) == pytest.approx(1 / 3)
    with pytest.raises(InputError, match="square"):
        reader.read([np.zeros((64, 48, 3), dtype=np.uint8)])


def test_toy2_manifest_edits_named_attributes_and_records_the_unnamed_content(tmp_path):
    items = resolve_manifest("toy2:60", tmp_path)
    assert len(items) == 480 and len({i.id for i in items}) == 480
    assert Counter(i.attribute for i in items) == {a: 60 for a in NAMED}
    assert Counter(i.meta["kind"] for i in items) == {"coarse": 300, "fine": 180}
    for item in items[:48]:
        spec = Scene2Spec(**item.meta["scene"])
        new = item.expected[item.attribute]
        assert new != getattr(spec, item.attribute) and new in ATTRIBUTES[item.attribute]
        target = spec.model_copy(update=item.expected)
        Scene2Spec(**target.model_dump())  # the target is a valid scene (no quadrant shared)
        kept = {k: v for k, v in target.unnamed().items() if k not in item.expected}
        assert kept == {k: v for k, v in spec.unnamed().items() if k not in item.expected}
        assert spec.unnamed() == item.meta["unnamed"]
        assert set(item.expected) == ({item.attribute, "texture_phase"} if item.attribute == "background"
                                      else {item.attribute})
        assert item.source_prompt == caption(spec) and item.target_prompts == [caption(target)]
        assert item.source_values == spec.attributes() and set(UNNAMED) <= set(item.source_values)
        assert item.meta["kinds"] == KINDS and item.size == (64, 64)
        before, after = np.asarray(render(spec)), np.asarray(render(target))
        assert (np.asarray(item.load_source()) == before).all()
        region = item.region.to_mask()
        changed = (before != after).any(-1)
        assert changed.any() and region[changed].all() and (before[~region] == after[~region]).all()
        if item.attribute == "background":  # the texture stays in place: outside the objects, one constant shift
            cov = layers(spec)
            ground = (cov["body"] + cov["contrast"] + cov["extra"]) == 0
            shift = after[ground].astype(int) - before[ground].astype(int)
            assert shift.max() - shift.min() <= 1, (item.id, shift.min(), shift.max())
            assert item.expected["texture_phase"] != spec.texture_phase
    assert resolve_manifest("toy2:2:3", tmp_path) == toy2_manifest(tmp_path, 2, seed=3)
    assert toy2_manifest(tmp_path, 2, seed=3) != toy2_manifest(tmp_path, 2)
    for bad in ("toy2:many", "toy2:2:x", "toy2:2:", "toy2::3", "toy2:3:1:1", "toy2:-1"):
        with pytest.raises(InputError, match="toy2:SCENES:SEED"):
            resolve_manifest(bad, tmp_path)


def test_report_groups_rates_by_attribute_kind(tmp_path):
    from eimsdk.bench.manifest import write_manifest
    from eimsdk.bench.report import attribute_kinds, markdown, summarize

    kinds = {"texture": "unnamed", "shape": "coarse", "shade": "fine"}  # as a sorted manifest lists them
    write_manifest(toy2_manifest(tmp_path, 1)[:1], tmp_path / "manifest.jsonl")
    assert attribute_kinds(tmp_path / "manifest.jsonl") == KINDS
    assert attribute_kinds(tmp_path / "missing.jsonl") == {}

    def rec(attribute, success, preserved):
        return {"id": f"{attribute}-{success}-{len(preserved)}", "model": "m", "method": "hsds", "attribute": attribute,
                "edits": [{"strength": 1.0, "success": success, "preserved": preserved,
                           "preserved_all": all(preserved.values()),
                           "changes": {attribute: float(success), **{a: float(not v) for a, v in preserved.items()}}}]}

    results = [rec("shape", True, {"shade": True, "texture": False}),
               rec("shape", False, {"shade": True, "texture": True}),
               rec("shade", True, {"shape": False, "texture": True})]
    # a second method keeps the texture in every task: paired tests on keeping the never-edited kind tell them apart
    results += [dict(r, method="dds", edits=[dict(r["edits"][0], preserved=dict(r["edits"][0]["preserved"],
                                                                                  texture=True))]) for r in results]
    summary = summarize(results, [1.0], kinds=kinds)
    table = summary["table"]["m"]["hsds"]["by_kind"]
    assert list(table) == ["coarse", "fine", "unnamed"]  # edited kinds first, in the order of the results
    wilson = {(1, 2): [0.0945, 0.9055], (2, 3): [0.2077, 0.9385], (1, 1): [0.2065, 1.0], (2, 2): [0.3424, 1.0]}
    # kept_if_success counts only the two successful edits: the missed shape edit kept all, which is no credit
    assert table["coarse"] == {"success": 0.5, "kept": pytest.approx(2 / 3, abs=1e-4), "kept_if_success": 0.5,
                               "success_ci": wilson[1, 2], "kept_ci": wilson[2, 3], "kept_if_success_ci": wilson[1, 2]}
    assert table["fine"] == {"success": 1.0, "kept": 1.0, "kept_if_success": 1.0, "success_ci": wilson[1, 1],
                             "kept_ci": [0.4385, 1.0], "kept_if_success_ci": wilson[2, 2]}
    assert table["unnamed"] == {"success": None, "kept": pytest.approx(2 / 3, abs=1e-4), "kept_if_success": 0.5,
                                "kept_ci": wilson[2, 3], "kept_if_success_ci": wilson[1, 2]}
    assert summary["table"]["m"]["dds"]["by_kind"]["unnamed"]["kept"] == 1.0
    [test] = summary["paired_kept"]["m"]["unnamed"]  # only the kind no task edits
    assert (test["a"], test["b"], test["n"], test["only_a"], test["only_b"]) == ("hsds", "dds", 3, 0, 1)
    assert test["p_value"] == 1.0
    [test] = summary["paired_kept_if_success"]["m"]["unnamed"]  # on the two tasks both edited successfully
    assert (test["n"], test["rate_a"], test["rate_b"], test["only_a"], test["only_b"]) == (2, 0.5, 1.0, 0, 1)
    text = markdown(summary, {"models": ["m"], "methods": ["hsds", "dds"], "strengths": [1.0]}, [])
    assert ("| m | hsds | 0.50 [0.09, 0.91] / 0.67 [0.21, 0.94] | 1.00 [0.21, 1.00] / 1.00 [0.44, 1.00] | "
            "- / 0.67 [0.21, 0.94] |") in text
    assert "## Paired tests (edits that keep every unnamed attribute, m, strength 1)" in text
    assert "| hsds | dds | 3 | 0.67 | 1.00 | -0.33 | 0 | 1 | 1 |" in text
    assert "| m | hsds | 0.50 [0.09, 0.91] | 1.00 [0.34, 1.00] | 0.50 [0.09, 0.91] |" in text
    assert "## Paired tests (successful edits that keep every unnamed attribute, m, strength 1)" in text
    assert "| hsds | dds | 2 | 0.50 | 1.00 | -0.50 | 0 | 1 | 1 |" in text
    assert "by_kind" not in summarize(results, [1.0])["table"]["m"]["hsds"]
    assert not {"paired_kept", "paired_kept_if_success"} & set(summarize(results, [1.0]))


def test_reader_change_matrix_counts_an_expected_side_change_only_when_it_is_missed():
    from eimsdk.bench.report import summarize

    def rec(i, phase_read):  # a background flip that should turn the texture phase from 0 to 180
        read = {"background": "white", "texture_phase": phase_read, "shape": "circle"}
        return {"id": f"bg-{i}", "model": "m", "method": "swap", "attribute": "background",
                "expected": {"background": "white", "texture_phase": "180"},
                "edits": [{"strength": 1.0, "success": phase_read == "180", "preserved": {"shape": True},
                           "preserved_all": True, "read": read,
                           "changes": {"background": 1.0, "texture_phase": float(phase_read != "0"), "shape": 0.0}}]}

    matrix = summarize([rec(0, "180"), rec(1, "180"), rec(2, "0"), rec(3, "90")], [1.0]
                       )["table"]["m"]["swap"]["disentanglement"]["matrix"]
    row = dict(zip(matrix["cols"], matrix["matrix"][matrix["rows"].index("background")]))
    assert row == {"background": 1.0, "texture_phase": 0.5, "shape": 0.0}  # missed: kept at 0, or turned to 90


def test_long_method_labels_wrap_at_their_settings_for_plot_titles():
    from eimsdk.bench.report import _wrapped

    for label in ("hsds:num_timesteps=16,curvature_samples=4,antithetic=true", "flowedit:manipulator=flowedit"):
        lines = _wrapped(label).split("\n")
        assert len(lines) > 1 and all(len(line) <= 22 for line in lines)
        assert " ".join(lines) == label.replace(":", ": ").replace(",", ", ")
    assert _wrapped("dds") == "dds"


def test_random_spec_of_either_world_refuses_an_attribute_it_does_not_have():
    from eimsdk_toy import scenes

    for draw, world_only in ((scenes.random_spec, "pattern"), (random_spec, "colur")):
        with pytest.raises(InputError, match=f"unknown attributes \\['{world_only}'\\]"):
            draw(0, **{world_only: "x"})
    assert random_spec(0, pattern="dotted").pattern == "dotted"  # world 2's own attribute is pinned, not refused
