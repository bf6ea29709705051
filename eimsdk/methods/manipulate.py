"""Manipulate: move a joint latent along directions and sample the edited image.

``z0' = z0 + sum_i a_i dz_i`` and ``c' = c + sum_i a_i dc_i``; invert ``z0'`` deterministically under the source
conditioning ``c`` to the edit time ``t_edit``, then sample back to 0 under ``c'``. Strengths are continuous and
signed; several directions compose by addition. ``inversion_fixed_point=K`` refines each inversion step K times
(``Encoder.invert``), so that sampling retraces the inversion more exactly. ``invert_under="edited"`` inverts under
``c'`` instead: then the resampling adds no text-driven change of its own and ``dz`` alone carries the edit
(docs/method.md compares the two). A direction with strength exactly 0 is left out entirely, so strength 0 returns
the inversion round trip of the source bit for bit (adding a direction, even scaled, also adds its token masks to
``c``).
"""

from __future__ import annotations

import math
from typing import Literal, Sequence

import torch
from pydantic import BaseModel, ConfigDict, Field

from eimsdk.errors import InputError
from eimsdk.interfaces import Encoder, Manipulator
from eimsdk.records import Direction, JointLatent

DEFAULT_T_EDIT = 0.6


class LinearJointConfig(BaseModel):
    """Settings of :class:`LinearJointManipulator`."""

    model_config = ConfigDict(extra="forbid")

    t_edit: float | None = Field(None, gt=0.0, le=1.0, description=(
        f"noise level to invert to; None: the largest t_edit a direction asks for (swap asks 1.0), else "
        f"{DEFAULT_T_EDIT}"))
    num_steps: int = Field(20, ge=1, le=1000, description="DDIM steps of the inversion, and again of the sampling")
    guidance_scale: float = Field(1.0, ge=0.0, le=30.0, description="classifier-free guidance of both passes")
    ablation: Literal["joint", "dz", "dc"] = Field("joint", description="move both parts, or only dz, or only dc")
    invert_under: Literal["source", "edited"] = Field(
        "source", description="conditioning of the inversion: the source c, or the edited c' (then dz alone edits)")
    inversion_fixed_point: int = Field(0, ge=0, le=100, description=(
        "fixed-point refinements of each inversion step (Encoder.invert's fixed_point_iterations): 0 is plain "
        "DDIM / Euler inversion; K costs K + 1 evaluations per inversion step and makes one sampling step undo it"))


class LinearJointManipulator(Manipulator):
    """Linear moves in the joint latent ``(z0, c)``, then invert-and-resample (module docstring)."""

    name = "linear"
    Config = LinearJointConfig

    def apply(self, encoder: Encoder, latent: JointLatent, edits: Sequence[tuple[Direction, float]]) -> torch.Tensor:
        self.check_inputs(encoder, latent, edits)
        cfg: LinearJointConfig = self.config
        t_edit = cfg.t_edit or max((float(d.meta["t_edit"]) for d, _ in edits if "t_edit" in d.meta),
                                   default=DEFAULT_T_EDIT)
        z0, cond = latent.z0, latent.cond
        moved_z0, moved_cond = z0, cond
        for d, strength in edits:
            if strength == 0.0:
                continue
            if cfg.ablation in ("joint", "dz"):
                moved_z0 = moved_z0 + strength * d.dz.to(z0)  # (B, ...) + (1, ...)
            if cfg.ablation in ("joint", "dc"):
                moved_cond = moved_cond + d.dc.to(encoder.device, next(iter(cond.embeds.values())).dtype) * strength
        inversion_cond = cond if cfg.invert_under == "source" else moved_cond
        # the keyword only when asked for, so an encoder that overrides invert with the older signature still works
        refine = {"fixed_point_iterations": cfg.inversion_fixed_point} if cfg.inversion_fixed_point else {}
        z_t = encoder.invert(moved_z0, inversion_cond, t_edit, cfg.num_steps, guidance_scale=cfg.guidance_scale,
                             **refine)
        return encoder.sample(z_t, moved_cond, t_edit, cfg.num_steps, guidance_scale=cfg.guidance_scale)

    def check_inputs(self, encoder: Encoder, latent: JointLatent, edits: Sequence[tuple[Direction, float]]) -> None:
        if not isinstance(latent, JointLatent):
            raise InputError(f"latent must be a JointLatent from encoder.encode(...), got {type(latent).__name__}")
        if isinstance(edits, Direction):
            raise InputError("edits must be a list of (Direction, strength) pairs, e.g. [(direction, 1.0)]")
        if not edits:
            raise InputError("edits is empty; pass at least one (Direction, strength) pair")
        for i, item in enumerate(edits):
            if not (isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], Direction)):
                raise InputError(f"edits[{i}] must be a (Direction, strength) pair, got {item!r}")
            strength = item[1]
            if isinstance(strength, bool) or not isinstance(strength, (int, float)) or not math.isfinite(strength):
                raise InputError(f"edits[{i}] strength must be a finite number (negative reverses), got {strength!r}")
            if "flowedit" in item[0].meta:
                raise InputError(f"edits[{i}] is a FlowEdit direction, which only the 'flowedit' manipulator "
                                 "applies (Editor(encoder, manipulator='flowedit'); in a benchmark, "
                                 "flowedit:manipulator=flowedit)")
            item[0].check_fits(encoder, latent.z0)

