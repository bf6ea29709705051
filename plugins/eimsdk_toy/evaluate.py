"""Measure a trained toy model with the exact readers.

Usage::

    python -m eimsdk_toy.evaluate --model DIR [--n 256] [--steps 20] [--guidance 4.0] [--json OUT.json]
        [--seed 10000] [--scheduler KEY=VALUE ...]

Three numbers per model (targets from the toy-world issue); a world-2 model (its ``training.json`` says so, or
``--world 2``) is read by the world-2 reader, scored on the attributes its captions name, and its samples' unnamed
content is compared with the training scenes' (total variation distance per unnamed attribute):

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

from eimsdk.backends.diffusers_base import ENCODER_OPTIONS_KEY
from eimsdk.errors import InputError
from eimsdk_toy.models import PIPELINES, encoder_options, sample_kwargs
from eimsdk_toy.worlds import get_world

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


def world_of(model: str | Path) -> int:
    """The toy world a model folder was trained on, from its ``training.json`` (1 when it does not say)."""
    summary = Path(model) / "training.json"
    return int(json.loads(summary.read_text())["config"].get("world", 1)) if summary.is_file() else 1


def eval_specs(n: int, seed: int = EVAL_SEED, world: int = 1) -> list[Any]:
    rng = np.random.default_rng(seed)
    return [get_world(world).random_spec(rng) for _ in range(n)]


def score(specs: Sequence[Any], readings: Sequence[dict[str, str]], names: Sequence[str] | None = None
          ) -> dict[str, Any]:
    """Per-attribute accuracy, all-attributes accuracy, and the count (``names``: default every attribute)."""
    names = list(names or specs[0].attributes())
    per = {name: float(np.mean([r[name] == getattr(s, name) for s, r in zip(specs, readings)])) for name in names}
    every = float(np.mean([all(r[name] == getattr(s, name) for name in names) for s, r in zip(specs, readings)]))
    return {"n": len(specs), "all": every, "attributes": per}


def unnamed_statistics(sampled: Sequence[dict[str, str]], training: Sequence[dict[str, str]],
                       names: Sequence[str]) -> dict[str, Any]:
    """Per unnamed attribute: class frequencies of the samples and of training scenes, their total variation
    distance (0 = the model draws the unnamed content as the training data does) and its permutation p-value
    (:func:`eimsdk.bench.stats.distribution_test`; small = the samples' statistics differ from the training data's)."""
    from eimsdk.bench.stats import distribution_test

    out = {}
    for name in names:
        classes = sorted({r[name] for r in sampled} | {r[name] for r in training})
        freq = [{c: float(np.mean([r[name] == c for r in rows])) for c in classes} for rows in (sampled, training)]
        test = distribution_test([r[name] for r in sampled], [r[name] for r in training])
        out[name] = {"samples": freq[0], "training": freq[1], "tv": test["tv"], "p_value": test["p_value"]}
    return out


def training_readings(n: int, world: int) -> list[dict[str, str]]:
    """The reader's readings of ``n`` scenes drawn like the training pool's (train.py draws them from seed + 1 = 1):
    the reference every unnamed-content statistic compares samples with."""
    toy = get_world(world)
    return toy.reader().read([toy.render(s) for s in eval_specs(n, 1, world)])


def render_pixels(specs: Sequence[Any], world: int = 1) -> torch.Tensor:
    """The scenes of ``specs`` as a (B, 3, H, W) float tensor in [-1, 1]."""
    arr = np.stack([np.asarray(get_world(world).render(s), dtype=np.float32) for s in specs])  # (B, H, W, 3)
    return torch.from_numpy(arr / 127.5 - 1.0).permute(0, 3, 1, 2).contiguous()


def parse_scheduler_options(items: Sequence[str]) -> dict[str, Any]:
    """``KEY=VALUE`` strings -> scheduler config overrides (``true``/``false``, numbers, else text; the key
    ``scheduler`` names another diffusers scheduler class, e.g. ``scheduler=FlowMatchHeunDiscreteScheduler``)."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key or not text:
            raise InputError(f"scheduler option {item!r} is not KEY=VALUE; pass e.g. stochastic_sampling=true")
        value: Any = {"true": True, "false": False}.get(text.lower(), text)
        if isinstance(value, str):
            for kind in (int, float):
                try:
                    value = kind(text)
                    break
                except ValueError:
                    pass
        out[key] = value
    return out


