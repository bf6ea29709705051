"""Peak memory and time of HSDS derivative work and of an edit forward for the published transformer configs.

    OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 python benchmarks/hsds_memory.py [--models pixart-sigma sd3-medium ...]
        [--sizes 512 1024] [--dtypes float32 bfloat16] [--modes predict double-backward ...] [--json out.jsonl]

Each model is built with random weights from the config written below (no download), with 1 and 2 blocks
(Flux: 1+1 and 2+2 double/single-stream blocks), behind the tiny test pipeline's text encoders and VAE widened to
match. Peaks are measured by :mod:`eimsdk.testing.memprobe` (resident set of a fresh process, above the weights)
for one sample row, and extrapolated linearly in the number of blocks to the full model, as are the times (Flux:
in pairs of one double- and one single-stream block, which counts 28.5 of each instead of 19 and 38, so Flux's
numbers, measured and estimated alike, are somewhat high). Weights are counted on the meta device. Beside each
measurement: the planner's estimate (:mod:`eimsdk.memory`) for the full model.

Modes: ``predict`` (one forward without gradient, what inversion and sampling make per step) and one HSDS
linearisation with one CG iteration (forward, VJP, JVP, VJP) by ``double-backward``, ``forward`` or
``finite-difference``, graph kept; ``fd-light`` is finite differences with gradient checkpointing and the graph
rebuilt per VJP (the lightest plan). Image sizes are those of the real model (VAE factor 8): the probe runs the
same token grid on the tiny VAE.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

from eimsdk.errors import MemoryLimitError
from eimsdk.memory import TransformerShape, estimate_forward, estimate_hsds, plan_for_shape
from eimsdk.testing import memprobe

# Published transformer configs (diffusers' config.json of each checkpoint), written here: nothing is downloaded.
_PIXART = dict(num_attention_heads=16, attention_head_dim=72, in_channels=4, out_channels=8, num_layers=28,
               cross_attention_dim=1152, caption_channels=4096, sample_size=128, patch_size=2,
               norm_type="ada_norm_single", activation_fn="gelu-approximate", num_embeds_ada_norm=1000,
               attention_bias=True, norm_elementwise_affine=False, norm_eps=1e-6, dropout=0.0)
CONFIGS = {
    "pixart-alpha": ("pixart", {**_PIXART, "use_additional_conditions": True}),  # PixArt-XL-2-1024-MS
    "pixart-sigma": ("pixart-sigma", {**_PIXART, "interpolation_scale": 2, "use_additional_conditions": False}),
    "sd3-medium": ("sd3", dict(sample_size=128, patch_size=2, in_channels=16, num_layers=24, attention_head_dim=64,
                               num_attention_heads=24, joint_attention_dim=4096, caption_projection_dim=1536,
                               pooled_projection_dim=2048, out_channels=16, pos_embed_max_size=192)),
    "sd3.5-large": ("sd3", dict(sample_size=128, patch_size=2, in_channels=16, num_layers=38, attention_head_dim=64,
                                num_attention_heads=38, joint_attention_dim=4096, caption_projection_dim=2432,
                                pooled_projection_dim=2048, out_channels=16, pos_embed_max_size=192,
                                qk_norm="rms_norm")),
    "flux.1-dev": ("flux", dict(patch_size=1, in_channels=64, num_layers=19, num_single_layers=38,
                                attention_head_dim=128, num_attention_heads=24, joint_attention_dim=4096,
                                pooled_projection_dim=768, guidance_embeds=True, axes_dims_rope=[16, 56, 56])),
}
MODES = {
    "predict": None,
    "double-backward": {"jvp": "double-backward", "keep_graph": True, "checkpointing": False},
    "forward": {"jvp": "forward", "keep_graph": True, "checkpointing": False},
    "finite-difference": {"jvp": "finite-difference", "keep_graph": True, "checkpointing": False},
    "fd-light": {"jvp": "finite-difference", "keep_graph": False, "checkpointing": True},
}
VAE_FACTOR = 8  # of the real models; the probe's tiny VAE has factor 2


def _blocks(config: dict, n: int) -> dict:
    """The config cut to ``n`` blocks (Flux: ``n`` double- and ``n`` single-stream blocks)."""
    return {**config, "num_layers": n, **({"num_single_layers": n} if "num_single_layers" in config else {})}


def _full_blocks(config: dict) -> int:
    return config["num_layers"] + config.get("num_single_layers", 0)


def measure(name: str, sizes: list[int], dtype: str, modes: list[str], warmup: bool,
            skip: set[tuple[int, str]] = frozenset()) -> list[dict]:
    """Measured rows of one model, extrapolated to its full depth; ``skip`` (size, mode) pairs are not run."""
    family, config = CONFIGS[name]
    runs = {}
    for n in (1, 2):
        measurements = [{"kind": "forward" if m == "predict" else "hsds", "image_size": s // 4, "rows": 1,
                         "mode": m, **({"options": {**MODES[m], "max_batch": 1}} if MODES[m] else {"warmup": True})}
                        for s in sizes for m in modes if (s, m) not in skip]
        runs[n] = memprobe.run({"family": family, "transformer": _blocks(config, n), "dtype": dtype,
                                "warmup": warmup, "measurements": measurements})
    per = 2 if "num_single_layers" in config else 1  # blocks added per step of n
    steps = _full_blocks(config) / per - 1  # from the 1-step model to the full one
    out = []
    for one, two in zip(runs[1], runs[2]):
        shape1, shape2 = TransformerShape(**one["shape"]), TransformerShape(**two["shape"])
        full = replace(shape1, blocks=_full_blocks(config), param_bytes=shape1.dtype_bytes * parameter_count(name))
        tokens = full.image_tokens((one["image_size"], one["image_size"]))
        if one["mode"] == "predict":
            estimate = estimate_forward(full, tokens, 1)
        else:
            o = one["options"]
            estimate = estimate_hsds(full, tokens, 1, jvp=o["jvp"], keep_graph=o["keep_graph"],
                                     checkpointing=o["checkpointing"], max_batch=1)
        # memory: the second block's increment per block (a forward without gradient keeps nothing per block);
        # time: the 2-step model's time per block (differences of two noisy times are worse)
        peak = one["peak_bytes"] + (steps * max(two["peak_bytes"] - one["peak_bytes"], 0) if MODES[one["mode"]] else 0)
        out.append({"model": name, "dtype": dtype, "size": one["image_size"] * 4, "mode": one["mode"],
                    "image_tokens": tokens, "weights_bytes": full.param_bytes, "peak_bytes": int(peak),
                    "estimate_bytes": estimate, "seconds": two["seconds"] * full.blocks / shape2.blocks,
                    "measured_blocks": [one["shape"]["blocks"], two["shape"]["blocks"]],
                    "peaks_measured": [one["peak_bytes"], two["peak_bytes"]]})
        print(json.dumps(out[-1]), flush=True)
    return out


TEXT_TOKENS = {"pixart-alpha": 120, "pixart-sigma": 300, "sd3-medium": 333, "sd3.5-large": 333, "flux.1-dev": 512}
KINDS = {"pixart": "PixArtTransformer2DModel", "sd3": "SD3Transformer2DModel", "flux": "FluxTransformer2DModel"}


def full_shape(name: str, weights_bytes: int, dtype: str) -> TransformerShape:
    """The planner's view of the full real model (VAE factor 8; a token is 2x2 latent cells)."""
    family, config = CONFIGS[name]
    return TransformerShape(
        blocks=_full_blocks(config), width=config["num_attention_heads"] * config["attention_head_dim"],
        heads=config["num_attention_heads"], text_tokens=TEXT_TOKENS[name], joint="joint_attention_dim" in config,
        token_pixels=2 * VAE_FACTOR, cells=2, kind=KINDS[family.split("-")[0]], param_bytes=weights_bytes,
        dtype_bytes=2 if dtype == "bfloat16" else 4)


