"""Hessian Score Distillation Sampling (HSDS): the image part ``dz`` of an editing direction, by Gauss-Newton.

Our formulation (docs/method.md; derived from the abstract of arXiv 2411.08196 and score distillation, not from
the paper's equations). With ``f`` the noise prediction (guided when asked), samples ``t_k`` (stratified uniform
in ``[t_min, t_max]``) and ``eps_k`` shared by every branch, ``z_k = a_k z0 + s_k eps_k`` and weights
``w_k = w(t_k) / N`` over the ``N`` samples::

    L(dz) = sum_k w_k ||f(z_k + a_k dz, c + dc) - f(z_k, c)||^2 + lam S ||dz||^2
            + mu sum_p sum_k w_k ||f(z_k + a_k dz, c_p) - f(z_k, c_p)||^2,      S = sum_k w_k a_k^2

(the damping is ``lam`` relative to ``S``, the curvature scale of ``J = I``, so that ``lam`` means the same under
every weighting and noise schedule). Each Gauss-Newton step linearises ``f`` at the current ``dz`` (residuals ``r``,
Jacobians ``J = df/dz_t``) and solves

    (sum_rows w a^2 J^T J + lam S I) step = -(sum_rows w a J^T r + lam S dz)

by conjugate gradients; a "row" is one (sample, prompt) pair, the preserve prompts' rows weighted by ``mu``. One CG
iteration is one batched JVP and one batched VJP over all rows (``eimsdk.autodiff.Linearization``); no matrix is
ever formed. ``curvature="identity"`` replaces ``J`` by ``I``: at ``dz = 0`` the step is the DDS direction divided by
``1 + lam``. A huge ``lam`` gives ``-grad L(0) / (2 lam S)``, the scaled gradient.
"""

from __future__ import annotations

import difflib
from abc import abstractmethod
from dataclasses import dataclass
from typing import Any, Literal, Sequence

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator

from eimsdk.autodiff import Linearization
from eimsdk.cost import CostMeter
from eimsdk.errors import InputError, NumericalError
from eimsdk.interfaces import DirectionFinder, Encoder
from eimsdk.memory import plan_derivatives
from eimsdk.methods.cg import conjugate_gradient
from eimsdk.methods.text import text_direction
from eimsdk.records import Conditioning, Direction, JointLatent


class SamplingConfig(BaseModel):
    """How score-distillation finders (HSDS, SDS, DDS) sample and weight timesteps; shared so comparisons are fair."""

    model_config = ConfigDict(extra="forbid")

    num_timesteps: int = Field(4, ge=1, le=256, description="K: noise samples per image, batched in one model call")
    t_min: float = Field(0.2, ge=0.001, lt=1.0, description="lowest noise level sampled")
    t_max: float = Field(0.8, gt=0.0, le=1.0, description="highest noise level sampled")
    weighting: Literal["uniform", "sigma2", "x0"] = Field(
        "uniform", description="w(t): 1, s(t)^2 (DreamFusion), or s(t)^2 / a(t)^2 (residuals measured in x0 space)")
    guidance_scale: float = Field(1.0, ge=0.0, le=30.0, description="classifier-free guidance of the predictions f")
    max_batch: int | None = Field(None, ge=1, description="rows per model call (None: all rows in one call)")
    seed: int | None = Field(None, ge=0, description="seed of t_k and eps_k; None uses find()'s seed argument")
    antithetic: bool = Field(False, description="draw noise in pairs (eps, -eps) at one t; num_timesteps must be even")

    @model_validator(mode="after")
    def _range(self) -> "SamplingConfig":
        if self.t_min >= self.t_max:
            raise ValueError(f"t_min ({self.t_min}) must be below t_max ({self.t_max})")
        if self.antithetic and self.num_timesteps % 2:
            raise ValueError(f"antithetic noise comes in pairs: num_timesteps ({self.num_timesteps}) must be even")
        return self


