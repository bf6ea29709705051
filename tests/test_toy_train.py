"""Toy training: a 20-step run of each family writes a folder its diffusers pipeline loads and samples."""

from __future__ import annotations

import json

import pytest
import torch
from pydantic import ValidationError

import diffusers
from eimsdk.errors import InputError
from eimsdk_toy.models import FAMILIES, PIPELINES, denoiser_name, sample_kwargs
from eimsdk_toy.train import TrainConfig, noise_seed, train

SMALL = dict(batch_size=2, pool=64, log_every=5)


@pytest.fixture(scope="module")
def out_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("toy")
    (vae_dir,) = train("vae", root, steps=3, **SMALL)
    assert (vae_dir / "config.json").is_file()
    config = json.loads((vae_dir / "config.json").read_text())
    assert config["scaling_factor"] > 0 and config["shift_factor"] is not None
    return root


@pytest.mark.parametrize("family", FAMILIES)
def test_smoke_training_writes_a_loadable_pipeline(out_root, family):
    (folder,) = train(family, out_root, steps=20, **SMALL)
    assert folder == out_root / family
    rows = [json.loads(line) for line in (folder / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [0, 5, 10, 15, 19]
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in rows)
    summary = json.loads((folder / "training.json").read_text())
    assert summary["steps"] == 20 and summary["parameters"][denoiser_name(family)] > 100_000

    index = json.loads((folder / "model_index.json").read_text())
    assert index["_class_name"] == PIPELINES[family]
    pipe = getattr(diffusers, PIPELINES[family]).from_pretrained(folder, torch_dtype=torch.float32)
    denoiser = getattr(pipe, denoiser_name(family))
    assert denoiser.dtype == torch.float32
    stored = next(p for n, p in denoiser.named_parameters())
    assert torch.equal(stored, stored.half().float()), "weights are saved as exact fp16 values"
    pipe.set_progress_bar_config(disable=True)
    image = pipe("a large red circle at the top left on a black background", num_inference_steps=2,
                 generator=torch.Generator().manual_seed(0), output_type="pt", **sample_kwargs(family)).images
    assert image.shape == (1, 3, 32, 32)
    assert torch.isfinite(image).all()


def test_config_bounds_and_bad_arguments(tmp_path):
    with pytest.raises(ValidationError):
        TrainConfig(family="pixart", batch_size=-1)
    with pytest.raises(ValidationError):
        TrainConfig(family="pixart", lr=-1.0)
    with pytest.raises(ValidationError):
        TrainConfig(family="dalle")
    cpu, cuda = TrainConfig(family="sd3"), TrainConfig(family="sd3", device="cuda")
    assert 0 < cpu.total_steps() <= cuda.total_steps() and 0 < cpu.batch() <= cuda.batch()
    assert TrainConfig(family="sd3", steps=7, batch_size=3).total_steps() == 7
    with pytest.raises(InputError, match="family"):
        train("dalle", tmp_path)
    if not torch.cuda.is_available():
        with pytest.raises(InputError, match="cuda"):
            train("pixart", tmp_path, device="cuda")


def test_default_model_path_and_registered_models(tmp_path, monkeypatch):
    import eimsdk_toy
    from eimsdk.editor import resolve_model
    from eimsdk.plugins import PluginManager

    monkeypatch.setattr(eimsdk_toy, "WEIGHTS_DIR", tmp_path)
    with pytest.raises(eimsdk_toy.ModelNotTrainedError, match="eimsdk_toy.train --family sd3"):
        eimsdk_toy.default_model_path("sd3")
    with pytest.raises(InputError, match="family"):
        eimsdk_toy.default_model_path("dalle")
    (tmp_path / "sd3").mkdir()
    (tmp_path / "sd3" / "model_index.json").write_text("{}")
    assert eimsdk_toy.default_model_path("sd3") == tmp_path / "sd3"

    pm = PluginManager()
    assert {"toy-pixart", "toy-sd3", "toy-flux", "toy-unet"} <= set(pm.components["model"])
    assert resolve_model("toy-sd3", pm) == str(tmp_path / "sd3")


def test_v_prediction_pixart_saves_its_scheduler_and_loads_in_the_backend(out_root):
    from eimsdk_pixart.encoder import PixArtEncoder

    (folder,) = train("pixart", out_root / "v", steps=3, prediction_type="v_prediction", **SMALL)
    config = json.loads((folder / "scheduler" / "scheduler_config.json").read_text())
    assert config["prediction_type"] == "v_prediction"
    assert PixArtEncoder.from_pretrained(str(folder)).prediction_type == "v_prediction"


def test_wall_clock_budget_ends_the_run_early_and_drives_the_schedule(tmp_path):
    from eimsdk_toy.train import lr_at

    (folder,) = train("pixart", tmp_path, steps=100_000, max_seconds=2.0, **SMALL)
    summary = json.loads((folder / "training.json").read_text())
    assert 0 < summary["steps"] < 100_000 and summary["seconds"] >= 2.0
    rows = [json.loads(line) for line in (folder / "train_log.jsonl").read_text().splitlines()]
    assert rows[-1]["step"] < 100_000

    cfg = TrainConfig(family="pixart", steps=1000, warmup=10, max_seconds=10.0)
    assert lr_at(500, cfg, elapsed=10.0) == pytest.approx(0.1 * cfg.lr)  # time is up: the floor of the cosine
    assert lr_at(500, cfg, elapsed=0.0) > lr_at(500, cfg, elapsed=8.0)  # time further along than steps
    assert lr_at(500, cfg.model_copy(update={"max_seconds": 0.0}), elapsed=1e9) == lr_at(500, cfg, elapsed=0.0)


def test_a_paused_and_resumed_run_ends_with_the_weights_of_an_unbroken_one(tmp_path):
    from safetensors.torch import load_file

    from eimsdk_toy.train import checkpoint_path

    options = dict(steps=6, warmup=2, **SMALL)
    (whole,) = train("pixart", tmp_path / "whole", **options)
    (part,) = train("pixart", tmp_path / "parts", pause_step=3, **options)
    ckpt = checkpoint_path(tmp_path / "parts", "pixart")
    summary = json.loads((part / "training.json").read_text())
    assert summary["paused"] and summary["steps"] == 3 and ckpt.is_file()
    assert not list(part.rglob("*.pt")), "the checkpoint lives outside the model folder"

    with pytest.raises(InputError, match="lr"):
        train("pixart", tmp_path / "parts", resume=True, **{**options, "lr": 1e-3})
    train("pixart", tmp_path / "parts", resume=True, pause_step=3, **options)  # the pause already passed
    summary = json.loads((part / "training.json").read_text())
    assert not summary["paused"] and summary["steps"] == 6 and not ckpt.exists()

    weights = [load_file(folder / "transformer" / "diffusion_pytorch_model.safetensors") for folder in (whole, part)]
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    logged = [[json.loads(line)["step"] for line in (f / "train_log.jsonl").read_text().splitlines()]
              for f in (whole, part)]
    assert logged[0] == logged[1] == [0, 5]

    stamp = (part / "training.json").stat().st_mtime_ns
    train("pixart", tmp_path / "parts", resume=True, **options)  # finished: nothing to resume, nothing rewritten
    assert (part / "training.json").stat().st_mtime_ns == stamp


def test_a_time_pause_stops_after_at_least_one_step(tmp_path):
    (folder,) = train("unet", tmp_path, steps=50, pause_seconds=1e-6, **SMALL)
    summary = json.loads((folder / "training.json").read_text())
    assert summary["paused"] and summary["steps"] == 1


@pytest.mark.parametrize("signame", ["SIGINT", "SIGTERM", "SIGUSR1"])
def test_a_signal_during_training_pauses_at_a_checkpoint_that_resumes(tmp_path, monkeypatch, signame):
    import os
    import signal

    import eimsdk_toy.train as train_module
    from eimsdk_toy.train import checkpoint_path

    if not hasattr(signal, signame):
        pytest.skip(f"{signame} does not exist on this platform")
    sig = getattr(signal, signame)
    before = signal.getsignal(sig)
    step_logged = train_module._Log.step

    def log_then_signal(self, step, loss, lr):  # the user presses Ctrl-C (or kill runs) during step 1
        step_logged(self, step, loss, lr)
        if step == 1:
            os.kill(os.getpid(), sig)

    monkeypatch.setattr(train_module._Log, "step", log_then_signal)
    (folder,) = train("pixart", tmp_path, steps=6, warmup=2, **SMALL)
    summary = json.loads((folder / "training.json").read_text())
    assert summary["paused"] and summary["steps"] == 2, summary
    assert checkpoint_path(tmp_path, "pixart").is_file()
    assert signal.getsignal(sig) is before, "the caller's handler comes back after training"

    monkeypatch.setattr(train_module._Log, "step", step_logged)
    train("pixart", tmp_path, steps=6, warmup=2, resume=True, **SMALL)
    summary = json.loads((folder / "training.json").read_text())
    assert not summary["paused"] and summary["steps"] == 6


def test_a_vae_continues_from_a_saved_one_and_refuses_another_layout(tmp_path):
    from diffusers import AutoencoderKL

    (first,) = train("vae", tmp_path / "a", steps=2, **SMALL)
    (again,) = train("vae", tmp_path / "b", steps=1, lr=1e-12, warmup=0, init_from=str(first), **SMALL)
    (fresh,) = train("vae", tmp_path / "c", steps=1, lr=1e-12, warmup=0, **SMALL)
    weights = [AutoencoderKL.from_pretrained(f).state_dict() for f in (first, again, fresh)]
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0]), "a tiny step keeps the saved VAE"
    assert not all(torch.equal(weights[0][k], weights[2][k]) for k in weights[0])
    with pytest.raises(InputError, match="latent_channels"):
        train("vae", tmp_path / "d", steps=1, latent_channels=8, init_from=str(first), **SMALL)
    with pytest.raises(InputError, match="no VAE there"):
        train("vae", tmp_path / "e", steps=1, init_from=str(tmp_path / "nothing"), **SMALL)


