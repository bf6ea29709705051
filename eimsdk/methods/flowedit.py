"""FlowEdit (Kulikov et al., 2024, "FlowEdit: inversion-free text-based editing using pre-trained flow models").

Written by us from the paper's algorithm. FlowEdit never inverts the source. It integrates, from the noise level
of step ``n_max`` down to 0, an ODE on the clean edited latent ``Z`` (starting at the source ``x``) whose velocity
is the difference of the target and source velocity fields at two coupled noisy points that share their noise::

    z_src = a x + s N,          z_tar = z_src + k (Z - x),          N ~ N(0, I) fresh at every step
    dZ/dtau = mean over n_avg draws of N of  v(z_tar, t, c_tar) - v(z_src, t, c_src)

For flow families (SD3, Flux) ``a = 1 - t``, ``s = t``, ``k = 1`` and ``tau = t``: this is the paper's algorithm.
Any other family reaches it through the common parametrisation: a Gaussian path ``z = a x0 + s eps`` is the
rectified flow ``y = z / k = (1 - tau) x0 + tau eps`` with ``k = a + s`` and ``tau = s / k``, whose velocity is
``v = eps_hat - x0_hat`` (both from the model's ``eps_hat`` at ``z``). The last ``n_min`` steps sample the target
from the coupled noisy point as usual (the paper's ``n_min``; 0 by default).

The finder returns the text direction ``dc`` (``c_tar = c + strength dc``; ``dz = 0``) and the integration
settings in ``meta["flowedit"]``; the ``flowedit`` manipulator runs the integration. Strength 0 returns the source.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator

from eimsdk.errors import InputError, NumericalError
from eimsdk.interfaces import Encoder, Manipulator
from eimsdk.methods.hsds import ScoreFinder
from eimsdk.records import Conditioning, Direction, JointLatent


class FlowEditConfig(BaseModel):
    """FlowEdit's settings (the paper's names); they travel with the direction to the ``flowedit`` manipulator.

    Defaults tuned on 40 toy PixArt tasks of scene seed 1 (docs/results/issue10/tuning.md): ``n_max`` 17 of 20, target
    guidance 3 edited all 40 precisely (n_max 14 unguided: 0.80; 11: 0.47; 8: 0.13).
    """

    model_config = ConfigDict(extra="forbid")

    num_steps: int = Field(20, ge=1, le=1000, description="T: steps of the full noise-level grid from t = 1 to 0")
    n_max: int = Field(17, ge=1, le=1000, description="FlowEdit integrates the last n_max steps of the grid")
    n_min: int = Field(0, ge=0, le=1000, description="the last n_min steps sample the target as usual")
    n_avg: int = Field(1, ge=1, le=64, description="noise draws averaged into each step's velocity difference")
    source_guidance: float = Field(1.0, ge=0.0, le=30.0, description="classifier-free guidance of the source branch")
    target_guidance: float = Field(3.0, ge=0.0, le=30.0, description="classifier-free guidance of the target branch")

    @model_validator(mode="after")
    def _steps(self) -> "FlowEditConfig":
        if not self.n_min < self.n_max <= self.num_steps:
            raise ValueError(f"need n_min < n_max <= num_steps, got n_min={self.n_min}, n_max={self.n_max}, "
                             f"num_steps={self.num_steps}")
        return self


class FlowEditFinder(ScoreFinder):
    """The text direction plus FlowEdit's settings and noise seed, for the ``flowedit`` manipulator."""

    name = "flowedit"
    Config = FlowEditConfig

    def image_part(self, encoder: Encoder, latent: JointLatent, dc: Conditioning, preserve: list[str],
                   seed: int) -> tuple[torch.Tensor, dict[str, Any]]:
        return torch.zeros_like(latent.z0[:1]), {"flowedit": {**self.config.model_dump(), "seed": seed}}


class FlowEditManipulatorConfig(BaseModel):
    """The ``flowedit`` manipulator takes every setting from the direction (``meta["flowedit"]``)."""

    model_config = ConfigDict(extra="forbid")


