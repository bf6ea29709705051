"""Attribute readers of the toy scenes: recover shape, colour, position, size and background from pixels.

The reader works on any image size and on model samples, not only on clean renders:

1. background = nearest background colour to the per-channel median (the object covers < 20% of pixels);
2. object colour = nearest palette colour to the mean of the pixels far from the background;
3. per-pixel object coverage ``alpha`` = projection of (pixel - background) on (colour - background);
4. position from the coverage-weighted centroid; shape from the best fit of each shape's template (placed at
   the centroid, sized by the covered area) to the coverage; size from that shape's fitted extent.

Each attribute also gets class probabilities (a softmax over feature distances), whose maximum is the
reading's confidence: near 1 on clean renders, lower on blurry or ambiguous model samples.

When no object is found (an edit that erased it, a blank or near-blank image), every object attribute (shape,
colour, position, size) reads :data:`NONE` with probability 1: an erased object then never matches an expected
value nor a source's reading, so it counts neither as a successful edit nor as preserved.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from eimsdk.errors import InputError
from eimsdk.interfaces import AttributeReader
from eimsdk_toy.scenes import ATTRIBUTES, BACKGROUNDS, COLOURS, EXTENTS, SHAPES, shape_coverage

_PALETTE = np.asarray(list(COLOURS.values()), dtype=np.float32)  # (K, 3)
_BG_PALETTE = np.asarray(list(BACKGROUNDS.values()), dtype=np.float32)  # (2, 3)
# Per shape: area in units of extent**2, and how far the centroid sits below the box centre (units of extent).
_SHAPE_FIT = {"circle": (np.pi, 0.0), "square": (4.0, 0.0), "triangle": (2.0, 1.0 / 3.0)}
_SIZE_THRESHOLD = (EXTENTS["small"] + EXTENTS["large"]) / 2  # half-extent between the two sizes (unit square)
_MIN_COVERAGE = 4.0  # pixels at 32x32: less than this is "no object"
NONE = "none"  # the reading of every object attribute when no object is found
OBJECT_ATTRIBUTES = ("shape", "colour", "position", "size")


@dataclass
class ToyReading:
    """One image's reading: class per attribute, class probabilities, and the measured geometry."""

    values: dict[str, str]
    probabilities: dict[str, dict[str, float]]
    centroid: tuple[float, float]  # (x, y) on the unit square
    extent: float  # half-extent of the best-fitting shape, on the unit square
    fit_error: float  # |template - coverage| / coverage of the best-fitting shape (0 = exact)
    found: bool  # an object was seen at all

    @property
    def confidence(self) -> dict[str, float]:
        return {name: max(p.values()) for name, p in self.probabilities.items()}


def _softmax(neg_energy: np.ndarray) -> np.ndarray:
    e = np.exp(neg_energy - neg_energy.max())
    return e / e.sum()


def _probs(classes: Sequence[str], neg_energy: np.ndarray) -> dict[str, float]:
    return {c: float(p) for c, p in zip(classes, _softmax(neg_energy))}


def _to_arrays(images: Sequence[Any]) -> list[np.ndarray]:
    """Images (PIL, paths, arrays, or a (B, 3, H, W) tensor in [-1, 1]) -> float32 (H, W, 3) arrays in [0, 255]."""
    from eimsdk.images import load_image

    if hasattr(images, "detach") and getattr(images, "ndim", 0) in (3, 4):  # torch tensor
        t = images.detach().float().cpu()
        t = t[None] if t.ndim == 3 else t
        if t.shape[1] != 3:
            raise InputError(f"images tensor must be (B, 3, H, W) in [-1, 1], got shape {tuple(t.shape)}")
        arr = ((t.clamp(-1, 1) + 1) * 127.5).permute(0, 2, 3, 1).numpy()
        return list(arr)
    if isinstance(images, (str, bytes)) or not isinstance(images, Sequence):
        raise InputError(f"images must be a sequence of images (PIL, paths, arrays) or a (B, 3, H, W) tensor, got "
                         f"{type(images).__name__}; wrap a single image in a list")
    return [np.asarray(load_image(im, f"images[{i}]"), dtype=np.float32) for i, im in enumerate(images)]


