"""One base for backends over a diffusers pipeline, so that a family file keeps only what differs.

:class:`DiffusersEncoder` holds what every diffusers family shares: loading (``from_pretrained`` /
``from_pipeline``), dtype, CPU offload, VAE tiling and slicing, :meth:`~DiffusersEncoder.to`, geometry, the VAE
latent format ``z0 = (mean - shift_factor) * scaling_factor``, input checks and the pipelines' denoising loop
with classifier-free guidance. Two bases add a noise parametrisation: :class:`NoisePredictionDiffusersEncoder`
(DDPM eps/v with the scheduler's ``alphas_cumprod``: PixArt, Stable Diffusion) and
:class:`FlowMatchingDiffusersEncoder` (the shifted sigma grid of ``FlowMatchEulerDiscreteScheduler``: SD3, Flux).
A family subclasses one of them and writes its prompt encoding and its ``_denoise`` call.
"""

from __future__ import annotations

import inspect
import math
import warnings
from abc import abstractmethod
from typing import Any, ClassVar, Sequence

import torch

from eimsdk.errors import InputError
from eimsdk.interfaces import Encoder, FlowMatchingEncoder, NoisePredictionEncoder, classifier_free_guidance
from eimsdk.records import Conditioning

DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)
#: keyword arguments of ``from_pretrained`` that also apply to reading ``model_index.json``.
HUB_KWARGS = ("revision", "local_files_only", "cache_dir", "token", "force_download", "proxies")
#: ``model_index.json`` key with the encoder options a model was trained with (e.g. a short T5 context), the
#: defaults of :meth:`DiffusersEncoder.from_pretrained`; diffusers ignores keys that start with ``_``.
ENCODER_OPTIONS_KEY = "_eimsdk_encoder_options"


