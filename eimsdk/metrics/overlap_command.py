"""``eimsdk overlap``: the reader-free disentanglement score ``S`` of several models on the same prompts.

Each model generates its own source images from ``--source`` (seeds ``seed .. seed + N - 1``), encodes them with
that prompt, finds one direction per image for every ``--edit ATTRIBUTE=PROMPT`` with ``--method`` and scores the
directions with :class:`eimsdk.metrics.internal.ResponseOverlap`. No reader, no image files: two checkpoints of
any families are compared on the same prompts, e.g. Stable Diffusion 2.1 against Stable Diffusion 3.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, Callable, Mapping

from eimsdk.errors import InputError


def overlap_command(parser: argparse.ArgumentParser) -> Callable[[argparse.Namespace], int]:
    """``eimsdk overlap``: its arguments, and the handler that runs it."""
    parser.add_argument("--models", nargs="+", required=True, help="model folders, hub ids (local cache) or names")
    parser.add_argument("--source", required=True, help="the prompt every model draws its source images from")
    parser.add_argument("--edit", action="append", required=True, metavar="ATTRIBUTE=PROMPT",
                        help="an attribute and the source prompt with that attribute changed; at least two")
    parser.add_argument("--images", type=int, default=4, help="source images per model (default 4)")
    parser.add_argument("--method", default="text", help="finder, optionally NAME:key=value,... (default text)")
    parser.add_argument("--steps", type=int, default=30, help="sampling steps of the source images")
    parser.add_argument("--guidance", type=float, default=5.0, help="guidance of the source images")
    parser.add_argument("--size", type=int, nargs=2, metavar=("H", "W"), help="default: each model's own size")
    parser.add_argument("--timesteps", type=float, nargs="+", help="noise levels of the responses (default "
                        "0.25 0.5 0.75)")
    parser.add_argument("--space", choices=["pixel", "latent"], default="pixel")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--json", help="also write every model's result to this JSON file")
    return run_overlap


def parse_edits(items: list[str]) -> dict[str, str]:
    """``["smile=a photo of a smiling man", ...]`` -> ``{"smile": "a photo of a smiling man", ...}``."""
    edits: dict[str, str] = {}
    for item in items:
        name, sep, prompt = item.partition("=")
        if not sep or not name.strip() or not prompt.strip():
            raise InputError(f"--edit expects ATTRIBUTE=PROMPT, got {item!r}")
        if name in edits:
            raise InputError(f"--edit names attribute {name!r} twice")
        edits[name.strip()] = prompt.strip()
    if len(edits) < 2:
        raise InputError(f"--edit gives {len(edits)} attribute(s); the overlap score needs at least two")
    return edits


def measure_overlap(model: str, source: str, edits: Mapping[str, str], *, images: int = 4, method: str = "text",
                    steps: int = 30, guidance: float = 5.0, size: tuple[int, int] | None = None, seed: int = 0,
                    device: str = "cpu", dtype: str = "float32", **overlap_config: Any) -> dict[str, Any]:
    """``S`` of one model: its own ``images`` sources drawn from ``source``, one direction per image and edit."""
    from eimsdk.bench.runner import parse_named
    from eimsdk.editor import Editor
    from eimsdk.metrics.internal import ResponseOverlap

    if images < 1:
        raise InputError(f"images={images} is invalid; pass at least 1 source image")
    metric = ResponseOverlap(seed=seed, **overlap_config)
    finder, finder_config = parse_named(method, "method")
    editor = Editor.from_pretrained(model, device=device, dtype=dtype)
    height, width = size or editor.encoder.default_image_size
    sources = [editor.generate(source, num_inference_steps=steps, guidance_scale=guidance, height=height,
                               width=width, seed=seed + i)[0] for i in range(images)]
    latent = editor.encode(sources, [source] * images, size=(height, width))
    directions = {name: [editor.find_direction(image, source, target, method=finder, seed=seed + i,
                                               size=(height, width), **finder_config)
                         for i, image in enumerate(sources)] for name, target in edits.items()}
    result = metric(editor.encoder, latent, directions)
    return {"model": model, "family": editor.encoder.family, "images": images, "method": method,
            "size": [height, width], **result.as_dict()}


def run_overlap(args: argparse.Namespace) -> int:
    """Handler of ``eimsdk overlap``: a table of ``S`` per model (with an interval over images), optional JSON."""
    from eimsdk.metrics.intervals import bootstrap_mean

    edits = parse_edits(args.edit)
    overlap_config = {"space": args.space, **({"timesteps": args.timesteps} if args.timesteps else {})}
    results = [measure_overlap(model, args.source, edits, images=args.images, method=args.method, steps=args.steps,
                               guidance=args.guidance, size=tuple(args.size) if args.size else None, seed=args.seed,
                               device=args.device, dtype=args.dtype, **overlap_config) for model in args.models]
    names = list(edits)
    print("| model | S | 95% interval (images) | " + " | ".join(f"S_{a}" for a in names) + " |")
    print("|---|---|---|" + "---|" * len(names))
    for r in results:
        lo, hi = bootstrap_mean(r["per_source"], seed=args.seed)
        r["interval"] = [round(lo, 6), round(hi, 6)]
        cells = " | ".join(f"{r['per_attribute'][a]:.3f}" for a in names)
        print(f"| {r['model']} | {r['score']:.3f} | [{lo:.3f}, {hi:.3f}] | {cells} |")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return 0