def parameter_count(name: str) -> int:
    """Parameters of the full transformer, built on the meta device (no memory, no weights)."""
    import diffusers
    import torch

    family, config = CONFIGS[name]
    with torch.device("meta"):
        model = getattr(diffusers, KINDS[family.split("-")[0]])(**config)
    return sum(p.numel() for p in model.parameters())


def report(rows: list[dict], rows_per_direction: int = 4) -> str:
    """Markdown: measured peaks per row beside the planner's estimates, then the planner's plan per GPU size for
    one direction of ``rows_per_direction`` rows (K = 4, no preserve prompts, no CFG) of every model."""
    gib = 2**30
    lines = ["| model | dtype | px | mode | weights (GiB) | measured peak, 1 row (GiB) | planner (GiB) | "
             "time, 1 row (s) | time / predict |", "|---|---|---|---|---|---|---|---|---|"]
    predict = {(r["model"], r["dtype"], r["size"]): r["seconds"] for r in rows if r["mode"] == "predict"}
    for r in rows:
        ratio = r["seconds"] / predict[(r["model"], r["dtype"], r["size"])]
        weights = parameter_count(r["model"]) * (2 if r["dtype"] == "bfloat16" else 4)
        lines.append(f"| {r['model']} | {r['dtype']} | {r['size']} | {r['mode']} | {weights / gib:.2f} | "
                     f"{r['peak_bytes'] / gib:.2f} | {r['estimate_bytes'] / gib:.2f} | {r['seconds']:.0f} | "
                     f"{ratio:.1f} |")
    lines += ["", "| model | dtype | px | weights (GiB) | 24 GiB | 80 GiB | 24 GiB, sequential offload |",
              "|---|---|---|---|---|---|---|"]
    for name in CONFIGS:
        weights32 = 4 * parameter_count(name)
        for dtype in ("float32", "bfloat16"):
            weights = weights32 // (2 if dtype == "bfloat16" else 1)
            shape = full_shape(name, weights, dtype)
            for size in (512, 1024):
                resident = {24: weights, 80: weights, "offload": 2 * weights // shape.blocks}  # offload: ~2 blocks
                cells = [_plan_cell(shape, size, (24 if d == "offload" else d) * gib - resident[d], rows_per_direction)
                         for d in (24, 80, "offload")]
                lines.append(f"| {name} | {dtype} | {size} | {weights / gib:.1f} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _plan_cell(shape: TransformerShape, size: int, free: float, rows: int) -> str:
    if free <= 0:
        return "weights do not fit"
    try:
        plan = plan_for_shape(shape, shape.image_tokens((size, size)), rows, available=int(free))
    except MemoryLimitError:
        return "no plan fits"
    extras = [x for x, on in (("graph kept", plan.keep_graph), ("checkpointing", plan.checkpointing)) if on]
    return (f"{plan.jvp}, max_batch {plan.max_batch}{', ' if extras else ''}{', '.join(extras)} "
            f"({plan.estimate_bytes / 2**30:.1f} GiB)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--sizes", nargs="+", type=int, default=[512, 1024])
    parser.add_argument("--dtypes", nargs="+", default=["float32"], choices=["float32", "bfloat16"])
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=list(MODES))
    parser.add_argument("--no-warmup", action="store_true", help="measure the first run (large models: halves time)")
    parser.add_argument("--skip", nargs="*", default=[], metavar="SIZE:MODE",
                        help="pairs not to run (e.g. 1024:double-backward, whose maps alone need many GB)")
    parser.add_argument("--json", type=Path, help="append one JSON line per result")
    parser.add_argument("--report", type=Path, metavar="JSONL", help="instead: print the tables of earlier results")
    args = parser.parse_args()
    if args.report:
        print(report([json.loads(line) for line in args.report.read_text().splitlines() if line.strip()]))
        return
    for dtype in args.dtypes:
        for name in args.models:
            skip = {(int(size), mode) for size, mode in (x.split(":") for x in args.skip)}
            rows = measure(name, args.sizes, dtype, args.modes, not args.no_warmup, skip)
            if args.json:
                with args.json.open("a") as f:
                    f.writelines(json.dumps(r) + "\n" for r in rows)


if __name__ == "__main__":
    main()
