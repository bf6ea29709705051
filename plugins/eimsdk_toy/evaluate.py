"""Measure a trained toy model with the exact readers.

Usage::

    python -m eimsdk_toy.evaluate --model DIR [--n 256] [--steps 20] [--guidance 4.0] [--json OUT.json]

Three numbers per model (targets from the toy-world issue):

- **sampling**: captions of seeded random scenes -> the diffusers pipeline -> readers; the share of samples
  whose every attribute matches the caption (target >= 80%) and each attribute alone (target >= 90%);
- **inversion**: a rendered scene -> the backend's Encoder (encode, deterministic inversion to full noise,
  sampling back, decode) -> readers; the share whose attributes equal the source's (target >= 98%);
- **vae**: encode -> decode only, the ceiling the other two can reach.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from eimsdk.errors import InputError
from eimsdk_toy.models import PIPELINES, sample_kwargs
from eimsdk_toy.readers import ToyReader
from eimsdk_toy.scenes import ATTRIBUTES, SceneSpec, caption, random_spec, render

EVAL_SEED = 10_000  # scenes for evaluation come from seeds the training pool never draws from


def family_of(model: str | Path) -> str:
    """The toy family of a pipeline folder, from its ``model_index.json``."""
    index = Path(model) / "model_index.json"
    if not index.is_file():
        raise InputError(f"model={str(model)!r} has no model_index.json; pass a folder written by "
                         "`python -m eimsdk_toy.train` (e.g. OUT/pixart)")
    name = json.loads(index.read_text())["_class_name"]
    for family, cls in PIPELINES.items():
        if cls == name:
            return family
    raise InputError(f"model={str(model)!r} is a {name}, not a toy pipeline ({sorted(PIPELINES.values())})")


def eval_specs(n: int, seed: int = EVAL_SEED) -> list[SceneSpec]:
    rng = np.random.default_rng(seed)
    return [random_spec(rng) for _ in range(n)]


def score(specs: Sequence[SceneSpec], readings: Sequence[dict[str, str]]) -> dict[str, Any]:
    """Per-attribute accuracy, all-attributes accuracy, and the count."""
    per = {name: float(np.mean([r[name] == getattr(s, name) for s, r in zip(specs, readings)])) for name in ATTRIBUTES}
    every = float(np.mean([all(r[name] == getattr(s, name) for name in ATTRIBUTES) for s, r in zip(specs, readings)]))
    return {"n": len(specs), "all": every, "attributes": per}


def _pixels(specs: Sequence[SceneSpec]) -> torch.Tensor:
    arr = np.stack([np.asarray(render(s), dtype=np.float32) for s in specs])  # (B, H, W, 3)
    return torch.from_numpy(arr / 127.5 - 1.0).permute(0, 3, 1, 2).contiguous()


def load_pipeline(model: str | Path, device: str = "cpu"):
    import diffusers

    family = family_of(model)
    pipe = getattr(diffusers, PIPELINES[family]).from_pretrained(str(model), torch_dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device), family


@torch.no_grad()
def sample_images(pipe, family: str, prompts: Sequence[str], *, steps: int, guidance: float, seed: int,
                  device: str = "cpu") -> torch.Tensor:
    """The pipeline's own text-to-image; (B, 3, 32, 32) in [-1, 1]. Flux gets true CFG with the empty prompt."""
    kw = sample_kwargs(family)
    gen = torch.Generator(device).manual_seed(seed)
    if family == "flux":
        kw.update(true_cfg_scale=guidance, negative_prompt=[""] * len(prompts))
    else:
        kw.update(guidance_scale=guidance)
    out = pipe(list(prompts), num_inference_steps=steps, generator=gen, output_type="pt", **kw).images
    return out.float().cpu() * 2 - 1


def evaluate_sampling(pipe, family: str, n: int, *, steps: int = 20, guidance: float = 4.0, batch: int = 32,
                      seed: int = EVAL_SEED, device: str = "cpu") -> dict[str, Any]:
    specs = eval_specs(n, seed)
    reader = ToyReader()
    readings: list[dict[str, str]] = []
    for i in range(0, n, batch):
        chunk = specs[i:i + batch]
        images = sample_images(pipe, family, [caption(s) for s in chunk], steps=steps, guidance=guidance,
                               seed=seed + i, device=device)
        readings += reader.read(images)
    return {**score(specs, readings), "steps": steps, "guidance": guidance}


