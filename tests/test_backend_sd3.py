"""SD3 backend: parity with diffusers, inversion round trip, derivatives, input policy, loading options, contract."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel, StableDiffusion3Pipeline
from PIL import Image
from torch.nn.attention import SDPBackend, sdpa_kernel

from eimsdk.backends.diffusers_base import ENCODER_OPTIONS_KEY
from eimsdk.errors import InputError
from eimsdk.records import Conditioning
from eimsdk.testing.contract import EncoderContract
from eimsdk.testing.tiny import build_tiny_pipeline, tiny_clip_encoder, tiny_t5_encoder
from eimsdk_sd3.encoder import SD3Encoder

PROMPTS = ["a photo of a red circle", "a blue square on the left"]


@pytest.fixture(scope="module")
def tiny_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("sd3-tiny")
    build_tiny_pipeline("sd3", path)
    return path


@pytest.fixture(scope="module")
def other_path(tmp_path_factory):
    """A folder saved by plain diffusers from components whose config differs from ``get_dummy_components``.

    SD3.5-style transformer (QK RMS-norm, a dual-attention layer), 8 latent channels, a 3-block VAE (factor 4)
    with its own shift/scale, CLIPs of widths 24 and 40 padded into an 80-wide T5, the scheduler shift of SD3 (3.0).
    """
    torch.manual_seed(7)
    transformer = SD3Transformer2DModel(
        sample_size=8, patch_size=2, in_channels=8, num_layers=2, attention_head_dim=8, num_attention_heads=2,
        joint_attention_dim=80, caption_projection_dim=16, pooled_projection_dim=64, out_channels=8,
        dual_attention_layers=(0,), qk_norm="rms_norm",
    )
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, block_out_channels=(4, 8, 8), layers_per_block=1, latent_channels=8,
        down_block_types=("DownEncoderBlock2D",) * 3, up_block_types=("UpDecoderBlock2D",) * 3, norm_num_groups=2,
        use_quant_conv=False, use_post_quant_conv=False, shift_factor=0.1159, scaling_factor=0.3611,
    )
    text_encoder, tokenizer = tiny_clip_encoder(True, hidden_size=24)
    text_encoder_2, tokenizer_2 = tiny_clip_encoder(True, hidden_size=40)
    text_encoder_3, tokenizer_3 = tiny_t5_encoder(d_model=80)
    pipe = StableDiffusion3Pipeline(
        transformer=transformer, scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0), vae=vae,
        text_encoder=text_encoder, tokenizer=tokenizer, text_encoder_2=text_encoder_2, tokenizer_2=tokenizer_2,
        text_encoder_3=text_encoder_3, tokenizer_3=tokenizer_3,
    )
    path = tmp_path_factory.mktemp("sd3-other")
    pipe.save_pretrained(str(path))
    return path


@pytest.fixture(scope="module")
def encoder(tiny_path):
    return SD3Encoder.from_pretrained(tiny_path)


@pytest.fixture(scope="module")
def pipe(tiny_path):
    pipe = StableDiffusion3Pipeline.from_pretrained(str(tiny_path))
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _pipeline_images(pipe, prompts, **kw) -> torch.Tensor:
    """The pipeline's ``output_type="pt"`` images, mapped from [0, 1] to [-1, 1]."""
    return pipe(prompts, output_type="pt", **kw).images * 2 - 1


def _seed(seed: int = 0) -> torch.Generator:
    return torch.Generator("cpu").manual_seed(seed)


