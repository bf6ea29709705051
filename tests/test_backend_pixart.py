"""The PixArt backend: parity with diffusers, inversion, derivatives, input policy, loading options, contract."""

from __future__ import annotations

import json

import diffusers
import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

from eimsdk.errors import InputError
from eimsdk.records import Conditioning
from eimsdk.testing.contract import EncoderContract
from eimsdk.testing.tiny import PIPELINE_CLASSES, build_tiny_pipeline, tiny_t5_encoder
from eimsdk_pixart.encoder import PixArtEncoder

FAMILIES = ("pixart", "pixart-sigma")
PROMPTS = ["a photo of a red circle", "a blue square on the left"]
TOL = 1e-4


@pytest.fixture(scope="module")
def tiny_paths(tmp_path_factory):
    """family -> folder of the project's tiny pipeline (plain ``save_pretrained``)."""
    paths = {}
    for family in FAMILIES:
        paths[family] = tmp_path_factory.mktemp(family)
        build_tiny_pipeline(family, paths[family])
    return paths


@pytest.fixture(scope="module")
def encoders(tiny_paths):
    return {family: PixArtEncoder.from_pretrained(str(path)) for family, path in tiny_paths.items()}


@pytest.fixture(scope="module")
def calibrated_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("pixart-calibrated")
    build_tiny_pipeline("pixart", path, calibrate=True)
    return path


def _load_pipeline(path):
    with open(path / "model_index.json") as f:
        class_name = json.load(f)["_class_name"]
    pipe = getattr(diffusers, class_name).from_pretrained(str(path))
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _pipeline_images(pipe, prompts, **kw) -> torch.Tensor:
    """The diffusers pipeline's output mapped from [0, 1] to [-1, 1]; no binning, raw-lowercase prompts."""
    images = pipe(prompts, output_type="pt", use_resolution_binning=False, clean_caption=False, **kw).images
    return images * 2 - 1


def _seed(seed: int) -> torch.Generator:
    return torch.Generator("cpu").manual_seed(seed)


