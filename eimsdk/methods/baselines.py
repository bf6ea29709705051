"""Baseline direction finders, so that every comparison with HSDS is one flag (``method=...``).

All share HSDS's text direction ``dc`` and, where they sample, its timesteps, noise and weights
(:func:`eimsdk.methods.hsds.draw_samples`), so they differ from HSDS only in how ``dz`` is computed:

- ``text``: ``dz = 0``; the edit comes from ``dc`` alone.
- ``sds``:  ``dz = -sum_k w_k a_k (f(z_k, c + dc) - eps_k) / sum_k w_k a_k^2`` (score distillation toward the target).
- ``dds``:  ``dz = -sum_k w_k a_k (f(z_k, c + dc) - f(z_k, c)) / sum_k w_k a_k^2`` (Delta Denoising Score).
- ``swap``: inversion + prompt swap. ``dz = 0`` and ``dc = T(target) - T(source)``, so strength 1 conditions the
  sampler exactly on the target prompt, and ``meta["t_edit"] = 1.0`` asks the manipulator to invert the source
  all the way to noise (``t_edit``) before sampling back: the classic full-inversion prompt-swap edit.

The normaliser ``sum w a^2`` makes SDS/DDS exact where the model's Jacobian is the identity; it equals HSDS with
``curvature="identity"`` and ``lam=0``.
"""

from __future__ import annotations

from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field

from eimsdk.interfaces import Encoder
from eimsdk.methods.hsds import SamplingConfig, ScoreFinder, ScoreSamples, draw_samples, predict, sum_weights
from eimsdk.records import Conditioning, JointLatent


class TextOnlyConfig(BaseModel):
    """The text-only finder has no settings."""

    model_config = ConfigDict(extra="forbid")


class SwapConfig(BaseModel):
    """Settings of the inversion + prompt-swap edit path."""

    model_config = ConfigDict(extra="forbid")

    t_edit: float = Field(1.0, gt=0.0, le=1.0, description="noise level the manipulator inverts to (1: full)")


class TextOnlyFinder(ScoreFinder):
    """``dz = 0``: the text direction alone."""

    name = "text"
    Config = TextOnlyConfig

    def image_part(self, encoder: Encoder, latent: JointLatent, dc: Conditioning, preserve: list[str],
                   seed: int) -> tuple[torch.Tensor, dict[str, Any]]:
        return torch.zeros_like(latent.z0[:1]), {}


class SwapFinder(ScoreFinder):
    """Inversion + prompt swap as a direction: ``dz = 0`` and a request for ``t_edit`` in the metadata."""

    name = "swap"
    Config = SwapConfig

    def image_part(self, encoder: Encoder, latent: JointLatent, dc: Conditioning, preserve: list[str],
                   seed: int) -> tuple[torch.Tensor, dict[str, Any]]:
        return torch.zeros_like(latent.z0[:1]), {"t_edit": self.config.t_edit}


class SDSFinder(ScoreFinder):
    """First-order SDS toward the edited conditioning ``c + dc``."""

    name = "sds"
    Config = SamplingConfig

    def image_part(self, encoder: Encoder, latent: JointLatent, dc: Conditioning, preserve: list[str],
                   seed: int) -> tuple[torch.Tensor, dict[str, Any]]:
        s = draw_samples(encoder, latent, self.config, seed)
        resid = predict(encoder, s.z_t, s.t, s.cond + dc, self.config) - s.eps.to(s.a.dtype)  # (N, ...)
        return first_order_direction(s, resid)


class DDSFinder(ScoreFinder):
    """First-order Delta Denoising Score: target minus source prediction under shared noise."""

    name = "dds"
    Config = SamplingConfig

    def image_part(self, encoder: Encoder, latent: JointLatent, dc: Conditioning, preserve: list[str],
                   seed: int) -> tuple[torch.Tensor, dict[str, Any]]:
        s = draw_samples(encoder, latent, self.config, seed)
        n = s.z_t.shape[0]
        both = predict(encoder, torch.cat([s.z_t, s.z_t]), torch.cat([s.t, s.t]),
                       Conditioning.cat([s.cond + dc, s.cond]), self.config)  # (2N, ...) one batched call
        return first_order_direction(s, both[:n] - both[n:])


def first_order_direction(s: ScoreSamples, resid: torch.Tensor) -> tuple[torch.Tensor, dict[str, Any]]:
    """``dz = -sum_k w_k a_k r_k / sum_k w_k a_k^2`` for residuals ``r`` (N, ...), with the timesteps used."""
    dz = -(s.w * s.a * resid).sum(0, keepdim=True) / sum_weights(s)
    return dz, {"timesteps": [round(float(x), 6) for x in s.t]}
