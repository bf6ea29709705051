"""World-2 training smoke tests: a few tiny steps of the VAE and each family at 64 px; the GPU recipe end to end."""

from __future__ import annotations

import json

import pytest
import torch

import diffusers
from eimsdk.editor import Editor
from eimsdk_toy.evaluate import markdown, world_of
from eimsdk_toy.models import FAMILIES, PIPELINES, encoder_options, sample_kwargs
from eimsdk_toy.train import main, train
from eimsdk_toy.world2 import NAMED, UNNAMED

TINY = dict(world=2, batch_size=2, pool=64, log_every=1)


@pytest.fixture(scope="module")
def out_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("toy2")
    assert main(["--world", "2", "--family", "vae", "--out", str(root), "--steps", "2", "--batch-size", "2",
                 "--pool", "64"]) == 0
    config = json.loads((root / "vae" / "config.json").read_text())
    assert config["sample_size"] == 64
    return root


@pytest.mark.parametrize("family", FAMILIES)
def test_world2_training_writes_a_64px_pipeline(out_root, family):
    (folder,) = train(family, out_root, steps=3, **TINY)
    summary = json.loads((folder / "training.json").read_text())
    assert summary["config"]["world"] == 2 and summary["steps"] == 3 and world_of(folder) == 2
    pipe = getattr(diffusers, PIPELINES[family]).from_pretrained(folder, torch_dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    prompt = "a small dark blue dotted square with a ring at the top left on a white background"
    image = pipe(prompt, num_inference_steps=2, generator=torch.Generator().manual_seed(0), output_type="pt",
                 **sample_kwargs(family, 64, encoder_options(folder))).images
    assert image.shape == (1, 3, 64, 64) and torch.isfinite(image).all()
    if family in ("sd3", "flux"):  # trained on a 32-token text context, which every loader must use too
        assert encoder_options(folder) == {"max_sequence_length": 32}
        assert pipe.tokenizer.model_max_length == 32
        embeds = Editor.from_pretrained(str(folder)).encoder.encode_prompts([prompt]).embeds["prompt_embeds"]
        assert embeds.shape[1] == (32 + 32 if family == "sd3" else 32)  # SD3: CLIP then T5
    else:
        assert encoder_options(folder) == {}


def test_recipe_trains_evaluates_and_archives_each_model(out_root, tmp_path, capsys):
    import shutil

    from eimsdk_toy.recipe import ARCHIVE_LIMIT, main as recipe_main

    shutil.copytree(out_root / "vae", tmp_path / "vae")  # an existing stage is skipped: the recipe resumes
    args = ["--out", str(tmp_path), "--device", "cpu", "--families", "pixart", "--roundtrip-n", "4",
            "--train-args", "--steps 3 --batch-size 2 --pool 64",
            "--eval-args", "--n 2 --steps 2 --inversion-n 1 --inversion-steps 2"]
    assert recipe_main([*args, "--pause-minutes", "1e-6"]) == 0  # pauses after one step, at a checkpoint
    assert capsys.readouterr().out.startswith("paused at a checkpoint: pixart")
    assert json.loads((tmp_path / "pixart" / "training.json").read_text())["steps"] == 1
    assert not (tmp_path / "recipe.json").exists() and not (tmp_path / "pixart" / "evaluation.json").exists()
    assert recipe_main(args) == 0  # continues the paused family
    summary = json.loads((tmp_path / "recipe.json").read_text())
    assert summary["vae_roundtrip"]["n"] == 4 and set(summary["vae_roundtrip"]["attributes"]) >= set(UNNAMED)
    model = summary["models"]["pixart"]
    assert model["training"]["steps"] == 3 and model["training"]["config"]["world"] == 2
    assert not model["training"]["paused"] and not (tmp_path / "checkpoints" / "pixart.pt").exists()
    report = model["evaluation"]
    assert report["world"] == 2 and set(report["sampling"]["attributes"]) == set(NAMED)
    assert set(report["inversion"]["attributes"]) == set(NAMED) | set(UNNAMED)  # inversion must keep unnamed content
    for stats in report["sampling"]["unnamed"].values():
        assert sum(stats["samples"].values()) == pytest.approx(1.0) and 0.0 <= stats["tv"] <= 1.0
        assert 0.0 < stats["p_value"] <= 1.0
    assert "| unnamed attribute | TV(samples, training) | p (permutation)" in markdown(report)
    archive = tmp_path / "archives" / "toy2-pixart.tar.gz"
    assert archive.stat().st_size == model["archive_bytes"] < ARCHIVE_LIMIT


def test_a_factor_4_vae_with_8_channels_gives_world_1_token_counts(tmp_path):
    from eimsdk_pixart.encoder import PixArtEncoder

    (vae_dir,) = train("vae", tmp_path, steps=1, vae_factor=4, latent_channels=8, **TINY)
    (folder,) = train("pixart", tmp_path, steps=2, **TINY)
    config = json.loads((folder / "transformer" / "config.json").read_text())
    assert (config["sample_size"], config["in_channels"], config["out_channels"]) == (16, 8, 16)
    pipe = diffusers.PixArtAlphaPipeline.from_pretrained(folder, torch_dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    image = pipe("a large light red plain circle at the top left on a black background", num_inference_steps=2,
                 output_type="pt", **sample_kwargs("pixart", 64)).images
    assert image.shape == (1, 3, 64, 64)
    encoder = PixArtEncoder.from_pretrained(str(folder))
    assert encoder.latent_channels == 8 and encoder.vae_scale_factor == 4


def test_recipe_uses_a_shipped_world2_vae_instead_of_training_one(out_root, tmp_path, monkeypatch):
    import shutil
    from types import SimpleNamespace

    from eimsdk_toy import recipe

    shipped = tmp_path / "package"
    shutil.copytree(out_root / "vae", shipped / "vae")
    monkeypatch.setattr(recipe, "get_world", lambda number: SimpleNamespace(weights=shipped))
    out = tmp_path / "run"
    summary = recipe.run_recipe(out, device="cpu", families=("pixart",), roundtrip_n=2,
                                train_args="--steps 1 --batch-size 2 --pool 64",
                                eval_args="--n 1 --steps 2 --inversion-n 1 --inversion-steps 2")
    assert summary["vae_source"] == str(shipped / "vae")
    assert (out / "vae" / "config.json").read_bytes() == (shipped / "vae" / "config.json").read_bytes()
    assert not (out / "logs" / "vae.log").exists(), "no VAE was trained"
    assert sorted(p.name for p in (shipped / "vae").iterdir()) == sorted(p.name for p in (out_root / "vae").iterdir())


def test_evaluate_cli_refuses_bad_arguments_with_exit_2_and_no_traceback(tmp_path, capsys):
    from eimsdk_toy.evaluate import main as evaluate_main

    (tmp_path / "notes.txt").write_text("not a pipeline")
    for argv, said in ((["--model", str(tmp_path), "--n", "0"], "--n=0 is invalid; pass at least 1 scene"),
                       (["--model", str(tmp_path), "--inversion-n", "-1"], "--inversion-n=-1 is invalid; pass 0"),
                       (["--model", str(tmp_path), "--inversion-fixed-point", "-2"],
                        "--inversion-fixed-point=-2 is invalid; pass 0"),
                       (["--model", str(tmp_path), "--n", "1"], "has no model_index.json; pass a folder")):
        with pytest.raises(SystemExit) as exit_info:
            evaluate_main(argv)
        err = capsys.readouterr().err
        assert exit_info.value.code == 2 and said in err and "Traceback" not in err
