"""An edit metric written against eimsdk's public interfaces only."""

from __future__ import annotations

from typing import Any

import torch

from eimsdk.interfaces import EditMetric


class BrightnessChange(EditMetric):
    """``brightness_change``: mean pixel value of the edit minus that of the source, on a 0-1 scale."""

    name = "brightness-change"

    def __call__(self, source: torch.Tensor, edited: torch.Tensor, *, item: Any) -> dict[str, float | None]:
        return {"brightness_change": float((edited.float().mean() - source.float().mean()) / 2)}
