"""Toy world 2: scenes that hold more than their caption says, and fine-grained named attributes.

A world-2 scene (64 x 64 pixels by default) has the coarse attributes of world 1 (shape, colour hue, position,
size, background) and three small, local named attributes of its main object: a ``shade`` (light or dark version
of the hue), a ``pattern`` inside it (plain, striped, dotted) and an ``outline`` (a ring along its edge, or none).
It also carries **unnamed content**, drawn from the scene's seed and never named in the caption: a small second
object (shape, hue, quadrant, or none at all) and a faint background stripe texture (orientation and phase).
Every pixel comes from an analytic coverage with 8x8 point supersampling, so a scene renders at any size.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
from PIL import Image
from pydantic import Field, model_validator

from eimsdk.errors import InputError
from eimsdk_toy.scenes import BACKGROUNDS, CENTRES, COLOURS, POSITIONS, SHAPES, SceneSpec, check_fixed

IMAGE_SIZE = 64
SUPERSAMPLE = 8
NONE = "none"

SHADES: tuple[str, ...] = ("light", "dark")
PATTERNS: tuple[str, ...] = ("plain", "striped", "dotted")
OUTLINES: tuple[str, ...] = (NONE, "ring")
TEXTURES: tuple[str, ...] = ("horizontal", "vertical")  # orientation of the background stripes
PHASES: tuple[str, ...] = ("0", "90", "180", "270")  # texture phase in degrees
#: what each attribute is: named in the caption (coarse or fine) or never named (unnamed).
KINDS: dict[str, str] = {
    "shape": "coarse", "colour": "coarse", "position": "coarse", "size": "coarse", "background": "coarse",
    "shade": "fine", "pattern": "fine", "outline": "fine",
    "extra_shape": "unnamed", "extra_colour": "unnamed", "extra_position": "unnamed",
    "texture": "unnamed", "texture_phase": "unnamed",
}
#: attribute -> its classes, in a fixed order; "none" where the thing can be absent.
ATTRIBUTES: dict[str, list[str]] = {
    "shape": list(SHAPES), "colour": list(COLOURS), "position": list(POSITIONS), "size": ["small", "large"],
    "background": list(BACKGROUNDS), "shade": list(SHADES), "pattern": list(PATTERNS), "outline": list(OUTLINES),
    "extra_shape": [NONE, *SHAPES], "extra_colour": [NONE, *COLOURS], "extra_position": [NONE, *POSITIONS],
    "texture": list(TEXTURES), "texture_phase": list(PHASES),
}
NAMED: tuple[str, ...] = tuple(a for a, k in KINDS.items() if k != "unnamed")
UNNAMED: tuple[str, ...] = tuple(a for a, k in KINDS.items() if k == "unnamed")

# Geometry on the unit square, designed at 64 px (one pixel = 1/64): half-extents, jitter bounds, detail sizes.
PX = 1.0 / 64
EXTENTS = {"small": 9 * PX, "large": 13 * PX}
EXTRA_EXTENT = 4.5 * PX  # the unnamed second object (a 9 px box)
MAX_SHIFT = 1.5 * PX
MAX_GROW = 0.5 * PX
EXTRA_SHIFT = 1.0 * PX
OUTLINE_WIDTH = 2 * PX
PATTERN_PERIOD = 6 * PX  # stripes 3 px wide; dots of radius 1.6 px on a 6 px grid
DOT_RADIUS = 1.6 * PX
TEXTURE_PERIOD = 8 * PX
TEXTURE_AMPLITUDE = 48.0  # grey levels the texture adds to a black background (takes from a white one)
EXTRA_PRESENT = 0.75  # share of scenes with a second object
SHADE_MIX = 0.45  # light = hue mixed 45% towards white; dark = 45% towards black
# Triangle (apex up, filling a 2r box): its incentre lies 0.382 r below the box centre, its inradius is 0.618 r.
_INCENTRE_DROP = (math.sqrt(5) - 1) / (math.sqrt(5) + 1)
_INRADIUS = 2 / (1 + math.sqrt(5))


def shaded(colour: str, shade: str) -> tuple[float, float, float]:
    """The RGB of a hue in a shade (light: towards white, dark: towards black)."""
    base = np.asarray(COLOURS[colour], dtype=np.float64)
    mixed = base + SHADE_MIX * (255.0 - base) if shade == "light" else base * (1.0 - SHADE_MIX)
    return tuple(float(v) for v in mixed)


def contrast(background: str) -> tuple[float, float, float]:
    """The colour of rings and patterns: the opposite of the background (white on black, black on white)."""
    return tuple(255.0 - float(v) for v in BACKGROUNDS[background])


class Scene2Spec(SceneSpec):
    """One world-2 scene: world 1's coarse attributes, fine ones, unnamed content and bounded jitter (units of the
    image side; tighter than world 1's)."""

    shade: Literal["light", "dark"] = "light"
    pattern: Literal["plain", "striped", "dotted"] = "plain"
    outline: Literal["none", "ring"] = "none"
    extra_shape: Literal["none", "circle", "square", "triangle"] = "none"
    extra_colour: Literal["none", "red", "green", "blue", "yellow"] = "none"
    extra_position: Literal["none", "top left", "top right", "bottom left", "bottom right"] = "none"
    texture: Literal["horizontal", "vertical"] = "horizontal"
    texture_phase: Literal["0", "90", "180", "270"] = "0"
    dx: float = Field(0.0, ge=-MAX_SHIFT, le=MAX_SHIFT)
    dy: float = Field(0.0, ge=-MAX_SHIFT, le=MAX_SHIFT)
    grow: float = Field(0.0, ge=-MAX_GROW, le=MAX_GROW)
    extra_dx: float = Field(0.0, ge=-EXTRA_SHIFT, le=EXTRA_SHIFT)
    extra_dy: float = Field(0.0, ge=-EXTRA_SHIFT, le=EXTRA_SHIFT)

    @model_validator(mode="after")
    def _second_object(self) -> "Scene2Spec":
        absent = [v == NONE for v in (self.extra_shape, self.extra_colour, self.extra_position)]
        if any(absent) and not all(absent):
            raise ValueError("extra_shape, extra_colour and extra_position are all 'none' or all set")
        if self.extra_position == self.position:
            raise ValueError(f"the second object cannot share the main object's quadrant ({self.position!r})")
        return self

    def attributes(self) -> dict[str, str]:
        """Every categorical attribute, named and unnamed (what the readers recover)."""
        return {name: getattr(self, name) for name in ATTRIBUTES}

    def named(self) -> dict[str, str]:
        return {name: getattr(self, name) for name in NAMED}

    def unnamed(self) -> dict[str, str]:
        return {name: getattr(self, name) for name in UNNAMED}

    def extent(self) -> float:
        return EXTENTS[self.size] + self.grow


