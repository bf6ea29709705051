"""Manifests: the JSONL format and its errors, region run-length codes, manifest sources, the PIE-Bench loader."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from eimsdk.bench.manifest import (
    ManifestItem,
    Region,
    load_manifest,
    resolve_manifest,
    rle_decode,
    rle_encode,
    write_manifest,
)
from eimsdk.bench.pie import load_pie_bench
from eimsdk.errors import InputError

def _row(**kw):
    return {"id": "a", "image": "x.png", "source_prompt": "a large red circle", "attribute": "colour",
            "target_prompts": ["a large blue circle"], "expected": {"colour": "blue"}, **kw}


# ------------------------------------------------------------------------------------------ run-length codes
def test_rle_known_answer_row_major():
    # PIE-Bench's layout: (start, length) pairs over the row-major flattened mask.
    mask = rle_decode([2, 3, 7, 5], (2, 4))  # indices 2, 3, 4 and 7 (a run past the end is clipped)
    assert mask.tolist() == [[False, False, True, True], [True, False, False, True]]
    assert rle_encode(mask) == [2, 3, 7, 1]


def test_rle_round_trip():
    rng = np.random.default_rng(0)
    for shape in [(1, 1), (5, 7), (32, 32)]:
        for p in (0.0, 0.3, 1.0):
            mask = rng.random(shape) < p
            assert np.array_equal(rle_decode(rle_encode(mask), shape), mask)


def test_region_resizes_with_nearest():
    mask = np.zeros((4, 4), bool)
    mask[:2, :2] = True
    big = Region.from_mask(mask).to_mask((8, 8))
    assert big.shape == (8, 8) and big[:4, :4].all() and not big[4:].any() and not big[:, 4:].any()
    with pytest.raises(ValueError, match="pairs"):
        Region(rle=[1, 2, 3], shape=(2, 2))


# ------------------------------------------------------------------------------------------ JSONL manifests
def test_item_validation():
    assert ManifestItem(**_row(target_prompts="one prompt")).target_prompts == ["one prompt"]
    for bad, match in [(_row(image=None), "image"), (_row(image=""), "image"),
                       (_row(scene={"shape": "circle"}), "scene"),
                       (_row(id="has space"), "id"), (_row(target_prompts=[]), "target_prompts"),
                       (_row(target_prompts=[" "]), "non-empty"), (_row(colour="x"), "colour")]:
        with pytest.raises(ValueError, match=match):
            ManifestItem(**bad)


def test_load_manifest_reports_the_line(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_text(json.dumps(_row()) + "\n\n{not json\n")
    with pytest.raises(InputError, match="line 3 is not valid JSON"):
        load_manifest(path)
    path.write_text(json.dumps(_row()) + "\n" + json.dumps(_row(id="b", attribute="")) + "\n")
    with pytest.raises(InputError, match=r"item 2 is invalid: attribute"):
        load_manifest(path)
    path.write_text(json.dumps(_row()) + "\n" + json.dumps(_row()) + "\n")
    with pytest.raises(InputError, match="share the id 'a'"):
        load_manifest(path)
    with pytest.raises(InputError, match="does not exist.*manifest source"):
        load_manifest(tmp_path / "missing.jsonl")


def test_relative_images_resolve_against_the_manifest(tmp_path):
    (tmp_path / "imgs").mkdir()
    Image.new("RGB", (32, 32), (10, 20, 30)).save(tmp_path / "imgs" / "x.png")
    path = tmp_path / "m.jsonl"
    row = _row(image="imgs/x.png")
    path.write_text(json.dumps(row) + "\n")
    item = load_manifest(path)[0]
    assert item.image == str(tmp_path / "imgs" / "x.png")
    assert item.load_source().getpixel((0, 0)) == (10, 20, 30)
    write_manifest([item], tmp_path / "copy.jsonl")
    assert load_manifest(tmp_path / "copy.jsonl") == [item]


# ------------------------------------------------------------------------------------------ manifest sources
SOURCE_CALLS: list[tuple[str, object]] = []


def numbered_source(argument, folder):
    """A manifest source for the test below: ARGUMENT items on one written image."""
    SOURCE_CALLS.append((argument, folder))
    folder.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8)).save(folder / "x.png")
    return [ManifestItem(**_row(id=f"n{i}", image=str(folder / "x.png"))) for i in range(int(argument or 1))]


def test_a_registered_manifest_source_is_called_with_its_argument(tmp_path, fresh_plugin_manager):
    import eimsdk

    class Source:
        @eimsdk.hookimpl
        def register_manifests(self, register):
            register("numbered", "test_bench_manifest:numbered_source")

    assert fresh_plugin_manager.register(Source(), "numbered-source").status == "ok"
    items = resolve_manifest("numbered:3", tmp_path / "images", fresh_plugin_manager)
    assert [i.id for i in items] == ["n0", "n1", "n2"] and SOURCE_CALLS[-1] == ("3", tmp_path / "images")
    assert items[0].load_source().size == (8, 8)
    with pytest.raises(InputError, match=r"no manifest source 'nothing' is installed \(installed: .*numbered"):
        resolve_manifest("nothing:1", tmp_path, fresh_plugin_manager)
    with pytest.raises(InputError, match="does not exist"):
        resolve_manifest(str(tmp_path / "nothing.jsonl"), tmp_path, fresh_plugin_manager)


# ------------------------------------------------------------------------------------------ PIE-Bench
@pytest.fixture
def pie_folder(tmp_path):
    images = tmp_path / "annotation_images" / "0_random_140"
    images.mkdir(parents=True)
    mapping = {}
    for key, type_id in [("000000000000", "0"), ("000000000001", "6"), ("000000000002", "9")]:
        Image.new("RGB", (64, 64), (100, 150, 200)).save(images / f"{key}.jpg")
        mapping[key] = {
            "image_path": f"0_random_140/{key}.jpg", "original_prompt": "a cat sitting on a [wooden] chair",
            "editing_prompt": "a cat sitting on a [metal]  chair", "editing_instruction": "Make the chair metal",
            "editing_type_id": type_id, "blended_word": "chair chair", "mask": [512 * 100 + 200, 50, 512 * 101 + 200, 50],
        }
    (tmp_path / "mapping_file.json").write_text(json.dumps(mapping))
    return tmp_path


def test_pie_bench_loader(pie_folder):
    items = load_pie_bench(pie_folder / "mapping_file.json")
    assert [i.id for i in items] == ["pie-000000000000", "pie-000000000001", "pie-000000000002"]
    item = items[1]
    assert item.source_prompt == "a cat sitting on a wooden chair"
    assert item.target_prompts == ["a cat sitting on a metal chair"]
    assert item.attribute == "change_attribute_color" and item.meta["editing_instruction"] == "Make the chair metal"
    assert item.load_source().size == (64, 64)
    mask = item.region.to_mask()
    assert mask.shape == (512, 512)
    assert mask[100, 200:250].all() and mask[101, 200:250].all() and not mask[100, 250] and not mask[102, 200]
    assert mask[0].all() and mask[-1].all() and mask[:, 0].all() and mask[:, -1].all()  # PIE's border convention
    assert int(mask.sum()) == 100 + 2 * 512 + 2 * 510
    assert item.region.to_mask((64, 64)).shape == (64, 64)
    assert [i.attribute for i in load_pie_bench(pie_folder / "mapping_file.json", editing_types=["9"])] == [
        "change_style"]
    assert len(load_pie_bench(pie_folder / "mapping_file.json", limit=2)) == 2
    assert resolve_manifest(str(pie_folder), pie_folder) == items


def test_pie_bench_errors(pie_folder, tmp_path):
    mapping = json.loads((pie_folder / "mapping_file.json").read_text())
    mapping["000000000000"]["image_path"] = "0_random_140/missing.jpg"
    (pie_folder / "mapping_file.json").write_text(json.dumps(mapping))
    with pytest.raises(InputError, match="missing.jpg.*does not exist"):
        load_pie_bench(pie_folder / "mapping_file.json")
    del mapping["000000000000"]["original_prompt"]
    (pie_folder / "mapping_file.json").write_text(json.dumps(mapping))
    with pytest.raises(InputError, match=r"lacks \['original_prompt'\]"):
        load_pie_bench(pie_folder / "mapping_file.json")
    with pytest.raises(InputError, match="annotation_images"):
        load_pie_bench(pie_folder / "mapping_file.json", images_root=tmp_path / "nowhere")
    with pytest.raises(InputError, match="not downloaded"):
        load_pie_bench(tmp_path / "nope.json")