# --------------------------------------------------------------------------------------------- parity
@pytest.mark.parametrize("source", ["seed", "latents"])
def test_generate_matches_pipeline(encoder, pipe, source):
    kw = dict(num_inference_steps=4, guidance_scale=5.0, height=32, width=32)
    if source == "seed":
        ours = encoder.generate(PROMPTS, generator=_seed(3), **kw)
        theirs = _pipeline_images(pipe, PROMPTS, generator=_seed(3), **kw)
    else:
        latents = torch.randn(2, 4, 16, 16, generator=_seed(5))
        ours = encoder.generate(PROMPTS, latents=latents, **kw)
        theirs = _pipeline_images(pipe, PROMPTS, latents=latents, **kw)
    assert ours.shape == (2, 3, 32, 32)
    assert ours.std() > 1e-3, "images must not be constant for the comparison to mean anything"
    assert (ours - theirs).abs().max() <= 1e-4


def test_generate_matches_pipeline_with_negative_prompts_and_without_guidance(encoder, pipe):
    kw = dict(num_inference_steps=3, height=32, width=48)
    negative = ["a green triangle", "a dark background"]
    ours = encoder.generate(PROMPTS, guidance_scale=4.0, negative_prompts=negative, generator=_seed(1), **kw)
    theirs = _pipeline_images(pipe, PROMPTS, guidance_scale=4.0, negative_prompt=negative, generator=_seed(1), **kw)
    assert (ours - theirs).abs().max() <= 1e-4
    ours = encoder.generate(PROMPTS, guidance_scale=1.0, generator=_seed(1), **kw)
    theirs = _pipeline_images(pipe, PROMPTS, guidance_scale=1.0, generator=_seed(1), **kw)
    assert (ours - theirs).abs().max() <= 1e-4


@pytest.mark.parametrize("variant", ["as_saved", "no_t5_dynamic_shift"])
def test_generate_matches_pipeline_for_a_plain_diffusers_folder(other_path, variant):
    # kwargs pass through SD3Encoder.from_pretrained to diffusers: drop T5 (a 24 GB option) and swap the scheduler.
    kwargs = {} if variant == "as_saved" else dict(
        text_encoder_3=None, tokenizer_3=None,
        scheduler=FlowMatchEulerDiscreteScheduler(use_dynamic_shifting=True, base_image_seq_len=16,
                                                  max_image_seq_len=256))
    encoder = SD3Encoder.from_pretrained(other_path, **kwargs)
    pipe = StableDiffusion3Pipeline.from_pretrained(str(other_path), **kwargs)
    pipe.set_progress_bar_config(disable=True)
    assert encoder.image_multiple == 8 and encoder.latent_channels == 8
    kw = dict(num_inference_steps=4, guidance_scale=6.0, height=32, width=48)
    ours = encoder.generate(PROMPTS, generator=_seed(11), **kw)
    theirs = _pipeline_images(pipe, PROMPTS, generator=_seed(11), **kw)
    assert ours.shape == (2, 3, 32, 48) and ours.std() > 1e-3
    assert (ours - theirs).abs().max() <= 1e-4


@pytest.mark.parametrize("prompts", [PROMPTS, ["a photo of a red circle " * 60]], ids=["short", "over_long"])
def test_encode_prompts_matches_pipeline(encoder, pipe, prompts):
    cond = encoder.encode_prompts(prompts)
    with torch.no_grad():  # as in the pipeline's __call__ (with grad enabled, attention takes another kernel)
        embeds, _, pooled, _ = pipe.encode_prompt(prompts, None, None, do_classifier_free_guidance=False)
    assert cond.masks == {}
    torch.testing.assert_close(cond.embeds["prompt_embeds"], embeds, atol=1e-6, rtol=0)
    torch.testing.assert_close(cond.embeds["pooled_prompt_embeds"], pooled, atol=1e-6, rtol=0)
    assert cond.embeds["prompt_embeds"].shape[1] == 77 + 256


@pytest.fixture
def stored_path(tiny_path, tmp_path):
    """A copy of the tiny folder whose ``model_index.json`` stores encoder options (a model trained with them)."""
    import json
    import shutil

    shutil.copytree(tiny_path, tmp_path / "m")

    def store(options):
        index = json.loads((tmp_path / "m" / "model_index.json").read_text())
        index[ENCODER_OPTIONS_KEY] = options
        (tmp_path / "m" / "model_index.json").write_text(json.dumps(index))
        return tmp_path / "m"
    return store