def random_spec(rng: np.random.Generator | int, **fixed: str) -> Scene2Spec:
    """A scene drawn uniformly over the named attributes, with seeded unnamed content; ``fixed`` pins attributes."""
    rng = np.random.default_rng(rng)  # a Generator passes through unchanged
    check_fixed(fixed, ATTRIBUTES)
    values = {name: ATTRIBUTES[name][int(rng.integers(len(ATTRIBUTES[name])))] for name in NAMED}
    values.update(texture=TEXTURES[int(rng.integers(len(TEXTURES)))], texture_phase=PHASES[int(rng.integers(4))])
    values.update({k: v for k, v in fixed.items() if k in NAMED or k in ("texture", "texture_phase")})
    present = rng.random() < EXTRA_PRESENT
    free = [p for p in POSITIONS if p != values["position"]]
    extra = dict(extra_shape=SHAPES[int(rng.integers(len(SHAPES)))], extra_colour=list(COLOURS)[int(rng.integers(4))],
                 extra_position=free[int(rng.integers(len(free)))]) if present else {}
    extra.update({k: v for k, v in fixed.items() if k.startswith("extra_")})
    jitter = dict(dx=rng.uniform(-MAX_SHIFT, MAX_SHIFT), dy=rng.uniform(-MAX_SHIFT, MAX_SHIFT),
                  grow=rng.uniform(-MAX_GROW, MAX_GROW), extra_dx=rng.uniform(-EXTRA_SHIFT, EXTRA_SHIFT),
                  extra_dy=rng.uniform(-EXTRA_SHIFT, EXTRA_SHIFT))
    return Scene2Spec(**values, **extra, **{k: float(v) for k, v in jitter.items()})


