"""The ground-truth toy world: rendered scenes, exact attribute readers, trained tiny DiTs, a benchmark, a demo.

Importing this module is cheap (no torch): scenes, readers and models load when used.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import eimsdk
from eimsdk.errors import EimsdkError, InputError

if TYPE_CHECKING:
    import numpy as np
    from PIL import Image

    from eimsdk_toy.scenes import SceneSpec

WEIGHTS_DIR = Path(__file__).parent / "weights"
FAMILIES = ("pixart", "sd3", "flux", "unet")


class ModelNotTrainedError(EimsdkError, FileNotFoundError):
    """The shipped toy weights of a family are missing (train them with ``python -m eimsdk_toy.train``)."""


def default_model_path(family: str = "pixart", world: int = 1) -> Path:
    """Folder of the shipped toy model of ``family`` in toy ``world`` 1 or 2 (a diffusers pipeline folder)."""
    if family not in FAMILIES:
        raise InputError(f"family={family!r} is not a toy family; use one of {list(FAMILIES)}")
    root, flag = (WEIGHTS_DIR, "") if world == 1 else (WEIGHTS_DIR / "toy2", "--world 2 ")
    folder = root / family
    if not (folder / "model_index.json").is_file():
        raise ModelNotTrainedError(
            f"the toy {family} model is not in {folder}; train it with "
            f"`python -m eimsdk_toy.train {flag}--family {family} --out {root}` (add --device cuda on a GPU)")
    return folder


def sd3_model_path() -> Path:
    """Folder of the shipped toy SD3 model."""
    return default_model_path("sd3")


def flux_model_path() -> Path:
    """Folder of the shipped toy Flux model."""
    return default_model_path("flux")


def unet_model_path() -> Path:
    """Folder of the shipped toy UNet (a ``StableDiffusionPipeline``)."""
    return default_model_path("unet")


toy2_pixart_path = partial(default_model_path, "pixart", 2)
toy2_sd3_path = partial(default_model_path, "sd3", 2)
toy2_flux_path = partial(default_model_path, "flux", 2)
toy2_unet_path = partial(default_model_path, "unet", 2)


@dataclass(frozen=True)
class Scene:
    """A rendered toy scene with everything known about it."""

    spec: "SceneSpec"
    caption: str
    image: "Image.Image"
    mask: "np.ndarray"  # (H, W) bool, pixels the object touches

    @property
    def attributes(self) -> dict[str, str]:
        return self.spec.attributes()


def make_scene(seed: int, size: int = 32, **attrs: Any) -> Scene:
    """The scene of ``seed`` (reproducible), with attributes pinned by keyword, e.g. ``make_scene(0, colour="red")``."""
    from eimsdk_toy.scenes import caption, make_spec, region_mask, render

    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise InputError(f"seed={seed!r} is invalid; pass a non-negative integer")
    spec = make_spec(seed, **attrs)
    return Scene(spec=spec, caption=caption(spec), image=render(spec, size), mask=region_mask(spec, size))


@eimsdk.hookimpl
def register_readers(register):
    register("toy", "eimsdk_toy.readers:ToyReader", description="exact readers of the toy scenes' attributes")
    register("toy2", "eimsdk_toy.readers2:Toy2Reader",
             description="exact readers of toy world 2: named attributes and unnamed content ('none' if absent)")


@eimsdk.hookimpl
def register_models(register):
    register("toy-pixart", "eimsdk_toy:default_model_path", description="toy PixArt-alpha trained on scenes")
    register("toy-sd3", "eimsdk_toy:sd3_model_path", description="toy Stable Diffusion 3 trained on scenes")
    register("toy-flux", "eimsdk_toy:flux_model_path", description="toy FLUX.1 (schnell-like) trained on scenes")
    register("toy-unet", "eimsdk_toy:unet_model_path", description="toy Stable Diffusion UNet trained on scenes")
    register("toy2-pixart", "eimsdk_toy:toy2_pixart_path", description="toy PixArt-alpha trained on world 2")
    register("toy2-sd3", "eimsdk_toy:toy2_sd3_path", description="toy Stable Diffusion 3 trained on world 2")
    register("toy2-flux", "eimsdk_toy:toy2_flux_path", description="toy FLUX.1 (schnell-like) trained on world 2")
    register("toy2-unet", "eimsdk_toy:toy2_unet_path", description="toy Stable Diffusion UNet trained on world 2")


@eimsdk.hookimpl
def register_manifests(register):
    register("toy", "eimsdk_toy.bench:toy_manifest_source",
             description="toy[:SCENES[:SEED]]: seeded toy scenes, each edited along every attribute")
    register("toy2", "eimsdk_toy.bench2:toy2_manifest_source",
             description="toy2[:SCENES[:SEED]]: world-2 scenes, each edited along every named attribute")


@eimsdk.hookimpl
def register_commands(register):
    register("demo", "eimsdk_toy.demo:demo_command", description="the embedded default: edit a toy scene with HSDS")
