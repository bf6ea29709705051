"""FLUX.1 (dev and schnell): diffusers ``FluxPipeline`` behind the :class:`eimsdk.interfaces.Encoder` interface.

Latents: ``z0 = (VAE mean - shift_factor) * scaling_factor``, kept UNPACKED as (B, C, h, w) like every family; the
2x2 packing to (B, h*w/4, 4C) tokens and the image/text position ids happen inside each transformer call.
Flow matching: ``t`` is the flow sigma, ``z_t = (1 - t) z0 + t eps``, the transformer predicts the velocity
``v = eps - z0``, and ``eps_hat = z_t + (1 - t) v``.

Guidance comes in two kinds:

- *embedded guidance* (FLUX.1-dev only, which is guidance-distilled): the transformer takes a guidance value as an
  input. It is the attribute :attr:`FluxEncoder.embedded_guidance` (3.5 by default) and every model call uses it;
  ``generate(guidance_scale=g)`` uses ``g`` for that call, exactly like ``FluxPipeline(guidance_scale=g)``.
  FLUX.1-schnell has no guidance input and ignores it.
- *true classifier-free guidance*: ``predict_eps(guidance_scale=g)`` with ``g != 1`` mixes the prediction with the
  empty prompt's, like ``FluxPipeline(true_cfg_scale=g, negative_prompt="")``, at twice the cost.

Prompts: CLIP's pooled vector (first 77 tokens) plus the T5 sequence padded to ``max_sequence_length`` (512, the
pipeline's default), no mask, like the pipeline. Longer prompts are truncated; :meth:`FluxEncoder.count_tokens` lets
:func:`eimsdk.images.check_prompts` warn first.
"""

from __future__ import annotations

import warnings
from typing import Any, Sequence

import numpy as np
import torch
from diffusers.pipelines.flux.pipeline_flux import retrieve_timesteps
from diffusers.utils.torch_utils import randn_tensor
from einops import rearrange
from tqdm.auto import tqdm

from eimsdk.backends.diffusers_base import FlowMatchingDiffusersEncoder, check_number
from eimsdk.errors import InputError
from eimsdk.images import model_size
from eimsdk.interfaces import classifier_free_guidance
from eimsdk.records import Conditioning

T5_LIMIT = 512  # FluxPipeline refuses a longer max_sequence_length


def pack(z: torch.Tensor) -> torch.Tensor:
    """(B, C, h, w) latents -> (B, h*w/4, 4C) tokens of 2x2 patches, FluxPipeline's layout."""
    return rearrange(z, "b c (h ph) (w pw) -> b (h w) (c ph pw)", ph=2, pw=2)


