"""Reconstruction error of SD3 inversion -> sampling against the number of steps, as a Markdown table.

Inverts clean latents to ``t_end`` with the backend's deterministic flow-ODE inversion, samples back with the same
prompt and reports the latent RMSE (absolute and relative to the latents' RMS) and the pixel PSNR between the
decoded original latents and the decoded reconstruction (so VAE error is left out). Defaults to the tiny SD3
pipeline of ``eimsdk.testing.tiny``; pass ``--model`` for a real one.

Run: python benchmarks/inversion_sd3.py [--model PATH] [--device cuda] [--dtype bfloat16] [--shifts 1.0 3.0]
"""

from __future__ import annotations

import argparse
import math
import tempfile

import torch
from PIL import Image, ImageDraw

COLOURS = [(220, 30, 30), (30, 60, 220), (30, 170, 60), (230, 200, 20)]


def scenes(count: int, size: tuple[int, int]) -> list[Image.Image]:
    """Flat shapes on a light background, one per image, placed by a fixed seed."""
    g = torch.Generator().manual_seed(0)
    h, w = size
    images = []
    for i in range(count):
        im = Image.new("RGB", (w, h), (240, 240, 235))
        x, y = (torch.rand(2, generator=g) * torch.tensor([w / 2, h / 2])).tolist()
        box = (x, y, x + w / 2, y + h / 2)
        draw = ImageDraw.Draw(im)
        (draw.ellipse if i % 2 == 0 else draw.rectangle)(box, fill=COLOURS[i % len(COLOURS)])
        images.append(im)
    return images


def measure(encoder, images: list[Image.Image], prompt: str, t_end: float, steps: int) -> dict[str, float]:
    latent = encoder.encode(images, prompt)
    before = encoder.counter.snapshot()
    z_t = encoder.invert(latent.z0, latent.cond, t_end, steps)
    rec = encoder.sample(z_t, latent.cond, t_end, steps)
    evals = encoder.counter.since(before)["model_evals"] / len(images)
    rmse = float((rec - latent.z0).pow(2).mean().sqrt())
    with torch.no_grad():
        x0 = (encoder.decode_latents(latent.z0).float() + 1) / 2
        x1 = (encoder.decode_latents(rec).float() + 1) / 2
    mse = float((x1 - x0).pow(2).mean())
    return {"rmse": rmse, "rel": rmse / float(latent.z0.pow(2).mean().sqrt()),
            "psnr": 10 * math.log10(1.0 / max(mse, 1e-12)), "evals": evals}


def main() -> None:
    from diffusers import FlowMatchEulerDiscreteScheduler

    from eimsdk.editor import resolve_dtype
    from eimsdk.testing.tiny import build_tiny_pipeline
    from eimsdk_sd3.encoder import SD3Encoder

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="diffusers SD3 folder or hub id (default: the tiny test pipeline)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--steps", type=int, nargs="+", default=[5, 10, 25, 50])
    parser.add_argument("--t-end", type=float, nargs="+", default=[1.0, 0.6])
    parser.add_argument("--shifts", type=float, nargs="*", default=[],
                        help="scheduler shifts to compare (default: the model's own scheduler)")
    parser.add_argument("--images", type=int, default=4)
    parser.add_argument("--prompt", default="a photo of a red circle")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        path = args.model or tmp
        if not args.model:
            build_tiny_pipeline("sd3", path)
        base = SD3Encoder.from_pretrained(path, device=args.device, dtype=resolve_dtype(args.dtype))
        encoders = {float(base.scheduler.shift): base}
        for shift in args.shifts:
            if shift not in encoders:
                scheduler = FlowMatchEulerDiscreteScheduler.from_config(base.scheduler.config, shift=shift)
                encoders[shift] = SD3Encoder.from_pretrained(path, device=args.device, scheduler=scheduler,
                                                             dtype=resolve_dtype(args.dtype))
        shifts = args.shifts or list(encoders)
        images = scenes(args.images, base.default_image_size)
        print(f"model: {path if args.model else 'tiny SD3 (eimsdk.testing.tiny)'}, {args.dtype}, {args.device}, "
              f"{args.images} images {base.default_image_size[1]}x{base.default_image_size[0]}, prompt "
              f"{args.prompt!r}\n")
        print("| t_end | shift | steps | latent RMSE | relative RMSE | pixel PSNR (dB) | model evals / image |")
        print("|---|---|---|---|---|---|---|")
        for t_end in args.t_end:
            for shift in shifts:
                for steps in args.steps:
                    r = measure(encoders[shift], images, args.prompt, t_end, steps)
                    print(f"| {t_end} | {shift} | {steps} | {r['rmse']:.4f} | {r['rel']:.4f} | {r['psnr']:.1f} | "
                          f"{r['evals']:.0f} |")


if __name__ == "__main__":
    main()
