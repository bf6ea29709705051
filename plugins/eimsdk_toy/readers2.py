"""Exact readers of toy world 2: every named attribute and every piece of unnamed content, from pixels.

Objects sit at quadrant centres and never cross a quadrant, so the reader works quadrant by quadrant:

1. background: black or white from the median brightness; the faint grey texture is told apart from objects by
   the distance of each pixel to the grey segment the texture spans;
2. the quadrant with the most object pixels holds the main object; the next one, if it has enough pixels, holds
   the second (unnamed) object, else the second object reads ``none``;
3. the main object's shape comes from the best fit of each shape's template (placed at the centroid, sized by the
   area), its size from the fitted extent; the second object (9 px, too small for a pixel template once a decoder
   softens its corners) is read from the angular harmonics of its soft coverage: a square has a 4-fold one, a
   triangle a 3-fold one, a circle neither; each object's colour (and shade) is the nearest palette colour to the
   median of its inner pixels;
4. on the main object, the per-pixel "contrast" share (ring and pattern colour) over the band just inside its edge
   gives the ring (its excess over half the interior's share, which stripes and dots reaching the edge put there),
   and over its interior gives the pattern: its mean separates plain from marked, its variation along rows
   against along columns separates stripes (horizontal) from dots;
5. the texture's orientation and phase from the Fourier coefficient of the background pixels at its period.

Each attribute also gets class probabilities (a softmax over feature distances); see ``docs/toy-world.md``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from eimsdk.errors import InputError
from eimsdk_toy.readers import ToyReader, _probs, _softmax, _to_arrays
from eimsdk_toy.scenes import CENTRES, COLOURS, POSITIONS, SHAPES
from eimsdk_toy.world2 import (ATTRIBUTES, EXTENTS, IMAGE_SIZE, NONE, PATTERNS, PHASES, SHADES, TEXTURE_AMPLITUDE,
                               TEXTURE_PERIOD, TEXTURES, _down, _window, contrast, inside, shaded)

_SHADED = [(c, s) for c in COLOURS for s in SHADES]
_SHADED_RGB = np.asarray([shaded(c, s) for c, s in _SHADED])  # (8, 3)
_HUES_RGB = np.asarray(list(COLOURS.values()), dtype=np.float64)  # (4, 3)
# Per shape: area in units of extent**2, and how far the centroid sits below the box centre (units of extent).
_SHAPE_FIT = {"circle": (math.pi, 0.0), "square": (4.0, 0.0), "triangle": (2.0, 1.0 / 3.0)}
_SIZE_THRESHOLD = (EXTENTS["small"] + EXTENTS["large"]) / 2
_OBJECT_DISTANCE = 40.0  # grey levels from the texture's grey segment: an object pixel
_MAIN_PIXELS = 60.0  # at 64 px: fewer object pixels than this in every quadrant is "no object"
_EXTRA_PIXELS = 15.0  # at 64 px: a second object has at least this many (a 9 px triangle has about 40)
# Second object: (3-fold, 4-fold) angular harmonics of each shape's soft coverage. Clean renders (740 second objects
# of random_spec(default_rng(2026))): the triangle's 3-fold one is 0.61-0.67 (median 0.64), the square's 4-fold one
# 0.37-0.45 (0.42), every other one within 0.07 of 0; a decoder's blur shrinks them towards 0 (a circle), so a
# shape is read by its nearest prototype (the medians).
_PATTERN_IN_BAND = 0.5  # share of the interior pattern colour that reaches the ring's band without a ring
_COVERAGE_FLOOR = 32.0  # distance (grey levels) read as no coverage: sigma-0.15 pixel noise stays below it
_HARMONIC_PROTOTYPES = {"circle": (0.0, 0.0), "square": (0.0, 0.42), "triangle": (0.64, -0.03)}


@dataclass
class Toy2Reading:
    """One image's reading: class per attribute, class probabilities, and the features behind the fine ones."""

    values: dict[str, str]
    probabilities: dict[str, dict[str, float]]
    features: dict[str, float]
    found: bool  # a main object was seen at all


def _erode(mask: np.ndarray, steps: int) -> np.ndarray:
    """Binary erosion by a (2 steps + 1) square."""
    out = mask.copy()
    for _ in range(steps):
        grown = out.copy()
        grown[1:] &= out[:-1]
        grown[:-1] &= out[1:]
        grown[:, 1:] &= grown[:, :-1].copy()
        grown[:, :-1] &= grown[:, 1:].copy()
        out = grown
    return out


