"""Procedural toy scenes: one shape on a plain background, every attribute known and captioned.

A scene has a shape (circle, square, triangle), a colour (red, green, blue, yellow), a position (one of the
four quadrants), a size (small, large) and a background (black, white), plus a small seeded jitter of the
object's centre and extent so that no two scenes are pixel-identical. Geometry is defined on the unit square
and rendered at any size with 8x supersampling and box downsampling (exact area coverage, deterministic).
Captions use only words of :data:`eimsdk.tokenizers.WORDS`, so the offline tokenizers read every word.
"""

from __future__ import annotations

from typing import Iterable, Literal, Mapping

import numpy as np
from PIL import Image, ImageDraw
from pydantic import BaseModel, ConfigDict, Field

from eimsdk.errors import InputError

SHAPES: tuple[str, ...] = ("circle", "square", "triangle")
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 190, 60),
    "blue": (40, 80, 230),
    "yellow": (235, 215, 40),
}
POSITIONS: tuple[str, ...] = ("top left", "top right", "bottom left", "bottom right")
SIZES: tuple[str, ...] = ("small", "large")
BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "black": (0, 0, 0),
    "white": (255, 255, 255),
}
#: attribute -> its classes, in a fixed order (readers and metrics index classes by it).
ATTRIBUTES: dict[str, list[str]] = {
    "shape": list(SHAPES),
    "colour": list(COLOURS),
    "position": list(POSITIONS),
    "size": list(SIZES),
    "background": list(BACKGROUNDS),
}

# Geometry on the unit square: quadrant centres and half-extents (the object's bounding box is 2 * extent).
CENTRES = {"top left": (0.25, 0.25), "top right": (0.75, 0.25), "bottom left": (0.25, 0.75),
           "bottom right": (0.75, 0.75)}
EXTENTS = {"small": 3.5 / 32, "large": 6.5 / 32}
MAX_SHIFT = 1.0 / 32  # centre jitter bound (a pixel at 32x32)
MAX_GROW = 0.5 / 32  # extent jitter bound
SUPERSAMPLE = 8
DEFAULT_SIZE = 32


