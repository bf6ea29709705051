"""``SD3Encoder``: the joint latent space of Stable Diffusion 3 / 3.5 (diffusers ``StableDiffusion3Pipeline``).

Conditioning follows ``StableDiffusion3Pipeline.encode_prompt`` exactly: the penultimate hidden states of the two
CLIP text encoders, concatenated on the feature axis and zero-padded to the T5 width, then the T5 sequence
appended along the token axis (zeros when ``text_encoder_3`` is None); the pooled vector is both CLIPs' projected
outputs concatenated. SD3 attends to every token, so there is no mask::

    Conditioning({"prompt_embeds": (B, 77 + L, D), "pooled_prompt_embeds": (B, P)})

Flow matching in eimsdk's common parametrisation: ``t`` is the flow sigma, ``z_t = (1 - t) z0 + t eps``, the
transformer sees ``timestep = 1000 t`` and predicts the velocity ``v = eps - z0``, so ``eps_hat = z_t + (1 - t) v``.
Inversion and sampling take Euler steps of the flow ODE, ``z + (t_next - t) v``, on a grid shifted like
``FlowMatchEulerDiscreteScheduler``; ``generate`` runs the pipeline's own scheduler and reproduces the pipeline.
"""

from __future__ import annotations

import math
import os
from typing import TYPE_CHECKING, Any, Sequence

import torch
import torch.nn.functional as F

from eimsdk.errors import InputError
from eimsdk.interfaces import FlowMatchingEncoder
from eimsdk.records import Conditioning

if TYPE_CHECKING:
    from diffusers import (
        AutoencoderKL,
        FlowMatchEulerDiscreteScheduler,
        SD3Transformer2DModel,
        StableDiffusion3Pipeline,
    )
    from transformers import CLIPTextModelWithProjection, CLIPTokenizer, PreTrainedTokenizerBase, T5EncoderModel

DTYPES = (torch.float32, torch.bfloat16, torch.float16, torch.float64)
COMPONENTS = ("transformer", "scheduler", "vae", "text_encoder", "tokenizer", "text_encoder_2", "tokenizer_2",
              "text_encoder_3", "tokenizer_3")