class DiffusersEncoder(Encoder):
    """An Encoder over a loaded diffusers pipeline whose modules it shares (module docstring).

    Subclasses set :attr:`pipeline_classes`, :attr:`components` (pipeline attributes the backend uses; they become
    attributes of the encoder), :attr:`denoiser_name` and :attr:`options` (keyword options of their ``__init__``
    that :meth:`from_pretrained` passes through), and implement ``encode_prompts``, ``max_prompt_tokens`` and
    :meth:`_denoise`.
    """

    #: pipeline attributes the backend needs; ``None`` for one of them is an error.
    components: ClassVar[tuple[str, ...]] = ()
    #: pipeline attributes the backend uses when present (``None`` allowed, e.g. SD3 without T5).
    optional_components: ClassVar[tuple[str, ...]] = ()
    #: the component that predicts noise or velocity.
    denoiser_name: ClassVar[str] = "transformer"
    #: keyword options of ``__init__`` that ``from_pretrained`` accepts and passes on.
    options: ClassVar[tuple[str, ...]] = ()

    def __init__(self, pipeline: Any, *, model_id: str | None = None) -> None:
        super().__init__()
        self.pipeline_class = self._pipeline_class_name(pipeline)
        self.pipeline = pipeline  # kept for diffusers' CPU-offload hooks (``maybe_free_model_hooks``)
        for name in self.components + self.optional_components:
            module = getattr(pipeline, name, None)
            if module is None and name in self.components:
                raise InputError(f"the pipeline's {name} is None; load the pipeline with all its components")
            setattr(self, name, module)
        for module in self._models():
            module.eval().requires_grad_(False)  # derivatives are taken w.r.t. inputs only
        self.model_id = model_id if model_id is not None else str(getattr(pipeline, "name_or_path", "") or "")
        self.device = pipeline._execution_device
        self.dtype = self.denoiser.dtype
        self.cpu_offload = False
        self._null: Conditioning | None = None

    # ------------------------------------------------------------------------------------------ loading
    @classmethod
    def from_pretrained(cls, path: Any, *, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
                        cpu_offload: bool = False, vae_tiling: bool = False, vae_slicing: bool = False,
                        **kwargs: Any) -> "DiffusersEncoder":
        """Load a diffusers folder or hub id; the family's :attr:`options` go to ``__init__``, other ``kwargs``
        (``variant``, ``revision``, ``local_files_only``, a replacement component, ...) to diffusers.

        ``cpu_offload`` calls diffusers' ``enable_model_cpu_offload`` (one model on the accelerator at a time);
        ``vae_tiling`` / ``vae_slicing`` decode large or batched images in pieces.
        """
        import diffusers

        options = {name: kwargs.pop(name) for name in cls.options if name in kwargs}
        _check_dtype(dtype, cls.family)
        torch_device = _as_device(device)
        if cpu_offload and torch_device.type == "cpu":
            raise InputError("cpu_offload=True moves each model to an accelerator only while it runs, but "
                             "device='cpu'; pass device='cuda' (or drop cpu_offload: on CPU everything already lives "
                             "in main memory)")
        hub_kwargs = {k: kwargs[k] for k in HUB_KWARGS if k in kwargs}
        index = diffusers.DiffusionPipeline.load_config(str(path), **hub_kwargs)
        class_name = index.get("_class_name")
        if class_name not in cls.pipeline_classes:
            raise InputError(f"path={str(path)!r} holds a {class_name!r}, not one of {list(cls.pipeline_classes)}; "
                             "load it with the backend of its family (`eimsdk plugins` lists them)")
        stored = cls.stored_options(index, path)
        options = {**stored, **options}
        with warnings.catch_warnings():  # newer diffusers call torch_dtype `dtype`; older ones know only torch_dtype
            warnings.filterwarnings("ignore", message=".*torch_dtype.*", category=FutureWarning)
            pipe = getattr(diffusers, class_name).from_pretrained(str(path), torch_dtype=dtype, **kwargs)
        pipe.set_progress_bar_config(disable=True)
        if cpu_offload:
            pipe.enable_model_cpu_offload(device=device)
        else:
            pipe.to(torch_device)
        if vae_tiling:
            pipe.vae.enable_tiling()
        if vae_slicing:
            pipe.vae.enable_slicing()
        try:
            encoder = cls(pipe, model_id=str(path), **options)
        except InputError as exc:
            if not stored:
                raise
            raise InputError(f"{exc} (path={str(path)!r} stores {ENCODER_OPTIONS_KEY}={stored} in its "
                             "model_index.json; fix that entry or pass the option)") from exc
        encoder.device, encoder.cpu_offload = torch_device, cpu_offload
        return encoder

    @classmethod
    def stored_options(cls, index: dict[str, Any], path: Any = None) -> dict[str, Any]:
        """The encoder options a model folder stores in its ``model_index.json`` (:data:`ENCODER_OPTIONS_KEY`):
        defaults that the caller's options override. A model trained with a short text context stores it
        here, so every loader encodes prompts the way the model was trained."""
        stored = index.get(ENCODER_OPTIONS_KEY) or {}
        unknown = sorted(set(stored) - set(cls.options)) if isinstance(stored, dict) else ["(not a JSON object)"]
        if unknown:
            raise InputError(f"path={str(path)!r}: model_index.json's {ENCODER_OPTIONS_KEY} names {unknown}, which "
                             f"the {cls.family} backend does not take (its options: {list(cls.options)}); fix or "
                             "remove that entry")
        return dict(stored)

    @classmethod
    def from_pipeline(cls, pipe: Any, model_id: str | None = None, **options: Any) -> "DiffusersEncoder":
        """Wrap an already loaded pipeline (its modules are shared, not copied); ``options`` as in ``__init__``."""
        return cls(pipe, model_id=model_id, **options)

    def to(self, *targets: str | torch.device | torch.dtype, device: str | torch.device | None = None,
           dtype: torch.dtype | None = None) -> "DiffusersEncoder":
        """Move and/or cast every model like ``torch.nn.Module.to`` (``to("cuda")``, ``to(torch.float64)``,
        ``to(device=..., dtype=...)``); returns ``self``."""
        for target in targets:
            if isinstance(target, torch.dtype):
                dtype = target
            else:
                device = target
        if dtype is not None:
            _check_dtype(dtype, self.family)
        if device is not None:
            device = _as_device(device)
            if self.cpu_offload:
                raise InputError("this encoder was loaded with cpu_offload=True, which places the models itself; "
                                 "load it again with cpu_offload=False to move it")
        for module in self._models():
            module.to(device=device, dtype=dtype)
        self.device = device if device is not None else self.device
        self.dtype = self.denoiser.dtype
        self._null = None
        return self

    def _models(self) -> list[torch.nn.Module]:
        modules = (getattr(self, name) for name in self.components + self.optional_components)
        return [m for m in modules if isinstance(m, torch.nn.Module)]

    @classmethod
    def _pipeline_class_name(cls, pipe: Any) -> str:
        for klass in type(pipe).__mro__:
            if klass.__name__ in cls.pipeline_classes:
                return klass.__name__
        raise InputError(f"pipe must be a diffusers {' or '.join(cls.pipeline_classes)}, got {type(pipe).__name__}; "
                         "load other families with their own backend (Editor.from_pretrained picks it)")

    # ------------------------------------------------------------------------------------------ geometry
    @property
    def denoiser(self) -> torch.nn.Module:
        """The transformer or UNet that predicts noise or velocity."""
        return getattr(self, self.denoiser_name)

    @property
    def vae_scale_factor(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    @property
    def patch_size(self) -> int:
        """Latent pixels per token side (1 for a UNet)."""
        return self.denoiser.config.get("patch_size", None) or 1

    @property
    def image_multiple(self) -> int:
        return self.vae_scale_factor * self.patch_size

    @property
    def default_image_size(self) -> tuple[int, int]:
        side = self.denoiser.config.sample_size * self.vae_scale_factor
        return (side, side)

    @property
    def latent_channels(self) -> int:
        return self.vae.config.latent_channels

    @property
    def latent_dtype(self) -> torch.dtype:
        """Latents stay in at least float32, so inversion and sampling accumulate in float32 for half models."""
        return torch.promote_types(self.dtype, torch.float32)

    # ------------------------------------------------------------------------------------------ images
    def encode_images(self, pixels: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [-1, 1] -> z0 (B, C, H/f, W/f) = (posterior mean - shift_factor) * scaling_factor."""
        m = self.image_multiple
        if not isinstance(pixels, torch.Tensor) or pixels.ndim != 4 or pixels.shape[1] != 3 \
                or pixels.shape[-2] % m or pixels.shape[-1] % m:
            got = tuple(pixels.shape) if isinstance(pixels, torch.Tensor) else type(pixels).__name__
            raise InputError(f"pixels must be a (B, 3, H, W) tensor in [-1, 1] with H and W multiples of {m}, got "
                             f"{got}; use encoder.encode(...) to resize images by the input policy")
        mean = self.vae.encode(pixels.to(self.device, self.vae.dtype)).latent_dist.mode()
        return (mean.to(self.latent_dtype) - self._vae_shift) * self.vae.config.scaling_factor

    def decode_latents(self, z0: torch.Tensor) -> torch.Tensor:
        """z0 (B, C, h, w) -> images (B, 3, h f, w f) in [-1, 1], as the pipelines decode."""
        if z0.ndim != 4 or z0.shape[1] != self.latent_channels:
            raise InputError(f"z0 must be latents (B, {self.latent_channels}, h, w), got shape {tuple(z0.shape)}")
        latents = z0 / self.vae.config.scaling_factor + self._vae_shift
        image = self.vae.decode(latents.to(self.device, self.vae.dtype), return_dict=False)[0]
        return image.clamp(-1, 1).to(self.latent_dtype)

    @property
    def _vae_shift(self) -> float:
        return self.vae.config.get("shift_factor", None) or 0.0

    # ------------------------------------------------------------------------------------------ prediction
    @abstractmethod
    def _denoise(self, latents: torch.Tensor, timestep: torch.Tensor, cond: Conditioning) -> torch.Tensor:
        """One batched denoiser call on (B, C, h, w) latents at diffusers timesteps (B,); the native prediction."""

    # ------------------------------------------------------------------------------------------ generation
    def check_inputs(self, prompts: Any, num_inference_steps: Any, guidance_scale: Any, height: Any, width: Any,
                     generator: Any = None, negative_prompts: Any = None) -> tuple[list[str], list[str] | None]:
        """Validate :meth:`generate`'s arguments up front; errors name the argument and what it accepts.

        Returns the prompts and negative prompts as lists (a single string counts as one prompt).
        """
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        if not prompts or not all(isinstance(p, str) for p in prompts):
            raise InputError(f"prompts must be a non-empty list of strings, got {prompts!r}")
        if not _is_positive_int(num_inference_steps):
            raise InputError(f"num_inference_steps must be a positive integer, got {num_inference_steps!r}")
        check_number(guidance_scale, "guidance_scale")
        m = self.image_multiple
        for name, value in (("height", height), ("width", width)):
            if not _is_positive_int(value) or value % m:
                raise InputError(f"{name}={value!r} must be a positive multiple of {m} for this model")
        generators = generator if isinstance(generator, list) else [generator]
        if not all(g is None or isinstance(g, torch.Generator) for g in generators) or (
                isinstance(generator, list) and len(generator) != len(prompts)):
            raise InputError(f"generator must be None, a torch.Generator or a list of one per prompt "
                             f"({len(prompts)}), got {generator!r}")
        if negative_prompts is not None:
            negative_prompts = [negative_prompts] if isinstance(negative_prompts, str) else list(negative_prompts)
            if len(negative_prompts) != len(prompts) or not all(isinstance(p, str) for p in negative_prompts):
                raise InputError(f"negative_prompts must be a list with one string per prompt ({len(prompts)}), "
                                 f"got {negative_prompts!r}")
        return prompts, negative_prompts

    def prepare_latents(self, batch: int, height: int, width: int, generator: torch.Generator | None = None,
                        latents: torch.Tensor | None = None) -> torch.Tensor:
        """Initial noise (B, C, H/f, W/f) drawn as the pipelines draw it (``randn_tensor`` in the model dtype),
        times the scheduler's ``init_noise_sigma``."""
        from diffusers.utils.torch_utils import randn_tensor

        shape = (batch, self.latent_channels, height // self.vae_scale_factor, width // self.vae_scale_factor)
        if latents is None:
            latents = randn_tensor(shape, generator=generator, device=self.device, dtype=self.dtype)
        elif tuple(latents.shape) != shape:
            raise InputError(f"latents must have shape {shape} for {batch} prompt(s) at {height}x{width}, got "
                             f"{tuple(latents.shape)}")
        else:
            latents = latents.to(self.device, self.dtype)
        return latents * getattr(self.scheduler, "init_noise_sigma", 1.0)

    # Copied from diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion.StableDiffusionPipeline.prepare_extra_step_kwargs
    def prepare_extra_step_kwargs(self, generator, eta):
        # prepare extra kwargs for the scheduler step, since not all schedulers have the same signature
        # eta (η) is only used with the DDIMScheduler, it will be ignored for other schedulers.
        # eta corresponds to η in DDIM paper: https://huggingface.co/papers/2010.02502
        # and should be between [0, 1]

        accepts_eta = "eta" in set(inspect.signature(self.scheduler.step).parameters.keys())
        extra_step_kwargs = {}
        if accepts_eta:
            extra_step_kwargs["eta"] = eta

        # check if the scheduler accepts generator
        accepts_generator = "generator" in set(inspect.signature(self.scheduler.step).parameters.keys())
        if accepts_generator:
            extra_step_kwargs["generator"] = generator
        return extra_step_kwargs

    def _generation_timesteps(self, num_inference_steps: int, height: int, width: int) -> torch.Tensor:
        """The scheduler's timesteps for ``generate`` at this image size, set up as the family's pipeline does."""
        self.scheduler.set_timesteps(num_inference_steps, device=self.device)
        return self.scheduler.timesteps

    def _scheduler_step(self, prediction: torch.Tensor, t: torch.Tensor, latents: torch.Tensor,
                        step_kwargs: dict[str, Any], num_inference_steps: int) -> torch.Tensor:
        """One scheduler step of ``generate``; families whose pipeline steps differently override it."""
        return self.scheduler.step(prediction, t, latents, **step_kwargs, return_dict=False)[0]

    @torch.no_grad()
    def generate(self, prompts: Sequence[str], *, num_inference_steps: int, guidance_scale: float, height: int,
                 width: int, generator: torch.Generator | None = None, latents: torch.Tensor | None = None,
                 negative_prompts: Sequence[str] | None = None, progress: bool = False) -> torch.Tensor:
        """Text-to-image with the folder's own scheduler, equal to the family's diffusers pipeline (``eta = 0``).

        Returns (B, 3, H, W) in [-1, 1]. Guidance is on when ``guidance_scale > 1``, as in diffusers.
        """
        from tqdm.auto import tqdm

        prompts, negative_prompts = self.check_inputs(prompts, num_inference_steps, guidance_scale, height, width,
                                                      generator, negative_prompts)
        do_cfg = guidance_scale > 1.0
        cond = self.encode_prompts(prompts)
        if do_cfg:  # the unconditional half first, as the pipelines concatenate it
            uncond = self.encode_prompts(negative_prompts) if negative_prompts else self.null_conditioning(len(prompts))
            cond = Conditioning.cat([uncond, cond])
        # Timesteps before the noise, as the pipelines do: some schedulers' init_noise_sigma depends on them.
        timesteps = self._generation_timesteps(num_inference_steps, height, width)
        latents = self.prepare_latents(len(prompts), height, width, generator, latents)  # (B, C, h, w)
        step_kwargs = self.prepare_extra_step_kwargs(generator, 0.0)
        for t in tqdm(timesteps, desc="generate", disable=not progress, leave=False):
            model_input = torch.cat([latents] * 2) if do_cfg else latents
            if hasattr(self.scheduler, "scale_model_input"):
                model_input = self.scheduler.scale_model_input(model_input, t)
            prediction = self._denoise(model_input, t[None].to(model_input.device).expand(model_input.shape[0]),
                                       cond)
            self.counter.forwards += model_input.shape[0]
            if do_cfg:
                prediction = classifier_free_guidance(*prediction.chunk(2), guidance_scale)
            latents = self._scheduler_step(prediction, t, latents, step_kwargs, num_inference_steps)
        image = self.decode_latents(latents)
        self.pipeline.maybe_free_model_hooks()
        return image


class NoisePredictionDiffusersEncoder(DiffusersEncoder, NoisePredictionEncoder):
    """A diffusers DDPM-style pipeline (PixArt, Stable Diffusion): the scheduler's ``alphas_cumprod`` and
    ``prediction_type`` (eps or v) define the noise path; ``_denoise`` returns the native prediction."""

    def __init__(self, pipeline: Any, *, model_id: str | None = None) -> None:
        super().__init__(pipeline, model_id=model_id)
        if not hasattr(self.scheduler, "alphas_cumprod"):
            raise InputError(f"scheduler {type(self.scheduler).__name__} has no DDPM noise schedule (alphas_cumprod); "
                             f"use the scheduler the {self.family} checkpoint ships with, or DDIMScheduler")
        self._set_noise_schedule(self.scheduler.alphas_cumprod, self.scheduler.config.get("prediction_type", "epsilon"))


class FlowMatchingDiffusersEncoder(DiffusersEncoder, FlowMatchingEncoder):
    """A diffusers rectified-flow pipeline (SD3, Flux) with ``FlowMatchEulerDiscreteScheduler``.

    The denoiser sees ``timestep = T t`` (T = ``num_train_timesteps``) and predicts the velocity. Inversion and
    sampling grids are the scheduler's shift of a uniform grid, ``s u / (1 + (s - 1) u)``: SD3's static shift, or
    ``exp(mu)`` with ``mu`` from the image sequence length when the scheduler shifts dynamically (Flux).
    """

    def _predict_velocity(self, z_t: torch.Tensor, t: torch.Tensor, cond: Conditioning) -> torch.Tensor:
        return self._denoise(z_t, t * self.scheduler.config.num_train_timesteps, cond)

    def timesteps(self, num_steps: int, t_start: float = 1.0, *, latents: torch.Tensor | None = None) -> torch.Tensor:
        """``num_steps + 1`` sigmas from ``t_start`` to 0: a uniform grid pushed through the scheduler's shift.

        The uniform grid starts at the preimage of ``t_start``, so a partial inversion uses the same spacing as a
        full one; at ``t_start = 1`` the grid equals the pipeline's sigmas.
        """
        if not _is_positive_int(num_steps):
            raise InputError(f"num_steps must be a positive integer, got {num_steps!r}")
        if not 0.0 < float(t_start) <= 1.0:
            raise InputError(f"t_start={t_start!r} must lie in (0, 1] (1 = pure noise)")
        shift = self._flow_shift(latents)
        u_start = t_start / (shift - (shift - 1.0) * t_start)  # inverse of the shift map
        u = torch.linspace(u_start, 0.0, num_steps + 1, dtype=torch.float64)
        sigmas = shift * u / (1.0 + (shift - 1.0) * u)
        sigmas[0] = t_start
        return sigmas.float()

    def _image_seq_len(self, latents: torch.Tensor | None) -> int:
        """Image tokens of ``latents`` (unpacked (B, C, h, w) or packed (B, N, D)); the default size when None."""
        if latents is not None and latents.ndim == 3:
            return latents.shape[1]
        if latents is None:
            h, w = (side // self.vae_scale_factor for side in self.default_image_size)
        else:
            h, w = latents.shape[-2:]
        return (h // self.patch_size) * (w // self.patch_size)

    def _mu(self, image_seq_len: int) -> float | None:
        """The pipeline's ``mu`` for a scheduler with dynamic (resolution-dependent) shifting, else None."""
        from diffusers.pipelines.flux.pipeline_flux import calculate_shift

        config = self.scheduler.config
        if not config.get("use_dynamic_shifting", False):
            return None
        return calculate_shift(image_seq_len, config.get("base_image_seq_len", 256),
                               config.get("max_image_seq_len", 4096), config.get("base_shift", 0.5),
                               config.get("max_shift", 1.15))

    def _flow_shift(self, latents: torch.Tensor | None) -> float:
        """The scheduler's shift as one number: static and dynamic shifts are both ``s u / (1 + (s - 1) u)``."""
        mu = self._mu(self._image_seq_len(latents))
        if mu is None:
            return float(self.scheduler.config.shift)
        return math.exp(mu) if self.scheduler.config.get("time_shift_type", "exponential") == "exponential" else mu


def check_number(value: Any, name: str) -> float:
    """``value`` as a float, or an InputError naming ``name`` unless it is a finite number."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise InputError(f"{name} must be a finite number, got {value!r}")
    return float(value)


def check_positive_int(value: Any, name: str, what: str) -> None:
    """An InputError naming ``name`` unless ``value`` is a positive integer (``what`` says what it counts)."""
    if not _is_positive_int(value):
        raise InputError(f"{name} must be a positive integer ({what}), got {value!r}")


def _is_positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _check_dtype(dtype: Any, family: str) -> None:
    if dtype not in DTYPES:
        raise InputError(f"dtype={dtype!r} is not supported by the {family} backend; use one of "
                         f"{[str(d) for d in DTYPES]} (float16/bfloat16 on a GPU, float32 on CPU)")


def _as_device(device: str | torch.device) -> torch.device:
    try:
        return torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise InputError(f"device={device!r} is not a torch device; use 'cpu', 'cuda' or 'cuda:N'") from exc
