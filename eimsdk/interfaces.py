"""The three interfaces that carry the method (Encoder, DirectionFinder, Manipulator) plus edit metrics and readers.

Finders, manipulators and metrics talk only to :class:`Encoder`, so they run unchanged on every model family.

**Common parametrisation.** Every family exposes a continuous noise level ``t`` in [0, 1] (0 = clean), the
noise path ``z_t = a(t) z0 + s(t) eps`` (:meth:`Encoder.alpha_sigma`) and a noise prediction
``eps_hat(z_t, t, c)`` (:meth:`Encoder.predict_eps`), whatever the family predicts natively. For
flow-matching families (SD3, Flux) ``t`` is the flow sigma, ``a = 1 - t``, ``s = t`` and
``eps_hat = z_t + (1 - t) v`` (:class:`FlowMatchingEncoder`); for DDPM families (PixArt, Stable Diffusion) ``t``
is the training timestep / 1000 and ``a = sqrt(alpha_bar)``, ``s = sqrt(1 - alpha_bar)``
(:class:`NoisePredictionEncoder`). Deterministic inversion and sampling are DDIM steps in this parametrisation
(exactly the Euler step of the flow ODE for flow families), written once here.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Sequence

import torch

from eimsdk.errors import InputError, NumericalError
from eimsdk.records import Conditioning, Direction, JointLatent

if TYPE_CHECKING:
    from pydantic import BaseModel

    from eimsdk.bench.manifest import ManifestItem


@dataclass
class EvalCounter:
    """Counts per-sample model evaluations. JVPs and VJPs convert to forward-equivalents by measured factors."""

    forwards: int = 0
    jvps: int = 0
    vjps: int = 0
    jvp_cost: float = 2.0  # forward-equivalents per JVP; measured by benchmarks/autodiff_cost.py
    vjp_cost: float = 2.0  # forward-equivalents per VJP (forward + backward)

    def snapshot(self) -> tuple[int, int, int]:
        return (self.forwards, self.jvps, self.vjps)

    def since(self, snap: tuple[int, int, int]) -> dict[str, float]:
        f, j, v = (a - b for a, b in zip(self.snapshot(), snap))
        return {"forwards": f, "jvps": j, "vjps": v, "model_evals": f + self.jvp_cost * j + self.vjp_cost * v}


class Encoder(ABC):
    """A model family's access to its joint latent space: image <-> z0, prompt -> c, noise path, prediction.

    Subclasses implement the abstract methods; everything model-agnostic (CFG, inversion, sampling, encoding
    a joint latent) lives here.
    """

    family: ClassVar[str] = ""
    #: diffusers pipeline class names (``model_index.json`` ``_class_name``) this backend loads.
    pipeline_classes: ClassVar[tuple[str, ...]] = ()

    model_id: str = ""
    device: torch.device = torch.device("cpu")
    dtype: torch.dtype = torch.float32

    def __init__(self) -> None:
        self.counter = EvalCounter()

    # ------------------------------------------------------------------------------------- loading
    @classmethod
    @abstractmethod
    def from_pretrained(cls, path: str, *, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
                        **kwargs: Any) -> "Encoder":
        """Load from a diffusers folder or hub id (``from_pretrained`` of the family's pipeline)."""

    # ------------------------------------------------------------------------------------- geometry
    @property
    @abstractmethod
    def image_multiple(self) -> int:
        """Image height and width must be multiples of this (VAE factor x patch size, x2 for Flux packing)."""

    @property
    @abstractmethod
    def default_image_size(self) -> tuple[int, int]:
        """(H, W) the model was trained at."""

    @property
    @abstractmethod
    def max_prompt_tokens(self) -> int:
        """Token limit of the longest text encoder; longer prompts are truncated with a warning."""

    # ------------------------------------------------------------------------------------- encode
    @abstractmethod
    def encode_images(self, pixels: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [-1, 1] -> clean latents z0 in the family's latent format (scaled, shifted, packed)."""

    @abstractmethod
    def decode_latents(self, z0: torch.Tensor) -> torch.Tensor:
        """Latents z0 -> (B, 3, H, W) images in [-1, 1]."""

    @abstractmethod
    def encode_prompts(self, prompts: Sequence[str]) -> Conditioning:
        """Prompts -> every embedding the family uses, batch-first (see :class:`Conditioning`)."""

    # ------------------------------------------------------------------------------------- noise path
    @abstractmethod
    def alpha_sigma(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Noise-path coefficients ``(a(t), s(t))`` for noise levels ``t`` (B,) in [0, 1]; ``a(0)=1, s(0)=0``."""

    @abstractmethod
    def timesteps(self, num_steps: int, t_start: float = 1.0, *, latents: torch.Tensor | None = None) -> torch.Tensor:
        """Descending grid of ``num_steps + 1`` noise levels from ``t_start`` to 0 used by :meth:`invert`/:meth:`sample`.

        Flow families apply their timestep shift here (resolution-dependent for Flux, hence ``latents``).
        """

    @abstractmethod
    def _predict_eps(self, z_t: torch.Tensor, t: torch.Tensor, cond: Conditioning) -> torch.Tensor:
        """One batched, differentiable model evaluation returning ``eps_hat``; no guidance, no counting."""

    # ------------------------------------------------------------------------------------- generation parity
    @abstractmethod
    def prepare_latents(self, batch: int, height: int, width: int, generator: torch.Generator | None = None,
                        latents: torch.Tensor | None = None) -> torch.Tensor:
        """Initial noise in the diffusers pipeline's own latent format, drawn exactly as the pipeline does."""

    @abstractmethod
    def generate(self, prompts: Sequence[str], *, num_inference_steps: int, guidance_scale: float, height: int,
                 width: int, generator: torch.Generator | None = None, latents: torch.Tensor | None = None,
                 negative_prompts: Sequence[str] | None = None, progress: bool = False) -> torch.Tensor:
        """Text-to-image with the pipeline's own scheduler; returns (B, 3, H, W) in [-1, 1]."""

    # ------------------------------------------------------------------------------------- generic
    def signature(self) -> dict[str, Any]:
        """What a Direction must match to apply to this model."""
        cond = self.encode_prompts([""])
        return {"family": self.family, "latent_channels": self.latent_channels,
                "cond_shapes": {k: v[-1:] for k, v in cond.shapes().items()}}

    @property
    @abstractmethod
    def latent_channels(self) -> int:
        """Channels of the VAE latent (before any packing)."""

    def null_conditioning(self, batch: int = 1) -> Conditioning:
        """Conditioning of the empty prompt, for classifier-free guidance."""
        if getattr(self, "_null", None) is None:
            self._null = self.encode_prompts([""]).detach()
        return self._null.expand_to(batch)

    def predict_eps(self, z_t: torch.Tensor, t: torch.Tensor | float, cond: Conditioning, *,
                    guidance_scale: float = 1.0, uncond: Conditioning | None = None) -> torch.Tensor:
        """``eps_hat(z_t, t, c)``, with classifier-free guidance when ``guidance_scale != 1``; counted."""
        return self._guided(self._predict_eps, z_t, t, cond, guidance_scale, uncond)

    def raw_eps(self, z_t: torch.Tensor, t: torch.Tensor | float, cond: Conditioning, *,
                guidance_scale: float = 1.0, uncond: Conditioning | None = None) -> torch.Tensor:
        """:meth:`predict_eps` without counting, for callers that count evaluations themselves (``eimsdk.autodiff``)."""
        return self._guided(self._predict_eps, z_t, t, cond, guidance_scale, uncond, count=False)

    def _guided(self, predict: Any, z_t: torch.Tensor, t: torch.Tensor | float, cond: Conditioning,
                guidance_scale: float, uncond: Conditioning | None, *, count: bool = True) -> torch.Tensor:
        """``predict(z_t, t, cond)`` (counted unless ``count=False``), with guidance batched as one call over
        (uncond, cond) when asked."""
        b = z_t.shape[0]
        t = self._as_t(t, b, z_t)
        cond = cond.expand_to(b)
        if guidance_scale == 1.0:
            self.counter.forwards += b if count else 0
            return predict(z_t, t, cond)
        uncond = (uncond if uncond is not None else self.null_conditioning(b)).expand_to(b)
        self.counter.forwards += 2 * b if count else 0
        both = predict(torch.cat([z_t, z_t]), torch.cat([t, t]), Conditioning.cat([uncond, cond]))
        return classifier_free_guidance(*both.chunk(2), guidance_scale)

    def predict_x0(self, z_t: torch.Tensor, t: torch.Tensor | float, cond: Conditioning, **kw: Any) -> torch.Tensor:
        t = self._as_t(t, z_t.shape[0], z_t)
        a, s = self._coef(t, z_t)
        return (z_t - s * self.predict_eps(z_t, t, cond, **kw)) / a

    def add_noise(self, z0: torch.Tensor, eps: torch.Tensor, t: torch.Tensor | float) -> torch.Tensor:
        t = self._as_t(t, z0.shape[0], z0)
        a, s = self._coef(t, z0)
        return a * z0 + s * eps

    def _as_t(self, t: torch.Tensor | float, batch: int, ref: torch.Tensor) -> torch.Tensor:
        t = torch.as_tensor(t, dtype=torch.float32, device=ref.device)
        return t.expand(batch).clone() if t.ndim == 0 else t

    def _coef(self, t: torch.Tensor, ref: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        a, s = self.alpha_sigma(t)
        shape = (-1,) + (1,) * (ref.ndim - 1)
        return a.reshape(shape).to(ref.dtype), s.reshape(shape).to(ref.dtype)

    def _ddim_step(self, z: torch.Tensor, t: float, t_next: float, cond: Conditioning, *,
                   predict_at: tuple[torch.Tensor, float] | None = None, **kw: Any) -> torch.Tensor:
        """One DDIM step of ``z`` from noise level ``t`` to ``t_next``, with the model's prediction taken at ``z``
        and ``t`` or, given ``predict_at=(w, t_w)``, at ``w`` and ``t_w`` (the implicit step that exact inversion
        solves)."""
        b = z.shape[0]
        tt = self._as_t(t, b, z)
        w, t_w = predict_at if predict_at is not None else (z, t)
        eps = self.predict_eps(w, self._as_t(t_w, b, z), cond, **kw)
        a, s = self._coef(tt, z)
        x0 = (z - s * eps) / a
        a2, s2 = self._coef(self._as_t(t_next, b, z), z)
        return a2 * x0 + s2 * eps

    @torch.no_grad()
    def invert(self, z0: torch.Tensor, cond: Conditioning, t_end: float, num_steps: int, *,
               guidance_scale: float = 1.0, uncond: Conditioning | None = None, progress: bool = False,
               fixed_point_iterations: int = 0) -> torch.Tensor:
        """Deterministic DDIM/ODE inversion of clean latents ``z0`` up to noise level ``t_end``.

        Each step predicts at the latent it starts from, where :meth:`sample` will predict at the latent the step
        ends on; the mismatch is what a round trip loses (most on the first step, whose prediction sees a clean
        image). ``fixed_point_iterations=K`` refines each step K times with the prediction taken at its current
        end point, which converges to the latent that one sampling step maps back onto the start: a closer round
        trip for ``K + 1`` model evaluations per step instead of one.
        """
        if isinstance(fixed_point_iterations, bool) or not isinstance(fixed_point_iterations, int) \
                or not 0 <= fixed_point_iterations <= 100:
            raise InputError(f"fixed_point_iterations must be an integer from 0 to 100, got {fixed_point_iterations!r}")
        grid = self.timesteps(num_steps, t_end, latents=z0).flip(0).tolist()  # ascending 0 -> t_end
        z = z0
        for t, t_next in _progress(list(zip(grid[:-1], grid[1:])), progress, "invert"):
            z_next = self._ddim_step(z, t, t_next, cond, guidance_scale=guidance_scale, uncond=uncond)
            for _ in range(fixed_point_iterations):
                z_next = self._ddim_step(z, t, t_next, cond, predict_at=(z_next, t_next),
                                         guidance_scale=guidance_scale, uncond=uncond)
            z = z_next
        return z

    @torch.no_grad()
    def sample(self, z_t: torch.Tensor, cond: Conditioning, t_start: float, num_steps: int, *,
               guidance_scale: float = 1.0, uncond: Conditioning | None = None, progress: bool = False) -> torch.Tensor:
        """Deterministic DDIM/ODE sampling from noise level ``t_start`` down to clean latents."""
        grid = self.timesteps(num_steps, t_start, latents=z_t).tolist()
        z = z_t
        for t, t_next in _progress(list(zip(grid[:-1], grid[1:])), progress, "sample"):
            z = self._ddim_step(z, t, t_next, cond, guidance_scale=guidance_scale, uncond=uncond)
        if not torch.isfinite(z).all():
            raise NumericalError("sampling produced NaN/Inf latents; lower the edit strength or use float32")
        return z

    def encode(self, images: Any, prompts: str | Sequence[str], *, size: tuple[int, int] | None = None) -> JointLatent:
        """Encode images (paths, PIL, arrays or tensors) and their prompts into a :class:`JointLatent`."""
        from eimsdk.images import check_prompts, to_model_tensor

        pixels, original = to_model_tensor(images, multiple=self.image_multiple, size=size,
                                           default_size=self.default_image_size)
        prompts = check_prompts(prompts, pixels.shape[0], self, name="prompt")
        with torch.no_grad():
            z0 = self.encode_images(pixels.to(self.device, self.dtype))
            cond = self.encode_prompts(prompts)
        return JointLatent(z0=z0, cond=cond, prompts=list(prompts), image_size=tuple(pixels.shape[-2:]),
                           original_sizes=original)


class FlowMatchingEncoder(Encoder):
    """Base for rectified-flow families (SD3, Flux): ``z_t = (1 - t) z0 + t eps`` and a velocity ``v = eps - z0``.

    Subclasses implement :meth:`_predict_velocity` (one batched transformer call); this class turns it into the
    common ``eps_hat = z_t + (1 - t) v`` and steps the ODE with Euler, ``z + (t_next - t) v``: the base class's DDIM
    step written without dividing by ``a(t) = 1 - t``, which is 0 at t = 1 (full inversion, sampling from noise).
    """

    def alpha_sigma(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Rectified flow: ``a = 1 - t``, ``s = t`` (exactly (1, 0) at t = 0)."""
        t = torch.as_tensor(t, dtype=torch.float32)
        return 1.0 - t, t.clone()

    @abstractmethod
    def _predict_velocity(self, z_t: torch.Tensor, t: torch.Tensor, cond: Conditioning) -> torch.Tensor:
        """One batched, differentiable transformer call returning the velocity ``v``; no guidance, no counting."""

    def _predict_eps(self, z_t: torch.Tensor, t: torch.Tensor, cond: Conditioning) -> torch.Tensor:
        """``eps_hat = z_t + (1 - t) v``, computed in at least float32, returned in ``z_t``'s dtype."""
        work = torch.promote_types(z_t.dtype, torch.float32)
        v = self._predict_velocity(z_t, t, cond)
        one_minus_t = (1.0 - t.to(work)).reshape(-1, *([1] * (z_t.ndim - 1)))
        return (z_t.to(work) + one_minus_t * v.to(work)).to(z_t.dtype)

    def predict_velocity(self, z_t: torch.Tensor, t: torch.Tensor | float, cond: Conditioning, *,
                         guidance_scale: float = 1.0, uncond: Conditioning | None = None) -> torch.Tensor:
        """The flow velocity ``v``, with classifier-free guidance when ``guidance_scale != 1``; counted.

        Equal to ``(eps_hat - z_t) / (1 - t)`` but defined at t = 1 too, where ``eps_hat = z_t`` carries no
        information. Guidance is linear, so guiding ``v`` equals guiding ``eps_hat``.
        """
        return self._guided(self._predict_velocity, z_t, t, cond, guidance_scale, uncond)

    def _ddim_step(self, z: torch.Tensor, t: float, t_next: float, cond: Conditioning, *,
                   predict_at: tuple[torch.Tensor, float] | None = None, **kw: Any) -> torch.Tensor:
        """Euler step of the flow ODE, ``z + (t_next - t) v``, in at least float32 (``v`` at ``predict_at`` when
        given, as in the base class)."""
        work = torch.promote_types(z.dtype, torch.float32)
        w, t_w = predict_at if predict_at is not None else (z, t)
        v = self.predict_velocity(w, t_w, cond, **kw)
        return (z.to(work) + (t_next - t) * v.to(work)).to(z.dtype)


class NoisePredictionEncoder(Encoder):
    """Base for DDPM-style families (PixArt, Stable Diffusion 1.x/2.x) predicting eps or v on a discrete schedule.

    ``t = n / T`` where ``n`` in [0, T] counts DDPM steps as in the DDPM paper (``n = 0`` is the clean image,
    ``T = num_train_timesteps``). The model receives diffusers' 0-based timestep ``n - 1`` (clamped at 0) and
    ``alpha_bar(t) = alphas_cumprod[n - 1]``, so ``t = 1`` is the noisiest training timestep and ``alpha_bar(0) = 1``
    exactly. Between integers ``log alpha_bar`` is interpolated linearly (a constant beta within each step).
    Subclasses call :meth:`_set_noise_schedule` in ``__init__`` and implement :meth:`_denoise`.
    """

    PREDICTION_TYPES: ClassVar[tuple[str, ...]] = ("epsilon", "v_prediction")

    def _set_noise_schedule(self, alphas_cumprod: torch.Tensor, prediction_type: str) -> None:
        """Keep ``log alpha_bar`` at n = 0..T in float64 and what the model predicts (eps or v)."""
        if prediction_type not in self.PREDICTION_TYPES:
            raise InputError(f"scheduler prediction_type={prediction_type!r}: the {self.family} backend supports "
                             f"{list(self.PREDICTION_TYPES)}")
        self.prediction_type = prediction_type
        self.num_train_timesteps = len(alphas_cumprod)
        log_alpha_bar = alphas_cumprod.to(torch.float64).clamp_min(1e-30).log()
        self._log_alpha_bar = torch.cat([torch.zeros(1, dtype=torch.float64), log_alpha_bar])

    @abstractmethod
    def _denoise(self, latents: torch.Tensor, timestep: torch.Tensor, cond: Conditioning) -> torch.Tensor:
        """One batched model call at diffusers timesteps (B,) returning the native prediction (eps or v)."""

    def alpha_sigma(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(sqrt(alpha_bar(t)), sqrt(1 - alpha_bar(t)))``, computed in float64, returned in at least float32."""
        t = torch.as_tensor(t)
        if t.numel() and (float(t.min()) < 0 or float(t.max()) > 1):
            raise InputError(f"t must lie in [0, 1] (0 = clean), got values in [{float(t.min())}, {float(t.max())}]")
        n = t.to(torch.float64) * self.num_train_timesteps
        lo = n.floor().clamp(max=self.num_train_timesteps - 1)
        table = self._log_alpha_bar.to(t.device)
        log_ab = torch.lerp(table[lo.long()], table[lo.long() + 1], n - lo)
        out_dtype = torch.promote_types(t.dtype, torch.float32) if t.is_floating_point() else torch.float32
        a = (0.5 * log_ab).exp()
        s = torch.expm1(log_ab).abs().sqrt()  # 1 - alpha_bar without cancellation; abs() keeps s(0) = +0.0
        return a.to(out_dtype), s.to(out_dtype)

    def timesteps(self, num_steps: int, t_start: float = 1.0, *, latents: torch.Tensor | None = None) -> torch.Tensor:
        """Uniform grid from ``t_start`` to 0 (at ``t_start = 1`` the model timesteps of DDIM 'trailing' spacing)."""
        return uniform_timesteps(num_steps, t_start)

    def _model_timestep(self, t: torch.Tensor) -> torch.Tensor:
        """Continuous t -> diffusers' 0-based model timestep ``t * T - 1`` (clamped at 0)."""
        return (t.to(torch.float64) * self.num_train_timesteps - 1).clamp_min(0).to(torch.float32)

    def _predict_eps(self, z_t: torch.Tensor, t: torch.Tensor, cond: Conditioning) -> torch.Tensor:
        """eps_hat for z_t at noise levels t (B,), converted from v for v-prediction models; differentiable."""
        out = self._denoise(z_t, self._model_timestep(t.to(z_t.device)), cond)
        if self.prediction_type == "v_prediction":  # v = a eps - s x0 and z = a x0 + s eps  =>  eps = a v + s z
            shape = (-1,) + (1,) * (z_t.ndim - 1)
            a, s = (c.to(z_t.device, torch.promote_types(z_t.dtype, torch.float32)).reshape(shape)
                    for c in self.alpha_sigma(t.to(z_t.device)))
            return (a * out + s * z_t).to(z_t.dtype)
        return out.to(z_t.dtype)

    def _ddim_step(self, z: torch.Tensor, t: float, t_next: float, cond: Conditioning, *,
                   predict_at: tuple[torch.Tensor, float] | None = None, **kw: Any) -> torch.Tensor:
        """The base DDIM step with its latent arithmetic in at least float32 (x0 = (z - s eps) / a loses digits
        in half precision where a is small); eps at ``predict_at`` when given, as in the base class."""
        b = z.shape[0]
        work = torch.promote_types(z.dtype, torch.float32)
        tt = self._as_t(t, b, z)
        w, t_w = predict_at if predict_at is not None else (z, t)
        eps = self.predict_eps(w, self._as_t(t_w, b, z), cond, **kw).to(work)
        shape = (-1,) + (1,) * (z.ndim - 1)
        a, s = (c.to(z.device, work).reshape(shape) for c in self.alpha_sigma(tt))
        a2, s2 = (c.to(z.device, work).reshape(shape) for c in self.alpha_sigma(self._as_t(t_next, b, z)))
        x0 = (z.to(work) - s * eps) / a
        return (a2 * x0 + s2 * eps).to(z.dtype)


def uniform_timesteps(num_steps: int, t_start: float = 1.0) -> torch.Tensor:
    """``num_steps + 1`` evenly spaced noise levels from ``t_start`` down to 0 (float32), arguments checked."""
    if isinstance(num_steps, bool) or not isinstance(num_steps, int) or num_steps < 1:
        raise InputError(f"num_steps must be a positive integer, got {num_steps!r}")
    if not 0.0 < float(t_start) <= 1.0:
        raise InputError(f"t_start must lie in (0, 1], got {t_start!r}")
    return torch.linspace(float(t_start), 0.0, num_steps + 1, dtype=torch.float64).to(torch.float32)


def classifier_free_guidance(uncond: torch.Tensor, cond: torch.Tensor, scale: float) -> torch.Tensor:
    """``uncond + scale * (cond - uncond)``: the guided prediction (eps, velocity or any linear parametrisation)."""
    return uncond + scale * (cond - uncond)


def _progress(items: list, enabled: bool, desc: str):
    if not enabled:
        return items
    from tqdm.auto import tqdm

    return tqdm(items, desc=desc, leave=False)


class _Configured(ABC):
    """A named component with a pydantic ``Config``; ``__init__`` validates keyword overrides against it."""

    name: ClassVar[str] = ""
    #: pydantic config class with bounded fields.
    Config: ClassVar[type["BaseModel"]]

    def __init__(self, config: "BaseModel | None" = None, **overrides: Any) -> None:
        base = config if config is not None else self.Config()
        self.config = self.Config.model_validate({**base.model_dump(), **overrides})


class DirectionFinder(_Configured):
    """Identifies an editing direction ``d = (dz, dc)`` from prompts, through the Encoder interface only."""

    @abstractmethod
    def find(self, encoder: Encoder, latent: JointLatent, target_prompts: Sequence[str], *,
             source_prompts: Sequence[str] | None = None, preserve_prompts: Sequence[str] = (),
             seed: int = 0) -> Direction:
        """Return a direction that turns ``latent``'s prompts into ``target_prompts``.

        ``source_prompts`` default to ``latent.prompts``; several (source, target) pairs are averaged.
        """


class Manipulator(_Configured):
    """Applies directions with strengths to a joint latent and returns edited clean latents."""

    @abstractmethod
    def apply(self, encoder: Encoder, latent: JointLatent, edits: Sequence[tuple[Direction, float]]) -> torch.Tensor:
        """Edited clean latents (B, ...) for ``latent`` moved by ``sum(strength * direction)``."""


class EditMetric(ABC):
    """A per-edit measurement: a source image and its edit -> named scores (columns of a benchmark report)."""

    name: ClassVar[str] = ""

    @abstractmethod
    def __call__(self, source: torch.Tensor, edited: torch.Tensor, *, item: "ManifestItem") -> dict[str, float | None]:
        """Scores of ``edited`` against ``source`` (both (3, H, W) in [-1, 1]); ``item`` has prompts and region."""


class AttributeReader(ABC):
    """Reads named attributes from images: a score or class per attribute, for metrics and benchmarks."""

    name: ClassVar[str] = ""
    #: attribute name -> list of class values (categorical) or None (a continuous score).
    attributes: ClassVar[dict[str, list[str] | None]] = {}

    @abstractmethod
    def read(self, images: Sequence[Any]) -> list[dict[str, Any]]:
        """One dict per image: attribute -> value (class name or float)."""

    def check(self, attribute: str) -> None:
        if attribute not in self.attributes:
            raise InputError(f"attribute={attribute!r} is not read by reader {self.name!r}; it reads "
                             f"{sorted(self.attributes)}")
