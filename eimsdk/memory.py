"""Memory planner: estimated peak memory of HSDS derivative work and of plain forwards, and the plan that fits.

The estimate is read from the model generically (``encoder.transformer.config``: blocks, width, heads; the
token grid from ``encoder.image_multiple``; text tokens from the empty prompt's conditioning; parameter bytes),
so it covers any diffusers-style transformer without importing its plugin. Per sample, a transformer block
keeps activations proportional to its tokens x width (``n d``) and, where the attention maps are materialised
(the MATH kernel), to heads x query tokens x key tokens (``h s^2``); the coefficients below were fitted to peaks
measured on CPU (``eimsdk.testing.memprobe``; tests/test_memory.py checks them within 25%).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Sequence

import torch

from eimsdk.errors import MemoryLimitError

#: Usable share of the available memory (allocator fragmentation, buffers the estimate does not see).
HEADROOM = 0.9

# Fitted coefficients, in elements of the model's dtype per sample, per transformer class and mode. ``predict``
# (a forward without gradient): (x n d, x h s^2). A derivative mode: (kept graph per block x n d, x h s^2,
# transient of the heaviest product x n d, x h s^2); the graph is kept for every row (``keep_graph``) or one
# chunk. Fitted (least squares in relative error, no negative coefficient) to the peaks that
# ``eimsdk.testing.memprobe`` measured on CPU for width 128, 4 heads, 2 and 4 blocks, 256 and 1024 image tokens;
# a class not listed gets the largest coefficient of the listed ones.
_COEFFICIENTS: dict[str, dict[str, tuple[float, ...]]] = {
    "PixArtTransformer2DModel": {
        "predict": (12.2, 0.0), "double-backward": (13.0, 3.02, 0.0, 1.89),
        "finite-difference": (11.6, 0.012, 9.80, 0.057), "finite-difference+checkpointing": (1.49, 0.0, 19.1, 0.015),
        "forward": (11.6, 0.046, 0.0, 4.77), "forward+checkpointing": (0.0, 0.004, 0.0, 4.60)},
    "SD3Transformer2DModel": {
        "predict": (7.44, 0.073), "double-backward": (13.6, 3.10, 0.0, 1.95),
        "finite-difference": (9.69, 0.015, 0.0, 0.164), "finite-difference+checkpointing": (0.908, 0.0, 14.6, 0.037),
        "forward": (10.1, 0.0, 12.0, 5.02), "forward+checkpointing": (0.0, 0.0, 15.7, 4.96)},
    "FluxTransformer2DModel": {
        "predict": (14.9, 0.005), "double-backward": (22.8, 3.02, 0.0, 2.11),
        "finite-difference": (11.6, 0.0, 10.8, 0.065), "finite-difference+checkpointing": (1.04, 0.0, 23.7, 0.0),
        "forward": (11.4, 0.0, 21.0, 5.04), "forward+checkpointing": (0.004, 0.0, 22.5, 5.00)},
}
_FALLBACK = {mode: tuple(max(c[mode][i] for c in _COEFFICIENTS.values()) for i in range(len(coef)))
             for mode, coef in _COEFFICIENTS["PixArtTransformer2DModel"].items()}

#: Forward-equivalents per row of a JVP by each strategy and of a VJP by (graph kept, checkpointed), and of one
#: more model call; the planner takes the cheapest plan that fits. Finite differences are exactly two forwards; a
#: backward is about two; a rebuilt or checkpointed graph adds a forward; double backward and forward mode are
#: set from their time against finite differences on PixArt-Sigma at 512 px (1.5x and 1.8x one CG iteration,
#: benchmarks/hsds_memory.py, docs/backends/memory.md).
_JVP_COST = {"finite-difference": 2.0, "double-backward": 4.0, "forward": 5.0}
_VJP_COST = {(True, False): 2.0, (True, True): 3.0, (False, False): 3.0, (False, True): 4.0}
_CALL_OVERHEAD = 0.05


@dataclass(frozen=True)
class TransformerShape:
    """What the memory of a diffusion transformer depends on, read from its config."""

    blocks: int  # transformer blocks of every kind (Flux: double-stream + single-stream)
    width: int  # hidden size, heads x head dim
    heads: int
    text_tokens: int  # longest text sequence the model attends to
    joint: bool  # text tokens join the self-attention (SD3, Flux) rather than entering by cross-attention
    token_pixels: int  # image pixels per token side (VAE factor x patch size, x2 for Flux packing)
    cells: int  # latent cells per token side of (B, C, h, w) latents (patch size, x2 for Flux packing)
    kind: str  # the transformer's class name, which selects the fitted coefficients
    param_bytes: int
    dtype_bytes: int

    def image_tokens(self, image_size: Sequence[int]) -> int:
        """Image tokens of an (H, W) image."""
        h, w = image_size
        return (h // self.token_pixels) * (w // self.token_pixels)

    def latent_tokens(self, latent_shape: Sequence[int]) -> int:
        """Image tokens of one latent: (C, h, w) patchified, or (N, C) already packed into tokens."""
        if len(latent_shape) == 3:
            return (latent_shape[1] // self.cells) * (latent_shape[2] // self.cells)
        return int(latent_shape[0])

    def token_elements(self, tokens: int) -> int:
        """``n d`` of one block and sample with ``tokens`` image tokens: the tokens it transforms x the width."""
        return (tokens + self.text_tokens if self.joint else tokens) * self.width

    def attention_elements(self, tokens: int) -> int:
        """``h s^2`` of one block and sample: the entries of its attention maps."""
        if self.joint:
            return self.heads * (tokens + self.text_tokens) ** 2
        return self.heads * (tokens * tokens + tokens * self.text_tokens)


def transformer_shape(encoder: Any) -> TransformerShape | None:
    """The shape of ``encoder.transformer`` (a diffusers-style model with a ``config``), None without one."""
    model = getattr(encoder, "transformer", None)
    config = getattr(model, "config", None)
    if config is None or "num_attention_heads" not in config or "attention_head_dim" not in config:
        return None
    blocks = int(config.get("num_layers") or 0) + int(config.get("num_single_layers") or 0)
    heads = int(config["num_attention_heads"])
    cond = encoder.null_conditioning(1)
    text = max((int(v.shape[1]) for v in cond.embeds.values() if v.ndim == 3), default=0)
    params = list(model.parameters())
    vae_factor = getattr(encoder, "vae_scale_factor", None)
    cells = encoder.image_multiple // vae_factor if vae_factor else int(config.get("patch_size") or 1)
    return TransformerShape(
        blocks=blocks, width=heads * int(config["attention_head_dim"]), heads=heads, text_tokens=text,
        joint="joint_attention_dim" in config, token_pixels=int(encoder.image_multiple),
        cells=int(cells), kind=type(model).__name__, param_bytes=sum(p.numel() * p.element_size() for p in params),
        dtype_bytes=params[0].element_size() if params else 4)


def _coefficients(shape: TransformerShape, mode: str) -> tuple[float, ...]:
    return _COEFFICIENTS.get(shape.kind, _FALLBACK)[mode]


def _bytes(shape: TransformerShape, tokens: int, coef: Sequence[float]) -> float:
    return shape.dtype_bytes * (coef[0] * shape.token_elements(tokens) + coef[1] * shape.attention_elements(tokens))


def estimate_forward(shape: TransformerShape, tokens: int, batch: int) -> int:
    """Peak bytes above the weights of one prediction without gradient for ``batch`` samples (x2 with CFG) of
    ``tokens`` image tokens each."""
    return int(batch * _bytes(shape, tokens, _coefficients(shape, "predict")))


def estimate_hsds(shape: TransformerShape, tokens: int, rows: int, *, jvp: str, keep_graph: bool,
                  checkpointing: bool, max_batch: int) -> int:
    """Peak bytes above the weights of one HSDS linearisation of ``rows`` model samples (guided rows count twice)
    in chunks of ``max_batch`` and one CG iteration (VJP, JVP, VJP) with the given derivative strategy."""
    chunk = min(max_batch, rows)
    if jvp == "double-backward":
        mode, kept_rows = "double-backward", rows  # its second-order graph is always kept
    else:
        mode, kept_rows = jvp + ("+checkpointing" if checkpointing else ""), rows if keep_graph else chunk
    coef = _coefficients(shape, mode)
    return int(kept_rows * shape.blocks * _bytes(shape, tokens, coef[:2]) + chunk * _bytes(shape, tokens, coef[2:]))


@dataclass(frozen=True)
class DerivativePlan:
    """How HSDS computes its products: the JVP strategy, rows per model call, graph keeping, checkpointing."""

    jvp: str
    max_batch: int
    keep_graph: bool
    checkpointing: bool
    estimate_bytes: int | None = None  # None: the model's shape is unknown (no estimate, nothing checked)
    available_bytes: int | None = None


def available_memory(device: torch.device | str) -> int:
    """Free bytes on ``device``: CUDA's free memory, or the host's ``MemAvailable`` for the CPU."""
    device = torch.device(device)
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    raise MemoryLimitError("cannot read the available memory of this host (/proc/meminfo); pass max_batch, jvp "
                           "and checkpointing explicitly")


def _candidates(rows: int, jvp: str, keep_graph: Any, checkpointing: Any, max_batch: int | None,
                can_checkpoint: bool) -> list[DerivativePlan]:
    """Every plan the forced settings allow, cheapest (forward-equivalents per CG iteration) first."""
    strategies = ["double-backward", "finite-difference", "forward"] if jvp == "auto" else [jvp]
    ckpts = ([False, True] if can_checkpoint else [False]) if checkpointing == "auto" else [bool(checkpointing)]
    chunks = [max_batch] if max_batch else sorted({rows, *(2**i for i in range(int(math.log2(rows)) + 1))},
                                                  reverse=True)
    plans = []
    for s in strategies:
        # double backward always keeps its graph; unasked, it is not checkpointed (its second-order graph dominates)
        keeps = [True] if s == "double-backward" else [True, False] if keep_graph == "auto" else [bool(keep_graph)]
        for keep in keeps:
            for ckpt in ckpts:
                if not (s == "double-backward" and ckpt and checkpointing == "auto"):
                    plans += [DerivativePlan(s, m, keep, ckpt) for m in chunks]
    return sorted(plans, key=lambda p: iteration_cost(p, rows))


def iteration_cost(plan: DerivativePlan, rows: int) -> float:
    """Forward-equivalents of one CG iteration (one JVP, one VJP) over ``rows`` rows with ``plan``."""
    jvp = _JVP_COST[plan.jvp]
    vjp = _VJP_COST[(plan.keep_graph or plan.jvp == "double-backward", plan.checkpointing)]
    calls = math.ceil(rows / plan.max_batch)
    return rows * (jvp + vjp) + _CALL_OVERHEAD * calls


def plan_derivatives(encoder: Any, rows: int, latent_shape: Sequence[int], *, guided: bool = False,
                     jvp: str = "auto", keep_graph: Any = "auto", checkpointing: Any = "auto",
                     max_batch: int | None = None, available: int | None = None) -> DerivativePlan:
    """The cheapest plan for ``rows`` HSDS rows of latents shaped ``latent_shape`` (one sample; ``guided``: each
    row is two model samples) that fits in the available memory of the encoder's device, among those the forced
    settings allow. ``max_batch`` counts rows per model call. Raises :class:`MemoryLimitError` if none fits."""
    shape = transformer_shape(encoder)
    forced = dict(jvp=jvp, keep_graph=keep_graph, checkpointing=checkpointing, max_batch=max_batch)
    if shape is None:  # no transformer config: nothing to estimate; the exact strategy unless one is forced
        plans = _candidates(rows, **forced, can_checkpoint=_can_checkpoint(encoder))
        return next((p for p in plans if p.jvp == "double-backward"), plans[0])
    return plan_for_shape(shape, shape.latent_tokens(latent_shape), rows, guided=guided, **forced,
                          available=available_memory(encoder.device) if available is None else available,
                          can_checkpoint=_can_checkpoint(encoder), where=str(encoder.device))


def plan_for_shape(shape: TransformerShape, tokens: int, rows: int, *, available: int, guided: bool = False,
                   jvp: str = "auto", keep_graph: Any = "auto", checkpointing: Any = "auto",
                   max_batch: int | None = None, can_checkpoint: bool = True, where: str = "the device"
                   ) -> DerivativePlan:
    """:func:`plan_derivatives` for a model known by its shape, ``tokens`` image tokens per sample and
    ``available`` bytes."""
    plans = _candidates(rows, jvp, keep_graph, checkpointing, max_batch, can_checkpoint)
    budget = HEADROOM * available
    per_row = 2 if guided else 1
    estimates = [replace(p, estimate_bytes=_estimate(shape, tokens, rows * per_row, replace(
        p, max_batch=p.max_batch * per_row)), available_bytes=int(budget)) for p in plans]
    for plan in estimates:
        if plan.estimate_bytes <= budget:
            return plan
    least = min(estimates, key=lambda p: p.estimate_bytes)
    forced = {k: v for k, v in (("jvp", jvp), ("keep_graph", keep_graph), ("checkpointing", checkpointing),
                                ("max_batch", max_batch)) if v not in ("auto", None)}
    raise MemoryLimitError(
        f"HSDS over {rows} rows of {tokens} image tokens needs at least {_gb(least.estimate_bytes)} above the "
        f"weights ({least.jvp}, max_batch={least.max_batch}, keep_graph={least.keep_graph}, "
        f"checkpointing={least.checkpointing}{', forced: ' + str(forced) if forced else ''}) but "
        f"{_gb(max(budget, 0))} is available on {where}; use a smaller image size, fewer num_timesteps or preserve "
        f"prompts, {'drop the forced settings, ' if forced else ''}offload the text encoders and VAE, or another GPU")


def guard(encoder: Any, image_size: Sequence[int], batch: int, what: str, *, available: int | None = None) -> None:
    """Refuse, before the model runs, a plain forward (sampling, inversion) of ``batch`` samples (x2 for CFG) at
    ``image_size`` that would not fit in the available memory; silent when the model's shape is unknown."""
    shape = transformer_shape(encoder)
    if shape is None:
        return
    tokens = shape.image_tokens(image_size)
    need = estimate_forward(shape, tokens, batch)
    budget = HEADROOM * (available_memory(encoder.device) if available is None else available)
    if need > budget:
        raise MemoryLimitError(
            f"{what} at {image_size[0]}x{image_size[1]} px with batch {batch} needs about {_gb(need)} above the "
            f"weights but {_gb(budget)} is available on {encoder.device}; use a smaller size or batch, offload "
            "the text encoders and VAE (cpu_offload=True), or another GPU")


def _estimate(shape: TransformerShape, tokens: int, rows: int, plan: DerivativePlan) -> int:
    return estimate_hsds(shape, tokens, rows, jvp=plan.jvp, keep_graph=plan.keep_graph,
                         checkpointing=plan.checkpointing, max_batch=plan.max_batch)


def _can_checkpoint(encoder: Any) -> bool:
    return bool(getattr(getattr(encoder, "transformer", None), "_supports_gradient_checkpointing", False))


def _gb(n: float) -> str:
    return f"{n / 2**30:.2f} GiB" if n >= 2**30 else f"{n / 2**20:.1f} MiB"