def read_array(pixels: np.ndarray) -> ToyReading:
    """Read one square (H, W, 3) float image in [0, 255]."""
    h, w, _ = pixels.shape
    if h != w:
        raise InputError(f"toy scenes are square; got an image of {w}x{h} pixels. Pass the model's square output")
    flat = pixels.reshape(-1, 3)

    bg = np.median(flat, axis=0)  # the measured background beats the nominal one on tinted model samples
    d_bg = np.linalg.norm(_BG_PALETTE - bg, axis=1)

    dist = np.linalg.norm(flat - bg, axis=1)  # (H*W,)
    far = dist > 0.6 * dist.max() if dist.max() > 60.0 else np.zeros_like(dist, dtype=bool)
    obj = flat[far].mean(axis=0) if far.any() else _PALETTE.mean(axis=0)
    d_col = np.linalg.norm(_PALETTE - obj, axis=1)

    fg = _PALETTE[int(np.argmin(d_col))]
    axis = fg - bg
    alpha = np.clip((flat - bg) @ axis / max(float(axis @ axis), 1e-6), 0.0, 1.0).reshape(h, w)
    alpha = np.where(alpha > 0.25, alpha, 0.0)  # ignore faint noise far from the object
    mass = float(alpha.sum())
    found = bool(far.any()) and mass >= _MIN_COVERAGE * h * w / 1024.0

    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    cx = float((alpha * (xs + 0.5)).sum() / max(mass, 1e-6)) / w if found else 0.5
    cy = float((alpha * (ys + 0.5)).sum() / max(mass, 1e-6)) / h if found else 0.5

    # Fit each shape's template to the coverage: the extent follows from the mass, the centre from the centroid.
    fits = {}
    for shape, (area, drop) in _SHAPE_FIT.items():
        r = float(np.sqrt(mass / (h * w) / area))
        template = shape_coverage(shape, (cx, cy - drop * r), r, h)
        fits[shape] = (float(np.abs(template - alpha).sum() / max(mass, 1.0)), r)
    best = min(fits, key=lambda k: fits[k][0])
    extent = fits[best][1]

    # Energies: distances scaled so one unit is a clear but not certain miss.
    shape_e = np.asarray([-(fits[k][0] / 0.1) ** 2 for k in SHAPES])
    col_e = -(d_col / 40.0) ** 2
    bg_e = -(d_bg / 60.0) ** 2
    x_e = (cx - 0.5) / 0.03
    y_e = (cy - 0.5) / 0.03
    pos_e = np.asarray([-x_e - y_e, x_e - y_e, -x_e + y_e, x_e + y_e]) / 2
    size_e = np.asarray([-1.0, 1.0]) * (extent - _SIZE_THRESHOLD) / 0.02

    probabilities = {
        "shape": _probs(SHAPES, shape_e),
        "colour": _probs(list(COLOURS), col_e),
        "position": _probs(ATTRIBUTES["position"], pos_e),
        "size": _probs(ATTRIBUTES["size"], size_e),
        "background": _probs(list(BACKGROUNDS), bg_e),
    }
    if not found:  # nothing to read: say so, rather than pick a class the image does not show
        for name in OBJECT_ATTRIBUTES:
            probabilities[name] = {NONE: 1.0}
    values = {name: max(p, key=p.get) for name, p in probabilities.items()}
    return ToyReading(values=values, probabilities=probabilities, centroid=(cx, cy), extent=extent,
                      fit_error=fits[best][0], found=found)


class ToyReader(AttributeReader):
    """Reads every toy-scene attribute from pixels (>= 99.5% exact on clean renders; see docs/toy-world.md)."""

    name = "toy"
    attributes = {name: list(classes) for name, classes in ATTRIBUTES.items()}

    def read(self, images: Sequence[Any]) -> list[dict[str, Any]]:
        """One dict per image: attribute -> class name (``"none"`` for the object's attributes when none is seen)."""
        return [r.values for r in self.read_detailed(images)]

    def probabilities(self, images: Sequence[Any]) -> list[dict[str, dict[str, float]]]:
        """One dict per image: attribute -> {class: probability}; the maximum is the reading's confidence."""
        return [r.probabilities for r in self.read_detailed(images)]

    def read_detailed(self, images: Sequence[Any]) -> list[ToyReading]:
        """Full readings (classes, probabilities, centroid, extent, fill, whether an object was found)."""
        return [read_array(a) for a in _to_arrays(images)]