def _assert_parity(encoder, pipe, steps: int, guidance: float, size: int) -> None:
    kw = dict(num_inference_steps=steps, guidance_scale=guidance, height=size, width=size)
    ours = encoder.generate(PROMPTS, generator=_seed(0), **kw)
    theirs = _pipeline_images(pipe, PROMPTS, generator=_seed(0), **kw)
    assert ours.shape == (2, 3, size, size)
    assert (ours - theirs).abs().max() <= TOL

    latents = torch.randn((2, encoder.latent_channels, size // encoder.vae_scale_factor,
                           size // encoder.vae_scale_factor), generator=_seed(7))
    ours_l = encoder.generate(PROMPTS, latents=latents, **kw)
    theirs_l = _pipeline_images(pipe, PROMPTS, latents=latents, **kw)
    assert (ours_l - theirs_l).abs().max() <= TOL

    # The tolerance must be far below what the inputs change, or parity proves nothing.
    unguided = encoder.generate(PROMPTS, latents=latents, **{**kw, "guidance_scale": 1.0})
    assert (unguided - ours_l).abs().max() > 100 * TOL
    assert (ours - ours_l).abs().max() > 100 * TOL


# ------------------------------------------------------------------------------------------------ 1. parity
@pytest.mark.parametrize("family", FAMILIES)
def test_generate_matches_diffusers(family, tiny_paths, encoders):
    _assert_parity(encoders[family], _load_pipeline(tiny_paths[family]), steps=3, guidance=4.5, size=32)


@pytest.mark.parametrize("family", FAMILIES)
def test_generate_negative_prompts_and_single_step_match_diffusers(family, tiny_paths, encoders):
    pipe = _load_pipeline(tiny_paths[family])
    negative = ["a green triangle", "a dark background"]
    kw = dict(num_inference_steps=1, guidance_scale=3.0, height=32, width=32)
    ours = encoders[family].generate(PROMPTS, negative_prompts=negative, generator=_seed(3), **kw)
    theirs = _pipeline_images(pipe, PROMPTS, negative_prompt=negative, generator=_seed(3), **kw)
    assert (ours - theirs).abs().max() <= TOL


def test_max_sequence_length_override_matches_the_pipeline_argument(tiny_paths):
    encoder = PixArtEncoder.from_pretrained(str(tiny_paths["pixart-sigma"]), max_sequence_length=64)
    assert encoder.max_prompt_tokens == 64
    assert encoder.encode_prompts(PROMPTS).embeds["prompt_embeds"].shape[1] == 64
    kw = dict(num_inference_steps=2, guidance_scale=4.5, height=32, width=32)
    ours = encoder.generate(PROMPTS, generator=_seed(2), **kw)
    theirs = _pipeline_images(_load_pipeline(tiny_paths["pixart-sigma"]), PROMPTS, generator=_seed(2),
                              max_sequence_length=64, **kw)
    assert (ours - theirs).abs().max() <= TOL
    with pytest.raises(InputError, match="max_sequence_length"):
        PixArtEncoder.from_pretrained(str(tiny_paths["pixart"]), max_sequence_length=0)


def _foreign_pipeline(kind: str):
    """A pipeline built here with configs unlike the project's fixture (layers, widths, VAE depth, scheduler)."""
    from diffusers import (
        AutoencoderKL,
        DPMSolverMultistepScheduler,
        EulerDiscreteScheduler,
        PixArtTransformer2DModel,
    )

    torch.manual_seed(11)
    text_encoder, tokenizer = tiny_t5_encoder(d_model=48)
    vae = AutoencoderKL(in_channels=3, out_channels=3, block_out_channels=(8, 8, 16), layers_per_block=1,
                        down_block_types=("DownEncoderBlock2D",) * 3, up_block_types=("UpDecoderBlock2D",) * 3,
                        latent_channels=4, norm_num_groups=4, scaling_factor=0.5).eval()
    if kind == "alpha-1024-dpm":
        # sample_size 128 switches on PixArt-alpha 1024's resolution / aspect-ratio micro-conditions.
        transformer = PixArtTransformer2DModel(
            sample_size=128, num_layers=3, patch_size=2, attention_head_dim=4, num_attention_heads=6,
            caption_channels=48, in_channels=4, cross_attention_dim=24, out_channels=8, attention_bias=True,
            activation_fn="gelu-approximate", num_embeds_ada_norm=1000, norm_type="ada_norm_single",
            norm_elementwise_affine=False, norm_eps=1e-6)
        scheduler = DPMSolverMultistepScheduler(beta_schedule="linear", beta_start=0.0001, beta_end=0.02)
        cls = diffusers.PixArtAlphaPipeline
    else:
        # No learned sigma (out_channels == in_channels) and a scheduler with init_noise_sigma != 1.
        transformer = PixArtTransformer2DModel(
            sample_size=8, num_layers=1, patch_size=1, attention_head_dim=8, num_attention_heads=2,
            caption_channels=48, in_channels=4, cross_attention_dim=16, out_channels=4, attention_bias=True,
            activation_fn="gelu-approximate", num_embeds_ada_norm=1000, norm_type="ada_norm_single",
            norm_elementwise_affine=False, norm_eps=1e-6, use_additional_conditions=False)
        scheduler = EulerDiscreteScheduler(beta_schedule="scaled_linear", timestep_spacing="trailing")
        cls = diffusers.PixArtSigmaPipeline
    return cls(tokenizer=tokenizer, text_encoder=text_encoder, vae=vae, transformer=transformer.eval(),
               scheduler=scheduler)


@pytest.mark.parametrize("kind", ["alpha-1024-dpm", "sigma-euler-no-learned-sigma"])
def test_generate_matches_diffusers_on_a_folder_saved_by_plain_diffusers(kind, tmp_path):
    _foreign_pipeline(kind).save_pretrained(str(tmp_path))
    encoder = PixArtEncoder.from_pretrained(str(tmp_path))
    assert encoder.uses_micro_conditions == (kind == "alpha-1024-dpm")
    assert encoder.image_multiple == 4 * encoder.transformer.config.patch_size
    _assert_parity(encoder, _load_pipeline(tmp_path), steps=4, guidance=3.0, size=32)


def _with_prediction_type(path, prediction_type: str):
    pipe = _load_pipeline(path)
    pipe.scheduler = diffusers.DPMSolverMultistepScheduler.from_config(pipe.scheduler.config,
                                                                       prediction_type=prediction_type)
    return pipe


def test_v_prediction_checkpoints_match_diffusers_and_convert_to_eps(tiny_paths, tmp_path):
    pipe = _with_prediction_type(tiny_paths["pixart"], "v_prediction")
    pipe.save_pretrained(str(tmp_path))
    encoder = PixArtEncoder.from_pretrained(str(tmp_path))
    _assert_parity(encoder, _load_pipeline(tmp_path), steps=3, guidance=4.5, size=32)

    # eps_hat = a v + s z: the eps the DDPM identity z = a x0 + s eps implies for the predicted v.
    z, ours, v = _predict_eps_and_raw_output(encoder)
    a, s = encoder.alpha_sigma(torch.tensor([0.25]))
    torch.testing.assert_close(ours, a * v + s * z)
    assert (ours - v).abs().max() > 1e-2  # the conversion is not the identity here


def test_unsupported_prediction_type_is_refused_with_the_supported_ones(tiny_paths, tmp_path):
    _with_prediction_type(tiny_paths["pixart"], "sample").save_pretrained(str(tmp_path))
    with pytest.raises(InputError, match="prediction_type='sample'.*v_prediction"):
        PixArtEncoder.from_pretrained(str(tmp_path))


# ------------------------------------------------------------------------------------------------ noise path
def test_alpha_sigma_follows_the_scheduler_and_is_exact_at_zero(encoders):
    encoder = encoders["pixart"]
    a, s = encoder.alpha_sigma(torch.tensor([0.0]))
    assert float(a) == 1.0 and float(s) == 0.0
    alphas_cumprod = encoder.scheduler.alphas_cumprod.double()
    n = torch.tensor([1, 250, 999, 1000])
    a, s = encoder.alpha_sigma(n.double() / 1000)
    torch.testing.assert_close(a.square(), alphas_cumprod[n - 1], rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(s.square(), 1 - alphas_cumprod[n - 1], rtol=1e-10, atol=1e-12)


def _predict_eps_and_raw_output(encoder):
    """(z, predict_eps(z, t=0.25), the transformer's first 4 output channels at diffusers timestep 249)."""
    cond = encoder.encode_prompts(PROMPTS[:1])
    z = torch.randn(1, 4, 8, 8, generator=_seed(0))
    with torch.no_grad():
        ours = encoder.predict_eps(z, 0.25, cond)
        raw = encoder.transformer(z, encoder_hidden_states=cond.embeds["prompt_embeds"],
                                  encoder_attention_mask=cond.masks["prompt_embeds"], timestep=torch.tensor([249]),
                                  added_cond_kwargs={"resolution": None, "aspect_ratio": None}).sample
    return z, ours, raw[:, :4]


def test_predict_eps_feeds_the_transformer_the_diffusers_timestep(encoders):
    _, ours, raw = _predict_eps_and_raw_output(encoders["pixart"])
    torch.testing.assert_close(ours, raw)


def test_timesteps_rejects_bad_arguments(encoders):
    with pytest.raises(InputError, match="num_steps"):
        encoders["pixart"].timesteps(0)
    with pytest.raises(InputError, match="t_start"):
        encoders["pixart"].timesteps(4, 1.5)
    with pytest.raises(InputError, match=r"\[0, 1\]"):
        encoders["pixart"].alpha_sigma(torch.tensor([1.2]))


# ------------------------------------------------------------------------------------------------ 2. inversion
def test_inversion_round_trip_improves_with_steps(calibrated_path):
    encoder = PixArtEncoder.from_pretrained(str(calibrated_path))
    z0 = encoder.encode_images(torch.rand(1, 3, 32, 32, generator=_seed(0)) * 2 - 1).detach()
    cond = encoder.encode_prompts(PROMPTS[:1])
    errors = []
    for steps in (5, 10, 25):
        rec = encoder.sample(encoder.invert(z0, cond, 0.6, steps), cond, 0.6, steps)
        errors.append(float((rec - z0).norm() / z0.norm()))
    assert errors[2] < errors[1] < errors[0], errors
    assert errors[2] < 0.25, errors


def test_fixed_point_inversion_closes_the_round_trip_for_its_evaluations(calibrated_path):
    encoder = PixArtEncoder.from_pretrained(str(calibrated_path))
    z0 = encoder.encode_images(torch.rand(1, 3, 32, 32, generator=_seed(0)) * 2 - 1).detach()
    cond = encoder.encode_prompts(PROMPTS[:1])
    errors, evals = {}, {}
    for k in (0, 1, 2, 5):
        before = encoder.counter.forwards
        z_t = encoder.invert(z0, cond, 0.6, 10, fixed_point_iterations=k)
        evals[k] = encoder.counter.forwards - before
        errors[k] = float((encoder.sample(z_t, cond, 0.6, 10) - z0).norm() / z0.norm())
    assert errors[5] < errors[2] < errors[1] < errors[0], errors
    assert errors[5] < 0.01 * errors[0], errors  # each step converges to the latent one sampling step maps back
    assert evals == {k: 10 * (k + 1) for k in evals}
    # a step with its prediction at the end point, then one sampling step from there, lands on the start
    z_next = encoder.invert(z0, cond, 0.06, 1, fixed_point_iterations=20)
    torch.testing.assert_close(encoder.sample(z_next, cond, 0.06, 1), z0, atol=1e-4, rtol=1e-4)
    for bad in (-1, 1.5, True, 101):
        with pytest.raises(InputError, match="fixed_point_iterations"):
            encoder.invert(z0, cond, 0.6, 2, fixed_point_iterations=bad)


def test_half_precision_round_trip_stays_close_to_float32(calibrated_path):
    results = {}
    for dtype in (torch.float32, torch.bfloat16):
        encoder = PixArtEncoder.from_pretrained(str(calibrated_path), dtype=dtype)
        assert encoder.dtype == dtype and encoder.text_encoder.dtype == dtype
        z0 = encoder.encode_images(torch.rand(1, 3, 32, 32, generator=_seed(0)) * 2 - 1).detach()
        cond = encoder.encode_prompts(PROMPTS[:1])
        results[dtype] = encoder.sample(encoder.invert(z0, cond, 0.6, 10), cond, 0.6, 10).float()
        assert results[dtype].dtype == torch.float32 and torch.isfinite(results[dtype]).all()
    ref = results[torch.float32]
    assert float((results[torch.bfloat16] - ref).norm() / ref.norm()) < 0.1


# ------------------------------------------------------------------------------------------------ 3. derivatives
def test_derivatives_match_central_differences_in_float64(tiny_paths):
    encoder = PixArtEncoder.from_pretrained(str(tiny_paths["pixart"])).to(dtype=torch.float64)
    assert encoder.dtype == torch.float64
    cond = encoder.encode_prompts(PROMPTS[:1])
    emb, mask = cond.embeds["prompt_embeds"], cond.masks["prompt_embeds"]
    g = _seed(1)
    z = torch.randn(1, 4, 8, 8, generator=g, dtype=torch.float64)
    t = torch.tensor([0.4])
    v_z = torch.randn(z.shape, generator=g, dtype=torch.float64)
    v_c = torch.randn(emb.shape, generator=g, dtype=torch.float64) * mask[..., None]  # real tokens only
    u = torch.randn(z.shape, generator=g, dtype=torch.float64)

    def f(z_, emb_):
        return encoder._predict_eps(z_, t, Conditioning({"prompt_embeds": emb_}, {"prompt_embeds": mask}))

    h = 1e-4
    for name, direction in (("z_t", (v_z, torch.zeros_like(emb))), ("prompt_embeds", (torch.zeros_like(z), v_c))):
        with torch.no_grad():
            fd = (f(z + h * direction[0], emb + h * direction[1]) - f(z - h * direction[0], emb - h * direction[1]))
            fd = fd / (2 * h)
        assert fd.abs().max() > 1e-6, f"eps_hat does not depend on {name}"
        with sdpa_kernel(SDPBackend.MATH):
            _, jvp = torch.func.jvp(f, (z, emb), direction)
        assert float((jvp - fd).norm() / fd.norm()) < 1e-5, name

        zz, ee = z.clone().requires_grad_(True), emb.clone().requires_grad_(True)
        g_z, g_c = torch.autograd.grad((f(zz, ee) * u).sum(), (zz, ee))
        vjp_dot = (g_z * direction[0]).sum() + (g_c * direction[1]).sum()
        fd_dot = (u * fd).sum()
        assert abs(float(vjp_dot - fd_dot)) < 1e-5 * abs(float(fd_dot)), name


# ------------------------------------------------------------------------------------------------ 4. input policy
def test_encode_resizes_odd_images_to_the_multiple(encoders):
    from PIL import Image

    encoder = encoders["pixart"]
    images = [Image.new("RGBA", (37, 29), (255, 0, 0, 90)), Image.new("P", (37, 29))]
    latent = encoder.encode(images, PROMPTS[0])
    m, f = encoder.image_multiple, encoder.vae_scale_factor
    height, width = round(29 / m) * m, round(37 / m) * m
    assert latent.image_size == (height, width)
    assert tuple(latent.z0.shape) == (2, encoder.latent_channels, height // f, width // f)
    assert latent.original_sizes == [(29, 37), (29, 37)]
    with pytest.raises(InputError, match="multiples of 4"):
        encoder.encode_images(torch.zeros(1, 3, 30, 32))


@pytest.mark.parametrize("family, limit", [("pixart", 120), ("pixart-sigma", 300)])
def test_overlong_prompt_warns_and_is_truncated_like_the_pipeline(family, limit, encoders):
    from PIL import Image

    encoder = encoders[family]
    long_prompt = "a red circle " * limit
    assert encoder.max_prompt_tokens == limit
    assert encoder.count_tokens(long_prompt) > limit
    assert encoder.count_tokens("A Photo ") == 3  # lower-cased like the pipeline: "▁a", "▁photo", "</s>"
    with pytest.warns(UserWarning, match=f"limit of {limit}"):
        latent = encoder.encode(Image.new("RGB", (32, 32)), long_prompt)
    assert latent.cond.embeds["prompt_embeds"].shape[1] == limit
    assert int(latent.cond.masks["prompt_embeds"].sum()) == limit
    pipe_embeds, pipe_mask, _, _ = encoder.pipeline.encode_prompt(long_prompt, do_classifier_free_guidance=False,
                                                                  max_sequence_length=limit, clean_caption=False)
    torch.testing.assert_close(latent.cond.embeds["prompt_embeds"], pipe_embeds)
    assert torch.equal(latent.cond.masks["prompt_embeds"], pipe_mask)


def test_generate_rejects_bad_arguments(encoders):
    encoder = encoders["pixart"]
    kw = dict(num_inference_steps=2, guidance_scale=2.0, height=32, width=32)
    with pytest.raises(InputError, match="height"):
        encoder.generate(PROMPTS, **{**kw, "height": 30})
    with pytest.raises(InputError, match="latents must have shape"):
        encoder.generate(PROMPTS, latents=torch.zeros(1, 4, 16, 16), **kw)
    with pytest.raises(InputError, match="negative_prompts"):
        encoder.generate(PROMPTS, negative_prompts=["x"], **kw)
    with pytest.raises(InputError, match="num_inference_steps"):
        encoder.generate(PROMPTS, **{**kw, "num_inference_steps": 0})


# ------------------------------------------------------------------------------------------------ loading options
def test_vae_tiling_and_slicing_reach_diffusers(tiny_paths):
    plain = PixArtEncoder.from_pretrained(str(tiny_paths["pixart"]))
    assert not plain.vae.use_tiling and not plain.vae.use_slicing
    encoder = PixArtEncoder.from_pretrained(str(tiny_paths["pixart"]), vae_tiling=True, vae_slicing=True)
    assert encoder.vae.use_tiling and encoder.vae.use_slicing
    assert all(not p.requires_grad for p in encoder.transformer.parameters())
    assert not encoder.transformer.training and not encoder.text_encoder.training and not encoder.vae.training


def test_cpu_offload_and_loader_kwargs_reach_diffusers(tiny_paths, monkeypatch):
    calls = {}
    original = diffusers.PixArtSigmaPipeline.from_pretrained.__func__

    def from_pretrained(cls, path, **kwargs):
        calls["kwargs"] = kwargs
        return original(cls, path, **{k: v for k, v in kwargs.items() if k != "revision"})

    monkeypatch.setattr(diffusers.PixArtSigmaPipeline, "from_pretrained", classmethod(from_pretrained))
    monkeypatch.setattr(diffusers.PixArtSigmaPipeline, "enable_model_cpu_offload",
                        lambda self, device=None, **kw: calls.setdefault("offload", torch.device(device)))
    monkeypatch.setattr(diffusers.PixArtSigmaPipeline, "to", lambda self, *a, **kw: calls.setdefault("to", a))
    encoder = PixArtEncoder.from_pretrained(str(tiny_paths["pixart-sigma"]), device="cuda", cpu_offload=True,
                                            dtype=torch.bfloat16, revision="main")
    assert calls["offload"] == torch.device("cuda") and "to" not in calls
    assert calls["kwargs"]["revision"] == "main" and calls["kwargs"]["torch_dtype"] == torch.bfloat16
    assert encoder.pipeline_class == "PixArtSigmaPipeline" and encoder.max_prompt_tokens == 300


def test_loading_errors_name_the_fix(tiny_paths, tmp_path):
    with pytest.raises(InputError, match="cpu_offload"):
        PixArtEncoder.from_pretrained(str(tiny_paths["pixart"]), cpu_offload=True)
    with pytest.raises(InputError, match="dtype"):
        PixArtEncoder.from_pretrained(str(tiny_paths["pixart"]), dtype=torch.int8)
    (tmp_path / "model_index.json").write_text(json.dumps({"_class_name": "FluxPipeline"}))
    with pytest.raises(InputError, match="FluxPipeline"):
        PixArtEncoder.from_pretrained(str(tmp_path))
    with pytest.raises(InputError, match="PixArtAlphaPipeline"):
        PixArtEncoder.from_pipeline(object())


def test_from_pipeline_shares_the_pipeline_modules(tiny_paths):
    pipe = _load_pipeline(tiny_paths["pixart"])
    encoder = PixArtEncoder.from_pipeline(pipe, model_id="my/pixart")
    assert encoder.transformer is pipe.transformer and encoder.scheduler is pipe.scheduler
    assert encoder.model_id == "my/pixart" and encoder.dtype == torch.float32
    assert PIPELINE_CLASSES["pixart"] == encoder.pipeline_class


# ------------------------------------------------------------------------------------------------ 5. contract
class TestpixartContract(EncoderContract):
    """The shared backend contract on a tiny PixArt-alpha whose latents have unit variance like real ones."""

    @pytest.fixture(scope="class")
    def encoder(self, calibrated_path):
        return PixArtEncoder.from_pretrained(str(calibrated_path))
