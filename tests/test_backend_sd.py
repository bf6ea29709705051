"""The Stable Diffusion (UNet) backend: parity with diffusers, eps/v, derivatives, inversion, methods, contract."""

from __future__ import annotations

import diffusers
import pytest
import torch
from PIL import Image
from torch.nn.attention import SDPBackend, sdpa_kernel

from eimsdk import Editor
from eimsdk.errors import InputError
from eimsdk.records import Conditioning, Direction
from eimsdk.testing.contract import EncoderContract
from eimsdk.testing.tiny import build_tiny_pipeline, get_dummy_components, tiny_clip_encoder
from eimsdk_sd.encoder import SDEncoder, SDXLEncoder

PROMPTS = ["a photo of a red circle", "a blue square on the left"]
TOL = 1e-4  # the DiT backends' parity tolerance


def _seed(seed: int) -> torch.Generator:
    return torch.Generator("cpu").manual_seed(seed)


@pytest.fixture(scope="module")
def tiny_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("sd-tiny")
    build_tiny_pipeline("sd", path, calibrate=True)
    return path


@pytest.fixture(scope="module")
def encoder(tiny_path):
    return SDEncoder.from_pretrained(tiny_path)


def _load_pipeline(path) -> diffusers.StableDiffusionPipeline:
    pipe = diffusers.StableDiffusionPipeline.from_pretrained(str(path))
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _pipeline_images(pipe, prompts, **kw) -> torch.Tensor:
    """The pipeline's ``output_type="pt"`` images mapped from [0, 1] to [-1, 1]."""
    with torch.no_grad():
        return pipe(prompts, output_type="pt", **kw).images * 2 - 1


def _assert_parity(encoder, pipe, size: tuple[int, int], **kw) -> None:
    kw = dict(num_inference_steps=3, guidance_scale=5.0, height=size[0], width=size[1], **kw)
    ours = encoder.generate(PROMPTS, generator=_seed(0), **kw)
    theirs = _pipeline_images(pipe, PROMPTS, generator=_seed(0), **kw)
    assert ours.shape == (2, 3, *size)
    assert (ours - theirs).abs().max() <= TOL

    f = encoder.vae_scale_factor
    latents = torch.randn((2, encoder.latent_channels, size[0] // f, size[1] // f), generator=_seed(7))
    ours_l = encoder.generate(PROMPTS, latents=latents, **kw)
    assert (ours_l - _pipeline_images(pipe, PROMPTS, latents=latents, **kw)).abs().max() <= TOL
    # The tolerance must be far below what the inputs change, or parity proves nothing.
    unguided = encoder.generate(PROMPTS, latents=latents, **{**kw, "guidance_scale": 1.0})
    assert (unguided - ours_l).abs().max() > 100 * TOL
    assert (ours - ours_l).abs().max() > 100 * TOL


def _plain_pipeline(kind: str) -> diffusers.StableDiffusionPipeline:
    """A pipeline with configs unlike the fixture's, for a folder written by plain ``save_pretrained``.

    ``sd2-v-euler``: SD 2.x-style (linear projections, per-block head counts, v-prediction, Euler scheduler with
    ``init_noise_sigma != 1``), a 3-level VAE (factor 4), CLIP width 24. ``sd1-pndm``: SD 1.x-style with the PNDM
    scheduler SD 1.x ships with and three UNet levels.
    """
    torch.manual_seed(11)
    hidden = 24 if kind == "sd2-v-euler" else 32
    text_encoder, tokenizer = tiny_clip_encoder(False, hidden_size=hidden)
    if kind == "sd2-v-euler":
        unet = diffusers.UNet2DConditionModel(
            sample_size=8, block_out_channels=(8, 16), layers_per_block=1, cross_attention_dim=hidden,
            down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), attention_head_dim=(2, 4), use_linear_projection=True,
            norm_num_groups=4)
        vae = diffusers.AutoencoderKL(
            in_channels=3, out_channels=3, block_out_channels=(8, 8, 16), layers_per_block=1, latent_channels=4,
            down_block_types=("DownEncoderBlock2D",) * 3, up_block_types=("UpDecoderBlock2D",) * 3,
            norm_num_groups=4, scaling_factor=3.0)
        scheduler = diffusers.EulerDiscreteScheduler(beta_schedule="scaled_linear", beta_start=0.00085,
                                                     beta_end=0.012, prediction_type="v_prediction", steps_offset=1)
    else:
        unet = diffusers.UNet2DConditionModel(
            sample_size=16, block_out_channels=(8, 8, 16), layers_per_block=1, cross_attention_dim=hidden,
            down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"), attention_head_dim=4,
            norm_num_groups=4)
        vae = get_dummy_components("sd")["vae"]
        scheduler = diffusers.PNDMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
                                            skip_prk_steps=True, steps_offset=1)
    return diffusers.StableDiffusionPipeline(
        unet=unet.eval(), vae=vae.eval(), text_encoder=text_encoder, tokenizer=tokenizer, scheduler=scheduler,
        safety_checker=None, feature_extractor=None, requires_safety_checker=False)


