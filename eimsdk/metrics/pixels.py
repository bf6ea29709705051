"""PSNR and SSIM between a source and an edited image, over the whole image or outside an edited region.

Images are compared in [0, 1]. ``region`` is an (H, W) boolean mask of the pixels the edit is allowed to change
(True = edited). Outside-region metrics follow PIE-Bench's convention: the region is zeroed in both images, so
nothing inside it can count, and the average runs over the outside pixels only.

- PSNR = 10 log10(1 / MSE) over the outside pixels (all channels), capped at :data:`PSNR_CAP` dB for identical
  pixels.
- SSIM (Wang et al., 2004): 11x11 Gaussian window, sigma 1.5, C1 = 0.01^2, C2 = 0.03^2, per channel with
  reflect padding; the SSIM map is averaged over channels and outside pixels.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F

from eimsdk.errors import InputError
from eimsdk.interfaces import EditMetric

PSNR_CAP = 100.0
_WINDOW, _SIGMA, _C1, _C2 = 11, 1.5, 0.01**2, 0.03**2


def to_unit_tensor(image: Any, name: str = "image") -> torch.Tensor:
    """A PIL image, (H, W, 3) uint8 array or (3, H, W) / (1, 3, H, W) tensor in [-1, 1] -> (3, H, W) float64 in [0, 1]."""
    if isinstance(image, torch.Tensor):
        t = image.detach().double().cpu()
        t = t[0] if t.ndim == 4 and t.shape[0] == 1 else t
        if t.ndim != 3 or t.shape[0] != 3:
            raise InputError(f"{name} tensor must be (3, H, W) or (1, 3, H, W) in [-1, 1], got {tuple(image.shape)}")
        return ((t.clamp(-1, 1) + 1) / 2)
    from eimsdk.images import load_image

    arr = np.asarray(load_image(image, name), dtype=np.float64) / 255.0  # (H, W, 3)
    return torch.from_numpy(arr).permute(2, 0, 1).contiguous()


def _prepare(source: Any, edited: Any, region: np.ndarray | torch.Tensor | None
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    a, b = to_unit_tensor(source, "source"), to_unit_tensor(edited, "edited")
    if a.shape != b.shape:
        raise InputError(f"source is {tuple(a.shape[1:])} but edited is {tuple(b.shape[1:])} (H, W); compare images "
                         "of the same size")
    keep = torch.ones(a.shape[1:], dtype=torch.float64)  # (H, W): 1 = outside the edited region
    if region is not None:
        r = torch.as_tensor(np.asarray(region)).bool()
        if tuple(r.shape) != tuple(a.shape[1:]):
            raise InputError(f"region has shape {tuple(r.shape)} but the images are {tuple(a.shape[1:])}; pass an "
                             "(H, W) mask at the images' size")
        keep = (~r).double()
    return a * keep, b * keep, keep


def psnr(source: Any, edited: Any, region: np.ndarray | torch.Tensor | None = None) -> float | None:
    """PSNR in dB outside ``region`` (everywhere if None); None when the region covers every pixel."""
    a, b, keep = _prepare(source, edited, region)
    n = float(keep.sum()) * a.shape[0]
    if n == 0:
        return None
    mse = float(((a - b) ** 2).sum()) / n
    return PSNR_CAP if mse <= 10 ** (-PSNR_CAP / 10) else 10.0 * math.log10(1.0 / mse)


def _gaussian_window() -> torch.Tensor:
    x = torch.arange(_WINDOW, dtype=torch.float64) - _WINDOW // 2
    g = torch.exp(-(x**2) / (2 * _SIGMA**2))
    g = g / g.sum()
    return (g[:, None] * g[None, :])[None, None]  # (1, 1, 11, 11)


def ssim(source: Any, edited: Any, region: np.ndarray | torch.Tensor | None = None) -> float | None:
    """Mean SSIM outside ``region`` (everywhere if None); None when the region covers every pixel."""
    a, b, keep = _prepare(source, edited, region)
    if float(keep.sum()) == 0:
        return None
    h, w = a.shape[1:]
    pad = _WINDOW // 2
    if min(h, w) <= pad:
        raise InputError(f"images of {w}x{h} pixels are too small for SSIM; they need more than {pad} pixels a side")
    win = _gaussian_window().expand(3, 1, _WINDOW, _WINDOW)

    def blur(x: torch.Tensor) -> torch.Tensor:  # (3, H, W) -> (3, H, W)
        return F.conv2d(F.pad(x[None], (pad,) * 4, mode="reflect"), win, groups=3)[0]

    mu_a, mu_b = blur(a), blur(b)
    var_a = blur(a * a) - mu_a**2
    var_b = blur(b * b) - mu_b**2
    cov = blur(a * b) - mu_a * mu_b
    smap = ((2 * mu_a * mu_b + _C1) * (2 * cov + _C2)) / ((mu_a**2 + mu_b**2 + _C1) * (var_a + var_b + _C2))
    return float((smap.mean(dim=0) * keep).sum() / keep.sum())


class PSNR(EditMetric):
    """``psnr`` of source and edit, and ``psnr_outside`` the item's edited region when it has one."""

    name = "psnr"

    def __call__(self, source: torch.Tensor, edited: torch.Tensor, *, item: Any) -> dict[str, float | None]:
        return whole_and_outside(psnr, self.name, source, edited, item)


class SSIM(EditMetric):
    """``ssim`` of source and edit, and ``ssim_outside`` the item's edited region when it has one."""

    name = "ssim"

    def __call__(self, source: torch.Tensor, edited: torch.Tensor, *, item: Any) -> dict[str, float | None]:
        return whole_and_outside(ssim, self.name, source, edited, item)


def whole_and_outside(fn: Callable[..., float | None], name: str, source: torch.Tensor, edited: torch.Tensor,
                      item: Any) -> dict[str, float | None]:
    """``{name: fn(source, edited)}``, plus ``name_outside`` over the pixels outside the item's region."""
    out = {name: fn(source, edited)}
    region = item.mask(tuple(source.shape[-2:]))
    if region is not None:
        out[f"{name}_outside"] = fn(source, edited, region)
    return out