def make_spec(seed: int, **attrs: str) -> Scene2Spec:
    """The scene of ``seed`` with some attributes pinned; the same seed always gives the same scene."""
    return random_spec(np.random.default_rng(seed), **attrs)


def caption(spec: Scene2Spec) -> str:
    """'a large dark red striped circle with a ring at the top left on a black background': named attributes only."""
    ring = " with a ring" if spec.outline == "ring" else ""
    return (f"a {spec.size} {spec.shade} {spec.colour} {spec.pattern} {spec.shape}{ring} at the {spec.position} "
            f"on a {spec.background} background")


# ----------------------------------------------------------------------------------------------- geometry
def _window(size: int, centre: tuple[float, float], half: float
            ) -> tuple[tuple[slice, slice], np.ndarray, np.ndarray]:
    """The pixels of the box of half-side ``half`` around ``centre`` (rows, cols) and their sample points (x, y),
    SUPERSAMPLE x SUPERSAMPLE per pixel: coverage is only computed where a shape can be."""
    lo = [max(0, int(math.floor((c - half) * size)) - 1) for c in centre]
    hi = [min(size, int(math.ceil((c + half) * size)) + 1) for c in centre]
    axes = [(np.arange(a * SUPERSAMPLE, b * SUPERSAMPLE, dtype=np.float64) + 0.5) / (size * SUPERSAMPLE)
            for a, b in zip(lo, hi)]
    x, y = np.meshgrid(axes[0], axes[1])
    return (slice(lo[1], hi[1]), slice(lo[0], hi[0])), x, y


def _down(a: np.ndarray) -> np.ndarray:
    """Mean of each SUPERSAMPLE x SUPERSAMPLE block: point samples -> pixel coverage."""
    h, w = a.shape[0] // SUPERSAMPLE, a.shape[1] // SUPERSAMPLE
    return a.reshape(h, SUPERSAMPLE, w, SUPERSAMPLE).mean(axis=(1, 3))