def unpack(tokens: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """(B, h*w/4, 4C) tokens -> (B, C, h, w) latents; the inverse of :func:`pack`."""
    return rearrange(tokens, "b (h w) (c ph pw) -> b c (h ph) (w pw)", h=h // 2, w=w // 2, ph=2, pw=2)


def image_ids(hp: int, wp: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """(hp*wp, 3) rotary position ids (0, row, col) of the packed image tokens, as FluxPipeline builds them."""
    rows, cols = torch.meshgrid(torch.arange(hp), torch.arange(wp), indexing="ij")
    ids = torch.stack([torch.zeros_like(rows), rows, cols], dim=-1)
    return rearrange(ids, "h w c -> (h w) c").to(device=device, dtype=dtype)


class FluxEncoder(FlowMatchingDiffusersEncoder):
    """FLUX.1-dev / FLUX.1-schnell: VAE, CLIP (pooled) + T5 text encoders, flow-matching transformer.

    Options of ``from_pretrained`` / ``from_pipeline``: ``max_sequence_length`` (T5 tokens, at most 512) and
    ``embedded_guidance`` (the guidance input of FLUX.1-dev used by every model call, 3.5 by default).
    """

    family = "flux"
    pipeline_classes = ("FluxPipeline",)
    components = ("transformer", "vae", "text_encoder", "tokenizer", "text_encoder_2", "tokenizer_2", "scheduler")
    options = ("max_sequence_length", "embedded_guidance")

    def __init__(self, pipeline: Any, *, model_id: str | None = None, max_sequence_length: int = T5_LIMIT,
                 embedded_guidance: float = 3.5) -> None:
        if isinstance(max_sequence_length, bool) or not isinstance(max_sequence_length, int) or not (
                1 <= max_sequence_length <= T5_LIMIT):
            raise InputError(f"max_sequence_length must be an integer in [1, {T5_LIMIT}] (T5 tokens; FLUX.1 was "
                             f"trained with 512, schnell also works with 256), got {max_sequence_length!r}")
        super().__init__(pipeline, model_id=model_id)
        self.max_sequence_length = max_sequence_length
        self.embedded_guidance = check_number(embedded_guidance, "embedded_guidance")

    # ------------------------------------------------------------------------------------------------ geometry
    @property
    def patch_size(self) -> int:
        return 2  # the 2x2 packing of latents into tokens

    @property
    def default_image_size(self) -> tuple[int, int]:
        size = self.vae.config.sample_size  # 1024 for FLUX.1
        size = tuple(size) if isinstance(size, (list, tuple)) else (size, size)
        return model_size(size, self.image_multiple)

    @property
    def max_prompt_tokens(self) -> int:
        return self.max_sequence_length

    def count_tokens(self, prompt: str) -> int:
        """T5 tokens of ``prompt`` (with the end token); more than :attr:`max_prompt_tokens` are truncated."""
        return len(self.tokenizer_2(prompt).input_ids)

    # ------------------------------------------------------------------------------------------------ prompts
    def encode_prompts(self, prompts: Sequence[str]) -> Conditioning:
        """Prompts -> ``prompt_embeds`` (B, L, D) from T5 and ``pooled_prompt_embeds`` (B, P) from CLIP."""
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        if not prompts or not all(isinstance(p, str) for p in prompts):
            raise InputError(f"prompts must be a non-empty list of strings, got {prompts!r}")
        return Conditioning({
            "prompt_embeds": self._t5_embeds(prompts).to(self.device, self.latent_dtype),  # (B, L, D)
            "pooled_prompt_embeds": self._clip_pooled(prompts).to(self.device, self.latent_dtype),  # (B, P)
        })

    def _t5_embeds(self, prompts: list[str]) -> torch.Tensor:
        ids = self.tokenizer_2(prompts, padding="max_length", max_length=self.max_sequence_length, truncation=True,
                               return_tensors="pt").input_ids
        return self.text_encoder_2(ids.to(self.device), output_hidden_states=False)[0]

    def _clip_pooled(self, prompts: list[str]) -> torch.Tensor:
        ids = self.tokenizer(prompts, padding="max_length", max_length=self.tokenizer.model_max_length,
                             truncation=True, return_tensors="pt").input_ids
        return self.text_encoder(ids.to(self.device), output_hidden_states=False).pooler_output

    # ------------------------------------------------------------------------------------------------ prediction
    def _denoise(self, latents: torch.Tensor, timestep: torch.Tensor, cond: Conditioning) -> torch.Tensor:
        """The transformer's velocity at unpacked latents (B, C, h, w) and diffusers timesteps (B,) (= 1000 x
        sigma), with :attr:`embedded_guidance`: pack in, unpack out."""
        _check_latents(latents, self.latent_channels)
        missing = {"prompt_embeds", "pooled_prompt_embeds"} - set(cond.embeds)
        if missing:
            raise InputError(f"cond lacks {sorted(missing)}; make it with FluxEncoder.encode_prompts")
        b, _, h, w = latents.shape
        dtype = self.dtype
        sigma = timestep.to(self.device, dtype) / self.scheduler.config.num_train_timesteps
        v = self._velocity(pack(latents).to(dtype),  # (B, h*w/4, 4C)
                           sigma,
                           cond.embeds["prompt_embeds"].to(dtype),  # (B, L, D)
                           cond.embeds["pooled_prompt_embeds"].to(dtype),  # (B, P)
                           image_ids(h // 2, w // 2, self.device, dtype),
                           self._guidance(self.embedded_guidance, b))
        return unpack(v, h, w).to(latents.dtype)

    def _velocity(self, tokens: torch.Tensor, sigma: torch.Tensor, prompt_embeds: torch.Tensor,
                  pooled: torch.Tensor, img_ids: torch.Tensor, guidance: torch.Tensor | None) -> torch.Tensor:
        """One transformer call on packed tokens (B, N, 4C) at flow sigmas (B,); returns packed velocities."""
        txt_ids = torch.zeros(prompt_embeds.shape[1], 3, device=prompt_embeds.device, dtype=img_ids.dtype)
        return self.transformer(hidden_states=tokens, timestep=sigma, guidance=guidance, pooled_projections=pooled,
                                encoder_hidden_states=prompt_embeds, txt_ids=txt_ids, img_ids=img_ids,
                                return_dict=False)[0]

    def _guidance(self, value: float, batch: int) -> torch.Tensor | None:
        if not self.transformer.config.guidance_embeds:  # FLUX.1-schnell
            return None
        return torch.full([1], value, device=self.device, dtype=torch.float32).expand(batch)

    # ------------------------------------------------------------------------------------------------ generation
    def prepare_latents(self, batch: int, height: int, width: int, generator: torch.Generator | None = None,
                        latents: torch.Tensor | None = None) -> torch.Tensor:
        """Initial noise as FluxPipeline draws it, packed: (B, h*w/4, 4C)."""
        h = 2 * (int(height) // (self.vae_scale_factor * 2))
        w = 2 * (int(width) // (self.vae_scale_factor * 2))
        channels = self.transformer.config.in_channels // 4
        if latents is not None:
            expected = (batch, (h // 2) * (w // 2), channels * 4)
            if not isinstance(latents, torch.Tensor) or tuple(latents.shape) != expected:
                got = tuple(latents.shape) if isinstance(latents, torch.Tensor) else type(latents).__name__
                raise InputError(f"latents must be FluxPipeline-format packed noise of shape {expected} for "
                                 f"{batch} image(s) of {height}x{width}, got {got}")
            return latents.to(self.device, self.dtype)
        noise = randn_tensor((batch, channels, h, w), generator=generator, device=self.device, dtype=self.dtype)
        return pack(noise)

    @torch.no_grad()
    def generate(self, prompts: Sequence[str], *, num_inference_steps: int, guidance_scale: float, height: int,
                 width: int, generator: torch.Generator | None = None, latents: torch.Tensor | None = None,
                 negative_prompts: Sequence[str] | None = None, progress: bool = False,
                 true_cfg_scale: float = 1.0) -> torch.Tensor:
        """Text-to-image exactly as ``FluxPipeline``: ``guidance_scale`` is the embedded guidance (dev; ignored by
        schnell), ``true_cfg_scale > 1`` with ``negative_prompts`` adds true CFG. Returns (B, 3, H, W) in [-1, 1]."""
        prompts, negative_prompts = self.check_inputs(prompts, num_inference_steps, guidance_scale, height, width,
                                                      generator, negative_prompts)
        check_number(true_cfg_scale, "true_cfg_scale")
        do_true_cfg = true_cfg_scale > 1 and negative_prompts is not None
        if negative_prompts is not None and not do_true_cfg:
            warnings.warn("negative_prompts are used only with true_cfg_scale > 1 (FLUX.1 is guidance-distilled); "
                          "they are ignored here, as FluxPipeline ignores them", stacklevel=2)
        batch = len(prompts)
        cond = self.encode_prompts(prompts).map(lambda e: e.to(self.dtype))
        neg = self.encode_prompts(negative_prompts).map(lambda e: e.to(self.dtype)) if do_true_cfg else None

        latents = self.prepare_latents(batch, height, width, generator, latents)  # (B, N, 4C)
        h = 2 * (int(height) // (self.vae_scale_factor * 2))
        w = 2 * (int(width) // (self.vae_scale_factor * 2))
        img_ids = image_ids(h // 2, w // 2, self.device, self.dtype)

        # Timesteps exactly as FluxPipeline: uniform sigmas, shifted by the scheduler with mu from the sequence length.
        sigmas = np.linspace(1.0, 1 / num_inference_steps, num_inference_steps)
        if getattr(self.scheduler.config, "use_flow_sigmas", False):
            sigmas = None
        timesteps, _ = retrieve_timesteps(self.scheduler, num_inference_steps, self.device, sigmas=sigmas,
                                          mu=self._mu(latents.shape[1]))
        guidance = self._guidance(guidance_scale, batch)

        self.scheduler.set_begin_index(0)
        for t in tqdm(timesteps, desc="generate", leave=False, disable=not progress):
            sigma = t.expand(batch).to(latents.dtype) / 1000
            v = self._velocity(latents, sigma, cond.embeds["prompt_embeds"], cond.embeds["pooled_prompt_embeds"],
                               img_ids, guidance)
            self.counter.forwards += batch
            if do_true_cfg:
                v_neg = self._velocity(latents, sigma, neg.embeds["prompt_embeds"],
                                       neg.embeds["pooled_prompt_embeds"], img_ids, guidance)
                self.counter.forwards += batch
                v = classifier_free_guidance(v_neg, v, true_cfg_scale)
            latents = self.scheduler.step(v, t, latents, return_dict=False)[0]
        return self.decode_latents(unpack(latents, h, w))


def _check_latents(z: torch.Tensor, channels: int) -> None:
    if z.ndim != 4 or z.shape[1] != channels or z.shape[-2] % 2 or z.shape[-1] % 2:
        raise InputError(f"z_t must be unpacked latents (B, {channels}, h, w) with even h and w, got shape "
                         f"{tuple(z.shape)}")


__all__ = ["FluxEncoder", "pack", "unpack", "image_ids"]
