"""What one HSDS direction and one cached edit cost, against one full sampling pass of the same model.

    HF_HUB_OFFLINE=1 python benchmarks/hsds_cost.py [--families pixart sd3 flux] [--rounds 5] [--tradeoffs]
        [--json out.json]

Per tiny backend, in the same run and interleaved round by round (medians over rounds):

- ``sample``: one text-to-image pass with the diffusers pipeline's own defaults (``num_inference_steps`` and
  ``guidance_scale`` read from the pipeline's ``__call__``; CFG doubles the batch where the family uses it);
- ``hsds``: one direction with the default :class:`HSDSConfig` (K timesteps batched in one call);
- ``hsds-seq``: the same with ``max_batch=1`` (one row per model call): the speed-up from batching K;
- ``edit``: applying a cached direction with the default :class:`LinearJointConfig`;
- ``invert+sample``: one full inversion (default steps, to t = 1) plus one sampling pass: the edit's budget;
- the strength-0 round-trip error ``||z0' - z0|| / ||z0||`` of the default manipulator.

Ratios are given in wall time and in model evaluations (forward-equivalents, ``EvalCounter``). ``--tradeoffs``
adds the quality/cost knobs: on the analytic backend, the error of HSDS/DDS/SDS directions against the exact
mean shift for K, CG iterations and lam, and where strength 1 lands per ablation and edit time; on the tiny
backends, the CG truncation error (against 40 iterations) and the seed-to-seed agreement of the direction.
"""

from __future__ import annotations

import argparse
import inspect
import json
import statistics
import tempfile
import time
from pathlib import Path

import diffusers
import torch
from PIL import Image, ImageDraw

from eimsdk import Editor
from eimsdk.methods.baselines import DDSFinder, SDSFinder
from eimsdk.methods.hsds import HSDSFinder
from eimsdk.methods.manipulate import LinearJointManipulator
from eimsdk.records import JointLatent
from eimsdk.testing.analytic import GaussianEncoder
from eimsdk.testing.tiny import PIPELINE_CLASSES, build_tiny_pipeline

SOURCE, TARGET = "a photo of a red circle", "a photo of a blue circle"
LAMS = (0.001, 0.01, 0.1, 1.0)


def pipeline_defaults(family: str) -> tuple[int, float]:
    params = inspect.signature(getattr(diffusers, PIPELINE_CLASSES[family]).__call__).parameters
    return params["num_inference_steps"].default, params["guidance_scale"].default


def _scene() -> Image.Image:
    im = Image.new("RGB", (32, 32), (240, 240, 240))
    ImageDraw.Draw(im).ellipse((6, 6, 22, 22), fill=(220, 30, 30))
    return im


def _run(encoder, fn) -> tuple[float, float]:
    """(seconds, forward-equivalents) of one call."""
    snap = encoder.counter.snapshot()
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0, encoder.counter.since(snap)["model_evals"]


def cost_table(family: str, folder: Path, rounds: int) -> dict:
    editor = Editor.from_pretrained(folder)
    enc = editor.encoder
    steps, guidance = pipeline_defaults(family)
    h, w = enc.default_image_size
    latent = enc.encode(_scene(), SOURCE)
    direction = HSDSFinder().find(enc, latent, [TARGET])
    manipulator = LinearJointManipulator()
    jobs = {
        "sample": lambda: enc.generate([SOURCE], num_inference_steps=steps, guidance_scale=guidance, height=h,
                                       width=w, generator=torch.Generator().manual_seed(0)),
        "hsds": lambda: HSDSFinder().find(enc, latent, [TARGET]),
        "hsds-seq": lambda: HSDSFinder(max_batch=1).find(enc, latent, [TARGET]),
        "edit": lambda: manipulator.apply(enc, latent, [(direction, 1.0)]),
        "invert+sample": lambda: (enc.invert(latent.z0, latent.cond, 1.0, steps),
                                  enc.generate([SOURCE], num_inference_steps=steps, guidance_scale=guidance,
                                               height=h, width=w, generator=torch.Generator().manual_seed(0))),
    }
    for job in jobs.values():  # warm up
        job()
    seconds: dict[str, list[float]] = {k: [] for k in jobs}
    evals: dict[str, float] = {}
    for _ in range(rounds):
        for name, job in jobs.items():
            s, e = _run(enc, job)
            seconds[name].append(s)
            evals[name] = e
    sec = {k: statistics.median(v) for k, v in seconds.items()}
    round_trip = manipulator.apply(enc, latent, [(direction, 0.0)])
    return {
        "round-trip error": float((round_trip - latent.z0).norm() / latent.z0.norm()),
        "defaults": {"num_inference_steps": steps, "guidance_scale": guidance},
        "seconds": sec, "model_evals": evals,
        "hsds / sample (time)": sec["hsds"] / sec["sample"],
        "hsds / sample (evals)": evals["hsds"] / evals["sample"],
        "batching speed-up": sec["hsds-seq"] / sec["hsds"],
        "edit / (invert+sample) (time)": sec["edit"] / sec["invert+sample"],
        "edit / (invert+sample) (evals)": evals["edit"] / evals["invert+sample"],
    }