def test_a_denoiser_continues_from_a_trained_folder_and_refuses_other_settings(out_root, tmp_path):
    import shutil

    from safetensors.torch import load_file

    for root in ("a", "b", "c"):
        shutil.copytree(out_root / "vae", tmp_path / root / "vae")  # one VAE for all three runs
    (first,) = train("pixart", tmp_path / "a", steps=3, **SMALL)
    (again,) = train("pixart", tmp_path / "b", steps=1, lr=1e-12, warmup=0, init_from=str(first), **SMALL)
    (fresh,) = train("pixart", tmp_path / "c", steps=1, lr=1e-12, warmup=0, **SMALL)
    weights = [load_file(f / "transformer" / "diffusion_pytorch_model.safetensors") for f in (first, again, fresh)]
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0]), "a tiny step keeps the loaded weights"
    assert not all(torch.equal(weights[0][k], weights[2][k]) for k in weights[0])
    summary = json.loads((again / "training.json").read_text())
    assert summary["config"]["init_from"] == str(first)
    # the continued folder carries its history, so a shipped copy says how it was trained in all
    assert summary["continued_from"] == json.loads((first / "training.json").read_text())
    assert summary["steps_in_all"] == 3 + 1
    # the continued run draws fresh batches and noise, not the first run's again; another continuation, other draws
    seeds = {noise_seed(TrainConfig(family="pixart", **kw)) for kw in ({}, {"init_from": str(first)},
                                                                        {"init_from": str(again)})}
    assert len(seeds) == 3, seeds

    with pytest.raises(InputError, match="seed: 0 there, 1 here"):
        train("pixart", tmp_path / "b", steps=1, seed=1, init_from=str(first), **SMALL)
    with pytest.raises(InputError, match="prediction_type"):
        train("pixart", tmp_path / "b", steps=1, prediction_type="v_prediction", init_from=str(first), **SMALL)
    with pytest.raises(InputError, match="family: 'pixart' there, 'sd3' here"):  # both call it a transformer
        train("sd3", tmp_path / "b", steps=1, init_from=str(first), **SMALL)
    with pytest.raises(InputError, match="no trained unet there"):
        train("unet", tmp_path / "b", steps=1, init_from=str(first), **SMALL)
    with pytest.raises(InputError, match="no trained pixart there"):
        train("pixart", tmp_path / "b", steps=1, init_from=str(tmp_path / "nothing"), **SMALL)
    train("vae", tmp_path / "d", steps=1, seed=5, **SMALL)  # another VAE: the weights read other latents
    with pytest.raises(InputError, match="VAE"):
        train("pixart", tmp_path / "d", steps=1, init_from=str(first), **SMALL)


