"""Inversion round trip of the FLUX.1 backend: invert z0 to t_end, sample back, measure the reconstruction error.

Prints a Markdown table: latent RMSE (absolute, and relative to the RMS of z0) and pixel PSNR of the decoded
reconstruction against the decoded z0 (so the VAE's own error is left out), per number of steps and t_end.
Without ``--model`` it builds the project's tiny random FLUX pipeline (``eimsdk.testing.tiny``) in a temp folder.

Run: HF_HUB_OFFLINE=1 python benchmarks/inversion_flux.py [--model PATH_OR_ID] [--size 64] [--steps 5 10 25 50]
     [--t-end 1.0 0.6] [--device cuda] [--dtype bfloat16]
"""

from __future__ import annotations

import argparse
import math
import tempfile

import torch
from PIL import Image, ImageDraw

from eimsdk.editor import resolve_dtype
from eimsdk.testing.tiny import build_tiny_pipeline
from eimsdk_flux.encoder import FluxEncoder

PROMPT = "a photo of a red circle on a blue background"


def scene(size: int) -> Image.Image:
    """A red disc on a blue-to-white gradient: smooth areas and a sharp edge."""
    image = Image.linear_gradient("L").resize((size, size)).convert("RGB")
    image = Image.merge("RGB", (image.getchannel(0), image.getchannel(0), Image.new("L", (size, size), 230)))
    ImageDraw.Draw(image).ellipse((size // 5, size // 4, 3 * size // 4, 4 * size // 5), fill=(210, 40, 30))
    return image


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = float((a.float() - b.float()).pow(2).mean())
    return 10 * math.log10(4.0 / mse) if mse > 0 else float("inf")  # images in [-1, 1]: peak-to-peak 2


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="FLUX.1 folder or hub id (default: tiny random model)")
    parser.add_argument("--size", type=int, default=None, help="image side in pixels (default: the model's)")
    parser.add_argument("--steps", type=int, nargs="+", default=[5, 10, 25, 50])
    parser.add_argument("--t-end", type=float, nargs="+", default=[1.0, 0.6])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        model = args.model
        if model is None:
            build_tiny_pipeline("flux", tmp)
            model = tmp
        encoder = FluxEncoder.from_pretrained(model, device=args.device, dtype=resolve_dtype(args.dtype))
        size = args.size or encoder.default_image_size[0]
        latent = encoder.encode(scene(size), PROMPT, size=(size, size))
        z0 = latent.z0
        with torch.no_grad():
            reference = encoder.decode_latents(z0)
        z_rms = float(z0.pow(2).mean().sqrt())
        print(f"model: {args.model or 'tiny random FLUX (eimsdk.testing.tiny)'}, image {size}x{size}, "
              f"dtype {args.dtype}, embedded guidance {encoder.embedded_guidance}, no true CFG\n")
        print("| t_end | steps | latent RMSE | relative RMSE | pixel PSNR (dB) |\n|---|---|---|---|---|")
        for t_end in args.t_end:
            for steps in args.steps:
                z_t = encoder.invert(z0, latent.cond, t_end, steps)
                rec = encoder.sample(z_t, latent.cond, t_end, steps)
                with torch.no_grad():
                    pixels = encoder.decode_latents(rec)
                rmse = float((rec - z0).pow(2).mean().sqrt())
                print(f"| {t_end:g} | {steps} | {rmse:.2e} | {rmse / z_rms:.2e} | {psnr(pixels, reference):.1f} |")


if __name__ == "__main__":
    main()