class FlowEditManipulator(Manipulator):
    """Inversion-free editing by integrating the target-minus-source velocity (module docstring)."""

    name = "flowedit"
    Config = FlowEditManipulatorConfig

    def apply(self, encoder: Encoder, latent: JointLatent, edits: Sequence[tuple[Direction, float]]) -> torch.Tensor:
        settings = self.check_inputs(encoder, latent, edits)
        x = latent.z0
        source = latent.cond
        target = source
        for d, strength in edits:
            if strength != 0.0:
                target = target + d.dc.to(encoder.device, next(iter(source.embeds.values())).dtype) * strength
        if target is source:  # every strength is 0: nothing to integrate
            return x.clone()
        cfg = FlowEditConfig(**{k: v for k, v in settings.items() if k != "seed"})
        g = torch.Generator("cpu").manual_seed(int(settings["seed"]))
        grid = encoder.timesteps(cfg.num_steps, 1.0, latents=x).tolist()  # descending, num_steps + 1 levels
        work = torch.promote_types(x.dtype, torch.float32)
        z = x.to(work)
        first, last = cfg.num_steps - cfg.n_max, cfg.num_steps - cfg.n_min
        for t, t_next in zip(grid[first:last], grid[first + 1 : last + 1]):
            tau, tau_next = _flow_time(encoder, t), _flow_time(encoder, t_next)
            delta = torch.zeros_like(z)
            for _ in range(cfg.n_avg):
                z_src, z_tar = _coupled(encoder, x, z, t, g)
                v_src = _velocity(encoder, z_src, t, source, cfg.source_guidance)
                v_tar = _velocity(encoder, z_tar, t, target, cfg.target_guidance)
                delta += (v_tar - v_src) / cfg.n_avg
            z = z + (tau_next - tau) * delta
        if cfg.n_min:
            t = grid[last]
            _, z_tar = _coupled(encoder, x, z, t, g)
            z = encoder.sample(z_tar.to(x.dtype), target, t, cfg.n_min, guidance_scale=cfg.target_guidance).to(work)
        if not torch.isfinite(z).all():
            raise NumericalError("FlowEdit produced NaN/Inf latents; lower the strength or the target guidance")
        return z.to(x.dtype)

    def check_inputs(self, encoder: Encoder, latent: JointLatent, edits: Sequence[tuple[Direction, float]]
                     ) -> dict[str, Any]:
        """Validate the edits; return the FlowEdit settings of the first direction (every one must carry them)."""
        if not isinstance(latent, JointLatent):
            raise InputError(f"latent must be a JointLatent from encoder.encode(...), got {type(latent).__name__}")
        if isinstance(edits, Direction) or not edits:
            raise InputError("edits must be a non-empty list of (Direction, strength) pairs, e.g. [(direction, 1.0)]")
        for i, item in enumerate(edits):
            if not (isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], Direction)):
                raise InputError(f"edits[{i}] must be a (Direction, strength) pair, got {item!r}")
            if "flowedit" not in item[0].meta:
                raise InputError(f"edits[{i}] is a {item[0].meta.get('method')!r} direction; the flowedit "
                                 "manipulator needs directions found with method='flowedit'")
            item[0].check_fits(encoder, latent.z0)
        return edits[0][0].meta["flowedit"]


def _flow_time(encoder: Encoder, t: float) -> float:
    """``tau = s / (a + s)``: the rectified-flow time of noise level ``t`` (``= t`` for flow families)."""
    a, s = (float(v) for v in encoder.alpha_sigma(torch.tensor([t], dtype=torch.float32)))
    return s / (a + s)


def _coupled(encoder: Encoder, x: torch.Tensor, z: torch.Tensor, t: float, g: torch.Generator
             ) -> tuple[torch.Tensor, torch.Tensor]:
    """The source's noisy point ``a x + s N`` (fresh ``N``) and the edit's, offset by ``k (z - x)``."""
    a, s = (float(v) for v in encoder.alpha_sigma(torch.tensor([t], dtype=torch.float32)))
    noise = torch.randn(x.shape, generator=g, dtype=torch.float32).to(z)
    z_src = a * x.to(z) + s * noise
    return z_src, z_src + (a + s) * (z - x.to(z))


def _velocity(encoder: Encoder, z: torch.Tensor, t: float, cond: Conditioning, guidance: float) -> torch.Tensor:
    """Rectified-flow velocity ``eps_hat - x0_hat`` of the rescaled path at ``z`` (``(k eps_hat - z) / a``)."""
    a, s = (float(v) for v in encoder.alpha_sigma(torch.tensor([t], dtype=torch.float32)))
    if a <= 0.0:
        raise InputError(f"FlowEdit cannot start at t = {t:g} where a(t) = 0 (pure noise); use n_max < num_steps")
    with torch.no_grad():
        eps = encoder.predict_eps(z.to(encoder.dtype), t, cond, guidance_scale=guidance).to(z)
    return ((a + s) * eps - z) / a
