"""Reconstruction error of DDIM inversion -> sampling on the PixArt backend, against the number of steps.

A tiny random PixArt-alpha (``eimsdk.testing.tiny.build_tiny_pipeline(calibrate=True)``: unit-variance latents,
like real checkpoints) encodes a drawn test scene; ``invert`` to ``t_end`` then ``sample`` back with the same prompt, no
guidance. Reports the latent relative RMSE ``||z0' - z0|| / ||z0||`` and the PSNR (dB) of the decoded
reconstruction against the decoded original, as a Markdown table. A random model is not a trained one: the
numbers show the trend and the cost of inverting to pure noise, not the accuracy of real checkpoints.
``--fixed-point 0 2 5`` adds rows for ``invert(..., fixed_point_iterations=K)`` (K + 1 evaluations per step).

Run: HF_HUB_OFFLINE=1 python benchmarks/inversion_pixart.py [--steps 5 10 25 50] [--t-end 1.0 0.6] [--fixed-point 0]
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch


def scene():
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (32, 32), (235, 235, 235))
    draw = ImageDraw.Draw(image)
    draw.ellipse((4, 4, 18, 18), fill=(220, 30, 30))
    draw.rectangle((18, 16, 29, 28), fill=(30, 60, 210))
    return image


def psnr(x: torch.Tensor, ref: torch.Tensor) -> float:
    """PSNR in dB of images in [-1, 1] (peak-to-peak 2)."""
    mse = (x.float() - ref.float()).pow(2).mean()
    return float(10 * torch.log10(4.0 / mse))


def main() -> None:
    from eimsdk_pixart.encoder import PixArtEncoder
    from eimsdk.testing.tiny import build_tiny_pipeline

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, nargs="+", default=[5, 10, 25, 50])
    parser.add_argument("--t-end", type=float, nargs="+", default=[1.0, 0.6])
    parser.add_argument("--fixed-point", type=int, nargs="+", default=[0], help="fixed-point iterations per step")
    args = parser.parse_args()
    torch.manual_seed(0)

    with tempfile.TemporaryDirectory() as folder:
        build_tiny_pipeline("pixart", folder, calibrate=True)
        encoder = PixArtEncoder.from_pretrained(folder)
        latent = encoder.encode(scene(), "a photo of a red circle and a blue square")
        with torch.no_grad():
            reference = encoder.decode_latents(latent.z0)
        print("| t_end | steps | fixed-point K | latent rel. RMSE | pixel PSNR (dB) | model evals | seconds |")
        print("|---|---|---|---|---|---|---|")
        for t_end, steps, k in ((t, n, k) for t in args.t_end for n in args.steps for k in args.fixed_point):
            before, t0 = encoder.counter.forwards, time.perf_counter()
            z_t = encoder.invert(latent.z0, latent.cond, t_end, steps, fixed_point_iterations=k)
            z0 = encoder.sample(z_t, latent.cond, t_end, steps)
            seconds = time.perf_counter() - t0
            with torch.no_grad():
                image = encoder.decode_latents(z0)
            rmse = float((z0 - latent.z0).norm() / latent.z0.norm())
            print(f"| {t_end:g} | {steps} | {k} | {rmse:.4f} | {psnr(image, reference):.1f} | "
                  f"{encoder.counter.forwards - before} | {seconds:.2f} |")


if __name__ == "__main__":
    main()
