"""FLUX.1 backend: parity with diffusers FluxPipeline, inversion, derivatives, input policy, the contract suite."""

from __future__ import annotations

import pytest
import torch
from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel
from PIL import Image
from torch.nn.attention import SDPBackend, sdpa_kernel

from eimsdk.errors import InputError
from eimsdk.records import Conditioning
from eimsdk.testing.contract import EncoderContract
from eimsdk.testing.tiny import build_tiny_pipeline, tiny_clip_encoder, tiny_t5_encoder
from eimsdk_flux.encoder import FluxEncoder, pack, unpack

PROMPTS = ["a photo of a red circle", "a blue square on the left"]
NEGATIVE = ["dark", "striped background"]


def _seed(seed: int) -> torch.Generator:
    return torch.Generator("cpu").manual_seed(seed)


@pytest.fixture(scope="module")
def tiny_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("flux-tiny")
    build_tiny_pipeline("flux", path)
    return path


@pytest.fixture(scope="module")
def custom_path(tmp_path_factory):
    """A FLUX.1-schnell-like pipeline (no guidance input, dynamic shift, 3-level VAE, 8 latent channels) built
    here with other widths and depths than the project's fixture, saved by plain diffusers."""
    torch.manual_seed(7)
    transformer = FluxTransformer2DModel(
        patch_size=1, in_channels=32, num_layers=2, num_single_layers=2, attention_head_dim=8,
        num_attention_heads=4, joint_attention_dim=48, pooled_projection_dim=24, axes_dims_rope=[2, 2, 4],
        guidance_embeds=False,
    ).eval()
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, block_out_channels=(8, 8, 16), layers_per_block=1, latent_channels=8,
        down_block_types=("DownEncoderBlock2D",) * 3, up_block_types=("UpDecoderBlock2D",) * 3,
        norm_num_groups=4, sample_size=64, use_quant_conv=False, use_post_quant_conv=False, shift_factor=0.1,
        scaling_factor=0.5,
    ).eval()
    text_encoder, tokenizer = tiny_clip_encoder(False, hidden_size=24)
    text_encoder_2, tokenizer_2 = tiny_t5_encoder(48)
    scheduler = FlowMatchEulerDiscreteScheduler(use_dynamic_shifting=True, shift=3.0, base_image_seq_len=16,
                                                max_image_seq_len=256, base_shift=0.5, max_shift=1.15)
    pipe = FluxPipeline(scheduler=scheduler, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer,
                        text_encoder_2=text_encoder_2, tokenizer_2=tokenizer_2, transformer=transformer)
    path = tmp_path_factory.mktemp("flux-custom")
    pipe.save_pretrained(str(path))
    return path


@pytest.fixture(scope="module")
def flux(tiny_path):
    return FluxEncoder.from_pretrained(tiny_path)


def _pipeline(path) -> FluxPipeline:
    pipe = FluxPipeline.from_pretrained(str(path))
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _pipeline_images(pipe: FluxPipeline, **kw) -> torch.Tensor:
    with torch.no_grad():
        return pipe(output_type="pt", **kw).images * 2 - 1  # [0, 1] -> [-1, 1]


# ------------------------------------------------------------------------------------------------ 1. parity
@pytest.mark.parametrize("which", ["tiny", "custom"])
@pytest.mark.parametrize("source", ["seed", "latents"])
def test_generate_matches_flux_pipeline(which, source, request):
    path = request.getfixturevalue(f"{which}_path")
    pipe = _pipeline(path)
    encoder = FluxEncoder.from_pretrained(path)
    height, width = (32, 48) if which == "tiny" else (32, 40)
    kw = dict(num_inference_steps=3, guidance_scale=5.0, height=height, width=width)
    if source == "seed":
        ours_src, theirs_src = dict(generator=_seed(11)), dict(generator=_seed(11))
    else:
        noise = encoder.prepare_latents(2, height, width, generator=_seed(5))
        ours_src, theirs_src = dict(latents=noise.clone()), dict(latents=noise.clone())
    expected = _pipeline_images(pipe, prompt=PROMPTS, negative_prompt=NEGATIVE, true_cfg_scale=2.0, **kw,
                                **theirs_src)
    ours = encoder.generate(PROMPTS, negative_prompts=NEGATIVE, true_cfg_scale=2.0, **kw, **ours_src)
    assert ours.shape == (2, 3, height, width)
    assert (ours - expected).abs().max() <= 1e-4
    assert not torch.allclose(ours[0], ours[1], atol=1e-3), "the two prompts must give different images"


