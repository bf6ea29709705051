"""Editor: backend selection from model_index.json, clear errors, and the E -> I -> M calls."""

from __future__ import annotations

import json

import pytest
import torch

from eimsdk import Editor
from eimsdk.errors import BackendNotFoundError, DirectionMismatchError, InputError

EXPECTED = {"pixart": "pixart", "pixart-sigma": "pixart", "sd3": "sd3", "flux": "flux"}


@pytest.mark.parametrize("family", list(EXPECTED))
def test_from_pretrained_picks_backend(family, tiny_pipeline_path):
    editor = Editor.from_pretrained(tiny_pipeline_path(family))
    assert editor.encoder.family.startswith(EXPECTED[family])


def test_from_plain_diffusers_save_pretrained(tmp_path):
    """A folder written by plain diffusers (not our fixture helper) is recognised too."""
    from diffusers import StableDiffusion3Pipeline

    from eimsdk.testing.tiny import get_dummy_components

    StableDiffusion3Pipeline(**get_dummy_components("sd3", seed=3)).save_pretrained(tmp_path)
    assert Editor.from_pretrained(tmp_path).encoder.family == "sd3"


def test_unknown_pipeline_class_lists_installed_backends(tmp_path):
    (tmp_path / "model_index.json").write_text(json.dumps({"_class_name": "KandinskyV22Pipeline"}))
    with pytest.raises(BackendNotFoundError, match=r"KandinskyV22Pipeline.*pixart \(PixArtAlphaPipeline"):
        Editor.from_pretrained(tmp_path)


def test_folder_without_model_index(tmp_path):
    with pytest.raises(BackendNotFoundError, match="no model_index.json"):
        Editor.from_pretrained(tmp_path)


def test_hub_id_offline_is_a_clear_error():
    with pytest.raises(BackendNotFoundError, match="could not read model_index.json"):
        Editor.from_pretrained("someone/not-a-cached-model")


def test_generate_seed_is_reproducible_and_validated(tiny_pipeline_path):
    editor = Editor.from_pretrained(tiny_pipeline_path("pixart"))
    a = editor.generate("a red circle", num_inference_steps=2, seed=5, output_type="np")
    b = editor.generate("a red circle", num_inference_steps=2, seed=5, output_type="np")
    assert a.shape == (1, 32, 32, 3) and (a == b).all()
    with pytest.raises(InputError, match="height=33"):
        editor.generate("a red circle", height=33, width=32)
    with pytest.raises(InputError, match="prompt"):
        editor.generate("")


def test_edit_and_mismatched_direction(tiny_pipeline_path, scene_image):
    pix = Editor.from_pretrained(tiny_pipeline_path("pixart"))
    flux = Editor.from_pretrained(tiny_pipeline_path("flux"))
    d = pix.find_direction(scene_image, "a red circle", "a blue circle", method="text", size=(32, 32))
    with pytest.raises(DirectionMismatchError, match="pixart"):
        flux.apply(scene_image, "a red circle", d, 1.0, size=(32, 32))
    with pytest.raises(InputError, match="strength"):
        pix.apply(scene_image, "a red circle", d, float("nan"), size=(32, 32))
    with pytest.raises(InputError, match="nothing to edit"):
        pix.find_direction(scene_image, "a red circle", "a red circle", method="text")
    res = pix.edit(scene_image, "a red circle", "a blue circle", 1.0, method="text", size=(32, 32))
    assert res.image.size == (32, 32) and res.cost.model_evals > 0 and res.cost.seconds > 0
