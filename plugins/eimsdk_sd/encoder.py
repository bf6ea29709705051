"""Stable Diffusion 1.x / 2.x (diffusers ``StableDiffusionPipeline``) as an eimsdk Encoder: the UNet family.

Latents: ``z0 = vae.encode(x).mode() * scaling_factor`` (B, 4, H/8, W/8), decoded as the pipeline does.
Conditioning: CLIP's last hidden states for the prompt padded to 77 tokens, ``Conditioning({"prompt_embeds":
(B, 77, D)})`` with **no mask**: the UNet's cross-attention reads every position, padding included, so every
position belongs to ``c`` (returning CLIP's padding mask here would make a text direction at strength 1 differ from
a prompt swap). Longer prompts are truncated to 77 tokens (:meth:`SDEncoder.count_tokens` lets
``eimsdk.images.check_prompts`` warn).

Noise: DDPM steps, ``t = n / T`` (:class:`eimsdk.interfaces.NoisePredictionEncoder`); eps-prediction (SD 1.x,
SD 2.x base) and v-prediction (SD 2.x 768) checkpoints both come out as ``eps_hat``. Inversion and sampling are
DDIM steps. Loading, ``to``, geometry, the VAE and the denoising loop of ``generate`` come from
:class:`eimsdk.backends.diffusers_base.DiffusersEncoder`.
"""

from __future__ import annotations

from typing import Sequence

import torch

from eimsdk.backends.diffusers_base import NoisePredictionDiffusersEncoder
from eimsdk.errors import InputError
from eimsdk.records import Conditioning


class SDEncoder(NoisePredictionDiffusersEncoder):
    """The joint latent space of Stable Diffusion 1.x / 2.x: SD-VAE latents x CLIP token embeddings, a UNet.

    >>> encoder = SDEncoder.from_pretrained("stabilityai/stable-diffusion-2-1-base", device="cuda",
    ...                                     dtype=torch.float16)
    >>> latent = encoder.encode("cat.png", "a photo of a cat")
    """

    family = "sd"
    pipeline_classes = ("StableDiffusionPipeline",)
    components = ("vae", "text_encoder", "tokenizer", "unet", "scheduler")
    denoiser_name = "unet"

    @property
    def max_prompt_tokens(self) -> int:
        return self.tokenizer.model_max_length

    def count_tokens(self, prompt: str) -> int:
        """CLIP tokens of ``prompt``, start and end tokens included."""
        return len(self.tokenizer(prompt, verbose=False).input_ids)

    def encode_prompts(self, prompts: Sequence[str]) -> Conditioning:
        """Prompts -> ``prompt_embeds`` (B, 77, D), CLIP's last hidden states as the pipeline computes them."""
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        if not prompts or not all(isinstance(p, str) for p in prompts):
            raise InputError(f"prompts must be a non-empty list of strings, got {prompts!r}")
        tokens = self.tokenizer(prompts, padding="max_length", max_length=self.tokenizer.model_max_length,
                                truncation=True, return_tensors="pt")
        # The text encoder masks padding only if its config says so (some SD 1.x ports); the UNet never does.
        mask = tokens.attention_mask.to(self.device) if getattr(self.text_encoder.config, "use_attention_mask",
                                                                False) else None
        embeds = self.text_encoder(tokens.input_ids.to(self.device), attention_mask=mask)[0]  # (B, 77, D)
        return Conditioning({"prompt_embeds": embeds.to(self.text_encoder.dtype)})

    def _denoise(self, latents: torch.Tensor, timestep: torch.Tensor, cond: Conditioning) -> torch.Tensor:
        """One UNet call on (B, 4, h, w) latents at diffusers timesteps (B,): eps, or v for v-prediction models."""
        return self.unet(latents.to(self.dtype), timestep, encoder_hidden_states=cond.embeds["prompt_embeds"].to(
            self.dtype), return_dict=False)[0]


class SDXLEncoder(SDEncoder):
    """Stable Diffusion XL (``StableDiffusionXLPipeline``): two CLIPs, a pooled vector and size micro-conditions.

    ``prompt_embeds`` (B, 77, D1 + D2) are both CLIPs' penultimate hidden states side by side and
    ``pooled_prompt_embeds`` (B, P) the second CLIP's projected output, as the pipeline computes them; neither has a
    mask (the UNet reads all 77 positions). The size micro-conditions (``time_ids``: original size, crop (0, 0),
    target size) are the image size of the latents being denoised, the pipeline's default. The unconditional
    prompt is all zeros when the pipeline's ``force_zeros_for_empty_prompt`` says so (SDXL base does).
    """

    family = "sdxl"
    pipeline_classes = ("StableDiffusionXLPipeline",)
    components = SDEncoder.components + ("text_encoder_2", "tokenizer_2")

    def encode_prompts(self, prompts: Sequence[str]) -> Conditioning:
        """Prompts -> ``prompt_embeds`` (B, 77, D1 + D2) and ``pooled_prompt_embeds`` (B, P)."""
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        if not prompts or not all(isinstance(p, str) for p in prompts):
            raise InputError(f"prompts must be a non-empty list of strings, got {prompts!r}")
        hidden = []
        for tokenizer, text_encoder in ((self.tokenizer, self.text_encoder), (self.tokenizer_2, self.text_encoder_2)):
            ids = tokenizer(prompts, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                            return_tensors="pt").input_ids
            out = text_encoder(ids.to(self.device), output_hidden_states=True)
            hidden.append(out.hidden_states[-2])  # (B, 77, D_i)
        dtype = self.text_encoder_2.dtype
        return Conditioning({"prompt_embeds": torch.cat(hidden, dim=-1).to(dtype),
                             "pooled_prompt_embeds": out[0].to(dtype)})

    def null_conditioning(self, batch: int = 1) -> Conditioning:
        """The empty prompt's conditioning, or zeros where the pipeline forces zeros for it (SDXL base)."""
        if getattr(self, "_null", None) is None and self.pipeline.config.get("force_zeros_for_empty_prompt", False):
            self._null = self.encode_prompts([""]).map(torch.zeros_like).detach()
        return super().null_conditioning(batch)

    def _denoise(self, latents: torch.Tensor, timestep: torch.Tensor, cond: Conditioning) -> torch.Tensor:
        """One UNet call with the pooled vector and the size micro-conditions of ``latents``."""
        b, _, h, w = latents.shape
        size = [h * self.vae_scale_factor, w * self.vae_scale_factor]
        pooled = cond.embeds["pooled_prompt_embeds"].to(self.dtype)
        time_ids = torch.tensor([size + [0, 0] + size], dtype=self.dtype, device=latents.device).repeat(b, 1)
        return self.unet(latents.to(self.dtype), timestep, return_dict=False,
                         encoder_hidden_states=cond.embeds["prompt_embeds"].to(self.dtype),
                         added_cond_kwargs={"text_embeds": pooled, "time_ids": time_ids})[0]

    def _generation_timesteps(self, num_inference_steps: int, height: int, width: int) -> torch.Tensor:
        timesteps = super()._generation_timesteps(num_inference_steps, height, width)
        if hasattr(self.scheduler, "set_begin_index"):
            self.scheduler.set_begin_index(0)
        return timesteps