def _box3(pixels: np.ndarray) -> np.ndarray:
    """The 3 x 3 mean of an (H, W, C) image, edges replicated."""
    padded = np.pad(pixels, ((1, 1), (1, 1), (0, 0)), mode="edge")
    h, w = pixels.shape[:2]
    return sum(padded[i:i + h, j:j + w] for i in range(3) for j in range(3)) / 9.0


def _dilate(mask: np.ndarray, steps: int) -> np.ndarray:
    return ~_erode(~mask, steps)


def _quadrant(position: str, size: int) -> tuple[slice, slice]:
    half = size // 2
    cx, cy = CENTRES[position]
    return slice(0, half) if cy < 0.5 else slice(half, size), slice(0, half) if cx < 0.5 else slice(half, size)


def _fit_shape(mask: np.ndarray, size: int) -> tuple[dict[str, float], dict[str, float], tuple[float, float]]:
    """Per shape: template fit error (|template - mask| / mask) and fitted half-extent; and the centroid."""
    ys, xs = np.nonzero(mask)
    mass = float(len(xs))
    cx, cy = (float(xs.mean()) + 0.5) / size, (float(ys.mean()) + 0.5) / size
    errors, extents = {}, {}
    for shape, (area, drop) in _SHAPE_FIT.items():
        r = math.sqrt(mass / (size * size) / area)
        centre = (cx, cy - drop * r)
        template = np.zeros(mask.shape)
        where, x, y = _window(size, centre, r)
        template[where] = _down(inside(shape, centre, r, x, y))
        errors[shape] = float(np.abs((template > 0.5) ^ mask).sum() / max(mass, 1.0))
        extents[shape] = r
    return errors, extents, (cx, cy)


def _harmonics(coverage: np.ndarray) -> tuple[float, float]:
    """The (3-fold, 4-fold) angular harmonics of a soft coverage map about its centroid, weighted by r**k.

    Apex-up triangles give a positive 3-fold one (sin 3 theta, y down), axis-aligned squares a positive 4-fold one
    (-cos 4 theta: their corners lie on the diagonals); both are invariant to scale and to where the object sits.
    """
    ys, xs = np.mgrid[0:coverage.shape[0], 0:coverage.shape[1]] + 0.5
    mass = max(float(coverage.sum()), 1e-9)
    dx, dy = xs - (coverage * xs).sum() / mass, ys - (coverage * ys).sum() / mass
    r, theta = np.hypot(dx, dy), np.arctan2(dy, dx)
    w3, w4 = coverage * r ** 3, coverage * r ** 4
    return (float((w3 * np.sin(3 * theta)).sum() / max(w3.sum(), 1e-9)),
            float(-(w4 * np.cos(4 * theta)).sum() / max(w4.sum(), 1e-9)))


def _sigmoid(x: float) -> float:
    return float(1.0 / (1.0 + math.exp(-max(-50.0, min(50.0, x)))))


def _nearest(palette: np.ndarray, colour: np.ndarray, scale: float) -> np.ndarray:
    return -(np.linalg.norm(palette - colour, axis=1) / scale) ** 2