def test_a_vae_trained_in_this_process_and_loaded_from_disk_are_one_vae_for_resume(tmp_path):
    from diffusers import AutoencoderKL

    from eimsdk_toy.train import _vae_key, train_vae

    trained = train_vae(TrainConfig(family="vae", steps=1, **SMALL), tmp_path / "vae")  # config holds tuples
    loaded = AutoencoderKL.from_pretrained(tmp_path / "vae")  # config read back from JSON holds lists
    assert _vae_key(trained) == _vae_key(loaded)
    assert _vae_key(trained) != _vae_key(AutoencoderKL.from_pretrained(
        train("vae", tmp_path / "other", steps=1, latent_channels=8, **SMALL)[0]))


def test_edge_loss_weighs_edges_not_offsets():
    from eimsdk_toy.train import _edge_l1

    sharp = torch.zeros(1, 3, 8, 8)
    sharp[..., 4:] = 1.0  # a vertical edge
    soft = sharp.clone()
    soft[..., 3], soft[..., 4] = 0.25, 0.75  # the same edge, softened
    assert _edge_l1(sharp, sharp) == 0
    assert _edge_l1(sharp + 0.3, sharp) < 1e-7  # a uniform offset has the same differences
    assert _edge_l1(soft, sharp) > 0.01  # a softened edge does not
    assert TrainConfig(family="vae", edge_weight=1.0).edge_weight == 1.0
    with pytest.raises(ValidationError):
        TrainConfig(family="vae", edge_weight=-1.0)


