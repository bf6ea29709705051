"""Tiny PixArt, SD3, Flux, Stable Diffusion and SDXL pipelines of the real diffusers classes, built from configs.

The sizes follow diffusers' own fast tests (a few hundred thousand parameters), with two VAE blocks so that
the latent is downsampled by 2 and Flux's 2x2 packing is exercised. ``build_tiny_pipeline`` writes the
pipeline to a folder with ``save_pretrained``, so backends load it exactly like a real model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from eimsdk.tokenizers import build_clip_tokenizer, build_t5_tokenizer

FAMILIES = ("pixart", "pixart-sigma", "sd3", "flux", "sd", "sdxl")

T5_MAX_LENGTH = 32


def _seed(seed: int) -> None:
    import torch

    torch.manual_seed(seed)


def tiny_t5_encoder(d_model: int = 32):
    from transformers import T5Config, T5EncoderModel

    tok = build_t5_tokenizer(T5_MAX_LENGTH)
    config = T5Config(
        vocab_size=len(tok), d_model=d_model, d_kv=8, d_ff=37, num_layers=2, num_heads=4,
        relative_attention_num_buckets=8, dropout_rate=0.0, feed_forward_proj="gated-gelu",
        pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, decoder_start_token_id=tok.pad_token_id,
    )
    return T5EncoderModel(config).eval(), tok


def tiny_clip_encoder(with_projection: bool, hidden_size: int = 32):
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    tok = build_clip_tokenizer(77)
    config = CLIPTextConfig(
        vocab_size=len(tok), hidden_size=hidden_size, intermediate_size=37, num_hidden_layers=2,
        num_attention_heads=4, max_position_embeddings=77, projection_dim=hidden_size, hidden_act="gelu",
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
        layer_norm_eps=1e-5,
    )
    cls = CLIPTextModelWithProjection if with_projection else CLIPTextModel
    return cls(config).eval(), tok


def tiny_vae(latent_channels: int = 4, **kw: Any):
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        sample_size=32, in_channels=3, out_channels=3, block_out_channels=(4, 8), layers_per_block=1,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        latent_channels=latent_channels, norm_num_groups=1, **kw,
    ).eval()


def _flow_vae(seed: int):
    """The SD3/Flux-style VAE: no quant convs, a shift and scale like the real ones'."""
    _seed(seed)
    return tiny_vae(4, use_quant_conv=False, use_post_quant_conv=False, shift_factor=0.0609, scaling_factor=1.5035)