class SceneSpec(BaseModel):
    """One toy scene. Categorical attributes plus a bounded jitter (in units of the image side)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    shape: Literal["circle", "square", "triangle"] = "circle"
    colour: Literal["red", "green", "blue", "yellow"] = "red"
    position: Literal["top left", "top right", "bottom left", "bottom right"] = "top left"
    size: Literal["small", "large"] = "large"
    background: Literal["black", "white"] = "black"
    dx: float = Field(0.0, ge=-MAX_SHIFT, le=MAX_SHIFT, description="horizontal centre jitter")
    dy: float = Field(0.0, ge=-MAX_SHIFT, le=MAX_SHIFT, description="vertical centre jitter")
    grow: float = Field(0.0, ge=-MAX_GROW, le=MAX_GROW, description="extent jitter")

    def attributes(self) -> dict[str, str]:
        """The categorical attributes only (what readers recover)."""
        return {name: getattr(self, name) for name in ATTRIBUTES}

    def centre(self) -> tuple[float, float]:
        cx, cy = CENTRES[self.position]
        return cx + self.dx, cy + self.dy

    def extent(self) -> float:
        return EXTENTS[self.size] + self.grow


def check_fixed(fixed: Mapping[str, str], attributes: Iterable[str]) -> None:
    """Refuse pinned attributes a world does not have (``random_spec``'s ``fixed``)."""
    unknown = sorted(set(fixed) - set(attributes))
    if unknown:
        raise InputError(f"random_spec got unknown attributes {unknown}; it accepts {sorted(attributes)}")


def random_spec(rng: np.random.Generator | int, **fixed: str) -> SceneSpec:
    """A scene drawn uniformly over every attribute and jitter; ``fixed`` pins attributes (e.g. ``colour="red"``)."""
    rng = np.random.default_rng(rng)  # a Generator passes through unchanged
    check_fixed(fixed, ATTRIBUTES)
    values = {name: classes[int(rng.integers(len(classes)))] for name, classes in ATTRIBUTES.items()}
    jitter = dict(dx=float(rng.uniform(-MAX_SHIFT, MAX_SHIFT)), dy=float(rng.uniform(-MAX_SHIFT, MAX_SHIFT)),
                  grow=float(rng.uniform(-MAX_GROW, MAX_GROW)))
    return SceneSpec(**{**values, **fixed}, **jitter)


def make_spec(seed: int, **attrs: str) -> SceneSpec:
    """The scene of ``seed`` with some attributes pinned; the same seed always gives the same scene."""
    return random_spec(np.random.default_rng(seed), **attrs)


def caption(spec: SceneSpec) -> str:
    """'a large red circle at the top left on a black background' (tokenizer words only)."""
    return f"a {spec.size} {spec.colour} {spec.shape} at the {spec.position} on a {spec.background} background"


def _draw(shape: str, centre: tuple[float, float], extent: float, canvas: Image.Image, fill: int) -> None:
    side = canvas.width
    cx, cy = centre[0] * side, centre[1] * side
    r = extent * side
    draw = ImageDraw.Draw(canvas)
    if shape == "circle":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
    elif shape == "square":
        draw.polygon([(cx - r, cy - r), (cx + r, cy - r), (cx + r, cy + r), (cx - r, cy + r)], fill=fill)
    else:  # triangle: isosceles, apex up, fills the 2r x 2r box
        draw.polygon([(cx, cy - r), (cx + r, cy + r), (cx - r, cy + r)], fill=fill)


def _check_size(size: int) -> None:
    if not isinstance(size, int) or size < 16 or size > 1024:
        raise InputError(f"size={size!r} is invalid; pass an integer image side between 16 and 1024 (default 32)")


def shape_coverage(shape: str, centre: tuple[float, float], extent: float, size: int = DEFAULT_SIZE) -> np.ndarray:
    """(size, size) float array in [0, 1]: the fraction of each pixel that ``shape`` covers.

    ``centre`` (x, y) and the half-extent ``extent`` are on the unit square; the shape fills the box of side
    ``2 * extent`` around the centre.
    """
    _check_size(size)
    canvas = Image.new("L", (size * SUPERSAMPLE, size * SUPERSAMPLE), 0)
    _draw(shape, centre, extent, canvas, 255)
    return np.asarray(canvas.resize((size, size), Image.BOX), dtype=np.float32) / 255.0


def coverage(spec: SceneSpec, size: int = DEFAULT_SIZE) -> np.ndarray:
    """(size, size) float array in [0, 1]: the fraction of each pixel the scene's object covers."""
    return shape_coverage(spec.shape, spec.centre(), spec.extent(), size)


def render(spec: SceneSpec, size: int = DEFAULT_SIZE) -> Image.Image:
    """The scene as an RGB image of ``size`` x ``size`` pixels (antialiased by exact area coverage)."""
    alpha = coverage(spec, size)[..., None]  # (H, W, 1)
    bg = np.asarray(BACKGROUNDS[spec.background], dtype=np.float32)
    fg = np.asarray(COLOURS[spec.colour], dtype=np.float32)
    pixels = alpha * fg + (1.0 - alpha) * bg  # (H, W, 3)
    return Image.fromarray(np.clip(np.round(pixels), 0, 255).astype(np.uint8), "RGB")


def region_mask(spec: SceneSpec, size: int = DEFAULT_SIZE, dilate: int = 0) -> np.ndarray:
    """(size, size) bool mask of the pixels the object touches, grown by ``dilate`` pixels (square neighbourhood)."""
    if not isinstance(dilate, int) or dilate < 0:
        raise InputError(f"dilate={dilate!r} is invalid; pass a non-negative number of pixels")
    mask = coverage(spec, size) > 0
    for _ in range(dilate):
        grown = mask.copy()
        grown[1:] |= mask[:-1]
        grown[:-1] |= mask[1:]
        grown[:, 1:] |= grown[:, :-1]
        grown[:, :-1] |= grown[:, 1:]
        mask = grown
    return mask
