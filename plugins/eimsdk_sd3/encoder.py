"""``SD3Encoder``: the joint latent space of Stable Diffusion 3 / 3.5 (diffusers ``StableDiffusion3Pipeline``).

Conditioning follows ``StableDiffusion3Pipeline.encode_prompt`` exactly: the penultimate hidden states of the two
CLIP text encoders, concatenated on the feature axis and zero-padded to the T5 width, then the T5 sequence
appended along the token axis (zeros when ``text_encoder_3`` is None); the pooled vector is both CLIPs' projected
outputs concatenated. SD3 attends to every token, so there is no mask::

    Conditioning({"prompt_embeds": (B, C + L, D), "pooled_prompt_embeds": (B, P)})

with ``C`` the CLIP tokenizer's ``model_max_length`` (77 for the released models) and ``L`` = ``max_sequence_length``.

Flow matching in eimsdk's common parametrisation: ``t`` is the flow sigma, ``z_t = (1 - t) z0 + t eps``, the
transformer sees ``timestep = 1000 t`` and predicts the velocity ``v = eps - z0``, so ``eps_hat = z_t + (1 - t) v``
(:class:`eimsdk.backends.diffusers_base.FlowMatchingDiffusersEncoder`, which also holds the shifted grids, loading,
``to``, the VAE latent format and the denoising loop of ``generate``).
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn.functional as F

from eimsdk.backends.diffusers_base import FlowMatchingDiffusersEncoder
from eimsdk.errors import InputError
from eimsdk.records import Conditioning


class SD3Encoder(FlowMatchingDiffusersEncoder):
    """Stable Diffusion 3 / 3.5 through eimsdk's Encoder interface.

    ``from_pretrained`` passes ``text_encoder_3=None`` (drop T5) and other ``kwargs`` to diffusers;
    ``max_sequence_length`` is the T5 token limit (the pipeline's default 256, at most 512).

    >>> encoder = SD3Encoder.from_pretrained("stabilityai/stable-diffusion-3.5-medium", device="cuda",
    ...                                      dtype=torch.bfloat16)
    >>> latent = encoder.encode("cat.png", "a photo of a cat")
    """

    family = "sd3"
    pipeline_classes = ("StableDiffusion3Pipeline",)
    components = ("transformer", "scheduler", "vae", "text_encoder", "tokenizer", "text_encoder_2", "tokenizer_2")
    optional_components = ("text_encoder_3", "tokenizer_3")
    options = ("max_sequence_length",)

    def __init__(self, pipeline: Any, *, model_id: str | None = None, max_sequence_length: int = 256) -> None:
        if isinstance(max_sequence_length, bool) or not isinstance(max_sequence_length, int) \
                or not 1 <= max_sequence_length <= 512:
            raise InputError(f"max_sequence_length={max_sequence_length!r} is out of range; the SD3 pipeline accepts "
                             "1 to 512 T5 tokens (default 256)")
        super().__init__(pipeline, model_id=model_id)
        self.max_sequence_length = max_sequence_length

    @property
    def max_prompt_tokens(self) -> int:
        """T5's ``max_sequence_length`` (CLIP sees only its first ``C`` = 77 tokens); ``C`` when T5 is dropped."""
        return self.max_sequence_length if self.text_encoder_3 is not None else self.tokenizer.model_max_length

    def count_tokens(self, prompt: str) -> int:
        """Tokens of ``prompt`` (with special tokens) for the encoder that sets :attr:`max_prompt_tokens`."""
        tokenizer = self.tokenizer_3 if self.text_encoder_3 is not None else self.tokenizer
        return len(tokenizer(prompt, verbose=False).input_ids)

    # ----------------------------------------------------------------------------------------------- prompts
    def encode_prompts(self, prompts: Sequence[str]) -> Conditioning:
        """Prompts -> ``prompt_embeds`` (B, C + L, D) and ``pooled_prompt_embeds`` (B, P), as the pipeline does.

        Prompts longer than a tokenizer's limit are truncated (CLIP: ``C`` = 77 tokens, T5: ``max_sequence_length``).
        """
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        if not prompts or not all(isinstance(p, str) for p in prompts):
            raise InputError(f"prompts must be a non-empty list of strings, got {prompts!r}")
        clip_embeds, pooled = zip(*(self._clip_embeds(prompts, index) for index in (0, 1)))
        clip = torch.cat(clip_embeds, dim=-1)  # (B, C, D_clip1 + D_clip2)
        t5 = self._t5_embeds(prompts)  # (B, L, D)
        clip = F.pad(clip, (0, t5.shape[-1] - clip.shape[-1]))  # zero-pad the CLIP features to the T5 width
        return Conditioning({"prompt_embeds": torch.cat([clip, t5], dim=-2),
                             "pooled_prompt_embeds": torch.cat(pooled, dim=-1)})

    def _clip_embeds(self, prompts: list[str], index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Penultimate hidden states (B, C, D) and projected pooled output (B, P) of CLIP ``index``."""
        tokenizer = (self.tokenizer, self.tokenizer_2)[index]
        text_encoder = (self.text_encoder, self.text_encoder_2)[index]
        ids = tokenizer(prompts, padding="max_length", max_length=self.tokenizer.model_max_length, truncation=True,
                        return_tensors="pt").input_ids
        out = text_encoder(ids.to(self.device), output_hidden_states=True)
        return out.hidden_states[-2].to(dtype=self.text_encoder.dtype), out[0]

    def _t5_embeds(self, prompts: list[str]) -> torch.Tensor:
        """T5 last hidden states (B, L, D), unmasked like the pipeline; zeros when T5 was dropped."""
        if self.text_encoder_3 is None:
            return torch.zeros(len(prompts), self.max_sequence_length, self.transformer.config.joint_attention_dim,
                               device=self.device, dtype=self.text_encoder.dtype)
        ids = self.tokenizer_3(prompts, padding="max_length", max_length=self.max_sequence_length, truncation=True,
                               add_special_tokens=True, return_tensors="pt").input_ids
        return self.text_encoder_3(ids.to(self.device))[0].to(dtype=self.text_encoder_3.dtype)

    # ----------------------------------------------------------------------------------------------- prediction
    def _denoise(self, latents: torch.Tensor, timestep: torch.Tensor, cond: Conditioning) -> torch.Tensor:
        """The MMDiT's velocity for (B, C, h, w) latents at diffusers timesteps (B,) (= 1000 x sigma)."""
        return self.transformer(
            hidden_states=latents.to(self.dtype),
            timestep=timestep,
            encoder_hidden_states=cond.embeds["prompt_embeds"].to(self.dtype),
            pooled_projections=cond.embeds["pooled_prompt_embeds"].to(self.dtype),
            return_dict=False,
        )[0]

    def _generation_timesteps(self, num_inference_steps: int, height: int, width: int) -> torch.Tensor:
        f = self.vae_scale_factor * self.patch_size
        mu = self._mu((height // f) * (width // f))
        self.scheduler.set_timesteps(num_inference_steps, device=self.device, **({} if mu is None else {"mu": mu}))
        return self.scheduler.timesteps
