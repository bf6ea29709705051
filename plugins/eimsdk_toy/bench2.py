"""The world-2 manifest source ``toy2[:SCENES[:SEED]]``: seeded scenes, each edited along every named attribute.

For scene ``s`` and named attribute ``a`` (coarse: shape, colour, position, size, background; fine: shade,
pattern, outline) the task changes ``a`` to another class drawn from the same seeded stream and keeps everything
else, the unnamed content included (a position edit never moves the main object onto the second one). Each item's
``source_values`` hold every attribute the ``toy2`` reader reads, named and unnamed, so a benchmark's
"preserved" (and so "precise") requires the unnamed content read back unchanged; ``meta["kinds"]`` maps each
attribute to its kind (coarse / fine / unnamed) for the report's per-kind table, and ``meta["unnamed"]`` is the
unnamed content alone.

A background edit keeps the faint texture where it is in the image: the texture adds grey to a black background
and takes it from a white one, so the scene whose pixels differ from the source by one constant outside the objects
(what a minimal edit draws) has its ``texture_phase`` turned by 180 degrees. That phase is then part of the task's
``expected`` values, not of what it must preserve (first benchmark run: every method that flipped the background
drew the texture so, and a "kept" phase would have marked all of them imprecise). ``toy2:60`` gives 60 x 8 = 480
tasks; renders are written as ``FOLDER/toy2-SSS.png`` (SEED > 0: ``toy2-SEED-SSS.png``).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from eimsdk.bench.manifest import ManifestItem, Region
from eimsdk.errors import InputError
from eimsdk.records import save_image
from eimsdk_toy.bench import changed_region

DEFAULT_SCENES = 60


def toy2_manifest(folder: str | Path, scenes: int = DEFAULT_SCENES, *, seed: int = 0) -> list[ManifestItem]:
    """``scenes`` random world-2 scenes x every named attribute, one edit task each (ids ``toy2-SSS-attribute``)."""
    from eimsdk_toy.world2 import ATTRIBUTES, KINDS, NAMED, caption, random_spec, render

    if isinstance(scenes, bool) or not isinstance(scenes, int) or scenes < 1:
        raise InputError(f"scenes={scenes!r} must be a positive integer")
    rng = np.random.default_rng(seed)
    file_prefix = f"toy2-{seed}" if seed else "toy2"
    items = []
    for s in range(scenes):
        spec = random_spec(rng)
        source = render(spec)
        image = save_image(source, Path(folder) / f"{file_prefix}-{s:03d}.png")
        for attribute in NAMED:
            taken = {spec.extra_position} if attribute == "position" else set()
            others = [c for c in ATTRIBUTES[attribute] if c != getattr(spec, attribute) and c not in taken]
            new = others[int(rng.integers(len(others)))]
            update = {attribute: new}
            if attribute == "background":
                update["texture_phase"] = _turned(spec.texture_phase)
            target = spec.model_copy(update=update)
            items.append(ManifestItem(
                id=f"toy2-{s:03d}-{attribute}", image=str(image), source_prompt=caption(spec),
                attribute=attribute, target_prompts=[caption(target)], expected=update,
                source_values=spec.attributes(), region=Region.from_mask(changed_region(source, render(target))),
                group=f"toy2-{s:03d}", size=(source.height, source.width),
                meta={"scene": spec.model_dump(), "kind": KINDS[attribute], "kinds": dict(KINDS),
                      "unnamed": spec.unnamed()},
            ))
    return items


def _turned(phase: str) -> str:
    """A texture phase turned by 180 degrees: the same stripes in the image once the background's polarity flips."""
    return str((int(phase) + 180) % 360)


def toy2_manifest_source(argument: str, folder: Path) -> list[ManifestItem]:
    """The manifest source ``toy2``: ``argument`` is empty, ``SCENES`` or ``SCENES:SEED`` (scene seed, default 0)."""
    parsed = re.fullmatch(r"(\d+)(?::(\d+))?", argument)
    if argument and parsed is None:
        raise InputError(f"manifest 'toy2:{argument}': the toy2 manifest is 'toy2', 'toy2:SCENES' or "
                         "'toy2:SCENES:SEED' with SCENES and SEED numbers (SEED draws the scenes; 'toy2:SCENES' uses "
                         "seed 0)")
    scenes, seed = parsed.groups() if parsed else (None, None)
    return toy2_manifest(folder, int(scenes or DEFAULT_SCENES), seed=int(seed or 0))