class HSDSConfig(SamplingConfig):
    """HSDS settings. Defaults meet the cost targets on every tiny backend (docs/method.md has the measurements).

    HSDS samples higher noise levels than the other score-distillation finders: at low noise the Jacobian of an
    eps-prediction is nearly singular along the image content (the model explains it as signal), so the
    Gauss-Newton system there barely moves ``dz``. On the toy benchmark (200 tasks) ``[0.5, 0.9]`` raised precise
    edits from 0.39 to 0.69 (PixArt) and from 0.49 to 0.80 (SD3) against ``[0.2, 0.8]`` (docs/benchmark.md).
    """

    t_min: float = Field(0.5, ge=0.001, lt=1.0, description="lowest noise level sampled")
    t_max: float = Field(0.9, gt=0.0, le=1.0, description="highest noise level sampled")

    lam: float = Field(0.01, ge=0.0, le=1e12,
                       description="damping of dz relative to S = sum w a^2 (huge: a gradient step)")
    mu: float = Field(1.0, ge=0.0, le=1e6, description="weight of the preserve prompts' terms")
    gn_steps: int = Field(1, ge=1, le=20, description="Gauss-Newton steps (the first starts at dz = 0)")
    cg_iters: int = Field(4, ge=1, le=500, description="conjugate-gradient iterations per Gauss-Newton step")
    cg_tol: float = Field(1e-3, ge=0.0, le=1.0, description="CG stops when ||residual|| <= cg_tol ||rhs||")
    curvature: Literal["gauss-newton", "identity"] = Field(
        "gauss-newton", description="J^T J from the model, or the identity (the DDS limit, no JVP/VJP)")
    jvp: Literal["auto", "double-backward", "forward", "finite-difference"] = Field(
        "auto", description="JVP strategy (eimsdk.autodiff); auto: the memory planner's cheapest that fits")
    keep_graph: Literal["auto", True, False] = Field(
        "auto", description="keep each chunk's first-order graph for all VJPs, or rebuild it per VJP")
    checkpointing: Literal["auto", True, False] = Field(
        "auto", description="the transformer's gradient checkpointing in the VJP graphs")
    curvature_samples: int | None = Field(
        None, ge=1, le=256, description="noise samples per image in J^T J (spread over the K; None: all K); the "
        "gradient J^T r always uses all K")
    line_search: bool = Field(False, description="scale each Gauss-Newton step by the best of 1, 1/2, 1/4 on the "
                              "sampled objective L (costs one forward per row and scale)")
    trust_radius: float | None = Field(
        None, gt=0.0, le=1e6, description="cap ||dz|| at this multiple of the DDS direction's norm (None: no cap)")
    locality: float = Field(
        0.0, ge=0.0, le=1e6, description="keep dz where |DDS direction| >= locality x its RMS and shrink it in "
        "proportion elsewhere (0: off); the DDS direction is the model's own residual, no mask is read")


@dataclass
class ScoreSamples:
    """The shared noise samples of one find: N = images x K rows, image-major."""

    t: torch.Tensor  # (N,) noise levels
    eps: torch.Tensor  # (N, ...) noise, shared by every branch
    z_t: torch.Tensor  # (N, ...) a z0 + s eps
    a: torch.Tensor  # (N, 1, ...) broadcastable
    w: torch.Tensor  # (N, 1, ...) w(t) / N
    cond: Conditioning  # (N) the source conditioning of each row's image


def draw_samples(encoder: Encoder, latent: JointLatent, config: SamplingConfig, seed: int) -> ScoreSamples:
    """Stratified ``t_k`` in ``[t_min, t_max]`` and ``eps_k ~ N(0, I)`` per image, from a CPU generator (portable)."""
    z0 = latent.z0
    b, k = z0.shape[0], config.num_timesteps
    draws = k // 2 if config.antithetic else k  # independent (t, eps) draws per image
    g = torch.Generator("cpu").manual_seed(seed)
    u = torch.rand(b, draws, generator=g, dtype=torch.float64)
    t = config.t_min + (config.t_max - config.t_min) * (torch.arange(draws, dtype=torch.float64) + u) / draws
    eps = torch.randn((b * draws, *z0.shape[1:]), generator=g, dtype=torch.float32)  # (B * draws, ...)
    if config.antithetic:  # rows 2j and 2j + 1 of an image: the same t, noise eps and -eps
        t = t.repeat_interleave(2, dim=1)
        eps = torch.stack([eps, -eps], dim=1).flatten(0, 1)
    t = t.flatten().to(torch.float32).to(z0.device)  # (N,)
    eps = eps.to(z0)  # (N, ...)
    rows = torch.arange(b, device=z0.device).repeat_interleave(k)  # (N,) image of each row
    z0_rows = z0[rows]
    work = torch.promote_types(z0.dtype, torch.float32)
    a, s = (x.to(z0.device, work).reshape(-1, *([1] * (z0.ndim - 1))) for x in encoder.alpha_sigma(t))
    z_t = (a * z0_rows.to(work) + s * eps.to(work)).to(z0.dtype)
    if config.weighting == "uniform":
        w = torch.ones_like(a)
    elif config.weighting == "sigma2":
        w = s**2
    else:
        w = s**2 / a.clamp_min(1e-4) ** 2
    return ScoreSamples(t=t, eps=eps, z_t=z_t, a=a, w=w / (b * k), cond=latent.cond.map(lambda x: x[rows]))