def with_scheduler(pipe, options: dict[str, Any]):
    """Set ``pipe``'s scheduler to one built from the shipped scheduler's config with ``options`` on top (see
    :func:`parse_scheduler_options`); an empty ``options`` restores the shipped one. Returns ``pipe``."""
    import diffusers

    shipped = pipe.__dict__.setdefault("_toy_shipped_scheduler", pipe.scheduler)
    options = dict(options)
    name = options.pop("scheduler", type(shipped).__name__)
    cls = getattr(diffusers, str(name), None)
    if not (isinstance(cls, type) and issubclass(cls, diffusers.SchedulerMixin)):
        raise InputError(f"scheduler={name!r} is not a diffusers scheduler class; pass e.g. "
                         f"scheduler={type(shipped).__name__}")
    try:
        unknown = sorted(set(options) - set(cls.from_config(shipped.config).config))
        if unknown:
            raise InputError(f"scheduler options {unknown} are not in {cls.__name__}'s config; pass keys of "
                             f"{sorted(k for k in shipped.config if not k.startswith('_'))}")
        built = cls.from_config(shipped.config, **options) if options or cls is not type(shipped) else shipped
    except (ValueError, TypeError, NotImplementedError) as exc:  # the scheduler's own check of its config
        raise InputError(f"scheduler options {options} are refused by {cls.__name__}: {exc}; pass values its "
                         "documentation allows") from None
    pipe.scheduler = built
    return pipe


def load_pipeline(model: str | Path, device: str = "cpu"):
    import diffusers

    family = family_of(model)
    pipe = getattr(diffusers, PIPELINES[family]).from_pretrained(str(model), torch_dtype=torch.float32)
    stored = encoder_options(model)  # diffusers drops model_index.json's private keys from pipe.config
    if stored:
        pipe.register_to_config(**{ENCODER_OPTIONS_KEY: stored})
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device), family


@torch.no_grad()
def sample_images(pipe, family: str, prompts: Sequence[str], *, steps: int, guidance: float, seed: int,
                  device: str = "cpu", image_size: int = 32) -> torch.Tensor:
    """The pipeline's own text-to-image; (B, 3, S, S) in [-1, 1]. Flux gets true CFG with the empty prompt."""
    kw = sample_kwargs(family, image_size, encoder_options(pipe))
    gen = torch.Generator(device).manual_seed(seed)
    if family == "flux":
        kw.update(true_cfg_scale=guidance, negative_prompt=[""] * len(prompts))
    else:
        kw.update(guidance_scale=guidance)
    out = pipe(list(prompts), num_inference_steps=steps, generator=gen, output_type="pt", **kw).images
    return out.float().cpu() * 2 - 1


def sample_readings(pipe, family: str, specs: Sequence, *, steps: int, guidance: float, batch: int, seed: int,
                    device: str = "cpu", world: int = 1) -> list[dict[str, str]]:
    """The world's reader's readings of the pipeline's samples from the captions of ``specs``, ``batch`` at a time
    (chunk ``i`` seeded ``seed + i``)."""
    toy = get_world(world)
    reader = toy.reader()
    readings: list[dict[str, str]] = []
    for i in range(0, len(specs), batch):
        chunk = specs[i:i + batch]
        images = sample_images(pipe, family, [toy.caption(s) for s in chunk], steps=steps, guidance=guidance,
                               seed=seed + i, device=device, image_size=toy.image_size)
        readings += reader.read(images)
    return readings