def inside(shape: str, centre: tuple[float, float], extent: float, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Points inside ``shape`` filling the box of half-side ``extent`` around ``centre`` (triangle: apex up)."""
    u, v = (x - centre[0]) / extent, (y - centre[1]) / extent
    if shape == "circle":
        return u * u + v * v <= 1.0
    if shape == "square":
        return (np.abs(u) <= 1.0) & (np.abs(v) <= 1.0)
    return (v <= 1.0) & (2 * np.abs(u) <= v + 1.0)


def interior(shape: str, centre: tuple[float, float], extent: float, width: float
             ) -> tuple[tuple[float, float], float]:
    """The shape shrunk by ``width`` on every side (centre, extent): where patterns live, inside the ring."""
    if shape != "triangle":
        return centre, extent - width
    scale = 1.0 - width / (_INRADIUS * extent)  # a triangle shrinks about its incentre
    ix, iy = centre[0], centre[1] + _INCENTRE_DROP * extent
    return (ix, iy + (centre[1] - iy) * scale), extent * scale


def pattern_anchor(spec: Scene2Spec) -> tuple[float, float]:
    """Where the pattern's central stripe or dot sits: the centre of the shape's interior."""
    (cx, cy), r = interior(spec.shape, spec.centre(), spec.extent(), OUTLINE_WIDTH)
    return (cx, cy + _INCENTRE_DROP * r) if spec.shape == "triangle" else (cx, cy)


def layers(spec: Scene2Spec, size: int = IMAGE_SIZE) -> dict[str, np.ndarray]:
    """(size, size) coverages in [0, 1]: ``body``, ``contrast`` (ring and pattern), ``extra`` and ``texture``."""
    if not isinstance(size, int) or size < 32 or size > 1024:
        raise InputError(f"size={size!r} is invalid; pass an integer image side between 32 and 1024 (default 64)")
    centre, r = spec.centre(), spec.extent()
    cov = {name: np.zeros((size, size)) for name in ("body", "contrast", "extra")}
    where, x, y = _window(size, centre, r)
    silhouette = inside(spec.shape, centre, r, x, y)
    inner_centre, inner_r = interior(spec.shape, centre, r, OUTLINE_WIDTH)
    inner = inside(spec.shape, inner_centre, inner_r, x, y)
    ax, ay = pattern_anchor(spec)
    if spec.pattern == "striped":
        marks = np.mod((y - ay) / PATTERN_PERIOD + 0.25, 1.0) < 0.5
    elif spec.pattern == "dotted":
        du = np.mod((x - ax) / PATTERN_PERIOD + 0.5, 1.0) - 0.5
        dv = np.mod((y - ay) / PATTERN_PERIOD + 0.5, 1.0) - 0.5
        marks = np.hypot(du, dv) * PATTERN_PERIOD <= DOT_RADIUS
    else:
        marks = np.zeros_like(silhouette)
    ring = silhouette & ~inner if spec.outline == "ring" else np.zeros_like(silhouette)
    dark = ring | (inner & marks)
    cov["body"][where], cov["contrast"][where] = _down(silhouette & ~dark), _down(dark)
    if spec.extra_shape != NONE:
        ex, ey = CENTRES[spec.extra_position]
        extra_centre = (ex + spec.extra_dx, ey + spec.extra_dy)
        where, x, y = _window(size, extra_centre, EXTRA_EXTENT)
        cov["extra"][where] = _down(inside(spec.extra_shape, extra_centre, EXTRA_EXTENT, x, y))

    t = (np.arange(size) + 0.5) / size
    wave = 0.5 * (1.0 + np.cos(2 * np.pi * t / TEXTURE_PERIOD - math.radians(float(spec.texture_phase))))
    texture = np.tile(wave[:, None], (1, size)) if spec.texture == "horizontal" else np.tile(wave[None, :], (size, 1))
    return {**cov, "texture": texture}


def render(spec: Scene2Spec, size: int = IMAGE_SIZE) -> Image.Image:
    """The scene as an RGB image of ``size`` x ``size`` pixels (antialiased by 8x8 point supersampling)."""
    cov = layers(spec, size)
    bg = np.asarray(BACKGROUNDS[spec.background], dtype=np.float64)
    sign = 1.0 if spec.background == "black" else -1.0
    ground = bg + sign * TEXTURE_AMPLITUDE * cov["texture"][..., None]  # (H, W, 3)
    pixels = ground * (1.0 - cov["body"] - cov["contrast"] - cov["extra"])[..., None]
    pixels = pixels + cov["body"][..., None] * np.asarray(shaded(spec.colour, spec.shade))
    pixels = pixels + cov["contrast"][..., None] * np.asarray(contrast(spec.background))
    if spec.extra_colour != NONE:
        pixels = pixels + cov["extra"][..., None] * np.asarray(COLOURS[spec.extra_colour], dtype=np.float64)
    return Image.fromarray(np.clip(np.round(pixels), 0, 255).astype(np.uint8), "RGB")


def object_mask(spec: Scene2Spec, size: int = IMAGE_SIZE) -> np.ndarray:
    """(size, size) bool mask of the pixels the main object touches."""
    cov = layers(spec, size)
    return (cov["body"] + cov["contrast"]) > 0