# ------------------------------------------------------------------------------------------------ 1. parity
def test_generate_matches_diffusers(encoder, tiny_path):
    _assert_parity(encoder, _load_pipeline(tiny_path), size=(32, 32))


def test_generate_with_negative_prompts_matches_diffusers(encoder, tiny_path):
    kw = dict(num_inference_steps=2, guidance_scale=3.0, height=32, width=48)
    negative = ["a green triangle", "a dark background"]
    ours = encoder.generate(PROMPTS, negative_prompts=negative, generator=_seed(3), **kw)
    theirs = _pipeline_images(_load_pipeline(tiny_path), PROMPTS, negative_prompt=negative, generator=_seed(3), **kw)
    assert (ours - theirs).abs().max() <= TOL


@pytest.mark.parametrize("kind", ["sd2-v-euler", "sd1-pndm"])
def test_generate_matches_diffusers_on_a_folder_saved_by_plain_diffusers(kind, tmp_path):
    _plain_pipeline(kind).save_pretrained(str(tmp_path))
    encoder = SDEncoder.from_pretrained(str(tmp_path))
    assert encoder.prediction_type == ("v_prediction" if kind == "sd2-v-euler" else "epsilon")
    _assert_parity(encoder, _load_pipeline(tmp_path), size=(32, 32) if kind == "sd2-v-euler" else (32, 40))


def test_encode_prompts_matches_the_pipeline_and_has_no_mask(encoder, tiny_path):
    cond = encoder.encode_prompts(PROMPTS)
    with torch.no_grad():
        embeds, _ = _load_pipeline(tiny_path).encode_prompt(PROMPTS, "cpu", 1, do_classifier_free_guidance=False)
    assert cond.masks == {}, "the UNet attends to every CLIP position, so c carries no token mask"
    torch.testing.assert_close(cond.embeds["prompt_embeds"], embeds, atol=1e-6, rtol=0)
    assert cond.embeds["prompt_embeds"].shape == (2, 77, 32)


# ------------------------------------------------------------------------------------------------ 2. noise path
def test_v_prediction_converts_to_eps(tmp_path):
    _plain_pipeline("sd2-v-euler").save_pretrained(str(tmp_path))
    encoder = SDEncoder.from_pretrained(str(tmp_path))
    cond = encoder.encode_prompts(PROMPTS[:1])
    z = torch.randn(1, 4, 8, 8, generator=_seed(0))
    with torch.no_grad():
        ours = encoder.predict_eps(z, 0.25, cond)
        v = encoder.unet(z, torch.tensor([249]), encoder_hidden_states=cond.embeds["prompt_embeds"]).sample
    a, s = encoder.alpha_sigma(torch.tensor([0.25]))
    torch.testing.assert_close(ours, a * v + s * z)  # z = a x0 + s eps and v = a eps - s x0
    assert (ours - v).abs().max() > 1e-2, "the conversion is not the identity here"


