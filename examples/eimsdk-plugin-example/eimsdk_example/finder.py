"""A direction finder written against eimsdk's public interfaces only."""

from __future__ import annotations

from typing import Sequence

import torch
from pydantic import BaseModel, Field

import eimsdk
from eimsdk.interfaces import DirectionFinder, Encoder
from eimsdk.records import Direction, JointLatent


class UnitTextConfig(BaseModel):
    relative_norm: float = Field(0.5, gt=0.0, le=10.0, description="||dc|| as a fraction of ||c|| of the source")


class UnitTextFinder(DirectionFinder):
    """``dz = 0``; ``dc`` = mean text difference of the prompt pairs, rescaled to ``relative_norm * ||c||``."""

    name = "unit-text"
    Config = UnitTextConfig

    def find(self, encoder: Encoder, latent: JointLatent, target_prompts: Sequence[str], *,
             source_prompts: Sequence[str] | None = None, preserve_prompts: Sequence[str] = (),
             seed: int = 0) -> Direction:
        sources = list(source_prompts or latent.prompts)
        with torch.no_grad():
            src = encoder.encode_prompts(sources).masked()
            tgt = encoder.encode_prompts(list(target_prompts)).masked()
            diff = tgt - src
            dc = diff.map(lambda t: t.mean(dim=0, keepdim=True) if t.is_floating_point() else t[:1])
            scale = self.config.relative_norm * src.norm().mean() / dc.norm().clamp_min(1e-12)
            dc = dc * float(scale)
        return Direction(torch.zeros_like(latent.z0[:1]), dc, {
            "name": "unit-text", "method": self.name, "family": encoder.family, "model_id": encoder.model_id,
            "signature": encoder.signature(), "source_prompts": sources, "target_prompts": list(target_prompts),
            "config": self.config.model_dump(), "eimsdk_version": eimsdk.__version__,
            "image_size": list(latent.image_size or ()),
        })
