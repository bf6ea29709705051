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
