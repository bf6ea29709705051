"""Tiny models of the real diffusers classes for the toy world, built from configs (no download).

Every family gets the pipeline its real models use, with the same component classes:

- pixart: ``PixArtAlphaPipeline``, ``PixArtTransformer2DModel`` (DDPM eps; 2 x C output channels), T5 encoder;
- sd3: ``StableDiffusion3Pipeline``, ``SD3Transformer2DModel`` (flow matching), 2 x CLIP with projection + T5;
- flux: ``FluxPipeline``, ``FluxTransformer2DModel`` (flow matching, 2x2-packed latents), CLIP + T5;
- unet: ``StableDiffusionPipeline``, ``UNet2DConditionModel`` (DDPM eps, toy PixArt's schedule), the toy Flux's CLIP.

All four share one tiny trained ``AutoencoderKL`` (32x32 RGB <-> 4x16x16 latents, factor 2), so every
transformer sees 64 image tokens (patch 2 for PixArt/SD3, Flux's 2x2 packing with patch 1). The text encoders
are random and frozen (seeded, rounded to fp16 so the shipped weights are exactly the trained ones), on the
offline tokenizers of :mod:`eimsdk.tokenizers`; the transformer learns to read them.
"""

from __future__ import annotations

from typing import Any

import torch

from eimsdk.tokenizers import build_clip_tokenizer, build_t5_tokenizer

FAMILIES: tuple[str, ...] = ("pixart", "sd3", "flux", "unet")
PIPELINES: dict[str, str] = {"pixart": "PixArtAlphaPipeline", "sd3": "StableDiffusion3Pipeline",
                             "flux": "FluxPipeline", "unet": "StableDiffusionPipeline"}
IMAGE_SIZE = 32
LATENT_CHANNELS = 4
LATENT_SIZE = 16  # IMAGE_SIZE / VAE factor 2
T5_DIM = 64
CLIP_MAX_LENGTH = 77


def fp16_exact_(module: torch.nn.Module) -> torch.nn.Module:
    """Round every parameter to the nearest fp16 value, so saving in fp16 loses nothing."""
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(p.to(torch.float16).to(p.dtype))
    return module


def build_vae(seed: int = 0, image_size: int = IMAGE_SIZE, factor: int = 2, latent_channels: int = LATENT_CHANNELS):
    """The shared toy VAE: RGB <-> latents ``factor`` times smaller (2: 32x32 -> 4x16x16; 4 adds a 128-channel
    block), no quant convs (like SD3/Flux VAEs)."""
    if factor not in (2, 4):
        raise ValueError(f"factor={factor!r}: the toy VAE downsamples by 2 or 4")
    blocks = (32, 64) if factor == 2 else (32, 64, 128)
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    return AutoencoderKL(
        sample_size=image_size, in_channels=3, out_channels=3, latent_channels=latent_channels,
        block_out_channels=blocks, layers_per_block=1, norm_num_groups=8,
        down_block_types=("DownEncoderBlock2D",) * len(blocks), up_block_types=("UpDecoderBlock2D",) * len(blocks),
        use_quant_conv=False, use_post_quant_conv=False,
    )


def build_t5(seed: int):
    """A frozen random T5 encoder (d_model 64) on the offline T5 tokenizer (pad 0, eos 1, unk 2)."""
    from transformers import T5Config, T5EncoderModel

    tok = build_t5_tokenizer(32)
    config = T5Config(
        vocab_size=len(tok), d_model=T5_DIM, d_kv=16, d_ff=128, num_layers=2, num_heads=4,
        relative_attention_num_buckets=16, dropout_rate=0.0, feed_forward_proj="gated-gelu",
        pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, decoder_start_token_id=tok.pad_token_id,
    )
    torch.manual_seed(seed)
    return fp16_exact_(T5EncoderModel(config).eval()).requires_grad_(False), tok


def build_clip(seed: int, hidden_size: int, with_projection: bool, max_length: int = CLIP_MAX_LENGTH):
    """A frozen random CLIP text encoder on the offline byte-level BPE tokenizer (bos/eos/pad ids matching);
    ``max_length`` tokens (the pipelines pad CLIP to the tokenizer's ``model_max_length``)."""
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    tok = build_clip_tokenizer(max_length)
    config = CLIPTextConfig(
        vocab_size=len(tok), hidden_size=hidden_size, intermediate_size=2 * hidden_size, num_hidden_layers=2,
        num_attention_heads=4, max_position_embeddings=max_length, projection_dim=hidden_size,
        hidden_act="gelu", layer_norm_eps=1e-5,
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
    )
    cls = CLIPTextModelWithProjection if with_projection else CLIPTextModel
    torch.manual_seed(seed)
    return fp16_exact_(cls(config).eval()).requires_grad_(False), tok