@torch.no_grad()
def evaluate_vae(pipe, family: str, n: int, *, seed: int = EVAL_SEED + 1, device: str = "cpu") -> dict[str, Any]:
    specs = eval_specs(n, seed)
    vae = pipe.vae
    x = _pixels(specs).to(device)
    rec = torch.cat([vae.decode(vae.encode(c).latent_dist.mode()).sample for c in x.split(64)]).clamp(-1, 1)
    return score(specs, ToyReader().read(rec.cpu()))


def evaluate_inversion(model: str | Path, n: int, *, steps: int = 50, batch: int = 32, seed: int = EVAL_SEED + 2,
                       device: str = "cpu") -> dict[str, Any]:
    """Round trip through the family's eimsdk backend: encode, invert to t=1, sample back, decode, read."""
    from eimsdk.editor import Editor

    encoder = Editor.from_pretrained(str(model), device=device).encoder
    specs = eval_specs(n, seed)
    reader = ToyReader()
    readings: list[dict[str, str]] = []
    for i in range(0, n, batch):
        chunk = specs[i:i + batch]
        with torch.no_grad():
            z0 = encoder.encode_images(_pixels(chunk).to(encoder.device, encoder.dtype))
            cond = encoder.encode_prompts([caption(s) for s in chunk])
            z_t = encoder.invert(z0, cond, 1.0, steps)
            images = encoder.decode_latents(encoder.sample(z_t, cond, 1.0, steps))
        readings += reader.read(images.float().cpu().clamp(-1, 1))
    return {**score(specs, readings), "steps": steps, "backend": type(encoder).__name__}


def evaluate(model: str | Path, *, n: int = 256, steps: int = 20, guidance: float = 4.0, inversion_n: int = 64,
             inversion_steps: int = 50, device: str = "cpu") -> dict[str, Any]:
    """All three measurements of one model folder."""
    pipe, family = load_pipeline(model, device)
    report: dict[str, Any] = {"model": str(model), "family": family,
                              "vae": evaluate_vae(pipe, family, n, device=device),
                              "sampling": evaluate_sampling(pipe, family, n, steps=steps, guidance=guidance,
                                                            device=device)}
    if inversion_n:
        try:
            report["inversion"] = evaluate_inversion(model, inversion_n, steps=inversion_steps, device=device)
        except ImportError as exc:  # the family's backend plugin is not installed
            report["inversion"] = {"skipped": f"no backend: {exc}"}
    return report


def markdown(report: dict[str, Any]) -> str:
    """The report as a Markdown table row per measurement."""
    names = list(ATTRIBUTES)
    lines = [f"| {report['family']} | n | all | " + " | ".join(names) + " |",
             "|---|---|---|" + "---|" * len(names)]
    for key in ("vae", "sampling", "inversion"):
        r = report.get(key)
        if not r or "skipped" in r:
            continue
        cells = " | ".join(f"{100 * r['attributes'][a]:.1f}%" for a in names)
        lines.append(f"| {key} | {r['n']} | {100 * r['all']:.1f}% | {cells} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m eimsdk_toy.evaluate", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="a pipeline folder written by eimsdk_toy.train")
    p.add_argument("--n", type=int, default=256, help="scenes sampled from captions")
    p.add_argument("--steps", type=int, default=20, help="sampling steps")
    p.add_argument("--guidance", type=float, default=4.0, help="classifier-free guidance scale")
    p.add_argument("--inversion-n", type=int, default=64, help="scenes for the inversion round trip (0: skip)")
    p.add_argument("--inversion-steps", type=int, default=50)
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", help="also write the report to this JSON file")
    args = p.parse_args(argv)
    import diffusers
    import transformers

    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.disable_progress_bar()
    if args.n < 1:
        raise InputError(f"--n={args.n} is invalid; pass at least 1 scene")
    report = evaluate(args.model, n=args.n, steps=args.steps, guidance=args.guidance, inversion_n=args.inversion_n,
                      inversion_steps=args.inversion_steps, device=args.device)
    print(markdown(report))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