def analytic_tradeoffs() -> list[dict]:
    """Relative error of each finder's dz against the exact mean shift on the Gaussian world (5 images)."""
    enc = GaussianEncoder(cov_rank=2, dtype=torch.float64)
    g = torch.Generator().manual_seed(0)
    cond = enc.encode_prompts([SOURCE])
    target = enc.encode_prompts([TARGET])
    shift = (enc.mean(target) - enc.mean(cond)).flatten()
    chol = torch.linalg.cholesky(enc.covariance(cond))[0]
    rows = []
    finders = [("hsds", HSDSFinder, dict(num_timesteps=k, cg_iters=c)) for k in (1, 2, 4, 8) for c in (2, 4, 8)]
    finders += [(f"hsds lam={lam}", HSDSFinder, dict(num_timesteps=4, cg_iters=4, lam=lam)) for lam in LAMS]
    finders += [("dds", DDSFinder, dict(num_timesteps=4)), ("sds", SDSFinder, dict(num_timesteps=4))]
    images = [enc.mean(cond) + (chol @ torch.randn(chol.shape[0], generator=g, dtype=torch.float64)).reshape(
        1, *enc.latent_shape) for _ in range(5)]
    for name, cls, cfg in finders:
        errors = []
        for i, z0 in enumerate(images):
            latent = JointLatent(z0=z0, cond=cond, prompts=[SOURCE])
            dz = cls(**cfg).find(enc, latent, [TARGET], seed=i).dz.flatten()
            errors.append(float((dz - shift).norm() / shift.norm()))
        rows.append({"method": name, **cfg, "relative error": statistics.mean(errors)})
    return rows


def analytic_edits() -> list[dict]:
    """Where strength 1 lands, in units of the exact mean shift (1 = exactly the target's mean), per ablation."""
    enc = GaussianEncoder(dtype=torch.float64)
    cond = enc.encode_prompts([SOURCE])
    shift = (enc.mean(enc.encode_prompts([TARGET])) - enc.mean(cond)).flatten()
    g = torch.Generator().manual_seed(0)
    chol = torch.linalg.cholesky(enc.covariance(cond))[0]
    z0 = enc.mean(cond) + (chol @ torch.randn(chol.shape[0], generator=g, dtype=torch.float64)).reshape(
        1, *enc.latent_shape)
    latent = JointLatent(z0=z0, cond=cond, prompts=[SOURCE])
    d = HSDSFinder().find(enc, latent, [TARGET])
    rows = []
    for t_edit in (0.4, 0.6, 0.8):
        base = LinearJointManipulator(t_edit=t_edit).apply(enc, latent, [(d, 0.0)])
        for invert_under, ablation in [("source", "joint"), ("source", "dz"), ("source", "dc"), ("edited", "joint")]:
            moved = LinearJointManipulator(t_edit=t_edit, ablation=ablation, invert_under=invert_under).apply(
                enc, latent, [(d, 1.0)])
            rows.append({"t_edit": t_edit, "ablation": ablation, "invert_under": invert_under,
                         "shift units": float((moved - base).flatten() @ shift / shift.norm() ** 2),
                         "round-trip error": float((base - z0).norm() / z0.norm())})
    return rows


