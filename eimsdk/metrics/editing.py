"""One measured edit (Identify then Manipulate at several strengths), shared by the metrics and the benchmark."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Sequence, TypeVar

import torch

from eimsdk.interfaces import DirectionFinder, Encoder, Manipulator
from eimsdk.records import Cost, Direction, JointLatent, Timer

if TYPE_CHECKING:
    from PIL import Image

T = TypeVar("T")


@dataclass
class EditedImages:
    """The images of one strength and what producing them cost."""

    strength: float
    pixels: torch.Tensor  # (B, 3, H, W) in [-1, 1]
    images: list["Image.Image"]
    cost: Cost


@dataclass
class EditRun:
    """A direction, what finding it cost, and the edits it made."""

    direction: Direction
    find_cost: Cost
    edits: list[EditedImages]


def measured(encoder: Encoder, fn: Callable[[], T]) -> tuple[T, Cost]:
    """Run ``fn`` and return its result with the model evaluations, seconds and peak memory it took."""
    snap = encoder.counter.snapshot()
    with Timer(encoder.device) as timer:
        out = fn()
    counts = encoder.counter.since(snap)
    return out, Cost(model_evals=counts["model_evals"], forwards=int(counts["forwards"]), jvps=int(counts["jvps"]),
                     vjps=int(counts["vjps"]), seconds=timer.seconds, peak_memory_bytes=timer.peak,
                     memory_kind=timer.kind)


def run_edit(encoder: Encoder, finder: DirectionFinder, manipulator: Manipulator, latent: JointLatent,
             source_prompts: Sequence[str], target_prompts: Sequence[str], strengths: Sequence[float], *,
             seed: int, preserve_prompts: Sequence[str] = ()) -> EditRun:
    """Find a direction from the prompt pairs, then apply it at each strength and decode.

    The global torch seed is set to ``seed`` first, so a run depends only on its inputs, not on what ran before.
    """
    from eimsdk.images import to_pil

    torch.manual_seed(seed)

    def find() -> Direction:
        with torch.enable_grad():
            return finder.find(encoder, latent, list(target_prompts), source_prompts=list(source_prompts),
                               preserve_prompts=list(preserve_prompts), seed=seed)

    direction, find_cost = measured(encoder, find)
    direction.check_fits(encoder, latent.z0)
    edits = []
    for strength in strengths:
        def apply(s: float = strength) -> torch.Tensor:
            z_edit = manipulator.apply(encoder, latent, [(direction, s)])
            with torch.no_grad():
                return encoder.decode_latents(z_edit)

        pixels, cost = measured(encoder, apply)
        pixels = pixels.detach().float().cpu()
        edits.append(EditedImages(strength=float(strength), pixels=pixels, images=to_pil(pixels), cost=cost))
    return EditRun(direction=direction, find_cost=find_cost, edits=edits)


def source_pixels(encoder: Encoder, image: Any, latent: JointLatent) -> torch.Tensor:
    """The source image as the model saw it: (1, 3, H, W) in [-1, 1] at the latent's image size."""
    from eimsdk.images import to_model_tensor

    pixels, _ = to_model_tensor(image, multiple=encoder.image_multiple, size=latent.image_size)
    return pixels