class SD3Encoder(FlowMatchingEncoder):
    """Stable Diffusion 3 / 3.5 through eimsdk's Encoder interface.

    >>> encoder = SD3Encoder.from_pretrained("stabilityai/stable-diffusion-3.5-medium", device="cuda",
    ...                                      dtype=torch.bfloat16)
    >>> latent = encoder.encode("cat.png", "a photo of a cat")
    """

    family = "sd3"
    pipeline_classes = ("StableDiffusion3Pipeline",)

    def __init__(self, transformer: "SD3Transformer2DModel", scheduler: "FlowMatchEulerDiscreteScheduler",
                 vae: "AutoencoderKL", text_encoder: "CLIPTextModelWithProjection", tokenizer: "CLIPTokenizer",
                 text_encoder_2: "CLIPTextModelWithProjection", tokenizer_2: "CLIPTokenizer",
                 text_encoder_3: "T5EncoderModel | None", tokenizer_3: "PreTrainedTokenizerBase | None", *,
                 model_id: str = "", device: str | torch.device = "cpu", max_sequence_length: int = 256) -> None:
        super().__init__()
        if not 1 <= max_sequence_length <= 512:
            raise InputError(f"max_sequence_length={max_sequence_length} is out of range; the SD3 pipeline accepts "
                             "1 to 512 T5 tokens (default 256)")
        self.transformer = transformer
        self.scheduler = scheduler
        self.vae = vae
        self.text_encoder = text_encoder
        self.tokenizer = tokenizer
        self.text_encoder_2 = text_encoder_2
        self.tokenizer_2 = tokenizer_2
        self.text_encoder_3 = text_encoder_3
        self.tokenizer_3 = tokenizer_3
        for module in self._models():
            module.eval()
            module.requires_grad_(False)  # derivatives are taken w.r.t. inputs only
        self.model_id = model_id
        self.device = torch.device(device)
        self.dtype = transformer.dtype
        self.max_sequence_length = max_sequence_length
        self.vae_scale_factor = 2 ** (len(vae.config.block_out_channels) - 1)
        self._null: Conditioning | None = None

    # ----------------------------------------------------------------------------------------------- loading
    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, *, device: str | torch.device = "cpu",
                        dtype: torch.dtype = torch.float32, cpu_offload: bool = False, vae_tiling: bool = False,
                        vae_slicing: bool = False, max_sequence_length: int = 256, **kwargs: Any) -> "SD3Encoder":
        """Load a diffusers SD3/SD3.5 folder or hub id; ``kwargs`` go to ``StableDiffusion3Pipeline.from_pretrained``
        (``variant``, ``revision``, ``local_files_only``, ``text_encoder_3=None`` to drop T5, ...).

        ``cpu_offload`` keeps each model on the CPU until it runs (``enable_model_cpu_offload``; needs an
        accelerator ``device``); ``vae_tiling``/``vae_slicing`` decode large or batched images piecewise;
        ``max_sequence_length`` is the T5 token limit (the pipeline's default 256, at most 512).
        """
        from diffusers import StableDiffusion3Pipeline

        if dtype not in DTYPES:
            raise InputError(f"dtype={dtype} is not supported by the sd3 backend; use one of {list(DTYPES)}")
        if cpu_offload and torch.device(device).type == "cpu":
            raise InputError("cpu_offload=True moves models between the CPU and an accelerator, but device='cpu'; "
                             "pass device='cuda' (or another accelerator), or cpu_offload=False")
        pipe = StableDiffusion3Pipeline.from_pretrained(str(path), torch_dtype=dtype, **kwargs)
        if cpu_offload:
            pipe.enable_model_cpu_offload(device=device)
        else:
            pipe.to(device)
        if vae_tiling:
            pipe.vae.enable_tiling()
        if vae_slicing:
            pipe.vae.enable_slicing()
        return cls.from_pipeline(pipe, model_id=str(path), max_sequence_length=max_sequence_length)

    @classmethod
    def from_pipeline(cls, pipe: "StableDiffusion3Pipeline", model_id: str | None = None, *,
                      max_sequence_length: int = 256) -> "SD3Encoder":
        """Wrap an existing pipeline (its components are shared, not copied)."""
        missing = [name for name in COMPONENTS if not hasattr(pipe, name)]
        if missing:
            raise InputError(f"pipe={type(pipe).__name__} lacks the SD3 components {missing}; pass a "
                             "diffusers StableDiffusion3Pipeline")
        return cls(**{name: getattr(pipe, name) for name in COMPONENTS},
                   model_id=model_id if model_id is not None else (pipe.name_or_path or ""),
                   device=pipe._execution_device, max_sequence_length=max_sequence_length)

    def to(self, *targets: str | torch.device | torch.dtype) -> "SD3Encoder":
        """Move and/or cast every model, like ``torch.nn.Module.to(device)`` / ``.to(dtype)``; returns self."""
        for target in targets:
            if isinstance(target, torch.dtype) and target not in DTYPES:
                raise InputError(f"dtype={target} is not supported by the sd3 backend; use one of {list(DTYPES)}")
        for target in targets:
            if isinstance(target, torch.dtype):
                self.dtype = target
            else:
                self.device = torch.device(target)
        for module in self._models():
            module.to(device=self.device, dtype=self.dtype)
        self._null = None
        return self

    def _models(self) -> list[torch.nn.Module]:
        models = [self.transformer, self.vae, self.text_encoder, self.text_encoder_2, self.text_encoder_3]
        return [m for m in models if m is not None]

    # ----------------------------------------------------------------------------------------------- geometry
    @property
    def image_multiple(self) -> int:
        return self.vae_scale_factor * self.transformer.config.patch_size

    @property
    def default_image_size(self) -> tuple[int, int]:
        side = self.transformer.config.sample_size * self.vae_scale_factor
        return (side, side)

    @property
    def latent_channels(self) -> int:
        return self.transformer.config.in_channels

    @property
    def max_prompt_tokens(self) -> int:
        """T5's ``max_sequence_length`` (CLIP sees only the first 77 tokens); 77 when T5 is dropped."""
        return self.max_sequence_length if self.text_encoder_3 is not None else self.tokenizer.model_max_length

    def count_tokens(self, prompt: str) -> int:
        """Tokens of ``prompt`` (with special tokens) for the encoder that sets :attr:`max_prompt_tokens`."""
        tokenizer = self.tokenizer_3 if self.text_encoder_3 is not None else self.tokenizer
        return len(tokenizer(prompt, verbose=False).input_ids)

    # ----------------------------------------------------------------------------------------------- images
    def encode_images(self, pixels: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [-1, 1] -> (B, C, H/f, W/f) latents, ``(mean - shift_factor) * scaling_factor``.

        Latents come back in at least float32 whatever the model dtype, so inversion and sampling accumulate
        their steps in float32 while the models run in bf16/fp16.
        """
        m = self.image_multiple
        if pixels.ndim != 4 or pixels.shape[1] != 3 or pixels.shape[-2] % m or pixels.shape[-1] % m:
            raise InputError(f"pixels must be (B, 3, H, W) with H and W multiples of {m}, got shape "
                             f"{tuple(pixels.shape)}; use encoder.encode(...) to resize images")
        latents = self.vae.encode(pixels.to(self.device, self.vae.dtype)).latent_dist.mode()
        latents = latents.to(torch.promote_types(latents.dtype, torch.float32))
        return (latents - self._vae_shift) * self.vae.config.scaling_factor

    def decode_latents(self, z0: torch.Tensor) -> torch.Tensor:
        """(B, C, h, w) latents -> (B, 3, h f, w f) images in [-1, 1] (clamped like the pipeline's postprocess)."""
        latents = z0 / self.vae.config.scaling_factor + self._vae_shift
        image = self.vae.decode(latents.to(self.device, self.vae.dtype), return_dict=False)[0]
        return image.clamp(-1, 1)

    @property
    def _vae_shift(self) -> float:
        return self.vae.config.shift_factor or 0.0

    # ----------------------------------------------------------------------------------------------- prompts
    def encode_prompts(self, prompts: Sequence[str]) -> Conditioning:
        """Prompts -> ``prompt_embeds`` (B, 77 + L, D) and ``pooled_prompt_embeds`` (B, P), as the pipeline does.

        Prompts longer than a tokenizer's limit are truncated (CLIP: 77 tokens, T5: ``max_sequence_length``).
        """
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        if not prompts or not all(isinstance(p, str) for p in prompts):
            raise InputError(f"prompts must be a non-empty list of strings, got {prompts!r}")
        clip_embeds, pooled = zip(*(self._clip_embeds(prompts, index) for index in (0, 1)))
        clip = torch.cat(clip_embeds, dim=-1)  # (B, 77, D_clip1 + D_clip2)
        t5 = self._t5_embeds(prompts)  # (B, L, D)
        clip = F.pad(clip, (0, t5.shape[-1] - clip.shape[-1]))  # zero-pad the CLIP features to the T5 width
        return Conditioning({"prompt_embeds": torch.cat([clip, t5], dim=-2),
                             "pooled_prompt_embeds": torch.cat(pooled, dim=-1)})

    def _clip_embeds(self, prompts: list[str], index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Penultimate hidden states (B, 77, D) and projected pooled output (B, P) of CLIP ``index``."""
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

    # ----------------------------------------------------------------------------------------------- noise path
    def timesteps(self, num_steps: int, t_start: float = 1.0, *, latents: torch.Tensor | None = None) -> torch.Tensor:
        """``num_steps + 1`` sigmas from ``t_start`` to 0: a uniform grid pushed through the scheduler's shift.

        ``shift * u / (1 + (shift - 1) * u)`` is the map ``FlowMatchEulerDiscreteScheduler`` applies (SD3: shift
        3.0; with dynamic shifting the shift is ``exp(mu)`` for these latents). The uniform grid starts at the
        preimage of ``t_start``, so a partial inversion uses the same spacing as a full one.
        """
        if not _is_positive_int(num_steps):
            raise InputError(f"num_steps must be a positive integer, got {num_steps!r}")
        if not 0.0 < t_start <= 1.0:
            raise InputError(f"t_start={t_start!r} must lie in (0, 1] (1 = pure noise)")
        shift = self._flow_shift(latents)
        u_start = t_start / (shift - (shift - 1.0) * t_start)  # inverse of the shift map
        u = torch.linspace(u_start, 0.0, num_steps + 1, dtype=torch.float64)
        sigmas = shift * u / (1.0 + (shift - 1.0) * u)
        sigmas[0] = t_start
        return sigmas.float()

    def _scheduler_kwargs(self, latents: torch.Tensor | None) -> dict[str, float]:
        """``mu`` for a scheduler with dynamic (resolution-dependent) shifting, computed as the pipeline does."""
        from diffusers.pipelines.stable_diffusion_3.pipeline_stable_diffusion_3 import calculate_shift

        config = self.scheduler.config
        if not config.get("use_dynamic_shifting", None):
            return {}
        if latents is None:
            h, w = (s // self.vae_scale_factor for s in self.default_image_size)
        else:
            h, w = latents.shape[-2:]
        patch = self.transformer.config.patch_size
        mu = calculate_shift((h // patch) * (w // patch), config.get("base_image_seq_len", 256),
                             config.get("max_image_seq_len", 4096), config.get("base_shift", 0.5),
                             config.get("max_shift", 1.16))
        return {"mu": mu}

    def _flow_shift(self, latents: torch.Tensor | None) -> float:
        """The scheduler's shift as one number: both static and dynamic shifts are ``s u / (1 + (s - 1) u)``."""
        mu = self._scheduler_kwargs(latents).get("mu")
        if mu is None:
            return float(self.scheduler.shift)
        return math.exp(mu) if self.scheduler.config.get("time_shift_type", "exponential") == "exponential" else mu

    # ----------------------------------------------------------------------------------------------- prediction
    def _transformer(self, latents: torch.Tensor, timestep: torch.Tensor, cond: Conditioning) -> torch.Tensor:
        """The MMDiT's velocity for (B, C, h, w) latents at diffusers timesteps (B,) (= 1000 x sigma)."""
        return self.transformer(
            hidden_states=latents.to(self.dtype),
            timestep=timestep,
            encoder_hidden_states=cond.embeds["prompt_embeds"].to(self.dtype),
            pooled_projections=cond.embeds["pooled_prompt_embeds"].to(self.dtype),
            return_dict=False,
        )[0]

    def _predict_velocity(self, z_t: torch.Tensor, t: torch.Tensor, cond: Conditioning) -> torch.Tensor:
        return self._transformer(z_t, t * self.scheduler.config.num_train_timesteps, cond)

    # ----------------------------------------------------------------------------------------------- generation
    def check_inputs(self, prompts: Sequence[str], height: int, width: int, num_inference_steps: int,
                     guidance_scale: float, negative_prompts: Sequence[str] | None,
                     latents: torch.Tensor | None) -> None:
        if isinstance(prompts, str) or not prompts or not all(isinstance(p, str) for p in prompts):
            raise InputError(f"prompts must be a non-empty list of strings, got {prompts!r}")
        m = self.image_multiple
        for name, value in (("height", height), ("width", width)):
            if not _is_positive_int(value) or value % m:
                raise InputError(f"{name}={value!r} must be a positive multiple of {m} for this model")
        if not _is_positive_int(num_inference_steps):
            raise InputError(f"num_inference_steps must be a positive integer, got {num_inference_steps!r}")
        if isinstance(guidance_scale, bool) or not isinstance(guidance_scale, (int, float)) \
                or not math.isfinite(guidance_scale):
            raise InputError(f"guidance_scale must be a finite number (<= 1 disables guidance), got {guidance_scale!r}")
        if negative_prompts is not None and (isinstance(negative_prompts, str)
                                             or len(negative_prompts) != len(prompts)):
            raise InputError(f"negative_prompts must be a list of {len(prompts)} strings (one per prompt), got "
                             f"{negative_prompts!r}")
        shape = (len(prompts), self.latent_channels, height // self.vae_scale_factor, width // self.vae_scale_factor)
        if latents is not None and tuple(latents.shape) != shape:
            raise InputError(f"latents must have shape {shape} for {len(prompts)} prompts at {height}x{width}, got "
                             f"{tuple(latents.shape)}")

    def prepare_latents(self, batch: int, height: int, width: int, generator: torch.Generator | None = None,
                        latents: torch.Tensor | None = None) -> torch.Tensor:
        """(B, C, H/f, W/f) Gaussian noise drawn exactly as ``StableDiffusion3Pipeline.prepare_latents``."""
        from diffusers.utils.torch_utils import randn_tensor

        if latents is not None:
            return latents.to(device=self.device, dtype=self.dtype)
        shape = (batch, self.latent_channels, height // self.vae_scale_factor, width // self.vae_scale_factor)
        return randn_tensor(shape, generator=generator, device=self.device, dtype=self.dtype)

    @torch.no_grad()
    def generate(self, prompts: Sequence[str], *, num_inference_steps: int, guidance_scale: float, height: int,
                 width: int, generator: torch.Generator | None = None, latents: torch.Tensor | None = None,
                 negative_prompts: Sequence[str] | None = None, progress: bool = False) -> torch.Tensor:
        """Text-to-image equal to ``StableDiffusion3Pipeline.__call__``; returns (B, 3, H, W) in [-1, 1]."""
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        self.check_inputs(prompts, height, width, num_inference_steps, guidance_scale, negative_prompts, latents)
        do_cfg = guidance_scale > 1.0
        cond = self.encode_prompts(prompts)
        if do_cfg:
            uncond = self.encode_prompts(list(negative_prompts) if negative_prompts else [""] * len(prompts))
            cond = Conditioning.cat([uncond, cond])
        latents = self.prepare_latents(len(prompts), height, width, generator, latents)
        self.scheduler.set_timesteps(num_inference_steps, device=self.device, **self._scheduler_kwargs(latents))
        timesteps = self.scheduler.timesteps
        if progress:
            from tqdm.auto import tqdm

            timesteps = tqdm(timesteps, desc="generate", leave=False)
        for t in timesteps:
            model_input = torch.cat([latents] * 2) if do_cfg else latents
            self.counter.forwards += model_input.shape[0]
            v = self._transformer(model_input, t.expand(model_input.shape[0]), cond)
            if do_cfg:
                v_uncond, v_text = v.chunk(2)
                v = v_uncond + guidance_scale * (v_text - v_uncond)
            latents = self.scheduler.step(v, t, latents, return_dict=False)[0]
        return self.decode_latents(latents)


def _is_positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1