def test_embedded_guidance_matches_pipeline_and_matters(flux, tiny_path):
    pipe = _pipeline(tiny_path)
    kw = dict(num_inference_steps=2, height=32, width=32)
    for g in (1.0, 6.0):
        expected = _pipeline_images(pipe, prompt=PROMPTS[:1], guidance_scale=g, generator=_seed(3), **kw)
        ours = flux.generate(PROMPTS[:1], guidance_scale=g, generator=_seed(3), **kw)
        assert (ours - expected).abs().max() <= 1e-4
    low = flux.generate(PROMPTS[:1], guidance_scale=1.0, generator=_seed(3), **kw)
    assert not torch.allclose(low, ours, atol=1e-4), "FLUX.1-dev's embedded guidance must change the image"


def test_timesteps_equal_the_pipeline_schedule(custom_path):
    pipe = _pipeline(custom_path)
    encoder = FluxEncoder.from_pretrained(custom_path)
    latents = encoder.prepare_latents(1, 64, 48, generator=_seed(0))  # packed; sequence length drives the shift
    _pipeline_images(pipe, prompt=PROMPTS[0], num_inference_steps=6, height=64, width=48, latents=latents)
    grid = encoder.timesteps(6, 1.0, latents=latents)
    torch.testing.assert_close(grid, pipe.scheduler.sigmas.float(), atol=1e-6, rtol=0)
    unpacked = encoder.timesteps(6, 1.0, latents=unpack(latents, 16, 12))
    torch.testing.assert_close(unpacked, grid)
    part = encoder.timesteps(6, 0.6, latents=latents)
    assert float(part[0]) == pytest.approx(0.6, abs=1e-6) and float(part[-1]) == 0.0
    assert torch.all(part[1:] < part[:-1])


# ------------------------------------------------------------------------------------------------ 2. inversion
def test_fixed_point_inversion_closes_the_euler_round_trip(flux, scene_image):
    latent = flux.encode(scene_image, "a photo of a red circle")
    errors = {}
    for k in (0, 2, 6):
        rec = flux.sample(flux.invert(latent.z0, latent.cond, 1.0, 5, fixed_point_iterations=k), latent.cond, 1.0, 5)
        errors[k] = float((rec - latent.z0).pow(2).mean().sqrt() / latent.z0.pow(2).mean().sqrt())
    assert errors[6] < errors[2] < errors[0], errors
    assert errors[6] < 0.1 * errors[0], errors


@pytest.mark.parametrize("t_end", [1.0, 0.6])
def test_invert_sample_round_trip_improves_with_steps(flux, scene_image, t_end):
    latent = flux.encode(scene_image, "a photo of a red circle")
    z0 = latent.z0
    errors = {}
    for steps in (5, 10, 25):
        z_t = flux.invert(z0, latent.cond, t_end, steps)
        rec = flux.sample(z_t, latent.cond, t_end, steps)
        errors[steps] = float((rec - z0).pow(2).mean().sqrt() / z0.pow(2).mean().sqrt())
    assert errors[25] < errors[10] < errors[5], errors
    assert errors[25] < 0.05, errors


def test_euler_step_is_the_ddim_step_and_defined_at_pure_noise(flux):
    z = torch.randn(2, 4, 8, 8, generator=_seed(2))
    cond = flux.encode_prompts(PROMPTS)
    with torch.no_grad():
        for t, g in ((0.4, 1.0), (0.8, 2.5)):  # the base class's DDIM step, through eps_hat, where a(t) > 0
            eps = flux.predict_eps(z, t, cond, guidance_scale=g)
            ddim = (1 - 0.25) * (z - t * eps) / (1 - t) + 0.25 * eps
            torch.testing.assert_close(flux._ddim_step(z, t, 0.25, cond, guidance_scale=g), ddim, atol=1e-5, rtol=1e-5)
        v = flux.predict_velocity(z, 1.0, cond)
        step = flux.sample(z, cond, 1.0, 1)  # one step from pure noise lands on x0_hat = z - v
    assert torch.isfinite(v).all() and v.abs().sum() > 0
    torch.testing.assert_close(step, z - v)


# ------------------------------------------------------------------------------------------------ 3. derivatives
@pytest.fixture(scope="module")
def flux64(tiny_path):
    return FluxEncoder.from_pretrained(tiny_path, dtype=torch.float64)