def latent_size_of(vae) -> int:
    """The latent side of a toy VAE: its image side over its downsampling factor."""
    return vae.config.sample_size // 2 ** (len(vae.config.block_out_channels) - 1)


def build_transformer(family: str, seed: int, latent_size: int = LATENT_SIZE, latent_channels: int = LATENT_CHANNELS):
    """The family's tiny diffusion transformer (width 128 = 4 heads x 32; 64 image tokens at 16x16 latents)."""
    from diffusers import FluxTransformer2DModel, PixArtTransformer2DModel, SD3Transformer2DModel

    torch.manual_seed(seed)
    if family == "pixart":
        # Standard PixArt shape: out_channels = 2 x in_channels (eps + learned-variance half; the toy trains eps).
        return PixArtTransformer2DModel(
            sample_size=latent_size, patch_size=2, in_channels=latent_channels, out_channels=2 * latent_channels,
            num_layers=6, attention_head_dim=32, num_attention_heads=4, cross_attention_dim=128,
            caption_channels=T5_DIM, attention_bias=True, activation_fn="gelu-approximate",
            num_embeds_ada_norm=1000, norm_type="ada_norm_single", norm_elementwise_affine=False, norm_eps=1e-6,
        )
    if family == "sd3":
        return SD3Transformer2DModel(
            sample_size=latent_size, patch_size=2, in_channels=latent_channels, out_channels=latent_channels,
            num_layers=6, attention_head_dim=32, num_attention_heads=4, joint_attention_dim=T5_DIM,
            caption_projection_dim=128, pooled_projection_dim=64, pos_embed_max_size=latent_size,
        )
    if family == "flux":
        return FluxTransformer2DModel(
            patch_size=1, in_channels=4 * latent_channels, num_layers=2, num_single_layers=4,
            attention_head_dim=32, num_attention_heads=4, joint_attention_dim=T5_DIM, pooled_projection_dim=64,
            axes_dims_rope=(8, 12, 12), guidance_embeds=False,
        )
    raise ValueError(f"family={family!r} is not one of {FAMILIES}")


def build_unet(seed: int, latent_size: int = LATENT_SIZE, latent_channels: int = LATENT_CHANNELS):
    """The toy UNet: Stable Diffusion's layout (cross-attention down/up blocks, a plain lowest level, a
    cross-attention mid block) at 16x16 latents, 32/64/128 channels, one ResNet per block: 3.17 M parameters, inside
    the toy DiTs' 1.77-3.47 M. It reads the 64-d CLIP hidden states of the toy Flux's text encoder, with no mask."""
    from diffusers import UNet2DConditionModel

    torch.manual_seed(seed)
    return UNet2DConditionModel(
        sample_size=latent_size, in_channels=latent_channels, out_channels=latent_channels,
        block_out_channels=(32, 64, 128), layers_per_block=1, norm_num_groups=16, attention_head_dim=4,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=64,
    )


def denoiser_name(family: str) -> str:
    """The pipeline component that denoises: ``unet`` for the UNet family, ``transformer`` for the DiTs."""
    return "unet" if family == "unet" else "transformer"


def build_scheduler(family: str, prediction_type: str = "epsilon"):
    """The sampler saved with the pipeline (the training noise process is the same one)."""
    from diffusers import DPMSolverMultistepScheduler, FlowMatchEulerDiscreteScheduler

    # PixArt-alpha's own scheduler config (optionally v-prediction); the toy UNet shares it, so the toy PixArt and
    # the toy UNet differ in the denoiser and its text path, not in the noise process.
    if family in ("pixart", "unet"):
        return DPMSolverMultistepScheduler(beta_start=0.0001, beta_end=0.02, beta_schedule="linear",
                                           num_train_timesteps=1000, prediction_type=prediction_type)
    if family == "sd3":
        return FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=3.0)
    if family == "flux":  # FLUX.1's dynamic (resolution-dependent) shift
        return FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=3.0, use_dynamic_shifting=True,
                                               base_shift=0.5, max_shift=1.15, base_image_seq_len=256,
                                               max_image_seq_len=4096)
    raise ValueError(f"family={family!r} is not one of {FAMILIES}")