def get_dummy_components(family: str, seed: int = 0) -> dict[str, Any]:
    """Components for the family's pipeline class, seeded; keys are the pipeline's ``__init__`` arguments."""
    from diffusers import (
        DDIMScheduler,
        EulerDiscreteScheduler,
        FlowMatchEulerDiscreteScheduler,
        FluxTransformer2DModel,
        PixArtTransformer2DModel,
        SD3Transformer2DModel,
        UNet2DConditionModel,
    )

    if family in ("pixart", "pixart-sigma"):
        _seed(seed)
        transformer = PixArtTransformer2DModel(
            sample_size=16, num_layers=2, patch_size=2, attention_head_dim=8, num_attention_heads=3,
            caption_channels=32, in_channels=4, cross_attention_dim=24, out_channels=8, attention_bias=True,
            activation_fn="gelu-approximate", num_embeds_ada_norm=1000, norm_type="ada_norm_single",
            norm_elementwise_affine=False, norm_eps=1e-6,
        ).eval()
        _seed(seed)
        vae = tiny_vae(4)
        _seed(seed)
        text_encoder, tokenizer = tiny_t5_encoder(32)
        return dict(transformer=transformer, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer,
                    scheduler=DDIMScheduler())
    if family == "sd3":
        _seed(seed)
        transformer = SD3Transformer2DModel(
            sample_size=16, patch_size=2, in_channels=4, num_layers=1, attention_head_dim=8,
            num_attention_heads=4, caption_projection_dim=32, joint_attention_dim=32, pooled_projection_dim=64,
            out_channels=4,
        ).eval()
        _seed(seed)
        text_encoder, tokenizer = tiny_clip_encoder(True)
        _seed(seed + 1)
        text_encoder_2, tokenizer_2 = tiny_clip_encoder(True)
        _seed(seed)
        text_encoder_3, tokenizer_3 = tiny_t5_encoder(32)
        return dict(transformer=transformer, vae=_flow_vae(seed), scheduler=FlowMatchEulerDiscreteScheduler(),
                    text_encoder=text_encoder, tokenizer=tokenizer, text_encoder_2=text_encoder_2,
                    tokenizer_2=tokenizer_2, text_encoder_3=text_encoder_3, tokenizer_3=tokenizer_3)
    if family == "flux":
        _seed(seed)
        transformer = FluxTransformer2DModel(
            patch_size=1, in_channels=16, num_layers=1, num_single_layers=1, attention_head_dim=16,
            num_attention_heads=2, joint_attention_dim=32, pooled_projection_dim=32, axes_dims_rope=[4, 4, 8],
            guidance_embeds=True,
        ).eval()
        _seed(seed)
        text_encoder, tokenizer = tiny_clip_encoder(False)
        _seed(seed)
        text_encoder_2, tokenizer_2 = tiny_t5_encoder(32)
        return dict(transformer=transformer, vae=_flow_vae(seed), scheduler=FlowMatchEulerDiscreteScheduler(),
                    text_encoder=text_encoder, tokenizer=tokenizer, text_encoder_2=text_encoder_2,
                    tokenizer_2=tokenizer_2)
    if family == "sd":
        _seed(seed)
        unet = UNet2DConditionModel(
            sample_size=16, in_channels=4, out_channels=4, block_out_channels=(8, 16), layers_per_block=1,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=32, attention_head_dim=4,
            norm_num_groups=4,
        ).eval()
        _seed(seed)
        text_encoder, tokenizer = tiny_clip_encoder(False)
        _seed(seed)
        scheduler = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                  clip_sample=False, set_alpha_to_one=False, steps_offset=1)
        return dict(unet=unet, vae=tiny_vae(4), text_encoder=text_encoder, tokenizer=tokenizer, scheduler=scheduler,
                    safety_checker=None, feature_extractor=None, image_encoder=None, requires_safety_checker=False)
    if family == "sdxl":
        _seed(seed)
        unet = UNet2DConditionModel(
            sample_size=16, in_channels=4, out_channels=4, block_out_channels=(8, 16), layers_per_block=1,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=64, attention_head_dim=(2, 4),
            use_linear_projection=True, addition_embed_type="text_time", addition_time_embed_dim=8,
            projection_class_embeddings_input_dim=6 * 8 + 32, norm_num_groups=4,
        ).eval()
        _seed(seed)
        text_encoder, tokenizer = tiny_clip_encoder(False)
        _seed(seed + 1)
        text_encoder_2, tokenizer_2 = tiny_clip_encoder(True)
        scheduler = EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                           steps_offset=1, timestep_spacing="leading")
        return dict(unet=unet, vae=tiny_vae(4), text_encoder=text_encoder, tokenizer=tokenizer,
                    text_encoder_2=text_encoder_2, tokenizer_2=tokenizer_2, scheduler=scheduler,
                    image_encoder=None, feature_extractor=None)
    raise ValueError(f"family={family!r} is not one of {FAMILIES}")


PIPELINE_CLASSES = {
    "pixart": "PixArtAlphaPipeline",
    "pixart-sigma": "PixArtSigmaPipeline",
    "sd3": "StableDiffusion3Pipeline",
    "flux": "FluxPipeline",
    "sd": "StableDiffusionPipeline",
    "sdxl": "StableDiffusionXLPipeline",
}


def build_tiny_pipeline(family: str, path: str | Path | None = None, seed: int = 0, *, calibrate: bool = False):
    """Build the family's tiny diffusers pipeline; save it to ``path`` (diffusers format) when given.

    ``calibrate`` scales the VAE to unit-variance latents like a real checkpoint's (:func:`calibrate_vae`); use it
    where relative inversion errors or noise-to-signal ratios matter.
    """
    import diffusers

    components = get_dummy_components(family, seed)
    if calibrate:
        calibrate_vae(components["vae"], seed)
    pipe = getattr(diffusers, PIPELINE_CLASSES[family])(**components)
    pipe.set_progress_bar_config(disable=True)
    if path is not None:
        pipe.save_pretrained(str(path))
    return pipe


def calibrate_vae(vae: Any, seed: int = 0) -> float:
    """Set the VAE's ``scaling_factor`` to 1 / std of its latents of random images, as real checkpoints are scaled.

    Real checkpoints choose ``scaling_factor`` (0.18215 for SD-VAE) so that z0 has unit variance. A random tiny VAE
    with that value gives latents several times too small for the noise, which makes relative inversion errors
    meaningless; this fixes the scale the same way. Returns the new factor.
    """
    import torch

    g = torch.Generator("cpu").manual_seed(seed)
    pixels = torch.rand(8, 3, 32, 32, generator=g) * 2 - 1  # (8, 3, 32, 32) in [-1, 1]
    with torch.no_grad():
        latents = vae.encode(pixels).latent_dist.mode() - (vae.config.get("shift_factor", None) or 0.0)
    factor = round(1.0 / latents.std().item(), 5)
    vae.register_to_config(scaling_factor=factor)
    return factor
