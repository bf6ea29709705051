"""The toy UNet family: a real UNet2DConditionModel on the toy world, saved as a StableDiffusionPipeline folder that
the sd backend loads, evaluated by the same tools as the toy DiTs."""

from __future__ import annotations

import json

import pytest
import torch

from eimsdk_toy.models import build_pipeline, build_transformer, build_unet, build_vae
from eimsdk_toy.train import train

SMALL = dict(batch_size=2, pool=64, log_every=2)


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.fixture(scope="module")
def unet_folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("toy-unet")
    train("vae", root, steps=2, **SMALL)
    (folder,) = train("unet", root, steps=4, **SMALL)
    return folder


def test_unet_is_sized_like_the_toy_dits_and_reads_the_toy_flux_clip():
    dits = [_count(build_transformer(family, 0)) for family in ("pixart", "sd3", "flux")]
    assert min(dits) <= _count(build_unet(0)) <= max(dits)
    vae = build_vae(0)
    unet_clip = build_pipeline("unet", vae).text_encoder.state_dict()
    flux_clip = build_pipeline("flux", vae).text_encoder.state_dict()
    assert unet_clip.keys() == flux_clip.keys()
    assert all(torch.equal(unet_clip[k], flux_clip[k]) for k in unet_clip)


def test_training_writes_a_stable_diffusion_folder_the_sd_backend_loads(unet_folder):
    from eimsdk.editor import Editor

    index = json.loads((unet_folder / "model_index.json").read_text())
    assert index["_class_name"] == "StableDiffusionPipeline" and index["unet"][1] == "UNet2DConditionModel"
    summary = json.loads((unet_folder / "training.json").read_text())
    assert summary["steps"] == 4 and summary["parameters"]["unet"] == _count(build_unet(0))
    losses = [json.loads(line)["loss"] for line in (unet_folder / "train_log.jsonl").read_text().splitlines()]
    assert losses and all(torch.isfinite(torch.tensor(v)) for v in losses)

    encoder = Editor.from_pretrained(str(unet_folder)).encoder
    assert type(encoder).__name__ == "SDEncoder" and encoder.prediction_type == "epsilon"
    z0 = encoder.encode_images(torch.zeros(1, 3, 32, 32))
    assert z0.shape == (1, 4, 16, 16)
    cond = encoder.encode_prompts(["a large red circle at the top left on a black background"])
    assert cond.embeds["prompt_embeds"].shape == (1, 77, 64)


def test_evaluate_measures_generation_and_inversion_of_the_unet(unet_folder):
    from eimsdk_toy.evaluate import evaluate, markdown

    report = evaluate(unet_folder, n=2, steps=2, inversion_n=2, inversion_steps=2)
    assert report["family"] == "unet"
    assert report["inversion"]["backend"] == "SDEncoder" and report["inversion"]["n"] == 2
    for key in ("vae", "sampling", "inversion"):
        assert 0.0 <= report[key]["all"] <= 1.0 and set(report[key]["attributes"]) >= {"shape", "colour"}
    assert markdown(report).startswith("| unet |")


def test_toy_unet_is_registered_and_says_how_to_train_when_its_weights_are_missing(tmp_path, monkeypatch):
    import eimsdk_toy
    from eimsdk.plugins import PluginManager

    assert "toy-unet" in PluginManager().components["model"]
    assert (eimsdk_toy.unet_model_path() / "unet" / "config.json").is_file()  # the shipped weights
    monkeypatch.setattr(eimsdk_toy, "WEIGHTS_DIR", tmp_path)
    with pytest.raises(eimsdk_toy.ModelNotTrainedError, match="--family unet"):
        eimsdk_toy.unet_model_path()
