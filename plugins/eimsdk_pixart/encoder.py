"""PixArt-alpha and PixArt-Sigma (diffusers ``PixArtAlphaPipeline`` / ``PixArtSigmaPipeline``) as an eimsdk Encoder.

Latents: ``z0 = vae.encode(x).mode() * scaling_factor`` (B, 4, H/8, W/8), decoded as the pipelines do.
Conditioning: the T5 sequence and its attention mask, ``Conditioning({"prompt_embeds": (B, L, D)},
{"prompt_embeds": (B, L)})`` with ``L = 120`` (alpha) or ``300`` (Sigma) unless ``max_sequence_length`` says otherwise,
prompts lower-cased and stripped like the pipelines' ``clean_caption=False`` path, longer prompts truncated to ``L``
tokens (``eimsdk.images.check_prompts`` warns, through :meth:`PixArtEncoder.count_tokens`).

Noise level: ``t = n / T`` where ``n`` in [0, T] counts DDPM steps as in the DDPM paper (``n = 0`` is the clean
image, ``T = num_train_timesteps = 1000``). The transformer receives diffusers' 0-based timestep ``n - 1`` (clamped
at 0) and ``alpha_bar(t) = alphas_cumprod[n - 1]``, so ``t = 1`` is the noisiest training timestep 999 and
``alpha_bar(0) = 1`` exactly. Between integers ``log alpha_bar`` is interpolated linearly (a constant beta within
each step). The transformer predicts (eps, learned variance); the variance half is dropped.
"""

from __future__ import annotations

import inspect
import math
import warnings
from typing import Any, Sequence

import torch

from eimsdk.errors import InputError
from eimsdk.interfaces import Encoder
from eimsdk.records import Conditioning

#: T5 sequence length of each pipeline class (the pipelines' ``max_sequence_length`` default).
MAX_SEQUENCE_LENGTH = {"PixArtAlphaPipeline": 120, "PixArtSigmaPipeline": 300}
DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)
#: keyword arguments of ``from_pretrained`` that also apply to reading ``model_index.json``.
HUB_KWARGS = ("revision", "local_files_only", "cache_dir", "token", "force_download", "proxies")


