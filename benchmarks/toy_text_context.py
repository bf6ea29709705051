"""What the text context costs a toy SD3 / Flux training step at world 2's 256 image tokens.

SD3 and Flux attend jointly over image and text tokens, and their pipelines pad the text to 77 CLIP + 256 T5
tokens (SD3) or 512 T5 tokens (Flux), while a world-2 caption is at most 19 CLIP / 18 T5 tokens. This times one
forward + backward of an untrained toy transformer (the world-2 shape: 4 x 32 x 32 latents) at batch ``--batch``
for each text length, single thread, best of ``--repeats``:

    OMP_NUM_THREADS=1 python benchmarks/toy_text_context.py --family sd3 --tokens 333 109 64
    OMP_NUM_THREADS=1 python benchmarks/toy_text_context.py --family flux --tokens 512 32
"""

from __future__ import annotations

import argparse
import time

import torch


def step_seconds(family: str, tokens: int, batch: int, repeats: int) -> float:
    """Best wall time of ``repeats`` forward + backward passes of the toy ``family`` transformer."""
    from diffusers import FluxPipeline

    from eimsdk_toy.models import build_transformer

    transformer = build_transformer(family, 0, 32, 4).train()
    z = torch.randn(batch, 4, 32, 32)
    text = torch.randn(batch, tokens, transformer.config.joint_attention_dim)
    pooled = torch.randn(batch, transformer.config.pooled_projection_dim)
    if family == "sd3":
        def run():
            return transformer(hidden_states=z, encoder_hidden_states=text, pooled_projections=pooled,
                               timestep=torch.rand(batch) * 1000).sample
    else:
        packed = FluxPipeline._pack_latents(z, batch, 4, 32, 32)
        img_ids = FluxPipeline._prepare_latent_image_ids(batch, 16, 16, z.device, z.dtype)

        def run():
            return transformer(hidden_states=packed, timestep=torch.rand(batch), pooled_projections=pooled,
                               encoder_hidden_states=text, txt_ids=torch.zeros(tokens, 3), img_ids=img_ids).sample
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        run().float().pow(2).mean().backward()
        best = min(best, time.perf_counter() - start)
    return best


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--family", choices=["sd3", "flux"], required=True)
    p.add_argument("--tokens", type=int, nargs="+", required=True, help="text lengths to time")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args(argv)
    torch.manual_seed(0)
    print(f"| {args.family} text tokens | s / step (batch {args.batch}, forward + backward, "
          f"{torch.get_num_threads()} thread(s)) |\n|---|---|")
    for tokens in args.tokens:
        print(f"| {tokens} | {step_seconds(args.family, tokens, args.batch, args.repeats):.2f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
