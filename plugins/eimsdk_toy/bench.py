"""The toy-world manifest source ``toy[:SCENES[:SEED]]``: seeded scenes, each edited along every attribute.

For scene ``s`` and attribute ``a`` the task changes ``a`` to another class drawn from the same seeded stream,
keeping every other attribute and the scene's jitter; the edited region is every pixel that differs between
the source and target renders, grown by one pixel. ``toy:50`` gives 50 x 5 = 250 tasks; each scene's render is
written as ``FOLDER/toy-SSS.png`` (SEED > 0: ``toy-SEED-SSS.png``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from eimsdk.bench.manifest import ManifestItem, Region
from eimsdk.errors import InputError
from eimsdk.records import save_image

DEFAULT_SCENES = 50


def changed_region(before, after, grow: int = 1) -> np.ndarray:
    """(H, W) mask of pixels that differ between two images, grown by ``grow`` pixels (square neighbourhood)."""
    a, b = np.asarray(before, dtype=np.int16), np.asarray(after, dtype=np.int16)
    mask = (a != b).any(axis=-1)
    for _ in range(grow):
        g = mask.copy()
        g[1:] |= mask[:-1]
        g[:-1] |= mask[1:]
        g[:, 1:] |= g[:, :-1].copy()
        g[:, :-1] |= g[:, 1:].copy()
        mask = g
    return mask


def toy_manifest(folder: str | Path, scenes: int = DEFAULT_SCENES, *, seed: int = 0, size: int | None = None
                 ) -> list[ManifestItem]:
    """``scenes`` random scenes x every toy attribute, one edit task each (ids ``toy-SSS-attribute``)."""
    from eimsdk_toy.scenes import ATTRIBUTES, caption, random_spec, render

    if isinstance(scenes, bool) or not isinstance(scenes, int) or scenes < 1:
        raise InputError(f"scenes={scenes!r} must be a positive integer")
    rng = np.random.default_rng(seed)
    kw = {"size": size} if size else {}
    file_prefix = f"toy-{seed}" if seed else "toy"
    items = []
    for s in range(scenes):
        spec = random_spec(rng)
        source = render(spec, **kw)
        image = save_image(source, Path(folder) / f"{file_prefix}-{s:03d}.png")
        for attribute, classes in ATTRIBUTES.items():
            others = [c for c in classes if c != getattr(spec, attribute)]
            new = others[int(rng.integers(len(others)))]
            target = spec.model_copy(update={attribute: new})
            items.append(ManifestItem(
                id=f"toy-{s:03d}-{attribute}", image=str(image), source_prompt=caption(spec),
                attribute=attribute, target_prompts=[caption(target)], expected={attribute: new},
                source_values=spec.attributes(), region=Region.from_mask(changed_region(source, render(target, **kw))),
                group=f"toy-{s:03d}", size=(size, size) if size else None, meta={"scene": spec.model_dump()},
            ))
    return items


def toy_manifest_source(argument: str, folder: Path) -> list[ManifestItem]:
    """The manifest source ``toy``: ``argument`` is empty, ``SCENES`` or ``SCENES:SEED`` (scene seed, default 0)."""
    scenes, _, seed = argument.partition(":")
    if (argument and not scenes.isdigit()) or (seed and not seed.isdigit()) or argument.endswith(":"):
        raise InputError(f"manifest 'toy:{argument}': the toy manifest is 'toy', 'toy:SCENES' or 'toy:SCENES:SEED' "
                         "with SCENES and SEED numbers (SEED draws the scenes; 'toy:SCENES' uses seed 0)")
    return toy_manifest(folder, int(scenes) if scenes else DEFAULT_SCENES, seed=int(seed or 0))