@pytest.fixture
def float64_rope(monkeypatch):
    """diffusers computes Flux's rotary embedding in float32 even in a float64 model (``.float()`` in
    ``get_1d_rotary_pos_embed`` and ``apply_rotary_emb``); that noise caps finite-difference agreement near 1e-5 for
    the weak prompt-embedding directions. Keep RoPE in the model's dtype so the check measures our derivatives."""
    from diffusers.models.transformers import transformer_flux

    def rope(dim, pos, theta=10000.0, freqs_dtype=torch.float64, **_):
        inv = 1.0 / theta ** (torch.arange(0, dim, 2, dtype=freqs_dtype, device=pos.device) / dim)  # (D/2,)
        angles = torch.outer(pos.to(freqs_dtype), inv)  # (S, D/2)
        return angles.cos().repeat_interleave(2, dim=1), angles.sin().repeat_interleave(2, dim=1)  # (S, D) each

    def apply(x, freqs, sequence_dim=1, **_):
        cos, sin = (f[None, :, None, :].to(x) for f in freqs)  # x: (B, S, H, D)
        real, imag = x.reshape(*x.shape[:-1], -1, 2).unbind(-1)
        return x * cos + torch.stack([-imag, real], dim=-1).flatten(3) * sin

    ids = torch.tensor([[0.0, 1.0, 2.0], [0.0, 3.0, 5.0]])
    x = torch.randn(1, 2, 2, 16, generator=_seed(0))
    rope_module = transformer_flux.FluxPosEmbed(10000, [4, 4, 8])
    upstream = transformer_flux.apply_rotary_emb(x, rope_module(ids), sequence_dim=1)
    monkeypatch.setattr(transformer_flux, "get_1d_rotary_pos_embed", rope)
    monkeypatch.setattr(transformer_flux, "apply_rotary_emb", apply)
    ours = transformer_flux.apply_rotary_emb(x, rope_module(ids), sequence_dim=1)
    torch.testing.assert_close(ours, upstream)  # the same rotation, only computed in the model's dtype


def _check_directional_derivative(f, x: torch.Tensor, seed: int) -> None:
    v = torch.randn(x.shape, generator=_seed(seed), dtype=x.dtype)
    u = torch.randn(f(x).shape, generator=_seed(seed + 1), dtype=x.dtype)
    h = 1e-5
    with torch.no_grad():
        fd = (f(x + h * v) - f(x - h * v)) / (2 * h)
    with sdpa_kernel(SDPBackend.MATH):
        _, jv = torch.func.jvp(f, (x,), (v,))
    assert (jv - fd).norm() / fd.norm() < 1e-5
    xr = x.clone().requires_grad_(True)
    (vjp,) = torch.autograd.grad(f(xr), xr, grad_outputs=u)
    along, expected = (vjp * v).sum(), (u * fd).sum()
    assert abs(float(along - expected)) / abs(float(expected)) < 1e-5


def test_predict_eps_derivative_wrt_latent_matches_finite_differences(flux64, float64_rope):
    cond = flux64.encode_prompts(PROMPTS[:1])
    t = torch.tensor([0.5])
    z_t = torch.randn(1, 4, 8, 8, generator=_seed(4), dtype=torch.float64)
    assert flux64.transformer.dtype == torch.float64 and cond.embeds["prompt_embeds"].dtype == torch.float64
    _check_directional_derivative(lambda z: flux64._predict_eps(z, t, cond), z_t, seed=10)


@pytest.mark.parametrize("key", ["prompt_embeds", "pooled_prompt_embeds"])
def test_predict_eps_derivative_wrt_conditioning_matches_finite_differences(flux64, float64_rope, key):
    cond = flux64.encode_prompts(PROMPTS[:1])
    t = torch.tensor([0.7])
    z_t = torch.randn(1, 4, 8, 8, generator=_seed(6), dtype=torch.float64)

    def f(e: torch.Tensor) -> torch.Tensor:
        return flux64._predict_eps(z_t, t, Conditioning({**cond.embeds, key: e}))

    _check_directional_derivative(f, cond.embeds[key], seed=20)


