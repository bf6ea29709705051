"""How exactly the world-2 reader (`toy2`) reads scenes that are clean, noisy, blurred, or passed through a VAE.

Scenes are ``random_spec(np.random.default_rng(31))`` as (B, 3, 64, 64) tensors in [-1, 1]; noise from
``torch.Generator().manual_seed(0)``; blur: [1, 2, 1] x [1, 2, 1] / 16 with edges replicated; a VAE: encode,
posterior mode, decode. Prints one Markdown row per measurement (share of scenes with all 13 attributes right, its
95% Wilson interval, the worst attributes) and writes them as JSON with ``--out``.

    python benchmarks/toy2_readers.py                                  # clean, noise, blur, the world-1 VAE
    python benchmarks/toy2_readers.py --vae runs/vae2/f2b/vae --only-vae  # one world-2 VAE's round trip
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
import torch.nn.functional as F

from eimsdk.bench.stats import wilson_interval
from eimsdk_toy.evaluate import eval_specs, render_pixels, score, vae_roundtrip_images
from eimsdk_toy.readers2 import Toy2Reader
from eimsdk_toy.worlds import get_world

SCENE_SEED = 31


def binomial_blur(x: torch.Tensor) -> torch.Tensor:
    k = torch.tensor([1.0, 2.0, 1.0])
    kernel = (k[:, None] * k[None, :] / 16.0).expand(3, 1, 3, 3)
    return F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), kernel, groups=3)


def vae_roundtrip(x: torch.Tensor, folder: str) -> torch.Tensor:
    from diffusers import AutoencoderKL

    return vae_roundtrip_images(AutoencoderKL.from_pretrained(folder, torch_dtype=torch.float32).eval(), x)


def measure(specs: list, images: torch.Tensor) -> dict:
    result = score(specs, Toy2Reader().read(images.clamp(-1, 1)))
    low, high = wilson_interval(round(result["all"] * result["n"]), result["n"])
    return {**result, "all_ci": [low, high]}


def row(name: str, result: dict) -> str:
    worst = sorted(result["attributes"].items(), key=lambda kv: kv[1])[:3]
    low, high = result["all_ci"]
    worst_text = ", ".join(f"{a} {v:.1%}" for a, v in worst)
    return (f"| {name}, {result['n']} scenes | {result['all']:.1%} [{low:.1%}, {high:.1%}] | {worst_text} |")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=1000, help="scenes per measurement (clean renders: 3 x n)")
    p.add_argument("--vae", action="append", default=[], help="also a round trip through this VAE folder")
    p.add_argument("--world1-vae", default=str(get_world(1).weights / "vae"), help="the world-1 VAE to compare")
    p.add_argument("--only-vae", action="store_true", help="only the --vae round trips")
    p.add_argument("--out", default=None, help="write every result as JSON here")
    args = p.parse_args(argv)
    results: dict[str, dict] = {}
    specs = eval_specs(3 * args.n if not args.only_vae else args.n, SCENE_SEED, world=2)
    x = render_pixels(specs, world=2)
    if not args.only_vae:
        results["clean renders"] = measure(specs, x)
        specs, x = specs[:args.n], x[:args.n]
        for sigma in (0.08, 0.15):
            noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(0))
            results[f"Gaussian noise sigma {sigma}"] = measure(specs, x + sigma * noise)
        results["3 x 3 binomial blur"] = measure(specs, binomial_blur(x))
        results["world-1 VAE round trip"] = measure(specs, vae_roundtrip(x, args.world1_vae))
    for folder in args.vae:
        results[f"VAE {folder} round trip"] = measure(specs, vae_roundtrip(x, folder))
    print("| measurement | all 13 right [95% CI] | worst attributes |\n|---|---|---|")
    for name, result in results.items():
        print(row(name, result), flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