def predict(encoder: Encoder, z_t: torch.Tensor, t: torch.Tensor, cond: Conditioning, config: SamplingConfig
            ) -> torch.Tensor:
    """Counted, guided ``f`` without gradient, ``max_batch`` rows per call; returned in at least float32."""
    step = config.max_batch or z_t.shape[0]
    outs = []
    with torch.no_grad():
        for i in range(0, z_t.shape[0], step):
            sl = slice(i, i + step)
            outs.append(encoder.predict_eps(z_t[sl], t[sl], cond[sl], guidance_scale=config.guidance_scale))
    return torch.cat(outs).to(torch.promote_types(z_t.dtype, torch.float32))


class _Linearized:
    """A :class:`Linearization` per chunk of rows, used as one; the JVP strategy, rows per chunk, graph keeping and
    checkpointing are the config's, or the memory planner's where the config leaves them to ``"auto"``/None."""

    def __init__(self, encoder: Encoder, z_t: torch.Tensor, t: torch.Tensor, cond: Conditioning,
                 config: HSDSConfig) -> None:
        self.plan = plan_derivatives(encoder, z_t.shape[0], z_t.shape[1:], guided=config.guidance_scale != 1.0,
                                     jvp=config.jvp, keep_graph=config.keep_graph,
                                     checkpointing=config.checkpointing, max_batch=config.max_batch)
        step = self.plan.max_batch
        self.work = torch.promote_types(z_t.dtype, torch.float32)
        self.dtype = z_t.dtype
        self.parts = [(slice(i, i + step), Linearization(
            encoder, z_t[i : i + step], t[i : i + step], cond[i : i + step], guidance_scale=config.guidance_scale,
            jvp=self.plan.jvp, keep_graph=self.plan.keep_graph, checkpointing=self.plan.checkpointing))
            for i in range(0, z_t.shape[0], step)]
        self.eps = torch.cat([lin.eps for _, lin in self.parts]).to(self.work)

    def jvp(self, v: torch.Tensor) -> torch.Tensor:
        return torch.cat([lin.jvp(v[sl].to(self.dtype)) for sl, lin in self.parts]).to(self.work)

    def vjp(self, u: torch.Tensor) -> torch.Tensor:
        return torch.cat([lin.vjp(u[sl].to(self.dtype)) for sl, lin in self.parts]).to(self.work)


class ScoreFinder(DirectionFinder):
    """What every eimsdk finder shares: input checks, the text direction, cost accounting and metadata.

    Subclasses implement :meth:`image_part` (the ``dz``); ``dc`` is always :func:`text_direction` of the pairs.
    """

    def find(self, encoder: Encoder, latent: JointLatent, target_prompts: Sequence[str], *,
             source_prompts: Sequence[str] | None = None, preserve_prompts: Sequence[str] = (),
             seed: int = 0) -> Direction:
        sources, targets, preserve = self.check_inputs(encoder, latent, target_prompts, source_prompts,
                                                       preserve_prompts, seed)
        used_seed = getattr(self.config, "seed", None)
        used_seed = seed if used_seed is None else used_seed
        with CostMeter(encoder) as meter:
            dc = text_direction(encoder, sources, targets)
            dz, info = self.image_part(encoder, latent, dc, preserve, used_seed)
        if not torch.isfinite(dz).all() or not dc.is_finite():
            raise NumericalError(f"{self.name} produced a non-finite direction ({'dz' if dc.is_finite() else 'dc'}); "
                                 "compute in float32, lower guidance_scale, or raise lam")
        from eimsdk import __version__

        meta = {"name": _pair_name(sources[0], targets[0]), "method": self.name, "family": encoder.family,
                "model_id": encoder.model_id, "signature": encoder.signature(),
                "prompts": {"source": sources, "target": targets, "preserve": preserve},
                "config": self.config.model_dump(), "seed": used_seed, "eimsdk_version": __version__,
                "image_size": list(latent.image_size) if latent.image_size else None, "cost": meter.cost.as_dict(), **info}
        return Direction(dz.to(latent.z0.dtype), dc.to(latent.z0.dtype), meta)

    @abstractmethod
    def image_part(self, encoder: Encoder, latent: JointLatent, dc: Conditioning, preserve: list[str],
                   seed: int) -> tuple[torch.Tensor, dict[str, Any]]:
        """``dz`` (1, ...) and extra metadata (the ``timesteps`` used, when the method samples)."""

    def check_inputs(self, encoder: Encoder, latent: JointLatent, target_prompts: Sequence[str],
                     source_prompts: Sequence[str] | None, preserve_prompts: Sequence[str], seed: int
                     ) -> tuple[list[str], list[str], list[str]]:
        if not isinstance(encoder, Encoder):
            raise InputError(f"encoder must be an eimsdk Encoder, got {type(encoder).__name__}")
        if not isinstance(latent, JointLatent) or latent.z0.ndim < 2 or latent.cond.batch_size != latent.batch_size:
            raise InputError("latent must be a JointLatent from encoder.encode(images, prompts) with one "
                             f"conditioning per image, got {type(latent).__name__}")
        targets = _prompt_list(target_prompts, "target_prompts")
        sources = _prompt_list(latent.prompts if source_prompts is None else source_prompts, "source_prompts")
        if len(sources) != len(targets):
            if len(sources) == 1:
                sources = sources * len(targets)
            elif len(targets) == 1:
                targets = targets * len(sources)
            else:
                raise InputError(f"got {len(sources)} source_prompts and {len(targets)} target_prompts; pass pairs "
                                 "(the same number of each) or a single one of either")
        if sources == targets:
            raise InputError("target_prompts equal source_prompts, so there is nothing to edit; change the words "
                             "for the attribute you want to move (e.g. 'red' -> 'blue')")
        preserve = _prompt_list(preserve_prompts, "preserve_prompts", allow_empty=True)
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise InputError(f"seed must be a non-negative integer, got {seed!r}")
        return sources, targets, preserve


