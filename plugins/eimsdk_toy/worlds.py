"""The two toy worlds as one interface, so training and evaluation take ``--world 1`` or ``--world 2``.

World 1 (``eimsdk_toy.scenes``, 32 px): every pixel follows from the caption up to a 1 px jitter. World 2
(``eimsdk_toy.world2``, 64 px): fine-grained named attributes and unnamed content drawn from the seed.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import import_module
from pathlib import Path
from typing import Any

import numpy as np

from eimsdk.errors import InputError

WEIGHTS_DIR = Path(__file__).parent / "weights"


@dataclass(frozen=True)
class World:
    """One toy world: its scene module, reader, image side and where its shipped models live."""

    number: int
    scenes_module: str
    reader_path: str  # "module:Class"
    image_size: int
    weights: Path
    model_prefix: str  # registered model names are PREFIX-FAMILY
    text_tokens: int | None = None  # SD3/Flux text context (None: the pipelines' 77 + 256 / 512 tokens)

    @property
    def scenes(self):
        return import_module(self.scenes_module)

    @property
    def attributes(self) -> dict[str, list[str]]:
        return self.scenes.ATTRIBUTES

    @property
    def named(self) -> tuple[str, ...]:
        """The attributes a caption names (world 1: all of them)."""
        return getattr(self.scenes, "NAMED", tuple(self.attributes))

    @property
    def unnamed(self) -> tuple[str, ...]:
        """The attributes drawn from the seed and never named (world 1: none)."""
        return getattr(self.scenes, "UNNAMED", ())

    def reader(self):
        module, _, cls = self.reader_path.partition(":")
        return getattr(import_module(module), cls)()

    def random_spec(self, rng: np.random.Generator | int, **fixed: str) -> Any:
        return self.scenes.random_spec(rng, **fixed)

    def render(self, spec: Any):
        return self.scenes.render(spec, self.image_size)

    def caption(self, spec: Any) -> str:
        return self.scenes.caption(spec)


def render_specs(world: int, specs: list[Any]) -> np.ndarray:
    """(n, H, W, 3) uint8 renders of ``specs`` in ``world`` (a top-level function, so worker processes can run it)."""
    toy = WORLDS[world]
    return np.stack([np.asarray(toy.render(s), dtype=np.uint8) for s in specs])


def render_many(world: int, specs: list[Any], per_worker: int = 2048) -> np.ndarray:
    """:func:`render_specs` spread over up to one worker process per CPU core, ``per_worker`` scenes or more
    each (a 16384-scene world-2 pool takes about two CPU minutes)."""
    import os

    workers = min(os.cpu_count() or 1, len(specs) // per_worker)
    if workers <= 1:
        return render_specs(world, specs)
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context

    bounds = np.linspace(0, len(specs), workers + 1).astype(int)
    chunks = [specs[a:b] for a, b in zip(bounds[:-1], bounds[1:])]
    with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
        return np.concatenate(list(pool.map(render_specs, [world] * workers, chunks)))


WORLDS: dict[int, World] = {
    1: World(1, "eimsdk_toy.scenes", "eimsdk_toy.readers:ToyReader", 32, WEIGHTS_DIR, "toy"),
    # World 2's captions are at most 19 CLIP / 18 T5 tokens; a 32-token context makes a toy SD3 step 2.3x and a
    # toy Flux step 3.8x cheaper than the pipelines' default padding (docs/toy-world.md).
    2: World(2, "eimsdk_toy.world2", "eimsdk_toy.readers2:Toy2Reader", 64, WEIGHTS_DIR / "toy2", "toy2", 32),
}


def get_world(number: int) -> World:
    if number not in WORLDS:
        raise InputError(f"world={number!r} is not a toy world; use one of {sorted(WORLDS)}")
    return WORLDS[number]