def test_alpha_sigma_follows_the_scheduler(encoder):
    n = torch.tensor([1, 500, 1000])
    a, s = encoder.alpha_sigma(n.double() / 1000)
    alphas_cumprod = encoder.scheduler.alphas_cumprod.double()
    torch.testing.assert_close(a.square(), alphas_cumprod[n - 1], rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(s.square(), 1 - alphas_cumprod[n - 1], rtol=1e-10, atol=1e-12)


def test_ddim_inversion_round_trip_improves_with_steps(encoder, scene_image):
    latent = encoder.encode(scene_image, PROMPTS[0], size=(32, 32))
    errors = {}
    for steps in (5, 10, 25):
        rec = encoder.sample(encoder.invert(latent.z0, latent.cond, 0.6, steps), latent.cond, 0.6, steps)
        errors[steps] = float((rec - latent.z0).norm() / latent.z0.norm())
    assert errors[25] < errors[10] < errors[5], errors
    assert errors[25] < 0.1, errors


# ------------------------------------------------------------------------------------------------ 3. derivatives
@pytest.mark.parametrize("wrt", ["z_t", "prompt_embeds"])
def test_jvp_and_vjp_match_central_differences_in_float64(tiny_path, wrt):
    encoder = SDEncoder.from_pretrained(tiny_path).to(torch.float64)
    assert encoder.dtype == torch.float64 and encoder.unet.dtype == torch.float64
    cond = encoder.encode_prompts(PROMPTS[:1])
    z_t = torch.randn(1, 4, 16, 16, generator=_seed(1), dtype=torch.float64)
    t = torch.tensor([0.4])

    def f(x: torch.Tensor) -> torch.Tensor:
        if wrt == "z_t":
            return encoder._predict_eps(x, t, cond)
        return encoder._predict_eps(z_t, t, Conditioning({"prompt_embeds": x}))

    x = z_t if wrt == "z_t" else cond.embeds["prompt_embeds"]
    direction = torch.randn(x.shape, generator=_seed(2), dtype=torch.float64)
    h = 1e-5
    with torch.no_grad():
        fd = (f(x + h * direction) - f(x - h * direction)) / (2 * h)
    assert fd.norm() > 1e-6, "eps_hat must depend on the input for the check to mean anything"
    with sdpa_kernel(SDPBackend.MATH):
        _, jvp = torch.func.jvp(f, (x,), (direction,))
    assert float((jvp - fd).norm() / fd.norm()) < 1e-5
    cotangent = torch.randn(fd.shape, generator=_seed(3), dtype=torch.float64)
    x_req = x.clone().requires_grad_(True)
    (vjp,) = torch.autograd.grad(f(x_req), x_req, cotangent)
    lhs, rhs = float((vjp * direction).sum()), float((cotangent * fd).sum())
    assert abs(lhs - rhs) / abs(rhs) < 1e-5


# ------------------------------------------------------------------------------------------------ 4. methods
def test_finders_and_the_manipulator_run_unchanged(tiny_path, scene_image):
    editor = Editor.from_pretrained(str(tiny_path))
    assert isinstance(editor.encoder, SDEncoder)
    latent = editor.encode(scene_image, "a photo of a red circle", size=(32, 32))
    settings = {"hsds": dict(num_timesteps=2, cg_iters=2), "dds": dict(num_timesteps=2), "swap": {}}
    for method, config in settings.items():
        direction = editor.find_direction(scene_image, "a photo of a red circle", "a photo of a blue circle",
                                          method=method, latent=latent, **config)
        assert isinstance(direction, Direction)
        direction.check_fits(editor.encoder, latent.z0)
        assert (direction.dz.abs().sum() > 0) == (method != "swap"), method
        result = editor.apply(scene_image, "a photo of a red circle", direction, 1.0, latent=latent, num_steps=4)
        assert result.latents.shape == latent.z0.shape and torch.isfinite(result.latents).all(), method
        assert result.images[0].size == (32, 32)


# ------------------------------------------------------------------------------------------------ 5. input policy
def test_overlong_prompt_warns_at_clips_limit(encoder):
    long_prompt = "a photo of a red circle " * 20
    assert encoder.max_prompt_tokens == 77 and encoder.count_tokens(long_prompt) > 77
    with pytest.warns(UserWarning, match="limit of 77"):
        encoder.encode(Image.new("RGB", (32, 32)), long_prompt)


def test_loading_and_generate_errors_name_the_argument(encoder, tiny_path, tmp_path):
    kw = dict(num_inference_steps=2, guidance_scale=3.0, height=32, width=32)
    with pytest.raises(InputError, match="height=31"):
        encoder.generate(PROMPTS, **{**kw, "height": 31})
    with pytest.raises(InputError, match="latents must have shape"):
        encoder.generate(PROMPTS, latents=torch.zeros(1, 4, 16, 16), **kw)
    with pytest.raises(InputError, match="cpu_offload"):
        SDEncoder.from_pretrained(tiny_path, cpu_offload=True)
    with pytest.raises(InputError, match="dtype"):
        SDEncoder.from_pretrained(tiny_path, dtype=torch.int8)
    with pytest.raises(InputError, match="StableDiffusionPipeline"):
        SDEncoder.from_pipeline(object())
    build_tiny_pipeline("sd3", tmp_path)
    with pytest.raises(InputError, match="StableDiffusion3Pipeline"):
        SDEncoder.from_pretrained(tmp_path)


def test_from_pipeline_shares_modules_and_freezes_them(tiny_path):
    pipe = _load_pipeline(tiny_path)
    encoder = SDEncoder.from_pipeline(pipe, model_id="my/sd")
    assert encoder.unet is pipe.unet and encoder.denoiser is pipe.unet and encoder.model_id == "my/sd"
    assert not any(p.requires_grad for p in encoder.unet.parameters()) and not encoder.unet.training
    assert encoder.image_multiple == 2 and encoder.default_image_size == (32, 32)


# ------------------------------------------------------------------------------------------------ 6. contract
class TestSDContract(EncoderContract):
    @pytest.fixture(scope="class")
    def encoder(self, tiny_path):
        return SDEncoder.from_pretrained(tiny_path)


# ------------------------------------------------------------------------------------------------ 7. SDXL
@pytest.fixture(scope="module")
def sdxl_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("sdxl-tiny")
    build_tiny_pipeline("sdxl", path, calibrate=True)
    return path


@pytest.mark.parametrize("negative", [None, ["a dark background", "a green triangle"]])
def test_sdxl_generate_matches_diffusers(sdxl_path, negative):
    """Without negative prompts SDXL guides against zeros (``force_zeros_for_empty_prompt``); the scheduler uses
    'leading' spacing, where ``init_noise_sigma`` depends on the steps set before the noise is drawn."""
    encoder = SDXLEncoder.from_pretrained(sdxl_path)
    pipe = diffusers.StableDiffusionXLPipeline.from_pretrained(str(sdxl_path))
    pipe.set_progress_bar_config(disable=True)
    kw = dict(num_inference_steps=3, guidance_scale=5.0, height=32, width=48)
    ours = encoder.generate(PROMPTS, negative_prompts=negative, generator=_seed(4), **kw)
    theirs = _pipeline_images(pipe, PROMPTS, negative_prompt=negative, generator=_seed(4), **kw)
    assert ours.shape == (2, 3, 32, 48) and (ours - theirs).abs().max() <= TOL
    unguided = encoder.generate(PROMPTS, negative_prompts=negative, generator=_seed(4), **{**kw, "guidance_scale": 1.0})
    assert (unguided - ours).abs().max() > 100 * TOL


def test_sdxl_derivative_wrt_the_pooled_vector_matches_central_differences(sdxl_path):
    encoder = SDXLEncoder.from_pretrained(sdxl_path).to(torch.float64)
    cond = encoder.encode_prompts(PROMPTS[:1])
    z_t = torch.randn(1, 4, 16, 16, generator=_seed(5), dtype=torch.float64)

    def f(pooled: torch.Tensor) -> torch.Tensor:
        return encoder._predict_eps(z_t, torch.tensor([0.5]), Conditioning({**cond.embeds,
                                                                             "pooled_prompt_embeds": pooled}))

    x = cond.embeds["pooled_prompt_embeds"]
    direction = torch.randn(x.shape, generator=_seed(6), dtype=torch.float64)
    with torch.no_grad():
        fd = (f(x + 1e-5 * direction) - f(x - 1e-5 * direction)) / 2e-5
    assert fd.norm() > 1e-6
    with sdpa_kernel(SDPBackend.MATH):
        _, jvp = torch.func.jvp(f, (x,), (direction,))
    assert float((jvp - fd).norm() / fd.norm()) < 1e-5


class TestSDXLContract(EncoderContract):
    @pytest.fixture(scope="class")
    def encoder(self, sdxl_path):
        return SDXLEncoder.from_pretrained(sdxl_path)