def tiny_tradeoffs(family: str, folder: Path) -> list[dict]:
    """CG truncation (vs 40 iterations, same seed) and seed agreement (cosine of dz for seeds 0 and 1)."""
    enc = Editor.from_pretrained(folder).encoder
    latent = enc.encode(_scene(), SOURCE)
    rows = []
    grid = [dict(num_timesteps=k, cg_iters=c) for k in (1, 2, 4, 8) for c in (2, 4, 8)]
    grid += [dict(num_timesteps=4, cg_iters=4, lam=lam) for lam in LAMS]
    for cfg in grid:
        ref = HSDSFinder(**{**cfg, "cg_iters": 40, "cg_tol": 1e-6}).find(enc, latent, [TARGET], seed=0).dz
        a = HSDSFinder(**cfg).find(enc, latent, [TARGET], seed=0)
        b = HSDSFinder(**cfg).find(enc, latent, [TARGET], seed=1)
        rows.append({"family": family, **a.meta["config"], "cg error": float((a.dz - ref).norm() / ref.norm()),
                     "seed cosine": float((a.dz * b.dz).sum() / (a.dz.norm() * b.dz.norm())),
                     "model_evals": a.meta["cost"]["model_evals"]})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--families", nargs="+", default=["pixart", "sd3", "flux"])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--tradeoffs", action="store_true")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    torch.manual_seed(0)
    report: dict = {"torch": torch.__version__, "costs": {}, "tiny_tradeoffs": []}
    with tempfile.TemporaryDirectory() as tmp:
        for family in args.families:
            folder = Path(tmp) / family
            build_tiny_pipeline(family, folder)
            report["costs"][family] = cost_table(family, folder, args.rounds)
            if args.tradeoffs:
                report["tiny_tradeoffs"] += tiny_tradeoffs(family, folder)
    if args.tradeoffs:
        report["analytic_tradeoffs"] = analytic_tradeoffs()
        report["analytic_edits"] = analytic_edits()

    print("\n| backend | sampling pass (defaults) | HSDS / sample, time | HSDS / sample, evals | batching K speed-up "
          "| edit / (invert + sample), time | edit / (invert + sample), evals | strength-0 round-trip error |")
    print("|---|---|---|---|---|---|---|---|")
    for family, r in report["costs"].items():
        d = r["defaults"]
        print(f"| {family} | {d['num_inference_steps']} steps, guidance {d['guidance_scale']}, "
              f"{r['model_evals']['sample']:.0f} evals, {r['seconds']['sample'] * 1e3:.0f} ms "
              f"| {r['hsds / sample (time)']:.2f} | {r['hsds / sample (evals)']:.2f} | {r['batching speed-up']:.2f}x "
              f"| {r['edit / (invert+sample) (time)']:.2f} | {r['edit / (invert+sample) (evals)']:.2f} "
              f"| {r['round-trip error']:.4f} |")
    if args.tradeoffs:
        print("\n| method | K | CG iters | lam | relative error vs exact shift (analytic) |\n|---|---|---|---|---|")
        for r in report["analytic_tradeoffs"]:
            print(f"| {r['method']} | {r.get('num_timesteps', '')} | {r.get('cg_iters', '')} | {r.get('lam', '')} | "
                  f"{r['relative error']:.4f} |")
        print("\n| t_edit | inversion under | ablation | strength 1 moves (exact shifts) | round-trip error |\n"
              "|---|---|---|---|---|")
        for r in report["analytic_edits"]:
            print(f"| {r['t_edit']} | {r['invert_under']} | {r['ablation']} | {r['shift units']:.3f} | "
                  f"{r['round-trip error']:.4f} |")
        print("\n| backend | K | CG iters | lam | model evals | CG error vs 40 iters | seed cosine |\n"
              "|---|---|---|---|---|---|---|")
        for r in report["tiny_tradeoffs"]:
            print(f"| {r['family']} | {r['num_timesteps']} | {r['cg_iters']} | {r['lam']} | {r['model_evals']:.0f} | "
                  f"{r['cg error']:.3f} | {r['seed cosine']:.3f} |")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