def test_pixart_samples_read_captions_like_the_encoder_not_through_the_pipelines_cleaner(monkeypatch):
    from eimsdk_toy import default_model_path
    from eimsdk_toy.evaluate import load_pipeline

    seen = []
    original = diffusers.PixArtAlphaPipeline._text_preprocessing

    def recording(self, text, clean_caption=False):
        seen.append(clean_caption)
        return original(self, text, clean_caption=False)

    monkeypatch.setattr(diffusers.PixArtAlphaPipeline, "_text_preprocessing", recording)
    pipe, family = load_pipeline(default_model_path("pixart"))
    assert isinstance(pipe, diffusers.PixArtAlphaPipeline)
    pipe("A large red circle at the top left on a black background ", num_inference_steps=2, output_type="pt",
         **sample_kwargs(family))
    assert seen and not any(seen), "the pipeline's clean_caption cleaner ran"


@pytest.mark.parametrize("family", ["sd3", "flux"])
def test_train_shift_sets_the_noise_levels_flow_training_draws(out_root, tmp_path, monkeypatch, family):
    import eimsdk_toy.train as train_module

    shifts = []
    original = train_module.diffusion_loss

    def recording(family_, transformer, z0, cond, gen, alphas_cumprod, shift, *args, **kwargs):
        shifts.append(shift)
        return original(family_, transformer, z0, cond, gen, alphas_cumprod, shift, *args, **kwargs)

    monkeypatch.setattr(train_module, "diffusion_loss", recording)
    (tmp_path / "vae").symlink_to(out_root / "vae")
    (default,) = train(family, tmp_path, steps=2, **SMALL)
    sampler = train_module.flow_shift(family, diffusers.FlowMatchEulerDiscreteScheduler.from_pretrained(
        default / "scheduler"), 16)
    assert shifts == [pytest.approx(sampler)] * 2 and sampler > 1.2  # the sampler's shift by default
    shifts.clear()
    (folder,) = train(family, tmp_path, steps=2, train_shift=1.0, **SMALL)
    assert shifts == [1.0, 1.0]
    assert json.loads((folder / "training.json").read_text())["config"]["train_shift"] == 1.0
    with pytest.raises(ValidationError):
        TrainConfig(family=family, train_shift=-1.0)


def test_flow_noise_levels_follow_the_shift():
    from types import SimpleNamespace

    from eimsdk_toy.train import diffusion_loss

    levels = []

    class Recorder(torch.nn.Module):
        def forward(self, hidden_states, timestep, **kwargs):
            levels.append(timestep / 1000)
            return SimpleNamespace(sample=torch.zeros_like(hidden_states))

    z0 = torch.zeros(4096, 1, 2, 2)
    cond = {"prompt_embeds": torch.zeros(4096, 1, 1), "pooled": torch.zeros(4096, 1)}
    means = []
    for shift in (1.0, 3.0):
        diffusion_loss("sd3", Recorder(), z0, cond, torch.Generator().manual_seed(0), None, shift)
        s = levels.pop()
        means.append((s.mean().item(), (s < 0.3).float().mean().item()))
    assert abs(means[0][0] - 0.5) < 0.02  # unshifted logit-normal: centred on s = 0.5
    assert means[1][0] > means[0][0] + 0.15  # shift 3: noisier
    assert means[0][1] > 3 * means[1][1]  # and far fewer nearly clean levels (s < 0.3)


def test_resume_refuses_another_train_shift_and_reads_checkpoints_written_before_it(out_root, tmp_path):
    from eimsdk_toy.train import checkpoint_path

    (tmp_path / "vae").symlink_to(out_root / "vae")
    options = dict(steps=4, **SMALL)
    train("sd3", tmp_path, pause_step=2, train_shift=1.0, **options)
    with pytest.raises(InputError, match="train_shift"):
        train("sd3", tmp_path, resume=True, train_shift=2.0, **options)
    ckpt = checkpoint_path(tmp_path, "sd3")
    state = torch.load(ckpt, weights_only=False)
    state["config"].pop("train_shift")  # as a checkpoint written before the option existed
    torch.save(state, ckpt)
    with pytest.raises(InputError, match="train_shift"):  # such a run drew the sampler's shift (0)
        train("sd3", tmp_path, resume=True, train_shift=1.0, **options)
    (folder,) = train("sd3", tmp_path, resume=True, **options)
    assert json.loads((folder / "training.json").read_text())["steps"] == 4 and not ckpt.exists()