def vae_for(family: str, vae):
    """A copy of the shared VAE with the family's latent convention (PixArt: no shift, like SD VAEs)."""
    import copy

    out = copy.deepcopy(vae)
    if family in ("pixart", "unet"):
        out.register_to_config(shift_factor=None)
    return out


def build_pipeline(family: str, vae, seed: int = 0, prediction_type: str = "epsilon", text_tokens: int | None = None):
    """An untrained pipeline of the family around the shared (trained) ``vae`` (its latents set the transformer's
    input size and channels); text encoders are seeded.

    ``text_tokens`` (SD3 and Flux): the text context of the joint attention, every CLIP and T5 sequence padded
    to that many tokens instead of the pipelines' 77 + 256 (SD3) or 512 (Flux). The T5 length is stored in
    ``model_index.json`` (:func:`encoder_options`), so every loader encodes prompts the way the model trained."""
    import diffusers

    from eimsdk.backends.diffusers_base import ENCODER_OPTIONS_KEY

    if family not in FAMILIES:
        raise ValueError(f"family={family!r} is not one of {FAMILIES}")
    short = text_tokens if family in ("sd3", "flux") else None
    clip_length = short or CLIP_MAX_LENGTH
    latent = (latent_size_of(vae), vae.config.latent_channels)
    parts: dict[str, Any] = dict(vae=vae_for(family, vae), scheduler=build_scheduler(family, prediction_type))
    if family == "unet":
        parts["unet"] = build_unet(seed, *latent)
        parts["text_encoder"], parts["tokenizer"] = build_clip(seed + 1, 64, with_projection=False)
        parts.update(safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    else:
        parts["transformer"] = build_transformer(family, seed, *latent)
    if family == "pixart":
        parts["text_encoder"], parts["tokenizer"] = build_t5(seed + 1)
    elif family == "sd3":
        parts["text_encoder"], parts["tokenizer"] = build_clip(seed + 1, 32, True, clip_length)
        parts["text_encoder_2"], parts["tokenizer_2"] = build_clip(seed + 2, 32, True, clip_length)
        parts["text_encoder_3"], parts["tokenizer_3"] = build_t5(seed + 3)
    elif family == "flux":
        parts["text_encoder"], parts["tokenizer"] = build_clip(seed + 1, 64, False, clip_length)
        parts["text_encoder_2"], parts["tokenizer_2"] = build_t5(seed + 2)
    pipe = getattr(diffusers, PIPELINES[family])(**parts)
    if short:
        pipe.register_to_config(**{ENCODER_OPTIONS_KEY: {"max_sequence_length": short}})
    pipe.set_progress_bar_config(disable=True)
    return pipe


def encoder_options(pipe_or_folder: Any) -> dict[str, Any]:
    """The encoder options a toy pipeline (built here) or model folder stores (``{}``: the pipelines' defaults)."""
    import diffusers

    from eimsdk.backends.diffusers_base import ENCODER_OPTIONS_KEY

    config = getattr(pipe_or_folder, "config", None)
    if config is None:
        config = diffusers.DiffusionPipeline.load_config(str(pipe_or_folder))
    return dict(config.get(ENCODER_OPTIONS_KEY) or {})


def text_context_kwargs(options: dict[str, Any]) -> dict[str, Any]:
    """The ``max_sequence_length`` argument of a pipeline's ``__call__`` / ``encode_prompt`` for the stored
    ``options`` (:func:`encoder_options`); nothing when the model keeps the pipeline's default."""
    return {"max_sequence_length": options["max_sequence_length"]} if "max_sequence_length" in options else {}


def sample_kwargs(family: str, image_size: int = IMAGE_SIZE, options: dict[str, Any] | None = None) -> dict[str, Any]:
    """Pipeline call arguments every toy model needs (size; PixArt has no resolution bins at this size and reads
    captions as the eimsdk PixArt encoder does, lower-cased and stripped, not through the pipeline's default
    ``clean_caption=True`` cleaner, which needs bs4 and ftfy, warns on every call without them and rewrites
    captions with them; the stored text context, ``options`` from :func:`encoder_options`)."""
    kw: dict[str, Any] = {"height": image_size, "width": image_size, **text_context_kwargs(options or {})}
    if family == "pixart":
        kw.update(use_resolution_binning=False, clean_caption=False)
    return kw