class PixArtEncoder(Encoder):
    """The joint latent space of a PixArt model: SD-VAE latents x T5 sequence embeddings, DDPM eps-prediction.

    Build it with :meth:`from_pretrained` (a diffusers folder or hub id) or :meth:`from_pipeline` (a loaded
    ``PixArtAlphaPipeline`` / ``PixArtSigmaPipeline``). The components are the pipeline's own modules.
    """

    family = "pixart"
    pipeline_classes = tuple(MAX_SEQUENCE_LENGTH)

    def __init__(self, pipeline: Any, *, model_id: str | None = None, max_sequence_length: int | None = None) -> None:
        super().__init__()
        self.pipeline_class = self._pipeline_class_name(pipeline)
        self.pipeline = pipeline  # kept for diffusers' CPU-offload hooks (``maybe_free_model_hooks``)
        self.tokenizer = pipeline.tokenizer
        self.text_encoder = pipeline.text_encoder
        self.vae = pipeline.vae
        self.transformer = pipeline.transformer
        self.scheduler = pipeline.scheduler
        self._check_components()
        for module in (self.text_encoder, self.vae, self.transformer):
            module.eval().requires_grad_(False)
        self.model_id = model_id or getattr(pipeline, "name_or_path", None) or ""
        self.device = pipeline._execution_device
        self.dtype = self.transformer.dtype
        _check_max_sequence_length(max_sequence_length)
        self.max_sequence_length = max_sequence_length or MAX_SEQUENCE_LENGTH[self.pipeline_class]
        self.num_train_timesteps = len(self.scheduler.alphas_cumprod)
        # log alpha_bar at n = 0..T (n = 0: clean), float64 for the interpolation in alpha_sigma.
        alphas_cumprod = self.scheduler.alphas_cumprod.to(torch.float64)
        self._log_alpha_bar = torch.cat([torch.zeros(1, dtype=torch.float64), alphas_cumprod.clamp_min(1e-30).log()])

    # ------------------------------------------------------------------------------------------ loading
    @classmethod
    def from_pretrained(cls, path: str, *, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
                        cpu_offload: bool = False, vae_tiling: bool = False, vae_slicing: bool = False,
                        max_sequence_length: int | None = None, **kwargs: Any) -> "PixArtEncoder":
        """Load a PixArt pipeline folder or hub id; ``kwargs`` (``variant``, ``revision``, ...) go to diffusers.

        ``cpu_offload`` calls diffusers' ``enable_model_cpu_offload`` (one model on the accelerator at a time);
        ``vae_tiling`` / ``vae_slicing`` decode large or batched images in pieces; ``max_sequence_length``
        overrides the pipeline's T5 length (120 alpha, 300 Sigma) like the pipeline argument of that name.
        """
        import diffusers

        if dtype not in DTYPES:
            raise InputError(f"dtype={dtype!r} is not supported by the PixArt backend; use one of "
                             f"{[str(d) for d in DTYPES]} (float16/bfloat16 on a GPU, float32 on CPU)")
        device = _as_device(device)
        _check_max_sequence_length(max_sequence_length)
        if cpu_offload and device.type == "cpu":
            raise InputError("cpu_offload=True needs an accelerator, got device='cpu'; pass device='cuda' (or drop "
                             "cpu_offload: on CPU everything already lives in main memory)")
        hub_kwargs = {k: kwargs[k] for k in HUB_KWARGS if k in kwargs}
        config = diffusers.DiffusionPipeline.load_config(str(path), **hub_kwargs)  # model_index.json only
        class_name = config.get("_class_name")
        if class_name not in MAX_SEQUENCE_LENGTH:
            raise InputError(f"path={str(path)!r} holds a {class_name!r}, not one of {list(MAX_SEQUENCE_LENGTH)}; "
                             "load it with the backend of its family (`eimsdk plugins` lists them)")
        with warnings.catch_warnings():  # newer diffusers call torch_dtype `dtype`; older ones know only torch_dtype
            warnings.filterwarnings("ignore", message=".*torch_dtype.*", category=FutureWarning)
            pipe = getattr(diffusers, class_name).from_pretrained(str(path), torch_dtype=dtype, **kwargs)
        pipe.set_progress_bar_config(disable=True)
        if cpu_offload:
            pipe.enable_model_cpu_offload(device=device)
        else:
            pipe.to(device)
        if vae_tiling:
            pipe.vae.enable_tiling()
        if vae_slicing:
            pipe.vae.enable_slicing()
        return cls(pipe, model_id=str(path), max_sequence_length=max_sequence_length)

    @classmethod
    def from_pipeline(cls, pipe: Any, model_id: str | None = None,
                      max_sequence_length: int | None = None) -> "PixArtEncoder":
        """Wrap an already loaded ``PixArtAlphaPipeline`` / ``PixArtSigmaPipeline`` (its modules are shared)."""
        return cls(pipe, model_id=model_id, max_sequence_length=max_sequence_length)

    def to(self, device: str | torch.device | None = None, dtype: torch.dtype | None = None) -> "PixArtEncoder":
        """Move and/or cast every component (like ``pipeline.to``); returns ``self``."""
        if dtype is not None and dtype not in DTYPES:
            raise InputError(f"dtype={dtype!r} is not one of {[str(d) for d in DTYPES]}")
        args = ([_as_device(device)] if device is not None else []) + ([dtype] if dtype is not None else [])
        self.pipeline.to(*args)
        self.device = self.pipeline._execution_device
        self.dtype = self.transformer.dtype
        self._null = None
        return self

    @staticmethod
    def _pipeline_class_name(pipe: Any) -> str:
        for klass in type(pipe).__mro__:
            if klass.__name__ in MAX_SEQUENCE_LENGTH:
                return klass.__name__
        raise InputError(f"pipe must be a diffusers PixArtAlphaPipeline or PixArtSigmaPipeline, got "
                         f"{type(pipe).__name__}; use the backend of its family")

    def _check_components(self) -> None:
        for name in ("tokenizer", "text_encoder", "vae", "transformer", "scheduler"):
            if getattr(self, name) is None:
                raise InputError(f"the pipeline's {name} is None; load the pipeline with all its components")
        if not hasattr(self.scheduler, "alphas_cumprod"):
            raise InputError(f"scheduler {type(self.scheduler).__name__} has no DDPM noise schedule "
                             "(alphas_cumprod); use the scheduler the PixArt checkpoint ships with, or DDIMScheduler")
        prediction_type = self.scheduler.config.get("prediction_type", "epsilon")
        if prediction_type not in ("epsilon", "v_prediction"):
            raise InputError(f"scheduler prediction_type={prediction_type!r}: the PixArt backend supports "
                             "'epsilon' (the released checkpoints) and 'v_prediction' checkpoints")
        self.prediction_type = prediction_type

    # ------------------------------------------------------------------------------------------ geometry
    @property
    def vae_scale_factor(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    @property
    def image_multiple(self) -> int:
        return self.vae_scale_factor * self.transformer.config.patch_size

    @property
    def default_image_size(self) -> tuple[int, int]:
        size = self.transformer.config.sample_size * self.vae_scale_factor
        return (size, size)

    @property
    def max_prompt_tokens(self) -> int:
        return self.max_sequence_length

    @property
    def latent_channels(self) -> int:
        return self.transformer.config.in_channels

    @property
    def uses_micro_conditions(self) -> bool:
        """PixArt-alpha 1024 (``sample_size == 128``) conditions on resolution and aspect ratio."""
        return self.pipeline_class == "PixArtAlphaPipeline" and self.transformer.config.sample_size == 128

    # ------------------------------------------------------------------------------------------ encode
    def encode_images(self, pixels: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [-1, 1] -> z0 (B, 4, H/f, W/f), the VAE posterior mean times ``scaling_factor``."""
        m = self.image_multiple
        if pixels.ndim != 4 or pixels.shape[1] != 3 or pixels.shape[-2] % m or pixels.shape[-1] % m:
            raise InputError(f"pixels must be (B, 3, H, W) with H and W multiples of {m}, got shape "
                             f"{tuple(pixels.shape)}; use encoder.encode(...) to resize images by the input policy")
        pixels = pixels.to(self.device, self.vae.dtype)
        return self.vae.encode(pixels).latent_dist.mode() * self.vae.config.scaling_factor

    def decode_latents(self, z0: torch.Tensor) -> torch.Tensor:
        """z0 (B, 4, h, w) -> images (B, 3, h*f, w*f) in [-1, 1], as the pipelines decode."""
        z0 = z0.to(self.device, self.vae.dtype) / self.vae.config.scaling_factor
        return self.vae.decode(z0, return_dict=False)[0].clamp(-1, 1)

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

    # ------------------------------------------------------------------------------------------ noise path
    def alpha_sigma(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(sqrt(alpha_bar(t)), sqrt(1 - alpha_bar(t)))``, computed in float64, returned in at least float32."""
        t = torch.as_tensor(t)
        if t.numel() and (float(t.min()) < 0 or float(t.max()) > 1):
            raise InputError(f"t must lie in [0, 1] (0 = clean), got values in [{float(t.min())}, {float(t.max())}]")
        n = t.to(torch.float64) * self.num_train_timesteps
        lo = n.floor().clamp(max=self.num_train_timesteps - 1)
        frac = n - lo
        table = self._log_alpha_bar.to(t.device)
        log_ab = torch.lerp(table[lo.long()], table[lo.long() + 1], frac)
        out_dtype = torch.promote_types(t.dtype, torch.float32) if t.is_floating_point() else torch.float32
        a = (0.5 * log_ab).exp()
        s = torch.expm1(log_ab).abs().sqrt()  # 1 - alpha_bar without cancellation; abs() keeps s(0) = +0.0
        return a.to(out_dtype), s.to(out_dtype)

    def timesteps(self, num_steps: int, t_start: float = 1.0, *, latents: torch.Tensor | None = None) -> torch.Tensor:
        """Uniform grid from ``t_start`` to 0 (at ``t_start = 1`` the model timesteps of DDIM 'trailing' spacing)."""
        if isinstance(num_steps, bool) or not isinstance(num_steps, int) or num_steps < 1:
            raise InputError(f"num_steps must be a positive integer, got {num_steps!r}")
        if not 0.0 < float(t_start) <= 1.0:
            raise InputError(f"t_start must lie in (0, 1], got {t_start!r}")
        return torch.linspace(float(t_start), 0.0, num_steps + 1, dtype=torch.float64).to(torch.float32)

    def _model_timestep(self, t: torch.Tensor) -> torch.Tensor:
        """Continuous t -> diffusers' 0-based transformer timestep ``t * T - 1`` (clamped at 0)."""
        return (t.to(torch.float64) * self.num_train_timesteps - 1).clamp_min(0).to(torch.float32)

    def _predict_eps(self, z_t: torch.Tensor, t: torch.Tensor, cond: Conditioning) -> torch.Tensor:
        """eps_hat (B, C, h, w) for z_t (B, C, h, w) at noise levels t (B,); differentiable in z_t and the embeds."""
        timestep = self._model_timestep(t.to(z_t.device))
        out = self._transformer_eps(z_t.to(self.dtype), timestep, cond.embeds["prompt_embeds"].to(self.dtype),
                                    cond.masks.get("prompt_embeds"))  # no mask: every token is attended
        if self.prediction_type == "v_prediction":  # v = a eps - s x0 and z = a x0 + s eps  =>  eps = a v + s z
            shape = (-1,) + (1,) * (z_t.ndim - 1)
            a, s = (c.to(z_t.device, torch.promote_types(z_t.dtype, torch.float32)).reshape(shape)
                    for c in self.alpha_sigma(t.to(z_t.device)))
            return (a * out + s * z_t).to(z_t.dtype)
        return out.to(z_t.dtype)

    def _transformer_eps(self, latents: torch.Tensor, timestep: torch.Tensor, embeds: torch.Tensor,
                         mask: torch.Tensor | None) -> torch.Tensor:
        """One transformer call with diffusers timesteps (B,); returns the prediction (eps, or v for
        v-prediction checkpoints), the first half of a learned-sigma output."""
        b, _, h, w = latents.shape
        added = {"resolution": None, "aspect_ratio": None}
        if self.uses_micro_conditions:
            height, width = h * self.vae_scale_factor, w * self.vae_scale_factor
            like = dict(dtype=embeds.dtype, device=latents.device)
            added = {"resolution": torch.tensor([[height, width]], **like).repeat(b, 1),  # (B, 2)
                     "aspect_ratio": torch.tensor([[height / width]], **like).repeat(b, 1)}  # (B, 1)
        out = self.transformer(latents, encoder_hidden_states=embeds, encoder_attention_mask=mask,
                               timestep=timestep, added_cond_kwargs=added, return_dict=False)[0]  # (B, 2C | C, h, w)
        if self.transformer.config.out_channels // 2 == self.latent_channels:
            out = out.chunk(2, dim=1)[0]  # learned sigma: (eps, variance) -> eps
        return out

    def _ddim_step(self, z: torch.Tensor, t: float, t_next: float, cond: Conditioning, **kw: Any) -> torch.Tensor:
        """The base DDIM step with its latent arithmetic in at least float32 (x0 = (z - s eps) / a loses digits
        in half precision where a is small)."""
        b = z.shape[0]
        work = torch.promote_types(z.dtype, torch.float32)
        tt = self._as_t(t, b, z)
        eps = self.predict_eps(z, tt, cond, **kw).to(work)
        shape = (-1,) + (1,) * (z.ndim - 1)
        a, s = (c.to(z.device, work).reshape(shape) for c in self.alpha_sigma(tt))
        a2, s2 = (c.to(z.device, work).reshape(shape) for c in self.alpha_sigma(self._as_t(t_next, b, z)))
        x0 = (z.to(work) - s * eps) / a
        return (a2 * x0 + s2 * eps).to(z.dtype)

    # ------------------------------------------------------------------------------------------ generation
    def prepare_latents(self, batch: int, height: int, width: int, generator: torch.Generator | None = None,
                        latents: torch.Tensor | None = None) -> torch.Tensor:
        """Initial noise (B, C, H/f, W/f) drawn exactly like the pipeline (``randn_tensor``, ``init_noise_sigma``)."""
        from diffusers.utils.torch_utils import randn_tensor

        shape = (batch, self.latent_channels, height // self.vae_scale_factor, width // self.vae_scale_factor)
        if latents is None:
            latents = randn_tensor(shape, generator=generator, device=self.device, dtype=self.text_encoder.dtype)
        elif tuple(latents.shape) != shape:
            raise InputError(f"latents must have shape {shape} for {batch} prompt(s) at {height}x{width}, got "
                             f"{tuple(latents.shape)}")
        else:
            latents = latents.to(self.device, self.text_encoder.dtype)  # the pipeline would fail on a dtype mismatch
        return latents * self.scheduler.init_noise_sigma

    def check_inputs(self, prompts: Sequence[str], num_inference_steps: int, guidance_scale: float, height: int,
                     width: int, generator: Any, negative_prompts: Sequence[str] | None) -> None:
        """Validate :meth:`generate`'s arguments up front; errors name the argument and what it accepts."""
        if isinstance(prompts, str) or not prompts or not all(isinstance(p, str) for p in prompts):
            raise InputError(f"prompts must be a non-empty list of strings, got {prompts!r}")
        if isinstance(num_inference_steps, bool) or not isinstance(num_inference_steps, int) or num_inference_steps < 1:
            raise InputError(f"num_inference_steps must be a positive integer, got {num_inference_steps!r}")
        if isinstance(guidance_scale, bool) or not isinstance(guidance_scale, (int, float)) or \
                not math.isfinite(guidance_scale):
            raise InputError(f"guidance_scale must be a finite number (> 1 enables guidance), got {guidance_scale!r}")
        m = self.image_multiple
        for name, value in (("height", height), ("width", width)):
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0 or value % m:
                raise InputError(f"{name}={value!r} must be a positive multiple of {m} for this model")
        if negative_prompts is not None and (isinstance(negative_prompts, str)
                                             or len(negative_prompts) != len(prompts)):
            raise InputError(f"negative_prompts must be a list with one string per prompt ({len(prompts)}), got "
                             f"{negative_prompts!r}")
        if isinstance(generator, list) and len(generator) != len(prompts):
            raise InputError(f"generator is a list of {len(generator)} generators for {len(prompts)} prompts; pass "
                             "one generator or one per prompt")

    def _step_kwargs(self, generator: Any) -> dict[str, Any]:
        """The pipeline's ``prepare_extra_step_kwargs`` with ``eta = 0``: what this scheduler's ``step`` accepts."""
        params = inspect.signature(self.scheduler.step).parameters
        kwargs: dict[str, Any] = {"eta": 0.0} if "eta" in params else {}
        if "generator" in params:
            kwargs["generator"] = generator
        return kwargs

    @torch.no_grad()
    def generate(self, prompts: Sequence[str], *, num_inference_steps: int, guidance_scale: float, height: int,
                 width: int, generator: torch.Generator | None = None, latents: torch.Tensor | None = None,
                 negative_prompts: Sequence[str] | None = None, progress: bool = False) -> torch.Tensor:
        """Text-to-image with the folder's own scheduler, equal to the pipeline with ``use_resolution_binning=False``.

        Returns (B, 3, H, W) in [-1, 1]. Guidance is on when ``guidance_scale > 1``, as in diffusers.
        """
        from tqdm.auto import tqdm

        self.check_inputs(prompts, num_inference_steps, guidance_scale, height, width, generator, negative_prompts)
        batch = len(prompts)
        do_cfg = guidance_scale > 1.0

        # 1. Text conditioning; the unconditional half first, as the pipeline concatenates it.
        cond = self.encode_prompts(prompts)
        embeds, mask = cond.embeds["prompt_embeds"], cond.masks["prompt_embeds"]  # (B, L, D), (B, L)
        if do_cfg:
            uncond = self.encode_prompts(list(negative_prompts) if negative_prompts is not None else [""] * batch)
            embeds = torch.cat([uncond.embeds["prompt_embeds"], embeds])  # (2B, L, D)
            mask = torch.cat([uncond.masks["prompt_embeds"], mask])  # (2B, L)

        # 2. The scheduler's timesteps and the initial noise, exactly as the pipeline sets them up.
        self.scheduler.set_timesteps(num_inference_steps, device=self.device)
        timesteps = self.scheduler.timesteps
        latents = self.prepare_latents(batch, height, width, generator, latents)  # (B, C, h, w)
        step_kwargs = self._step_kwargs(generator)
        is_alpha = self.pipeline_class == "PixArtAlphaPipeline"
        if is_alpha and hasattr(self.scheduler, "set_begin_index"):
            self.scheduler.set_begin_index(0)

        # 3. Denoising loop.
        for t in tqdm(timesteps, desc="generate", disable=not progress, leave=False):
            model_input = torch.cat([latents] * 2) if do_cfg else latents
            model_input = self.scheduler.scale_model_input(model_input, t)
            timestep = t[None].to(model_input.device).expand(model_input.shape[0])
            eps = self._transformer_eps(model_input, timestep, embeds, mask)
            self.counter.forwards += model_input.shape[0]
            if do_cfg:
                eps_uncond, eps_text = eps.chunk(2)
                eps = eps_uncond + guidance_scale * (eps_text - eps_uncond)
            out = self.scheduler.step(eps, t, latents, **step_kwargs, return_dict=False)
            # PixArt-alpha takes the scheduler's x0 estimate for a single step (where the scheduler returns one).
            latents = out[1] if is_alpha and num_inference_steps == 1 and len(out) > 1 else out[0]

        # 4. Decode.
        image = self.decode_latents(latents)
        self.pipeline.maybe_free_model_hooks()
        return image


def _check_max_sequence_length(value: int | None) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise InputError(f"max_sequence_length must be a positive integer (T5 tokens) or None for the pipeline's "
                         f"default, got {value!r}")


def _as_device(device: str | torch.device) -> torch.device:
    try:
        return torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise InputError(f"device={device!r} is not a torch device; use 'cpu', 'cuda' or 'cuda:N'") from exc