# ------------------------------------------------------------------------------------------------ 4. input policy
def test_encode_odd_images_follows_image_multiple(flux):
    rgba = Image.new("RGBA", (37, 30), (10, 200, 30, 100))
    palette = Image.new("P", (37, 30), 3)
    latent = flux.encode([rgba, palette], "a photo of a green square")
    h, w = latent.image_size
    assert h % flux.image_multiple == 0 and w % flux.image_multiple == 0
    dh, dw = flux.default_image_size  # the model's own area, the image's aspect (eimsdk.images)
    assert h * w <= dh * dw and abs(w / h - 37 / 30) < 0.35
    assert latent.z0.shape == (2, flux.latent_channels, h // flux.vae_scale_factor, w // flux.vae_scale_factor)
    assert latent.original_sizes == [(30, 37), (30, 37)]
    assert pack(latent.z0).shape == (2, (h // 4) * (w // 4), 4 * flux.latent_channels)
    torch.testing.assert_close(unpack(pack(latent.z0), *latent.z0.shape[-2:]), latent.z0)


def test_overlong_prompt_warns_naming_the_limit(flux, scene_image):
    long_prompt = "a red circle " + "with a striped background " * 150
    assert flux.count_tokens(long_prompt) > flux.max_prompt_tokens == 512
    assert flux.count_tokens("a red circle") < 10
    with pytest.warns(UserWarning, match="limit of 512"):
        flux.encode(scene_image, long_prompt)


def test_bad_inputs_raise_input_errors_naming_the_argument(flux, tiny_path):
    kw = dict(num_inference_steps=2, guidance_scale=3.5, height=32, width=32)
    with pytest.raises(InputError, match="height"):
        flux.generate(PROMPTS, **{**kw, "height": 30})
    with pytest.raises(InputError, match="num_inference_steps"):
        flux.generate(PROMPTS, **{**kw, "num_inference_steps": 0})
    with pytest.raises(InputError, match="latents"):
        flux.generate(PROMPTS, latents=torch.randn(2, 4, 8, 8), **kw)
    with pytest.raises(InputError, match="negative_prompts"):
        flux.generate(PROMPTS, negative_prompts=["one"], true_cfg_scale=2.0, **kw)
    with pytest.raises(InputError, match="pixels"):
        flux.encode_images(torch.zeros(1, 3, 30, 32))
    with pytest.raises(InputError, match="z_t"):
        flux.predict_eps(torch.zeros(1, 3, 8, 8), 0.5, flux.encode_prompts(PROMPTS[:1]))
    with pytest.raises(InputError, match="dtype"):
        FluxEncoder.from_pretrained(tiny_path, dtype=torch.int8)
    with pytest.raises(InputError, match="cpu_offload"):
        FluxEncoder.from_pretrained(tiny_path, cpu_offload=True)
    with pytest.raises(InputError, match="FluxPipeline"):
        FluxEncoder.from_pipeline(object())


def test_negative_prompts_without_true_cfg_warn(flux):
    with pytest.warns(UserWarning, match="true_cfg_scale"):
        flux.generate(PROMPTS[:1], negative_prompts=["dark"], num_inference_steps=1, guidance_scale=3.5, height=32,
                      width=32, generator=_seed(0))


# ------------------------------------------------------------------------------------------------ loading options
def test_memory_options_reach_diffusers(tiny_path, monkeypatch):
    calls = []
    monkeypatch.setattr(FluxPipeline, "enable_model_cpu_offload",
                        lambda self, gpu_id=None, device=None: calls.append(torch.device(device)))
    encoder = FluxEncoder.from_pretrained(tiny_path, device="cuda:0", cpu_offload=True, vae_tiling=True,
                                          vae_slicing=True, local_files_only=True)
    assert calls == [torch.device("cuda:0")]
    assert encoder.cpu_offload and encoder.device == torch.device("cuda:0")
    assert encoder.vae.use_tiling and encoder.vae.use_slicing
    assert encoder.model_id == str(tiny_path)
    assert not any(p.requires_grad for p in encoder.transformer.parameters())
    assert not encoder.transformer.training and not encoder.text_encoder_2.training


def test_from_pipeline_shares_modules(tiny_path):
    pipe = _pipeline(tiny_path)
    encoder = FluxEncoder.from_pipeline(pipe, model_id="mine")
    assert encoder.transformer is pipe.transformer and encoder.model_id == "mine"
    assert encoder.embedded_guidance == 3.5 and encoder.transformer.config.guidance_embeds


def test_half_precision_keeps_latent_math_in_float32(tiny_path, scene_image):
    encoder = FluxEncoder.from_pretrained(tiny_path, dtype=torch.bfloat16)
    latent = encoder.encode(scene_image, PROMPTS[0])
    assert encoder.dtype == torch.bfloat16 and latent.z0.dtype == torch.float32
    assert latent.cond.embeds["prompt_embeds"].dtype == torch.float32
    rec = encoder.sample(encoder.invert(latent.z0, latent.cond, 0.6, 8), latent.cond, 0.6, 8)
    assert rec.dtype == torch.float32 and torch.isfinite(rec).all()
    assert float((rec - latent.z0).pow(2).mean().sqrt() / latent.z0.pow(2).mean().sqrt()) < 0.2
    image = encoder.generate(PROMPTS[:1], num_inference_steps=2, guidance_scale=3.5, height=32, width=32,
                             generator=_seed(0))
    assert image.shape == (1, 3, 32, 32) and torch.isfinite(image).all()


def test_editor_picks_the_flux_backend(tiny_path):
    from eimsdk.editor import Editor

    editor = Editor.from_pretrained(str(tiny_path))
    assert isinstance(editor.encoder, FluxEncoder) and editor.encoder.family == "flux"


# ------------------------------------------------------------------------------------------------ 5. contract
class TestfluxContract(EncoderContract):
    @pytest.fixture(scope="class")
    def encoder(self, tiny_path):
        return FluxEncoder.from_pretrained(tiny_path)
