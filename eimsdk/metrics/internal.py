"""Reader-free, model-internal disentanglement: how much the responses of different attribute directions overlap.

For image ``n`` with joint latent ``(z0_n, c_n)``, attribute direction ``d_a = (dz_a, dc_a)`` (shared or one per
image), noise levels ``t_1..t_K`` and seeded noise ``eps_k`` (the same for every attribute):

    z_k        = a(t_k) z0_n + s(t_k) eps_k
    R_a,n      = concat_k  P(x0_hat(z_k + a(t_k) h dz_a, t_k, c_n + h dc_a)) - P(x0_hat(z_k, t_k, c_n))
    O_ab       = mean_n |cos(R_a,n, R_b,n)|
    S_a        = 1 - mean_{b != a} O_ab
    S          = 1 - mean_{a < b} O_ab

``P`` decodes to pixels (``space="pixel"``, the default: every model answers in the same image space) or is the
identity (``space="latent"``); ``h`` is the strength. ``S = 1`` when every attribute's direction changes the
model's clean-image prediction in its own orthogonal set of pixels; ``0`` when all directions change the same
thing. It needs no reader, so any two models can be compared on the same prompts. ``S`` is the mean of the
per-image scores ``S_n = 1 - mean_{a < b} |cos(R_a,n, R_b,n)|``, which the result keeps for intervals over images.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Mapping, Sequence

import numpy as np
import torch
from einops import rearrange, repeat
from pydantic import BaseModel, ConfigDict, Field, field_validator

from eimsdk.errors import InputError
from eimsdk.interfaces import Encoder
from eimsdk.records import Conditioning, Direction, JointLatent


class ResponseOverlapConfig(BaseModel):
    """Settings of :class:`ResponseOverlap`."""

    model_config = ConfigDict(extra="forbid")

    timesteps: list[float] = Field(default_factory=lambda: [0.25, 0.5, 0.75], min_length=1, max_length=32,
                                   description="noise levels t_k in (0, 1] at which responses are taken")
    space: Literal["pixel", "latent"] = Field("pixel", description="decode x0_hat to pixels, or compare latents")
    strength: float = Field(1.0, gt=0.0, le=100.0, description="h: how far along each direction")
    guidance_scale: float = Field(1.0, ge=0.0, le=30.0, description="classifier-free guidance of x0_hat")
    seed: int = Field(0, ge=0, description="seed of the shared noise eps_k")

    @field_validator("timesteps")
    @classmethod
    def _in_range(cls, ts: list[float]) -> list[float]:
        bad = [t for t in ts if not 0.0 < t <= 1.0]
        if bad:
            raise ValueError(f"every timestep must lie in (0, 1], got {bad}")
        return ts


@dataclass
class OverlapResult:
    """Overall and per-attribute scores, the overlap matrix ``O``, the mean response norm per attribute and the
    per-image scores ``S_n`` (their mean is ``score``)."""

    score: float
    per_attribute: dict[str, float]
    overlap: np.ndarray  # (m, m), ones on the diagonal
    attributes: list[str]
    response_norm: dict[str, float]
    per_source: list[float]

    def as_dict(self) -> dict[str, Any]:
        return {"score": round(self.score, 6), "per_attribute": {k: round(v, 6) for k, v in self.per_attribute.items()},
                "attributes": list(self.attributes), "overlap": [[round(float(v), 6) for v in row] for row in self.overlap],
                "response_norm": {k: round(v, 6) for k, v in self.response_norm.items()},
                "per_source": [round(v, 6) for v in self.per_source]}


class ResponseOverlap:
    """Reader-free disentanglement score from the overlap of attribute directions' responses (module docstring)."""

    name = "response-overlap"
    Config = ResponseOverlapConfig

    def __init__(self, config: ResponseOverlapConfig | None = None, **overrides: Any) -> None:
        base = config if config is not None else self.Config()
        self.config = self.Config.model_validate({**base.model_dump(), **overrides})

    def __call__(self, encoder: Encoder, latent: JointLatent,
                 directions: Mapping[str, Direction | Sequence[Direction]]) -> OverlapResult:
        """Score ``directions`` (attribute -> one Direction for every image, or one per image) on ``latent``."""
        n = latent.batch_size
        per_image = self._check(encoder, latent, directions)
        names = list(per_image)
        responses: dict[str, list[torch.Tensor]] = {a: [] for a in names}
        with torch.no_grad():
            for i in range(n):
                base, z_t, t, a_t, cond = self._base(encoder, latent, i)
                for name in names:
                    d = per_image[name][i]
                    h = self.config.strength
                    dz = repeat(d.dz.to(z_t), "1 ... -> k ...", k=z_t.shape[0])
                    moved = self._predict(encoder, z_t + a_t * h * dz, t, cond + d.dc.to(encoder.device) * h)
                    responses[name].append((moved - base).flatten().double().cpu())  # (K * D,)
        m = len(names)
        overlap = np.zeros((n, m, m))
        norms = {a: float(np.mean([r.norm().item() for r in responses[a]])) for a in names}
        for i in range(n):
            r = torch.stack([responses[a][i] for a in names])  # (m, K * D)
            lengths = r.norm(dim=1)
            zero = [names[j] for j in range(m) if lengths[j] <= 1e-12]
            if zero:
                raise InputError(f"the directions for {zero} do not change the model's prediction on image {i}; "
                                 "pass directions found for those attributes (a zero direction has no response)")
            unit = r / lengths[:, None]
            overlap[i] = (unit @ unit.T).abs().numpy()
        o = overlap.mean(axis=0)
        np.fill_diagonal(o, 1.0)
        off = ~np.eye(m, dtype=bool)
        per = {a: float(1.0 - o[j][off[j]].mean()) for j, a in enumerate(names)}
        pairs = np.triu_indices(m, k=1)
        score = float(1.0 - o[pairs].mean())
        per_source = [float(1.0 - overlap[i][pairs].mean()) for i in range(n)]
        return OverlapResult(score=score, per_attribute=per, overlap=o, attributes=names, response_norm=norms,
                             per_source=per_source)

    # -------------------------------------------------------------------------------------------- helpers
    def _check(self, encoder: Encoder, latent: JointLatent,
               directions: Mapping[str, Direction | Sequence[Direction]]) -> dict[str, list[Direction]]:
        if len(directions) < 2:
            raise InputError(f"directions has {len(directions)} attribute(s); the overlap score needs at least two")
        n = latent.batch_size
        out = {}
        for name, d in directions.items():
            items = [d] * n if isinstance(d, Direction) else list(d)
            if len(items) != n:
                raise InputError(f"directions[{name!r}] has {len(items)} directions for {n} images; pass one "
                                 "Direction for all images or one per image")
            for item in items:
                if not isinstance(item, Direction):
                    raise InputError(f"directions[{name!r}] must hold eimsdk Direction objects, got "
                                     f"{type(item).__name__}")
                item.check_fits(encoder, latent.z0)
            out[name] = items
        return out

    def _base(self, encoder: Encoder, latent: JointLatent, i: int):
        """Shared noisy latents of image ``i`` at every t_k and the unedited prediction there."""
        ts = torch.tensor(self.config.timesteps, dtype=torch.float32, device=encoder.device)  # (K,)
        k = ts.shape[0]
        z0 = latent.z0[i : i + 1]
        g = torch.Generator("cpu").manual_seed(self.config.seed + i)
        eps = torch.randn((k, *z0.shape[1:]), generator=g, dtype=torch.float32).to(z0)  # (K, ...)
        z_t = encoder.add_noise(repeat(z0, "1 ... -> k ...", k=k), eps, ts)  # (K, ...)
        a_t, _ = encoder.alpha_sigma(ts)
        a_t = rearrange(a_t.to(z_t), "k -> k" + " 1" * (z_t.ndim - 1))
        cond: Conditioning = latent.cond[i].expand_to(k)
        return self._predict(encoder, z_t, ts, cond), z_t, ts, a_t, cond

    def _predict(self, encoder: Encoder, z_t: torch.Tensor, t: torch.Tensor, cond: Conditioning) -> torch.Tensor:
        x0 = encoder.predict_x0(z_t, t, cond.expand_to(z_t.shape[0]), guidance_scale=self.config.guidance_scale)
        return encoder.decode_latents(x0) if self.config.space == "pixel" else x0
