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

import math
import warnings
from typing import Any, Sequence

import numpy as np
import torch
from diffusers import FluxPipeline
from diffusers.pipelines.flux.pipeline_flux import calculate_shift, retrieve_timesteps
from diffusers.utils.torch_utils import randn_tensor
from einops import rearrange
from tqdm.auto import tqdm

from eimsdk.errors import InputError
from eimsdk.images import model_size
from eimsdk.interfaces import FlowMatchingEncoder
from eimsdk.records import Conditioning

DTYPES = (torch.float32, torch.bfloat16, torch.float16, torch.float64)
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


class FluxEncoder(FlowMatchingEncoder):
    """FLUX.1-dev / FLUX.1-schnell: VAE, CLIP (pooled) + T5 text encoders, flow-matching transformer."""

    family = "flux"
    pipeline_classes = ("FluxPipeline",)

    def __init__(self, transformer: Any, vae: Any, text_encoder: Any, tokenizer: Any, text_encoder_2: Any,
                 tokenizer_2: Any, scheduler: Any, *, model_id: str = "", device: str | torch.device | None = None,
                 max_sequence_length: int = T5_LIMIT, embedded_guidance: float = 3.5) -> None:
        super().__init__()
        if isinstance(max_sequence_length, bool) or not isinstance(max_sequence_length, int) or not (
                1 <= max_sequence_length <= T5_LIMIT):
            raise InputError(f"max_sequence_length must be an integer in [1, {T5_LIMIT}] (T5 tokens; FLUX.1 was "
                             f"trained with 512, schnell also works with 256), got {max_sequence_length!r}")
        self.transformer = transformer
        self.vae = vae
        self.text_encoder = text_encoder
        self.tokenizer = tokenizer
        self.text_encoder_2 = text_encoder_2
        self.tokenizer_2 = tokenizer_2
        self.scheduler = scheduler
        for module in self._modules():
            module.eval().requires_grad_(False)  # derivatives are taken w.r.t. inputs only
        self.model_id = model_id
        self.device = torch.device(device) if device is not None else transformer.device
        self.dtype = transformer.dtype
        self.max_sequence_length = max_sequence_length
        self.embedded_guidance = _check_number(embedded_guidance, "embedded_guidance")
        self.vae_scale_factor = 2 ** (len(vae.config.block_out_channels) - 1)
        self.cpu_offload = False
        self._null = None

    # ------------------------------------------------------------------------------------------------ loading
    @classmethod
    def from_pretrained(cls, path: str, *, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
                        cpu_offload: bool = False, vae_tiling: bool = False, vae_slicing: bool = False,
                        max_sequence_length: int = T5_LIMIT, embedded_guidance: float = 3.5,
                        **kwargs: Any) -> "FluxEncoder":
        """Load a FLUX.1 folder or hub id with ``FluxPipeline.from_pretrained`` (``kwargs`` such as ``variant``,
        ``revision``, ``local_files_only`` go to it). ``cpu_offload`` keeps each model on the CPU until it runs on
        ``device`` (a GPU); ``vae_tiling``/``vae_slicing`` bound the VAE's memory for big images and batches."""
        if dtype not in DTYPES:
            raise InputError(f"dtype={dtype!r} is not supported; use one of {[str(d) for d in DTYPES]}")
        device = torch.device(device)
        if cpu_offload and device.type == "cpu":
            raise InputError("cpu_offload=True moves each model to the accelerator only while it runs; pass an "
                             "accelerator device (device='cuda') or cpu_offload=False")
        pipe = FluxPipeline.from_pretrained(str(path), torch_dtype=dtype, **kwargs)
        if cpu_offload:
            pipe.enable_model_cpu_offload(device=device)
        else:
            pipe.to(device)
        if vae_tiling:
            pipe.vae.enable_tiling()
        if vae_slicing:
            pipe.vae.enable_slicing()
        encoder = cls.from_pipeline(pipe, model_id=str(path), max_sequence_length=max_sequence_length,
                                    embedded_guidance=embedded_guidance)
        encoder.device = device
        encoder.cpu_offload = cpu_offload
        return encoder

    @classmethod
    def from_pipeline(cls, pipe: Any, model_id: str | None = None, **options: Any) -> "FluxEncoder":
        """Wrap an existing ``FluxPipeline`` (its modules are shared, not copied)."""
        if not isinstance(pipe, FluxPipeline):
            raise InputError(f"pipe must be a diffusers FluxPipeline, got {type(pipe).__name__}; load other families "
                             "with their own backend (Editor.from_pretrained picks it)")
        if model_id is None:
            model_id = str(getattr(pipe, "name_or_path", "") or "")
        return cls(pipe.transformer, pipe.vae, pipe.text_encoder, pipe.tokenizer, pipe.text_encoder_2,
                   pipe.tokenizer_2, pipe.scheduler, model_id=model_id, device=pipe._execution_device, **options)

    def to(self, device_or_dtype: str | torch.device | torch.dtype | None = None,
           dtype: torch.dtype | None = None) -> "FluxEncoder":
        """Move/cast every model (``encoder.to("cuda")``, ``encoder.to(torch.float64)``); returns ``self``."""
        device = None
        if isinstance(device_or_dtype, torch.dtype):
            dtype = device_or_dtype
        elif device_or_dtype is not None:
            device = torch.device(device_or_dtype)
        if dtype is not None and dtype not in DTYPES:
            raise InputError(f"dtype={dtype!r} is not supported; use one of {[str(d) for d in DTYPES]}")
        if device is not None and self.cpu_offload:
            raise InputError("this encoder was loaded with cpu_offload=True, which places the models itself; load it "
                             "again with cpu_offload=False to move it")
        for module in self._modules():
            module.to(device=device, dtype=dtype)
        self.device = device or self.device
        self.dtype = self.transformer.dtype
        self._null = None
        return self

    def _modules(self) -> tuple[torch.nn.Module, ...]:
        return (self.transformer, self.vae, self.text_encoder, self.text_encoder_2)

    # ------------------------------------------------------------------------------------------------ geometry
    @property
    def image_multiple(self) -> int:
        return self.vae_scale_factor * 2  # VAE downsampling x the 2x2 packing

    @property
    def default_image_size(self) -> tuple[int, int]:
        size = self.vae.config.sample_size  # 1024 for FLUX.1
        size = tuple(size) if isinstance(size, (list, tuple)) else (size, size)
        return model_size(size, self.image_multiple)

    @property
    def max_prompt_tokens(self) -> int:
        return self.max_sequence_length

    @property
    def latent_channels(self) -> int:
        return self.vae.config.latent_channels

    @property
    def latent_dtype(self) -> torch.dtype:
        """Latents and embeddings are kept in at least float32, so invert/sample math is sane for half models."""
        return torch.promote_types(self.dtype, torch.float32)

    def count_tokens(self, prompt: str) -> int:
        """T5 tokens of ``prompt`` (with the end token); more than :attr:`max_prompt_tokens` are truncated."""
        return len(self.tokenizer_2(prompt).input_ids)

    # ------------------------------------------------------------------------------------------------ encode
    def encode_images(self, pixels: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [-1, 1] -> z0 (B, C, H/f, W/f), shifted and scaled, unpacked."""
        _check_pixels(pixels, self.image_multiple)
        posterior = self.vae.encode(pixels.to(self.device, self.vae.dtype)).latent_dist
        z0 = (posterior.mode() - self.vae.config.shift_factor) * self.vae.config.scaling_factor
        return z0.to(self.latent_dtype)

    def decode_latents(self, z0: torch.Tensor) -> torch.Tensor:
        """z0 (B, C, h, w) -> (B, 3, H, W) images in [-1, 1]."""
        if z0.ndim != 4 or z0.shape[1] != self.latent_channels:
            raise InputError(f"z0 must be unpacked latents (B, {self.latent_channels}, h, w), got shape "
                             f"{tuple(z0.shape)}; unpack FluxPipeline-format tokens with eimsdk_flux.encoder.unpack")
        z = z0 / self.vae.config.scaling_factor + self.vae.config.shift_factor
        image = self.vae.decode(z.to(self.vae.dtype), return_dict=False)[0]
        return image.clamp(-1, 1).to(self.latent_dtype)

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

    # ------------------------------------------------------------------------------------------------ noise path
    def timesteps(self, num_steps: int, t_start: float = 1.0, *, latents: torch.Tensor | None = None) -> torch.Tensor:
        """The pipeline's sigmas: a uniform grid shifted by the scheduler (by ``mu`` from the image sequence length
        when ``use_dynamic_shifting``); equal to the pipeline's for ``t_start = 1``. For ``t_start < 1`` the uniform
        grid starts where the shift maps to ``t_start``, so steps stay dense where the pipeline's are. Returns
        (num_steps + 1,) float32, descending to 0."""
        if isinstance(num_steps, bool) or not isinstance(num_steps, int) or num_steps < 1:
            raise InputError(f"num_steps must be a positive integer, got {num_steps!r}")
        if not 0.0 < float(t_start) <= 1.0:
            raise InputError(f"t_start must be in (0, 1] (1 = pure noise), got {t_start!r}")
        mu = self._mu(self._image_seq_len(latents))
        u = torch.linspace(self._unshift(float(t_start), mu), 0.0, num_steps + 1, dtype=torch.float64)
        sigmas = self._shift(u[:-1], mu)
        return torch.cat([sigmas, sigmas.new_zeros(1)]).to(torch.float32)

    def _image_seq_len(self, latents: torch.Tensor | None) -> int:
        if latents is None:
            h, w = self.default_image_size
            return (h // self.image_multiple) * (w // self.image_multiple)
        if latents.ndim == 3:  # packed (B, N, 4C)
            return latents.shape[1]
        return (latents.shape[-2] // 2) * (latents.shape[-1] // 2)

    def _mu(self, image_seq_len: int) -> float | None:
        config = self.scheduler.config
        if not config.get("use_dynamic_shifting", False):
            return None
        return calculate_shift(image_seq_len, config.get("base_image_seq_len", 256),
                               config.get("max_image_seq_len", 4096), config.get("base_shift", 0.5),
                               config.get("max_shift", 1.15))

    def _shift(self, u: torch.Tensor, mu: float | None) -> torch.Tensor:
        if mu is not None:
            return self.scheduler.time_shift(mu, 1.0, u)
        k = self.scheduler.config.shift
        return k * u / (1 + (k - 1) * u)

    def _unshift(self, s: float, mu: float | None) -> float:
        """The inverse of :meth:`_shift` on one value."""
        if mu is None:
            k = self.scheduler.config.shift
            return s / (k - (k - 1) * s)
        scale = math.exp(mu) if self.scheduler.config.get("time_shift_type", "exponential") == "exponential" else mu
        return 1.0 / (1.0 + scale * (1.0 / s - 1.0))

    # ------------------------------------------------------------------------------------------------ prediction
    def _predict_velocity(self, z_t: torch.Tensor, t: torch.Tensor, cond: Conditioning) -> torch.Tensor:
        """The transformer's velocity at unpacked ``z_t`` (B, C, h, w): pack in, unpack out."""
        _check_latents(z_t, self.latent_channels)
        missing = {"prompt_embeds", "pooled_prompt_embeds"} - set(cond.embeds)
        if missing:
            raise InputError(f"cond lacks {sorted(missing)}; make it with FluxEncoder.encode_prompts")
        b, _, h, w = z_t.shape
        dtype = self.dtype
        v = self._velocity(pack(z_t).to(dtype),  # (B, h*w/4, 4C)
                           t.to(self.device, dtype),
                           cond.embeds["prompt_embeds"].to(dtype),  # (B, L, D)
                           cond.embeds["pooled_prompt_embeds"].to(dtype),  # (B, P)
                           image_ids(h // 2, w // 2, self.device, dtype),
                           self._guidance(self.embedded_guidance, b))
        return unpack(v, h, w).to(z_t.dtype)

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
                                                      generator, negative_prompts, true_cfg_scale)
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
                v = v_neg + true_cfg_scale * (v - v_neg)
            latents = self.scheduler.step(v, t, latents, return_dict=False)[0]
        return self.decode_latents(unpack(latents, h, w))

    def check_inputs(self, prompts: Any, num_inference_steps: Any, guidance_scale: Any, height: Any, width: Any,
                     generator: Any, negative_prompts: Any, true_cfg_scale: Any
                     ) -> tuple[list[str], list[str] | None]:
        """Validate :meth:`generate`'s arguments; errors name the argument and what it accepts."""
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        if not prompts or not all(isinstance(p, str) for p in prompts):
            raise InputError(f"prompts must be a non-empty list of strings, got {prompts!r}")
        if isinstance(num_inference_steps, bool) or not isinstance(num_inference_steps, int) or num_inference_steps < 1:
            raise InputError(f"num_inference_steps must be a positive integer, got {num_inference_steps!r}")
        _check_number(guidance_scale, "guidance_scale")
        _check_number(true_cfg_scale, "true_cfg_scale")
        m = self.image_multiple
        for name, value in (("height", height), ("width", width)):
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0 or value % m:
                raise InputError(f"{name} must be a positive multiple of {m} for this model, got {value!r}")
        gens = generator if isinstance(generator, list) else [generator]
        if not all(g is None or isinstance(g, torch.Generator) for g in gens) or (
                isinstance(generator, list) and len(generator) != len(prompts)):
            raise InputError(f"generator must be None, a torch.Generator or a list of one per prompt, got "
                             f"{generator!r}")
        if negative_prompts is not None:
            negative_prompts = [negative_prompts] if isinstance(negative_prompts, str) else list(negative_prompts)
            if len(negative_prompts) != len(prompts) or not all(isinstance(p, str) for p in negative_prompts):
                raise InputError(f"negative_prompts must be {len(prompts)} string(s), one per prompt, got "
                                 f"{negative_prompts!r}")
        return prompts, negative_prompts


def _check_number(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise InputError(f"{name} must be a finite number, got {value!r}")
    return float(value)


def _check_pixels(pixels: Any, multiple: int) -> None:
    if not isinstance(pixels, torch.Tensor) or pixels.ndim != 4 or pixels.shape[1] != 3:
        got = tuple(pixels.shape) if isinstance(pixels, torch.Tensor) else type(pixels).__name__
        raise InputError(f"pixels must be a (B, 3, H, W) tensor in [-1, 1], got {got}; use encoder.encode(...) for "
                         "files, PIL images and arrays")
    if pixels.shape[-2] % multiple or pixels.shape[-1] % multiple:
        raise InputError(f"pixels height and width must be multiples of {multiple}, got {tuple(pixels.shape[-2:])}; "
                         "encoder.encode(...) resizes images for you")


def _check_latents(z: torch.Tensor, channels: int) -> None:
    if z.ndim != 4 or z.shape[1] != channels or z.shape[-2] % 2 or z.shape[-1] % 2:
        raise InputError(f"z_t must be unpacked latents (B, {channels}, h, w) with even h and w, got shape "
                         f"{tuple(z.shape)}")


__all__ = ["FluxEncoder", "pack", "unpack", "image_ids"]