def evaluate_sampling(pipe, family: str, n: int, *, steps: int = 20, guidance: float = 4.0, batch: int = 32,
                      seed: int = EVAL_SEED, device: str = "cpu", world: int = 1,
                      scheduler: dict[str, Any] | None = None) -> dict[str, Any]:
    """Captions -> samples -> readers, scored on the named attributes; world 2 adds ``unnamed`` statistics.
    ``scheduler``: options of :func:`with_scheduler` (default: the shipped scheduler)."""
    toy = get_world(world)
    with_scheduler(pipe, scheduler or {})
    specs = eval_specs(n, seed, world)
    readings = sample_readings(pipe, family, specs, steps=steps, guidance=guidance, batch=batch, seed=seed,
                               device=device, world=world)
    report = {**score(specs, readings, toy.named), "steps": steps, "guidance": guidance, "seed": seed,
              "scheduler": {"class": type(pipe.scheduler).__name__, **(scheduler or {})}}
    if toy.unnamed:
        report["unnamed"] = unnamed_statistics(readings, training_readings(n, world), toy.unnamed)
    return report


@torch.no_grad()
def vae_roundtrip_images(vae, x: torch.Tensor) -> torch.Tensor:
    """``x`` (B, 3, H, W) in [-1, 1] through ``vae``: encode, posterior mode, decode, in chunks of 64."""
    return torch.cat([vae.decode(vae.encode(c).latent_dist.mode()).sample for c in x.split(64)])


@torch.no_grad()
def evaluate_vae(pipe, family: str, n: int, *, seed: int = EVAL_SEED + 1, device: str = "cpu", world: int = 1
                 ) -> dict[str, Any]:
    specs = eval_specs(n, seed, world)
    rec = vae_roundtrip_images(pipe.vae, render_pixels(specs, world).to(device)).clamp(-1, 1)
    return score(specs, get_world(world).reader().read(rec.cpu()))


def evaluate_inversion(model: str | Path, n: int, *, steps: int = 50, batch: int = 32, seed: int = EVAL_SEED + 2,
                       device: str = "cpu", world: int = 1, fixed_point_iterations: int = 0) -> dict[str, Any]:
    """Round trip through the family's eimsdk backend: encode, invert to t=1 (``fixed_point_iterations`` per
    step, see :meth:`eimsdk.interfaces.Encoder.invert`), sample back, decode, read (every attribute, unnamed
    content included)."""
    from eimsdk.editor import Editor

    toy = get_world(world)
    encoder = Editor.from_pretrained(str(model), device=device).encoder
    specs = eval_specs(n, seed, world)
    reader = toy.reader()
    readings: list[dict[str, str]] = []
    for i in range(0, n, batch):
        chunk = specs[i:i + batch]
        with torch.no_grad():
            z0 = encoder.encode_images(render_pixels(chunk, world).to(encoder.device, encoder.dtype))
            cond = encoder.encode_prompts([toy.caption(s) for s in chunk])
            z_t = encoder.invert(z0, cond, 1.0, steps, fixed_point_iterations=fixed_point_iterations)
            images = encoder.decode_latents(encoder.sample(z_t, cond, 1.0, steps))
        readings += reader.read(images.float().cpu().clamp(-1, 1))
    names = list(specs[0].attributes())
    return {**score(specs, readings), "steps": steps, "fixed_point_iterations": fixed_point_iterations,
            "backend": type(encoder).__name__,
            # per scene, in the order of eval_specs(n, seed): every attribute right (for paired tests between runs)
            "scene_all_right": [all(r[a] == getattr(s, a) for a in names) for s, r in zip(specs, readings)]}


def evaluate(model: str | Path, *, n: int = 256, steps: int = 20, guidance: float = 4.0, inversion_n: int = 64,
             inversion_steps: int = 50, device: str = "cpu", world: int | None = None,
             inversion_fixed_point: int = 0, seed: int = EVAL_SEED,
             scheduler: dict[str, Any] | None = None) -> dict[str, Any]:
    """All three measurements of one model folder (``world``: default from its ``training.json``; ``seed`` and
    ``scheduler`` apply to sampling from captions only)."""
    world = world or world_of(model)
    pipe, family = load_pipeline(model, device)
    with_scheduler(pipe, scheduler or {})  # a bad option fails here, before any measurement
    report: dict[str, Any] = {"model": str(model), "family": family, "world": world,
                              "vae": evaluate_vae(pipe, family, n, device=device, world=world),
                              "sampling": evaluate_sampling(pipe, family, n, steps=steps, guidance=guidance,
                                                            device=device, world=world, seed=seed,
                                                            scheduler=scheduler)}
    if inversion_n:
        try:
            report["inversion"] = evaluate_inversion(model, inversion_n, steps=inversion_steps, device=device,
                                                     world=world, fixed_point_iterations=inversion_fixed_point)
        except ImportError as exc:  # the family's backend plugin is not installed
            report["inversion"] = {"skipped": f"no backend: {exc}"}
    return report