def read_array(pixels: np.ndarray) -> Toy2Reading:
    """Read one square (H, W, 3) float image in [0, 255]."""
    size, w, _ = pixels.shape
    if size != w or size < 32:
        raise InputError(f"toy world-2 scenes are square and at least 32 px; got an image of {w}x{size} pixels")
    scale = size / IMAGE_SIZE
    px = max(1, round(scale))
    brightness = pixels.mean(axis=-1)  # (H, W)
    level = float(np.median(brightness))
    background = "black" if level < 127.5 else "white"
    ground, sign = (0.0, 1.0) if background == "black" else (255.0, -1.0)
    lift = np.clip(sign * (brightness - ground), 0.0, 1.3 * TEXTURE_AMPLITUDE)  # along the texture's grey segment
    distance = np.linalg.norm(pixels - (ground + sign * lift)[..., None], axis=-1)  # (H, W): from the texture's grey
    raw = distance > _OBJECT_DISTANCE
    # Where objects are is decided on a 3 x 3 mean, so pixel noise makes no specks; their exact edges on the pixels.
    smooth = _box3(pixels)
    smooth_lift = np.clip(sign * (smooth.mean(axis=-1) - ground), 0.0, 1.3 * TEXTURE_AMPLITUDE)
    found_at = np.linalg.norm(smooth - (ground + sign * smooth_lift)[..., None], axis=-1) > _OBJECT_DISTANCE
    objects = raw & _dilate(found_at, px)

    masses = {}
    for position in POSITIONS:
        quad = np.zeros_like(objects)
        quad[_quadrant(position, size)] = objects[_quadrant(position, size)]
        masses[position] = quad
    counts = {p: float(m.sum()) / scale ** 2 for p, m in masses.items()}
    main_at = max(counts, key=counts.get)
    found = counts[main_at] >= _MAIN_PIXELS
    rest = {p: c for p, c in counts.items() if p != main_at}
    extra_at = max(rest, key=rest.get)
    extra_found = found and rest[extra_at] >= _EXTRA_PIXELS

    probabilities: dict[str, dict[str, float]] = {}
    features: dict[str, float] = {}
    dark = np.asarray(contrast(background))
    if found:
        mask = masses[main_at]
        errors, extents, (cx, cy) = _fit_shape(mask, size)
        best = min(errors, key=errors.get)
        probabilities["shape"] = _probs(SHAPES, np.asarray([-(errors[k] / 0.1) ** 2 for k in SHAPES]))
        x_e, y_e = (cx - 0.5) / 0.03, (cy - 0.5) / 0.03
        probabilities["position"] = _probs(POSITIONS, np.asarray([-x_e - y_e, x_e - y_e, -x_e + y_e, x_e + y_e]) / 2)
        probabilities["size"] = _probs(["small", "large"],
                                       np.asarray([-1.0, 1.0]) * (extents[best] - _SIZE_THRESHOLD) / 0.02)
        inner = _erode(mask, px)
        candidates = pixels[inner] if inner.sum() >= 5 else pixels[mask]
        # Pixels that mix fill and ring/pattern colour lie between the two, so the fill is the colour farthest from
        # the ring/pattern colour: the median of the farthest tenth (at least 3 pixels).
        away = np.linalg.norm(candidates - dark, axis=-1)
        body = np.median(candidates[np.argsort(away)[-max(3, len(away) // 10):]], axis=0)
        colour_e = _nearest(_SHADED_RGB, body, 40.0)
        by_hue_shade = _softmax(colour_e).reshape(len(COLOURS), len(SHADES))  # _SHADED is hue-major
        probabilities["colour"] = {c: float(p) for c, p in zip(COLOURS, by_hue_shade.sum(axis=1))}
        probabilities["shade"] = {s: float(p) for s, p in zip(SHADES, by_hue_shade.sum(axis=0))}
        fill = np.asarray(_SHADED_RGB[int(np.argmax(colour_e))])
        axis = dark - fill
        share = np.clip((pixels - fill) @ axis / float(axis @ axis), 0.0, 1.0)  # (H, W): 1 = ring/pattern colour
        band = inner & ~_erode(mask, 2 * px)
        ring = float(share[band].mean()) if band.any() else 0.0
        core = _erode(mask, 3 * px)
        # The pattern is read on the 3 x 3 mean: it keeps the marks' mean share and the stripes' constant rows.
        share = np.clip((smooth - fill) @ axis / float(axis @ axis), 0.0, 1.0)
        marks = float(share[core].mean()) if core.any() else 0.0
        along_rows = core[:, px:] & core[:, :-px]
        along_cols = core[px:] & core[:-px]
        h_var = float(np.abs(share[:, px:] - share[:, :-px])[along_rows].mean()) if along_rows.any() else 0.0
        v_var = float(np.abs(share[px:] - share[:-px])[along_cols].mean()) if along_cols.any() else 0.0
        features.update(ring=ring, marks=marks, row_variation=h_var, column_variation=v_var)
        # Stripes and dots that reach the edge put pattern colour in the band too, about half their share inside
        # (clean renders); what a ring adds is the excess over that.
        ring_excess = ring - _PATTERN_IN_BAND * marks
        features.update(ring_excess=ring_excess)
        probabilities["outline"] = _probs(["none", "ring"], np.asarray([-1.0, 1.0]) * (ring_excess - 0.35) / 0.1)
        marked = _sigmoid((marks - 0.12) / 0.02)  # clean renders: plain <= 0.07, dotted >= 0.18
        striped = _sigmoid((v_var - 4.0 * h_var) / max(v_var + h_var, 1e-3) / 0.1)  # rows vary, columns do not
        probabilities["pattern"] = dict(zip(PATTERNS, (1.0 - marked, marked * striped, marked * (1.0 - striped))))
    else:  # nothing to read: the main object's attributes carry no information
        for name in ("shape", "colour", "position", "size", "shade", "pattern", "outline"):
            probabilities[name] = {c: 1.0 / len(ATTRIBUTES[name]) for c in ATTRIBUTES[name]}
    probabilities["background"] = _probs(["black", "white"], np.asarray([-1.0, 1.0]) * (level - 127.5) / 20.0)

    if extra_found:
        mask = masses[extra_at]
        inner = _erode(mask, px)
        hue = np.median(pixels[inner] if inner.sum() >= 3 else pixels[mask], axis=0)
        # Soft coverage: distance from the grey, relative to the object's full colour, around its pixels.
        full = max(float(np.percentile(distance[mask], 90)), _OBJECT_DISTANCE)
        around, quadrant = np.zeros_like(mask), _quadrant(extra_at, size)
        around[quadrant] = _dilate(mask, 2 * px)[quadrant]
        coverage = np.clip((distance - _COVERAGE_FLOOR) / (full - _COVERAGE_FLOOR), 0.0, 1.0) * around
        h3, h4 = _harmonics(coverage)
        features.update(extra_harmonic3=h3, extra_harmonic4=h4)
        gaps = [np.hypot(h3 - _HARMONIC_PROTOTYPES[k][0], h4 - _HARMONIC_PROTOTYPES[k][1]) for k in SHAPES]
        probabilities["extra_shape"] = _probs(ATTRIBUTES["extra_shape"],
                                              np.asarray([-1e3] + [-(g / 0.1) ** 2 for g in gaps]))
        probabilities["extra_colour"] = _probs(ATTRIBUTES["extra_colour"],
                                               np.concatenate([[-1e3], _nearest(_HUES_RGB, hue, 40.0)]))
        probabilities["extra_position"] = {p: float(p == extra_at) for p in ATTRIBUTES["extra_position"]}
    else:
        for name in ("extra_shape", "extra_colour", "extra_position"):
            probabilities[name] = {c: float(c == NONE) for c in ATTRIBUTES[name]}

    clear = ~_dilate(objects, 2 * px)  # background pixels away from every object
    t = (np.arange(size) + 0.5) / size * 2 * math.pi / TEXTURE_PERIOD
    lifted = lift - lift[clear].mean() if clear.any() else lift
    coeffs = {"horizontal": (lifted * np.exp(-1j * t)[:, None])[clear].sum(),
              "vertical": (lifted * np.exp(-1j * t)[None, :])[clear].sum()}
    power = np.asarray([abs(coeffs[k]) for k in TEXTURES]) / max(float(clear.sum()), 1.0) / TEXTURE_AMPLITUDE
    orientation = TEXTURES[int(np.argmax(power))]
    phase = math.degrees(-np.angle(coeffs[orientation])) % 360.0
    gap = np.asarray([min(abs(phase - float(p)), 360.0 - abs(phase - float(p))) for p in PHASES])
    features.update(texture_strength=float(power.max()), texture_degrees=phase)
    probabilities["texture"] = _probs(TEXTURES, power / 0.05)
    probabilities["texture_phase"] = _probs(PHASES, -(gap / 20.0) ** 2)

    probabilities = {name: probabilities[name] for name in ATTRIBUTES}
    values = {name: max(p, key=p.get) for name, p in probabilities.items()}
    return Toy2Reading(values=values, probabilities=probabilities, features=features, found=found)


class Toy2Reader(ToyReader):
    """Reads every world-2 attribute, named and unnamed, from pixels; ``none`` when a thing is absent."""

    name = "toy2"
    attributes = {name: list(classes) for name, classes in ATTRIBUTES.items()}

    def read_detailed(self, images: Sequence[Any]) -> list[Toy2Reading]:
        """Full readings (classes, probabilities, ring/pattern/texture features, whether an object was found)."""
        return [read_array(a) for a in _to_arrays(images)]