class HSDSFinder(ScoreFinder):
    """HSDS: ``dz`` minimising the joint-space score-matching loss above by matrix-free Gauss-Newton."""

    name = "hsds"
    Config = HSDSConfig

    def image_part(self, encoder: Encoder, latent: JointLatent, dc: Conditioning, preserve: list[str],
                   seed: int) -> tuple[torch.Tensor, dict[str, Any]]:
        cfg: HSDSConfig = self.config
        s = draw_samples(encoder, latent, cfg, seed)
        n, p = s.z_t.shape[0], len(preserve)
        work = s.a.dtype
        base = predict(encoder, s.z_t, s.t, s.cond, cfg)  # (N, ...) f(z_k, c)
        conds = [s.cond + dc]  # the edited conditioning of each row
        if preserve:
            with torch.no_grad():
                kept = encoder.encode_prompts(preserve)
            conds += [kept[i].expand_to(n) for i in range(p)]
        rows_cond = Conditioning.cat(conds)  # (R,) R = N (1 + P)
        rows_t = s.t.repeat(1 + p)
        rows_a = s.a.repeat(1 + p, *([1] * (s.a.ndim - 1)))  # (R, 1, ...)
        rows_w = torch.cat([s.w] + [cfg.mu * s.w] * p)  # (R, 1, ...)
        damping = cfg.lam * sum_weights(s)  # lam S
        curv = _curvature_rows(s.t.shape[0] // latent.z0.shape[0], cfg.curvature_samples, latent.z0.shape[0], 1 + p)
        dz = torch.zeros((1, *s.z_t.shape[1:]), dtype=work, device=s.z_t.device)
        targets, dds, cg_log, scales = None, None, [], []
        for step in range(cfg.gn_steps):
            z_rows = (s.z_t.to(work) + s.a * dz).to(s.z_t.dtype).repeat(1 + p, *([1] * (dz.ndim - 1)))  # (R, ...)
            if cfg.curvature == "identity":
                eps = predict(encoder, z_rows, rows_t, rows_cond, cfg)
            else:
                lin = _Linearized(encoder, z_rows, rows_t, rows_cond, cfg)
                eps = lin.eps
            if targets is None:  # preserve rows are compared with their own prediction at dz = 0
                targets = torch.cat([base, eps[n:]])
            resid = eps - targets  # (R, ...) r: the DDS residual on the edit rows at dz = 0
            if dds is None:
                dds = -(s.w * s.a * resid[:n]).sum(0, keepdim=True) / sum_weights(s)
            if cfg.curvature == "identity":
                grad = (rows_w * rows_a * resid).sum(0, keepdim=True) + damping * dz
                update = -grad / (float((rows_w * rows_a**2).sum()) + damping)
            else:
                grad = lin.vjp(rows_w * rows_a * resid).sum(0, keepdim=True) + damping * dz
                if curv is not None:  # J^T J from a spread subset of the rows, reweighted to estimate the full sum
                    del lin
                    lin = _Linearized(encoder, z_rows[curv], rows_t[curv], rows_cond.map(lambda x: x[curv]), cfg)
                curv_a = rows_a if curv is None else rows_a[curv]
                curv_w = rows_w if curv is None else rows_w[curv] * (rows_w.sum() / rows_w[curv].sum())

                def matvec(v: torch.Tensor) -> torch.Tensor:
                    jv = lin.jvp(curv_a * v)  # (R, ...) J_k (a_k v)
                    return lin.vjp(curv_w * curv_a * jv).sum(0, keepdim=True) + damping * v

                result = conjugate_gradient(matvec, -grad, max_iter=cfg.cg_iters, tol=cfg.cg_tol)
                update = result.x
                cg_log.append({"iterations": result.iterations, "relative_residual": result.relative_residuals[-1]})
                del lin
            if not torch.isfinite(update).all():
                raise NumericalError(f"HSDS Gauss-Newton step {step + 1} is NaN/Inf: raise lam (now {cfg.lam}), "
                                     f"lower guidance_scale (now {cfg.guidance_scale}) or compute in float32")
            if cfg.line_search:
                scale = self._best_scale(encoder, s, dz, update, rows_t, rows_cond, rows_w, targets, damping, p)
                scales.append(scale)
                update = scale * update
            dz = dz + update
        dz = _localize(dz, dds, cfg)
        info = {"timesteps": [round(float(x), 6) for x in s.t], "cg": cg_log}
        return dz, {**info, "line_search": scales} if cfg.line_search else info

    def _best_scale(self, encoder: Encoder, s: ScoreSamples, dz: torch.Tensor, update: torch.Tensor,
                    rows_t: torch.Tensor, rows_cond: Conditioning, rows_w: torch.Tensor, targets: torch.Tensor,
                    damping: float, p: int) -> float:
        """The step scale among 1, 1/2, 1/4 with the lowest sampled objective ``L(dz + scale * update)``."""
        losses = {}
        for scale in (1.0, 0.5, 0.25):
            trial = dz + scale * update
            z_rows = (s.z_t.to(trial.dtype) + s.a * trial).to(s.z_t.dtype).repeat(1 + p, *([1] * (dz.ndim - 1)))
            resid = predict(encoder, z_rows, rows_t, rows_cond, self.config) - targets
            losses[scale] = float((rows_w * resid**2).sum()) + damping * float((trial**2).sum())
        return min(losses, key=losses.get)


def _curvature_rows(k: int, samples: int | None, images: int, blocks: int) -> torch.Tensor | None:
    """Indices of the rows whose Jacobians form ``J^T J``: ``samples`` of each image's ``k``, spread over its
    stratified noise levels, in every block of rows (edit and preserve prompts); None when all rows are used."""
    if samples is None or samples >= k:
        return None
    per_image = torch.arange(samples) * k // samples  # (samples,) spread over the K strata
    rows = (torch.arange(images)[:, None] * k + per_image).flatten()  # (images * samples,)
    return (torch.arange(blocks)[:, None] * images * k + rows).flatten()


def _localize(dz: torch.Tensor, dds: torch.Tensor, cfg: HSDSConfig) -> torch.Tensor:
    """Apply ``locality`` (an element-wise weight from the DDS direction) and then the ``trust_radius`` cap."""
    if cfg.locality > 0:
        rms = dds.pow(2).mean().sqrt().clamp_min(1e-12)
        dz = dz * (dds.abs() / (cfg.locality * rms)).clamp(max=1.0)
    if cfg.trust_radius is not None:
        limit = cfg.trust_radius * float(dds.norm())
        norm = float(dz.norm())
        if norm > limit:
            dz = dz * (limit / norm)
    return dz


def _prompt_list(prompts: Sequence[str] | str, name: str, allow_empty: bool = False) -> list[str]:
    prompts = [prompts] if isinstance(prompts, str) else list(prompts)
    if not prompts and not allow_empty:
        raise InputError(f"{name} is empty; pass at least one prompt")
    for i, p in enumerate(prompts):
        if not isinstance(p, str) or not p.strip():
            raise InputError(f"{name}[{i}] must be a non-empty string, got {p!r}")
    return prompts


def _pair_name(source: str, target: str) -> str:
    """A short label from the words that change: 'red->blue'."""
    a, b = source.lower().split(), target.lower().split()
    removed, added = [], []
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(a=a, b=b).get_opcodes():
        if op != "equal":
            removed += a[i1:i2]
            added += b[j1:j2]
    name = f"{' '.join(removed) or '(none)'}->{' '.join(added) or '(none)'}"
    return name if len(name) <= 60 else name[:57] + "..."


def sum_weights(samples: ScoreSamples) -> float:
    """``sum_k w_k a_k^2``: the scale that makes first-order directions exact when ``J = I``."""
    return float((samples.w * samples.a**2).sum())