def markdown(report: dict[str, Any]) -> str:
    """The report as a Markdown table row per measurement (``-`` where a measurement does not score an
    attribute: sampling scores only the named ones), then the unnamed-content statistics of world 2."""
    names = list(get_world(report.get("world", 1)).attributes)
    lines = [f"| {report['family']} | n | all | " + " | ".join(names) + " |",
             "|---|---|---|" + "---|" * len(names)]
    for key in ("vae", "sampling", "inversion"):
        r = report.get(key)
        if not r or "skipped" in r:
            continue
        cells = " | ".join(f"{100 * r['attributes'][a]:.1f}%" if a in r["attributes"] else "-" for a in names)
        lines.append(f"| {key} | {r['n']} | {100 * r['all']:.1f}% | {cells} |")
    unnamed = report["sampling"].get("unnamed", {})
    if unnamed:
        lines += ["", "| unnamed attribute | TV(samples, training) | p (permutation) | samples | training |",
                  "|---|---|---|---|---|"]
        for name, stats in unnamed.items():
            cells = [", ".join(f"{c} {100 * f:.0f}%" for c, f in stats[k].items()) for k in ("samples", "training")]
            p_value = f"{stats['p_value']:.3g}" if "p_value" in stats else "-"  # reports written before it had p
            lines.append(f"| {name} | {stats['tv']:.3f} | {p_value} | {cells[0]} | {cells[1]} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m eimsdk_toy.evaluate", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="a pipeline folder written by eimsdk_toy.train")
    p.add_argument("--n", type=int, default=256, help="scenes sampled from captions")
    p.add_argument("--steps", type=int, default=20, help="sampling steps")
    p.add_argument("--guidance", type=float, default=4.0, help="classifier-free guidance scale")
    p.add_argument("--seed", type=int, default=EVAL_SEED,
                   help=f"seed of the captions' scenes and the sampling noise (default {EVAL_SEED}, the evaluation's)")
    p.add_argument("--scheduler", nargs="*", default=[], metavar="KEY=VALUE",
                   help="sampling from captions only: scheduler config overrides (scheduler=CLASS swaps the class), "
                        "e.g. stochastic_sampling=true; default: the shipped scheduler")
    p.add_argument("--inversion-n", type=int, default=64, help="scenes for the inversion round trip (0: skip)")
    p.add_argument("--inversion-steps", type=int, default=50)
    p.add_argument("--inversion-fixed-point", type=int, default=0, metavar="K",
                   help="refine each inversion step K times with the prediction at its end point (K + 1 model "
                        "evaluations per step; 0: plain DDIM / Euler inversion)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--world", type=int, choices=[1, 2], default=None,
                   help="toy world of the model (default: from its training.json)")
    p.add_argument("--json", help="also write the report to this JSON file")
    args = p.parse_args(argv)
    if args.n < 1:
        p.error(f"--n={args.n} is invalid; pass at least 1 scene (sampling and the VAE are always measured)")
    if args.inversion_n < 0:
        p.error(f"--inversion-n={args.inversion_n} is invalid; pass 0 to skip the inversion round trip, or more")
    if not 0 <= args.inversion_fixed_point <= 100:
        p.error(f"--inversion-fixed-point={args.inversion_fixed_point} is invalid; pass 0 (plain inversion) to 100")
    import diffusers
    import transformers

    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.disable_progress_bar()
    try:
        report = evaluate(args.model, n=args.n, steps=args.steps, guidance=args.guidance,
                          inversion_n=args.inversion_n, inversion_steps=args.inversion_steps, device=args.device,
                          world=args.world, inversion_fixed_point=args.inversion_fixed_point, seed=args.seed,
                          scheduler=parse_scheduler_options(args.scheduler))
    except InputError as exc:  # a folder that is not a toy pipeline: the message names it and the fix
        p.error(str(exc))
    print(markdown(report))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
