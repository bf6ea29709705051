"""PixArt-alpha and PixArt-Sigma (diffusers ``PixArtAlphaPipeline`` / ``PixArtSigmaPipeline``) as an eimsdk Encoder.

Latents: ``z0 = vae.encode(x).mode() * scaling_factor`` (B, 4, H/8, W/8), decoded as the pipelines do.
Conditioning: the T5 sequence and its attention mask, ``Conditioning({"prompt_embeds": (B, L, D)},
{"prompt_embeds": (B, L)})`` with ``L = 120`` (alpha) or ``300`` (Sigma) unless ``max_sequence_length`` says otherwise,
prompts lower-cased and stripped like the pipelines' ``clean_caption=False`` path, longer prompts truncated to ``L``
tokens (``eimsdk.images.check_prompts`` warns, through :meth:`PixArtEncoder.count_tokens`).

Noise level: DDPM steps, ``t = n / T`` (:class:`eimsdk.interfaces.NoisePredictionEncoder`). The transformer
predicts (eps, learned variance); the variance half is dropped. Loading, ``to``, geometry, the VAE and the
denoising loop of ``generate`` come from :class:`eimsdk.backends.diffusers_base.DiffusersEncoder`.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch

from eimsdk.backends.diffusers_base import NoisePredictionDiffusersEncoder, check_positive_int
from eimsdk.errors import InputError
from eimsdk.records import Conditioning

#: T5 sequence length of each pipeline class (the pipelines' ``max_sequence_length`` default).
MAX_SEQUENCE_LENGTH = {"PixArtAlphaPipeline": 120, "PixArtSigmaPipeline": 300}


class PixArtEncoder(NoisePredictionDiffusersEncoder):
    """The joint latent space of a PixArt model: SD-VAE latents x T5 sequence embeddings, DDPM eps-prediction.

    Build it with :meth:`from_pretrained` (a diffusers folder or hub id; ``max_sequence_length`` overrides the
    pipeline's T5 length like the pipeline argument of that name) or :meth:`from_pipeline` (a loaded
    ``PixArtAlphaPipeline`` / ``PixArtSigmaPipeline``). The components are the pipeline's own modules.
    """

    family = "pixart"
    pipeline_classes = tuple(MAX_SEQUENCE_LENGTH)
    components = ("tokenizer", "text_encoder", "vae", "transformer", "scheduler")
    options = ("max_sequence_length",)

    def __init__(self, pipeline: Any, *, model_id: str | None = None, max_sequence_length: int | None = None) -> None:
        super().__init__(pipeline, model_id=model_id)
        if max_sequence_length is not None:
            check_positive_int(max_sequence_length, "max_sequence_length",
                               "T5 tokens, or None for the pipeline's default")
        self.max_sequence_length = max_sequence_length or MAX_SEQUENCE_LENGTH[self.pipeline_class]

    # ------------------------------------------------------------------------------------------ geometry
    @property
    def max_prompt_tokens(self) -> int:
        return self.max_sequence_length

    @property
    def uses_micro_conditions(self) -> bool:
        """PixArt-alpha 1024 (``sample_size == 128``) conditions on resolution and aspect ratio."""
        return self.pipeline_class == "PixArtAlphaPipeline" and self.transformer.config.sample_size == 128

    # ------------------------------------------------------------------------------------------ prompts
    def _preprocess(self, prompts: Sequence[str]) -> list[str]:
        if isinstance(prompts, str) or not prompts or not all(isinstance(p, str) for p in prompts):
            raise InputError(f"prompts must be a non-empty list of strings, got {prompts!r}")
        return [p.lower().strip() for p in prompts]

    def count_tokens(self, prompt: str) -> int:
        """T5 tokens of ``prompt`` after the pipeline's preprocessing, end-of-sequence token included."""
        return len(self.tokenizer(self._preprocess([prompt])[0], add_special_tokens=True, verbose=False).input_ids)

    def encode_prompts(self, prompts: Sequence[str]) -> Conditioning:
        """Prompts -> T5 ``prompt_embeds`` (B, L, D) and their 0/1 mask (B, L), padded/truncated to L tokens."""
        tokens = self.tokenizer(self._preprocess(prompts), padding="max_length", max_length=self.max_sequence_length,
                                truncation=True, add_special_tokens=True, return_tensors="pt")
        mask = tokens.attention_mask.to(self.device)  # (B, L)
        embeds = self.text_encoder(tokens.input_ids.to(self.device), attention_mask=mask)[0]  # (B, L, D)
        return Conditioning({"prompt_embeds": embeds.to(self.text_encoder.dtype)}, {"prompt_embeds": mask})

    # ------------------------------------------------------------------------------------------ prediction
    def _denoise(self, latents: torch.Tensor, timestep: torch.Tensor, cond: Conditioning) -> torch.Tensor:
        """One transformer call at diffusers timesteps (B,) returning eps (or v for v-prediction checkpoints),
        the first half of a learned-sigma output; differentiable in the latents and the embeddings."""
        b, _, h, w = latents.shape
        embeds = cond.embeds["prompt_embeds"].to(self.dtype)
        added = {"resolution": None, "aspect_ratio": None}
        if self.uses_micro_conditions:
            height, width = h * self.vae_scale_factor, w * self.vae_scale_factor
            like = dict(dtype=embeds.dtype, device=latents.device)
            added = {"resolution": torch.tensor([[height, width]], **like).repeat(b, 1),  # (B, 2)
                     "aspect_ratio": torch.tensor([[height / width]], **like).repeat(b, 1)}  # (B, 1)
        out = self.transformer(latents.to(self.dtype), encoder_hidden_states=embeds,
                               encoder_attention_mask=cond.masks.get("prompt_embeds"),  # no mask: all attended
                               timestep=timestep, added_cond_kwargs=added, return_dict=False)[0]  # (B, 2C | C, h, w)
        if self.transformer.config.out_channels // 2 == self.latent_channels:
            out = out.chunk(2, dim=1)[0]  # learned sigma: (eps, variance) -> eps
        return out

    # ------------------------------------------------------------------------------------------ generation
    def _generation_timesteps(self, num_inference_steps: int, height: int, width: int) -> torch.Tensor:
        timesteps = super()._generation_timesteps(num_inference_steps, height, width)
        if self.pipeline_class == "PixArtAlphaPipeline" and hasattr(self.scheduler, "set_begin_index"):
            self.scheduler.set_begin_index(0)
        return timesteps

    def _scheduler_step(self, prediction: torch.Tensor, t: torch.Tensor, latents: torch.Tensor,
                        step_kwargs: dict[str, Any], num_inference_steps: int) -> torch.Tensor:
        """PixArt-alpha takes the scheduler's x0 estimate for a single step (where the scheduler returns one)."""
        out = self.scheduler.step(prediction, t, latents, **step_kwargs, return_dict=False)
        single_step = self.pipeline_class == "PixArtAlphaPipeline" and num_inference_steps == 1
        return out[1] if single_step and len(out) > 1 else out[0]