def test_options_stored_in_model_index_are_the_loading_defaults(stored_path, pipe):
    path = stored_path({"max_sequence_length": 24})
    encoder = SD3Encoder.from_pretrained(path)
    assert encoder.max_sequence_length == 24
    cond = encoder.encode_prompts(PROMPTS)
    with torch.no_grad():
        embeds, _, _, _ = pipe.encode_prompt(PROMPTS, None, None, do_classifier_free_guidance=False,
                                             max_sequence_length=24)
    torch.testing.assert_close(cond.embeds["prompt_embeds"], embeds, atol=1e-6, rtol=0)
    assert SD3Encoder.from_pretrained(path, max_sequence_length=40).max_sequence_length == 40  # the caller wins


@pytest.mark.parametrize("stored", [{"max_sequence_lenght": 24}, [24], {"max_sequence_length": 0}],
                         ids=["unknown_option", "not_an_object", "out_of_range"])
def test_bad_stored_options_name_the_entry_and_the_backend_options(stored_path, stored):
    with pytest.raises(InputError, match=f"max_sequence_length.*{ENCODER_OPTIONS_KEY}|{ENCODER_OPTIONS_KEY}.*max_seq"):
        SD3Encoder.from_pretrained(stored_path(stored))


def test_max_sequence_length_option(pipe):
    encoder = SD3Encoder.from_pipeline(pipe, max_sequence_length=512)
    prompt = "a photo of a red circle " * 60  # 361 T5 tokens: over the default limit, under 512
    assert encoder.max_prompt_tokens == 512
    cond = encoder.encode_prompts([prompt])
    with torch.no_grad():
        embeds, _, _, _ = pipe.encode_prompt(prompt, None, None, do_classifier_free_guidance=False,
                                             max_sequence_length=512)
    assert cond.embeds["prompt_embeds"].shape[1] == 77 + 512
    torch.testing.assert_close(cond.embeds["prompt_embeds"], embeds, atol=1e-6, rtol=0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        encoder.encode(Image.new("RGB", (32, 32)), prompt)
    assert not [w for w in caught if "limit" in str(w.message)]
    with pytest.raises(InputError, match="max_sequence_length"):
        SD3Encoder.from_pipeline(pipe, max_sequence_length=600)


# --------------------------------------------------------------------------------------------- parametrisation
def test_eps_hat_and_x0_hat_follow_the_flow_parametrisation(encoder, pipe):
    from eimsdk.interfaces import Encoder

    cond = encoder.encode_prompts(PROMPTS)
    z_t = torch.randn(2, 4, 16, 16, generator=_seed(2))
    t = torch.tensor([0.7, 0.3])
    with torch.no_grad():
        v = pipe.transformer(hidden_states=z_t, timestep=t * 1000, encoder_hidden_states=cond.embeds["prompt_embeds"],
                             pooled_projections=cond.embeds["pooled_prompt_embeds"], return_dict=False)[0]
        eps = encoder.predict_eps(z_t, t, cond)
        x0 = encoder.predict_x0(z_t, t, cond)
        velocity = encoder.predict_velocity(z_t, t, cond)
    s = t.view(-1, 1, 1, 1)
    torch.testing.assert_close(eps, z_t + (1 - s) * v, atol=1e-5, rtol=1e-5)  # noise = z_t + (1 - t) v
    torch.testing.assert_close(x0, z_t - s * v, atol=1e-5, rtol=1e-5)  # data = z_t - t v
    torch.testing.assert_close(velocity, v, atol=1e-6, rtol=1e-6)
    a, sigma = encoder.alpha_sigma(torch.tensor([0.0, 0.25, 1.0]))
    assert a.tolist() == [1.0, 0.75, 0.0] and sigma.tolist() == [0.0, 0.25, 1.0]
    # The Euler step that inversion/sampling use equals the base class's generic DDIM step wherever a(t) > 0.
    z = z_t[:1]
    with torch.no_grad():
        euler = encoder._ddim_step(z, 0.7, 0.5, cond[0], guidance_scale=3.0)
        ddim = Encoder._ddim_step(encoder, z, 0.7, 0.5, cond[0], guidance_scale=3.0)
    torch.testing.assert_close(euler, ddim, atol=1e-5, rtol=1e-5)


# --------------------------------------------------------------------------------------------- noise grid
@pytest.mark.parametrize("scheduler", [FlowMatchEulerDiscreteScheduler(shift=3.0),
                                       FlowMatchEulerDiscreteScheduler(use_dynamic_shifting=True)],
                         ids=["shift3", "dynamic"])
def test_full_grid_is_the_schedulers_shift_of_a_uniform_grid(tiny_path, scheduler):
    from diffusers.pipelines.stable_diffusion_3.pipeline_stable_diffusion_3 import calculate_shift

    encoder = SD3Encoder.from_pretrained(tiny_path, scheduler=scheduler)
    latents = torch.zeros(1, 4, 24, 16)
    grid = encoder.timesteps(6, 1.0, latents=latents)
    mu = calculate_shift(12 * 8, 256, 4096, 0.5, 1.15) if scheduler.config.use_dynamic_shifting else None
    oracle = FlowMatchEulerDiscreteScheduler.from_config(scheduler.config)
    oracle.set_timesteps(sigmas=np.linspace(1.0, 0.0, 7)[:-1].tolist(), mu=mu)
    torch.testing.assert_close(grid, oracle.sigmas, atol=1e-6, rtol=0)
    assert grid[0] - grid[1] < grid[-2] - grid[-1], "the shift spends more steps at high noise"


def test_timesteps_reject_bad_arguments(encoder):
    with pytest.raises(InputError, match="num_steps"):
        encoder.timesteps(0)
    with pytest.raises(InputError, match="t_start"):
        encoder.timesteps(4, 1.5)


# --------------------------------------------------------------------------------------------- inversion
@pytest.mark.parametrize("t_end", [1.0, 0.6])
def test_invert_sample_round_trip_improves_with_steps(encoder, scene_image, t_end):
    latent = encoder.encode(scene_image, "a photo of a red circle")
    errors = []
    for steps in (5, 10, 25):
        z_t = encoder.invert(latent.z0, latent.cond, t_end, steps)
        assert torch.isfinite(z_t).all()
        rec = encoder.sample(z_t, latent.cond, t_end, steps)
        errors.append(float((rec - latent.z0).pow(2).mean().sqrt() / latent.z0.pow(2).mean().sqrt()))
    assert errors[0] > errors[1] > errors[2], f"round-trip error must fall with steps: {errors}"
    assert errors[2] < 0.05, f"25-step round trip is too inaccurate: {errors}"


def test_invert_to_pure_noise_is_gaussian_like(encoder, scene_image):
    latent = encoder.encode(scene_image, "a photo of a red circle")
    z1 = encoder.invert(latent.z0, latent.cond, 1.0, 25)
    # Inverting to t = 1 (a = 0) must not divide by zero and should land near unit-variance noise.
    assert torch.isfinite(z1).all()
    assert 0.3 < float(z1.std()) < 3.0


def test_low_precision_round_trip_stays_in_float32(tiny_path, encoder, scene_image):
    bf16 = SD3Encoder.from_pretrained(tiny_path, dtype=torch.bfloat16)
    reference = encoder.encode(scene_image, "a photo of a red circle")
    latent = bf16.encode(scene_image, "a photo of a red circle")
    assert latent.z0.dtype == torch.float32 and bf16.dtype == torch.bfloat16
    rec = bf16.sample(bf16.invert(latent.z0, latent.cond, 1.0, 10), latent.cond, 1.0, 10)
    assert rec.dtype == torch.float32
    rel = float((rec - latent.z0).pow(2).mean().sqrt() / latent.z0.pow(2).mean().sqrt())
    assert rel < 0.1
    assert float((latent.z0 - reference.z0).abs().max()) < 0.1


# --------------------------------------------------------------------------------------------- derivatives
@pytest.fixture(scope="module")
def encoder64(tiny_path):
    return SD3Encoder.from_pretrained(tiny_path).to(torch.float64)


@pytest.mark.parametrize("wrt", ["z_t", "prompt_embeds", "pooled_prompt_embeds"])
def test_jvp_and_vjp_match_central_differences(encoder64, wrt):
    g = _seed(0)
    cond = encoder64.encode_prompts(["a photo of a red circle"])
    assert cond.embeds["prompt_embeds"].dtype == torch.float64
    z_t = torch.randn(1, 4, 16, 16, generator=g, dtype=torch.float64)
    t = torch.tensor([0.6])

    def f(x: torch.Tensor) -> torch.Tensor:
        if wrt == "z_t":
            return encoder64._predict_eps(x, t, cond)
        return encoder64._predict_eps(z_t, t, Conditioning({**cond.embeds, wrt: x}))

    x = z_t if wrt == "z_t" else cond.embeds[wrt]
    direction = torch.randn(x.shape, generator=g, dtype=torch.float64)
    h = 1e-6
    fd = (f(x + h * direction) - f(x - h * direction)) / (2 * h)
    assert fd.norm() > 1e-6, "eps_hat must depend on the input for the check to mean anything"
    with sdpa_kernel(SDPBackend.MATH):
        _, jvp = torch.func.jvp(f, (x,), (direction,))
    assert float((jvp - fd).norm() / fd.norm()) < 1e-5
    cotangent = torch.randn(fd.shape, generator=g, dtype=torch.float64)
    x_req = x.clone().requires_grad_(True)
    (vjp,) = torch.autograd.grad(f(x_req), x_req, cotangent)
    lhs, rhs = float((vjp * direction).sum()), float((cotangent * fd).sum())
    assert abs(lhs - rhs) / abs(rhs) < 1e-5


# --------------------------------------------------------------------------------------------- input policy
def test_encode_odd_sizes_and_modes(encoder):
    images = [
        Image.new("RGBA", (37, 29), (200, 10, 10, 100)),
        Image.new("P", (30, 30)),
        Image.new("L", (17, 40), 90),
        Image.fromarray(np.full((20, 20), 40000, dtype=np.uint16)),
        Image.new("CMYK", (33, 31), (0, 100, 200, 10)),
    ]
    latent = encoder.encode(images, "a photo of a red circle")
    # 29x37 rounds to the nearest multiples of 4 (the tiny VAE factor 2 x patch 2): 28x36; latents are half that.
    assert encoder.image_multiple == 4
    assert latent.z0.shape == (5, 4, 14, 18)
    assert latent.original_sizes[0] == (29, 37) and latent.image_size == (28, 36)
    assert torch.isfinite(latent.z0).all()
    decoded = encoder.decode_latents(latent.z0)
    assert decoded.shape == (5, 3, 28, 36) and decoded.min() >= -1 and decoded.max() <= 1


def test_over_long_prompt_warns_naming_the_limit(encoder):
    long_prompt = "a photo of a red circle " * 60  # 361 T5 tokens
    assert encoder.max_prompt_tokens == 256 and encoder.count_tokens(long_prompt) > 256
    with pytest.warns(UserWarning, match="limit of 256"):
        encoder.encode(Image.new("RGB", (32, 32)), long_prompt)
    # Between CLIP's 77 and T5's 256 tokens the text still reaches the model through T5: no warning.
    medium_prompt = "a photo of a red circle " * 20
    assert 77 < encoder.count_tokens(medium_prompt) <= 256
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        encoder.encode(Image.new("RGB", (32, 32)), medium_prompt)
    assert not [w for w in caught if "limit" in str(w.message)]


def test_generate_rejects_bad_inputs(encoder):
    kw = dict(num_inference_steps=2, guidance_scale=3.0)
    with pytest.raises(InputError, match="height=30"):
        encoder.generate(PROMPTS, height=30, width=32, **kw)
    with pytest.raises(InputError, match=r"latents must have shape \(2, 4, 16, 16\)"):
        encoder.generate(PROMPTS, height=32, width=32, latents=torch.zeros(2, 4, 8, 8), **kw)
    with pytest.raises(InputError, match="negative_prompts"):
        encoder.generate(PROMPTS, height=32, width=32, negative_prompts=["x"], **kw)
    with pytest.raises(InputError, match="num_inference_steps"):
        encoder.generate(PROMPTS, height=32, width=32, num_inference_steps=0, guidance_scale=3.0)
    with pytest.raises(InputError, match="pixels"):
        encoder.encode_images(torch.zeros(1, 3, 30, 32))


# --------------------------------------------------------------------------------------------- loading
def test_loaded_models_are_frozen_and_in_eval_mode(encoder, tiny_path):
    for module in (encoder.transformer, encoder.vae, encoder.text_encoder, encoder.text_encoder_2,
                   encoder.text_encoder_3):
        assert not module.training
        assert not any(p.requires_grad for p in module.parameters())
    assert encoder.model_id == str(tiny_path)
    assert encoder.device == torch.device("cpu") and encoder.dtype == torch.float32
    assert encoder.default_image_size == (32, 32)


def test_from_pipeline_shares_components(pipe, tiny_path):
    wrapped = SD3Encoder.from_pipeline(pipe)
    assert wrapped.transformer is pipe.transformer and wrapped.scheduler is pipe.scheduler
    assert wrapped.model_id == str(tiny_path)
    assert SD3Encoder.from_pipeline(pipe, model_id="my-sd3").model_id == "my-sd3"
    with pytest.raises(InputError, match="StableDiffusion3Pipeline"):
        SD3Encoder.from_pipeline(object())


def test_vae_tiling_and_slicing_reach_diffusers(tiny_path):
    plain = SD3Encoder.from_pretrained(tiny_path)
    assert not plain.vae.use_tiling and not plain.vae.use_slicing
    tiled = SD3Encoder.from_pretrained(tiny_path, vae_tiling=True, vae_slicing=True)
    assert tiled.vae.use_tiling and tiled.vae.use_slicing


def test_cpu_offload_is_requested_from_diffusers(tiny_path, monkeypatch):
    calls = []
    monkeypatch.setattr(StableDiffusion3Pipeline, "enable_model_cpu_offload",
                        lambda self, gpu_id=None, device=None: calls.append(device))
    monkeypatch.setattr(StableDiffusion3Pipeline, "to", lambda self, *a, **k: pytest.fail("offload must not .to()"))
    SD3Encoder.from_pretrained(tiny_path, device="cuda", cpu_offload=True)
    assert calls == ["cuda"]
    with pytest.raises(InputError, match="cpu_offload"):
        SD3Encoder.from_pretrained(tiny_path, device="cpu", cpu_offload=True)


def test_unsupported_dtype_is_rejected(tiny_path, encoder):
    with pytest.raises(InputError, match="dtype"):
        SD3Encoder.from_pretrained(tiny_path, dtype=torch.int8)
    with pytest.raises(InputError, match="dtype"):
        encoder.to(torch.int8)


# --------------------------------------------------------------------------------------------- contract
class TestSD3Contract(EncoderContract):
    @pytest.fixture(scope="class")
    def encoder(self, tiny_path):
        return SD3Encoder.from_pretrained(tiny_path)
