"""Train the toy world's models from a fixed seed: the shared VAE, then PixArt, SD3 and Flux transformers and a UNet.

Usage::

    python -m eimsdk_toy.train --family pixart --out DIR [--device cpu|cuda] [--steps N]
    python -m eimsdk_toy.train --family all --out DIR --device cuda
    python -m eimsdk_toy.train --family unet --out DIR --device cuda --max-minutes 4
    python -m eimsdk_toy.train --world 2 --family all --out DIR --device cuda   # toy world 2 (64 px)
    python -m eimsdk_toy.train --family sd3 --out DIR --pause-minutes 150 [--resume]  # over several sessions

Each family is written to ``DIR/<family>`` with its pipeline's ``save_pretrained`` (fp16), loadable with
``PixArtAlphaPipeline`` / ``StableDiffusion3Pipeline`` / ``FluxPipeline`` / ``StableDiffusionPipeline``
``.from_pretrained``, together with
``train_log.jsonl`` (one line per logged step) and ``training.json`` (config, parameter counts, seconds).
A transformer family needs the shared VAE: ``DIR/vae`` if present, else the shipped one, else it is trained
first into ``DIR/vae``. Objectives follow the real models: DDPM eps-prediction on PixArt's linear beta
schedule (min-SNR-5 weighted; the UNet trains the same objective); rectified flow (velocity ``eps - z0``,
logit-normal noise levels shifted like the
sampler) for SD3 and Flux. Text encoders are frozen, so every caption is encoded once, with the pipeline's own
``encode_prompt``. ``--pause-minutes`` stops a denoiser's run at a checkpoint (``DIR/checkpoints/<family>.pt``)
and ``--resume`` continues it exactly where it stopped. So do Ctrl-C, ``kill`` (SIGTERM) and SIGUSR1 during a
denoiser's steps: the step under way finishes, the checkpoint is written, and the run ends as a pause (a second
Ctrl-C stops at once, without a checkpoint).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import signal
import threading
import time
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field

from eimsdk.errors import InputError
from eimsdk_toy.models import (FAMILIES, LATENT_SIZE, build_pipeline, build_vae, denoiser_name, encoder_options,
                               fp16_exact_, latent_size_of, text_context_kwargs)
from eimsdk_toy.worlds import get_world, render_many

# Default (steps, batch size) per device type. CPU: each family in under two hours on a 2-core CPU; CUDA: the
# shipped models were trained with these and ``--max-minutes 4`` (or 3.4 for Flux), three families side by side
# on one H100 (docs/toy-world.md has the measured steps and times).
DEFAULTS: dict[str, dict[str, tuple[int, int]]] = {
    "cpu": {"vae": (1500, 64), "pixart": (6000, 64), "sd3": (2000, 32), "flux": (1200, 32), "unet": (6000, 64)},
    "cuda": {"vae": (1500, 64), "pixart": (6000, 256), "sd3": (3000, 256), "flux": (3000, 256), "unet": (6000, 256)},
}


class TrainConfig(BaseModel):
    """One training run. Bounds reject nonsense at construction."""

    model_config = ConfigDict(extra="forbid")

    family: Literal["vae", "pixart", "sd3", "flux", "unet"]
    world: Literal[1, 2] = Field(1, description="toy world: 1 (32 px) or 2 (64 px, fine and unnamed content)")
    steps: int = Field(0, ge=0, le=1_000_000, description="optimiser steps; 0 = the default for family and device")
    batch_size: int = Field(0, ge=0, le=4096, description="0 = the default for family and device")
    lr: float = Field(5e-4, gt=0, le=0.1)
    warmup: int = Field(200, ge=0, le=100_000)
    ema: float = Field(0.999, ge=0, lt=1, description="EMA decay of the saved transformer weights")
    caption_dropout: float = Field(0.1, ge=0, le=1, description="share of empty captions (for guidance)")
    pool: int = Field(16384, ge=64, le=1_000_000, description="rendered scenes to train on")
    kl_weight: float = Field(1e-6, ge=0, le=1, description="VAE only")
    edge_weight: float = Field(0.0, ge=0, le=100, description="VAE only: weight of an L1 loss on pixel "
                               "differences (edges, corners, thin rings) beside the L1 + MSE on pixels")
    vae_factor: Literal[2, 4] = Field(2, description="VAE only: image side / latent side")
    latent_channels: int = Field(4, ge=1, le=64, description="VAE only: latent channels")
    init_from: str = Field("", description="start from trained weights: the VAE from this AutoencoderKL folder, a "
                           "denoiser from this pipeline folder's transformer (or unet); same layout, world, seed and "
                           "text context required. A fresh optimiser and schedule")
    snr_gamma: float = Field(5.0, ge=0, le=100, description="min-SNR loss weighting for DDPM (PixArt); 0 = off")
    train_shift: float = Field(0.0, ge=0, le=100, description="SD3 and Flux only: the shift of the logit-normal "
                               "noise levels training draws (1: unshifted, centred on s = 0.5; larger: noisier); "
                               "0 = the sampler's shift at the toy resolution")
    prediction_type: Literal["epsilon", "v_prediction"] = Field(
        "epsilon", description="PixArt and UNet only: what the denoiser predicts (saved in the scheduler config)")
    max_seconds: float = Field(0.0, ge=0, description="wall-clock budget; 0 = none. With a budget the "
                               "schedule runs to whichever of steps and seconds comes first, then saves")
    pause_seconds: float = Field(0.0, ge=0, description="denoiser families: stop this session after this "
                                 "long, at a checkpoint, without compressing the schedule; resume continues")
    pause_step: int = Field(0, ge=0, description="denoiser families: stop at this step, at a checkpoint")
    resume: bool = Field(False, description="denoiser families: continue from the family's checkpoint")
    seed: int = Field(0, ge=0)
    device: str = "cpu"
    log_every: int = Field(25, ge=1)

    def _default(self) -> tuple[int, int]:
        return DEFAULTS["cuda" if self.device.startswith("cuda") else "cpu"][self.family]

    def total_steps(self) -> int:
        return self.steps or self._default()[0]

    def batch(self) -> int:
        return self.batch_size or self._default()[1]


# ----------------------------------------------------------------------------------------------- data
def render_pool(n: int, seed: int, world: int = 1) -> tuple[torch.Tensor, list[str]]:
    """``n`` seeded random scenes of ``world``: pixels (n, 3, H, W) in [-1, 1] and their captions."""
    toy = get_world(world)
    rng = np.random.default_rng(seed)
    specs = [toy.random_spec(rng) for _ in range(n)]
    pixels = render_many(world, specs).astype(np.float32)  # (n, H, W, 3)
    return torch.from_numpy(pixels / 127.5 - 1.0).permute(0, 3, 1, 2).contiguous(), [toy.caption(s) for s in specs]


def lr_at(step: int, cfg: TrainConfig, elapsed: float = 0.0) -> float:
    """Linear warm-up, then cosine decay to 10% of the peak, over steps or (with ``max_seconds``) wall time,
    whichever is further along."""
    total = cfg.total_steps()
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    frac = min(1.0, max(progress(step, cfg, elapsed) - cfg.warmup / total, 0.0) / max(1e-9, 1 - cfg.warmup / total))
    return cfg.lr * (0.1 + 0.45 * (1 + math.cos(math.pi * frac)))


def progress(step: int, cfg: TrainConfig, elapsed: float) -> float:
    """Share of the run done: steps, or wall time when ``max_seconds`` is set and further along."""
    done = step / cfg.total_steps()
    if cfg.max_seconds:
        done = max(done, elapsed / cfg.max_seconds)
    return done


class _Log:
    """tqdm progress bar plus a JSONL loss log; losses stay on the device between logged steps (no sync)."""

    def __init__(self, path: Path, total: int, desc: str, every: int, initial: int = 0,
                 seconds_before: float = 0.0) -> None:
        from tqdm.auto import tqdm

        path.parent.mkdir(parents=True, exist_ok=True)
        self.file = path.open("a" if initial else "w")
        self.bar = tqdm(total=total, initial=initial, desc=desc, dynamic_ncols=True, mininterval=2.0)
        self.every = every
        self.start = time.perf_counter() - seconds_before  # a resumed run counts its earlier sessions
        self.running: torch.Tensor | None = None

    def step(self, step: int, loss: torch.Tensor, lr: float) -> None:
        loss = loss.detach().float()
        self.running = loss if self.running is None else 0.98 * self.running + 0.02 * loss
        self.bar.update(1)
        if step % self.every == 0 or step == self.bar.total - 1:
            running = self.running.item()
            self.bar.set_postfix(loss=f"{running:.4f}")
            row = {"step": step, "loss": loss.item(), "loss_ema": running, "lr": lr,
                   "seconds": round(time.perf_counter() - self.start, 2)}
            self.file.write(json.dumps(row) + "\n")
            self.file.flush()

    def close(self) -> float:
        self.bar.close()
        self.file.close()
        return time.perf_counter() - self.start


@contextlib.contextmanager
def _pause_on_signal():
    """While training: SIGINT, SIGTERM and SIGUSR1 ask for a pause at the next step (``requested[0]``) instead of
    killing the run; a second SIGINT raises KeyboardInterrupt. The previous handlers come back afterwards. Signals
    only reach the main thread, so elsewhere (a training thread) this does nothing."""
    requested = [False]
    if threading.current_thread() is not threading.main_thread():
        yield requested
        return
    names = [n for n in ("SIGINT", "SIGTERM", "SIGUSR1") if hasattr(signal, n)]  # no SIGUSR1 on Windows
    # getsignal is None for a handler not installed from Python; SIG_DFL is the closest one signal() accepts back
    before = {n: signal.getsignal(getattr(signal, n)) or signal.SIG_DFL for n in names}

    def ask(signum, frame):
        if requested[0] and signum == signal.SIGINT:
            raise KeyboardInterrupt
        requested[0] = True

    for n in names:
        signal.signal(getattr(signal, n), ask)
    try:
        yield requested
    finally:
        for n in names:
            signal.signal(getattr(signal, n), before[n])


def _budget_spent(cfg: TrainConfig, elapsed: float, step: int, log: _Log) -> bool:
    """Whether ``--max-minutes`` has run out (then say so in the log); the training loops stop there and save."""
    if cfg.max_seconds and elapsed >= cfg.max_seconds:
        log.bar.write(f"{cfg.family}: wall-clock budget of {cfg.max_seconds:.0f} s reached after {step} steps")
        return True
    return False


def _autocast(device: torch.device, family: str = "vae"):
    """bf16 autocast on CUDA, except Flux: its backward under bf16 autocast failed on an H100 with
    ``CUBLAS_STATUS_EXECUTION_FAILED`` (torch 2.11, diffusers 0.42.1), so Flux trains in fp32 (TF32 matmuls)."""
    if device.type == "cuda" and family != "flux":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return torch.autocast(device.type, enabled=False)


# ----------------------------------------------------------------------------------------------- VAE
def train_vae(cfg: TrainConfig, out: Path):
    """Train the shared AutoencoderKL on rendered scenes; set its latent scaling/shift from the data; save."""
    device = torch.device(cfg.device)
    torch.manual_seed(cfg.seed)
    pixels, _ = render_pool(cfg.pool, cfg.seed, cfg.world)
    pixels = pixels.to(device)
    vae = build_vae(cfg.seed, get_world(cfg.world).image_size, cfg.vae_factor, cfg.latent_channels)
    if cfg.init_from:
        _init_vae_from(vae, Path(cfg.init_from))
    vae = vae.to(device).train()
    opt = torch.optim.AdamW(vae.parameters(), lr=cfg.lr, weight_decay=0.0)
    gen = torch.Generator(device).manual_seed(cfg.seed)
    total = cfg.total_steps()
    log = _Log(out / "train_log.jsonl", total, "vae", cfg.log_every)
    steps_done = total
    for step in range(total):
        elapsed = time.perf_counter() - log.start
        if _budget_spent(cfg, elapsed, step, log):
            steps_done = step
            break
        lr = lr_at(step, cfg, elapsed)
        for group in opt.param_groups:
            group["lr"] = lr
        x = pixels[torch.randint(0, len(pixels), (cfg.batch(),), device=device, generator=gen)]  # (B, 3, H, W)
        with _autocast(device):
            posterior = vae.encode(x).latent_dist
            rec = vae.decode(posterior.sample(generator=gen)).sample
        rec = rec.float()
        loss = F.l1_loss(rec, x) + F.mse_loss(rec, x) + cfg.kl_weight * posterior.kl().mean()
        if cfg.edge_weight:
            loss = loss + cfg.edge_weight * _edge_l1(rec, x)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        log.step(step, loss, lr)
    seconds = log.close()
    vae = fp16_exact_(vae.eval())
    with torch.no_grad():
        mean = torch.cat([vae.encode(c).latent_dist.mean for c in pixels.split(512)])  # (N, C, h, w)
    vae.register_to_config(shift_factor=round(float(mean.mean()), 4),
                           scaling_factor=round(float(1.0 / mean.std()), 4))
    vae.to(torch.float16).save_pretrained(out)
    _write_summary(out, cfg, seconds, {"vae": vae}, steps_done)
    return vae.to(torch.float32)


def _edge_l1(rec: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """L1 between the horizontal and the vertical pixel differences of two (B, C, H, W) batches."""
    return F.l1_loss(rec.diff(dim=-1), x.diff(dim=-1)) + F.l1_loss(rec.diff(dim=-2), x.diff(dim=-2))


VAE_LAYOUT = ("sample_size", "latent_channels", "block_out_channels", "layers_per_block")


def _vae_config(vae, keys: tuple[str, ...]) -> dict[str, Any]:
    """``keys`` of a VAE's config, comparable whether the VAE was built here (tuples) or loaded (lists)."""
    return {k: list(v) if isinstance(v, (list, tuple)) else v for k in keys for v in [vae.config[k]]}


def _init_vae_from(vae, folder: Path) -> None:
    """Load the weights of the VAE in ``folder`` into ``vae``; refuse another layout, naming what differs."""
    from diffusers import AutoencoderKL

    if not (folder / "config.json").is_file():
        raise InputError(f"--init-from {folder}: no VAE there (no config.json); pass a folder a VAE was saved to")
    source = AutoencoderKL.from_pretrained(folder, torch_dtype=torch.float32)
    theirs, ours = _vae_config(source, VAE_LAYOUT), _vae_config(vae, VAE_LAYOUT)
    diff = [f"{k}: {theirs[k]!r} there, {ours[k]!r} here" for k in VAE_LAYOUT if theirs[k] != ours[k]]
    if diff:
        raise InputError(f"--init-from {folder}: another VAE layout ({'; '.join(diff)}); pass the --world, "
                         "--vae-factor and --latent-channels it was trained with")
    vae.load_state_dict(source.state_dict())


def _init_denoiser_from(pipe, cfg: TrainConfig, folder: Path) -> None:
    """Load the denoiser weights of the pipeline folder ``folder`` (written by :func:`train_family`) into ``pipe``'s.
    Refuse a folder of another family, world, seed (the frozen text encoders), prediction type, text context or
    VAE, naming what differs: its weights would have learnt to read other inputs."""
    name = denoiser_name(cfg.family)
    summary = folder / "training.json"
    if not (folder / name / "config.json").is_file() or not summary.is_file():
        raise InputError(f"--init-from {folder}: no trained {cfg.family} there (no {name}/config.json or "
                         "training.json); pass a folder this module wrote, e.g. OUT/" + cfg.family)
    trained = json.loads(summary.read_text())["config"]
    diff = [f"{k}: {trained.get(k)!r} there, {getattr(cfg, k)!r} here"
            for k in ("family", "world", "seed", "prediction_type") if trained.get(k) != getattr(cfg, k)]
    theirs, ours = encoder_options(folder), encoder_options(pipe)
    if theirs != ours:
        diff.append(f"text context: {theirs} there, {ours} here")
    from diffusers import AutoencoderKL

    if _vae_key(AutoencoderKL.from_pretrained(folder / "vae")) != _vae_key(pipe.vae):
        diff.append("the VAE (layout or latent scaling) differs from this run's")
    if diff:
        raise InputError(f"--init-from {folder}: trained with other settings ({'; '.join(diff)}); pass the options "
                         "it was trained with, or leave out --init-from")
    denoiser = getattr(pipe, name)
    source = type(denoiser).from_pretrained(folder / name, torch_dtype=torch.float32)
    try:
        denoiser.load_state_dict(source.state_dict())
    except RuntimeError as exc:
        raise InputError(f"--init-from {folder}: its {name} has another layout ({str(exc).splitlines()[0]})") from exc


def noise_seed(cfg: TrainConfig) -> int:
    """Seed of a denoiser run's batches, timesteps and noise. A run continued ``--init-from`` a trained folder offsets
    it by the steps that folder has trained (``seed`` itself stays: it fixes the frozen text encoders), so the new
    steps draw fresh batches and noise rather than replaying the first run's."""
    if not cfg.init_from:
        return cfg.seed
    summary = Path(cfg.init_from) / "training.json"
    return cfg.seed + 1 + int(json.loads(summary.read_text()).get("steps", 0))


def load_or_train_vae(out_root: Path, cfg: TrainConfig):
    """The world's shared VAE: ``out_root/vae``, else the shipped one, else trained now into ``out_root/vae``."""
    from diffusers import AutoencoderKL

    for folder in (out_root / "vae", get_world(cfg.world).weights / "vae"):
        if (folder / "config.json").is_file():
            return AutoencoderKL.from_pretrained(folder, torch_dtype=torch.float32)
    vae_cfg = cfg.model_copy(update={"family": "vae", "steps": 0, "lr": 1e-3, "warmup": 100, "init_from": ""})
    return train_vae(vae_cfg, out_root / "vae")


# ----------------------------------------------------------------------------------------------- captions
@torch.no_grad()
def encode_captions(pipe, family: str, captions: list[str], device: torch.device) -> dict[str, torch.Tensor]:
    """Every caption through the pipeline's own ``encode_prompt`` (exactly what sampling feeds the model, with
    the text context the pipeline stores)."""
    rows: list[dict[str, torch.Tensor]] = []
    kw = text_context_kwargs(encoder_options(pipe))
    for i in range(0, len(captions), 64):
        chunk = captions[i:i + 64]
        if family == "pixart":
            embeds, mask, _, _ = pipe.encode_prompt(chunk, do_classifier_free_guidance=False, device=device)
            rows.append({"prompt_embeds": embeds, "mask": mask})
        elif family == "sd3":
            embeds, _, pooled, _ = pipe.encode_prompt(chunk, chunk, chunk, device=device,
                                                      do_classifier_free_guidance=False, **kw)
            rows.append({"prompt_embeds": embeds, "pooled": pooled})
        elif family == "unet":
            embeds, _ = pipe.encode_prompt(chunk, device, 1, do_classifier_free_guidance=False)
            rows.append({"prompt_embeds": embeds})
        else:
            embeds, pooled, _ = pipe.encode_prompt(chunk, chunk, device=device, **kw)
            rows.append({"prompt_embeds": embeds, "pooled": pooled})
    return {k: torch.cat([r[k] for r in rows]).float() for k in rows[0]}


# ----------------------------------------------------------------------------------------------- objectives
def flow_shift(family: str, scheduler, latent_size: int = LATENT_SIZE) -> float:
    """The sampler's timestep shift at the toy resolution (Flux: resolution-dependent, from its image tokens)."""
    cfg = scheduler.config
    if not cfg.use_dynamic_shifting:
        return float(cfg.shift)
    tokens = (latent_size // 2) ** 2  # latents packed 2x2
    m = (cfg.max_shift - cfg.base_shift) / (cfg.max_image_seq_len - cfg.base_image_seq_len)
    return math.exp(cfg.base_shift + m * (tokens - cfg.base_image_seq_len))


def diffusion_loss(family: str, transformer, z0: torch.Tensor, cond: dict[str, torch.Tensor],
                   gen: torch.Generator, alphas_cumprod: torch.Tensor | None, shift: float,
                   snr_gamma: float = 0.0, prediction_type: str = "epsilon") -> torch.Tensor:
    """One batch of the family's training objective on scaled latents ``z0`` (B, C, 16, 16).

    PixArt predicts ``eps`` (the real checkpoints) or ``v = sqrt(ab) eps - sqrt(1 - ab) z0`` (Salimans & Ho,
    2022), which keeps the x0 signal at high noise where eps-prediction carries almost none; min-SNR-gamma
    weights ``min(snr, gamma) / snr`` (eps) or ``min(snr, gamma) / (snr + 1)`` (v) are the same x0-space weight.
    The UNet family trains the same DDPM objective; only the denoiser's call differs.
    """
    b = z0.shape[0]
    eps = torch.randn(z0.shape, device=z0.device, generator=gen)
    if family in ("pixart", "unet"):  # DDPM: predict eps at an integer timestep
        t = torch.randint(0, len(alphas_cumprod), (b,), device=z0.device, generator=gen)
        ab = alphas_cumprod[t].view(b, 1, 1, 1)
        z_t = ab.sqrt() * z0 + (1 - ab).sqrt() * eps
        if family == "unet":
            out = transformer(z_t, t, encoder_hidden_states=cond["prompt_embeds"]).sample
        else:
            out = transformer(z_t, encoder_hidden_states=cond["prompt_embeds"], encoder_attention_mask=cond["mask"],
                              timestep=t, added_cond_kwargs={"resolution": None, "aspect_ratio": None}).sample
        v = prediction_type == "v_prediction"
        target = ab.sqrt() * eps - (1 - ab).sqrt() * z0 if v else eps
        err = (out[:, :z0.shape[1]].float() - target).pow(2).mean(dim=(1, 2, 3))  # (B,)
        if snr_gamma > 0:  # min-SNR-gamma (Hang et al., 2023): caps the weight of nearly clean timesteps
            snr = ab.view(b) / (1 - ab.view(b))
            err = err * snr.clamp(max=snr_gamma) / (snr + 1 if v else snr)
        return err.mean()
    # Rectified flow: z_t = (1 - s) z0 + s eps, velocity eps - z0; s logit-normal, shifted like the sampler.
    s = torch.sigmoid(torch.randn(b, device=z0.device, generator=gen))
    s = shift * s / (1 + (shift - 1) * s)
    sv = s.view(b, 1, 1, 1)
    z_t = (1 - sv) * z0 + sv * eps
    target = eps - z0
    if family == "sd3":
        out = transformer(hidden_states=z_t, encoder_hidden_states=cond["prompt_embeds"],
                          pooled_projections=cond["pooled"], timestep=s * 1000).sample
        return F.mse_loss(out.float(), target)
    from diffusers import FluxPipeline

    c, h, w = z0.shape[1:]
    packed = FluxPipeline._pack_latents(z_t, b, c, h, w)  # (B, h*w/4, 4C)
    img_ids = FluxPipeline._prepare_latent_image_ids(b, h // 2, w // 2, z0.device, z0.dtype)
    txt_ids = torch.zeros(cond["prompt_embeds"].shape[1], 3, device=z0.device, dtype=z0.dtype)
    out = transformer(hidden_states=packed, timestep=s, pooled_projections=cond["pooled"],
                      encoder_hidden_states=cond["prompt_embeds"], txt_ids=txt_ids, img_ids=img_ids).sample
    return F.mse_loss(out.float(), FluxPipeline._pack_latents(target, b, c, h, w))


def train_family(cfg: TrainConfig, out_root: Path, vae=None) -> Path:
    """Train one denoiser family (a transformer, or the UNet) into ``out_root/<family>``; returns that folder."""
    device = torch.device(cfg.device)
    out = out_root / cfg.family
    if cfg.resume and not checkpoint_path(out_root, cfg.family).is_file() and (out / "training.json").is_file():
        if not json.loads((out / "training.json").read_text()).get("paused", False):
            print(f"{cfg.family}: {out} is a finished run and there is no checkpoint; nothing to resume "
                  "(leave out --resume to train again)")
            return out
    vae = vae if vae is not None else load_or_train_vae(out_root, cfg)
    pipe = build_pipeline(cfg.family, vae.to(torch.float32), seed=cfg.seed, prediction_type=cfg.prediction_type,
                          text_tokens=get_world(cfg.world).text_tokens).to(device)
    transformer = getattr(pipe, denoiser_name(cfg.family)).train()
    if cfg.init_from:
        _init_denoiser_from(pipe, cfg, Path(cfg.init_from))

    pixels, captions = render_pool(cfg.pool, cfg.seed + 1, cfg.world)
    table_captions = sorted(set(captions)) + [""]
    index = {c: i for i, c in enumerate(table_captions)}
    cap_idx = torch.tensor([index[c] for c in captions], device=device)  # (N,)
    table = encode_captions(pipe, cfg.family, table_captions, device)
    with torch.no_grad():
        dist = [pipe.vae.encode(c.to(device)).latent_dist for c in pixels.split(512)]
    lat_mean = torch.cat([d.mean for d in dist])  # (N, C, 16, 16)
    lat_std = torch.cat([d.std for d in dist])
    shift_factor = pipe.vae.config.shift_factor or 0.0
    scaling = pipe.vae.config.scaling_factor
    ddpm = cfg.family in ("pixart", "unet")
    alphas_cumprod = pipe.scheduler.alphas_cumprod.to(device) if ddpm else None
    shift = 1.0 if ddpm else cfg.train_shift or flow_shift(cfg.family, pipe.scheduler, latent_size_of(vae))

    ema = [p.detach().clone() for p in transformer.parameters()]
    opt = torch.optim.AdamW(transformer.parameters(), lr=cfg.lr, weight_decay=0.0)
    gen = torch.Generator(device).manual_seed(noise_seed(cfg))
    total = cfg.total_steps()
    ckpt_path = checkpoint_path(out_root, cfg.family)
    first, seconds_before = 0, 0.0
    if cfg.resume and ckpt_path.is_file():
        first, seconds_before = _load_checkpoint(ckpt_path, cfg, vae, transformer, ema, opt, gen)
    log = _Log(out / "train_log.jsonl", total, cfg.family, cfg.log_every, first, seconds_before)
    session_start = time.perf_counter()
    steps_done, paused = total, False
    with _pause_on_signal() as signalled:
        for step in range(first, total):
            elapsed = time.perf_counter() - log.start
            if _budget_spent(cfg, elapsed, step, log):
                steps_done = step
                break
            if step > first and (signalled[0] or (cfg.pause_step and first < cfg.pause_step <= step) or
                                 (cfg.pause_seconds and time.perf_counter() - session_start >= cfg.pause_seconds)):
                steps_done, paused = step, True
                _save_checkpoint(ckpt_path, cfg, vae, transformer, ema, opt, gen, step, elapsed)
                log.bar.write(f"{cfg.family}: paused after {step} of {total} steps; checkpoint {ckpt_path} "
                              "(run the same command with --resume to continue)")
                break
            lr = lr_at(step, cfg, elapsed)
            for group in opt.param_groups:
                group["lr"] = lr
            idx = torch.randint(0, len(pixels), (cfg.batch(),), device=device, generator=gen)
            noise = torch.randn(lat_mean[idx].shape, device=device, generator=gen)
            z0 = (lat_mean[idx] + lat_std[idx] * noise - shift_factor) * scaling  # (B, C, 16, 16)
            drop = torch.rand(cfg.batch(), device=device, generator=gen) < cfg.caption_dropout
            rows = torch.where(drop, torch.full_like(cap_idx[idx], len(table_captions) - 1), cap_idx[idx])
            cond = {k: v[rows] for k, v in table.items()}
            with _autocast(device, cfg.family):
                loss = diffusion_loss(cfg.family, transformer, z0, cond, gen, alphas_cumprod, shift, cfg.snr_gamma,
                                      cfg.prediction_type)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(transformer.parameters(), 1.0)
            opt.step()
            decay = min(cfg.ema, (1 + step) / (10 + step))
            with torch.no_grad():
                torch._foreach_lerp_(ema, [p.detach() for p in transformer.parameters()], 1 - decay)
            log.step(step, loss, lr)
    seconds = log.close()

    with torch.no_grad():
        for p, e in zip(transformer.parameters(), ema):
            p.copy_(e)
    fp16_exact_(transformer.eval())
    pipe.to("cpu", torch.float16).save_pretrained(out)  # a paused run saves its EMA weights so far, to evaluate
    _write_summary(out, cfg, seconds, {k: v for k, v in pipe.components.items() if hasattr(v, "parameters")},
                   steps_done, paused)
    if not paused:
        ckpt_path.unlink(missing_ok=True)
    return out


# ----------------------------------------------------------------------------------------------- checkpoints
RESUME_KEYS = ("family", "world", "steps", "batch_size", "lr", "warmup", "ema", "caption_dropout", "pool",
               "snr_gamma", "prediction_type", "max_seconds", "seed", "train_shift")


def checkpoint_path(out_root: Path, family: str) -> Path:
    """Where a paused family's training state lives: beside the model folders, never inside one (archives and
    ``from_pretrained`` see only the model)."""
    return out_root / "checkpoints" / f"{family}.pt"


def _vae_key(vae) -> dict[str, Any]:
    """What identifies the VAE a checkpoint was trained on: its layout and its latent scaling (set from data)."""
    return _vae_config(vae, (*VAE_LAYOUT, "scaling_factor", "shift_factor"))


def _save_checkpoint(path: Path, cfg: TrainConfig, vae, transformer, ema, opt, gen, step: int,
                     elapsed: float) -> None:
    """Everything a resumed run needs to continue as if never stopped; written atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {"config": {k: getattr(cfg, k) for k in RESUME_KEYS}, "vae": _vae_key(vae), "step": step,
             "seconds": elapsed, "model": transformer.state_dict(), "ema": ema, "optimizer": opt.state_dict(),
             "generator": gen.get_state()}
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    tmp.replace(path)


def _load_checkpoint(path: Path, cfg: TrainConfig, vae, transformer, ema, opt, gen) -> tuple[int, float]:
    """Restore a paused run in place; refuse one that was started with other settings or another VAE."""
    state = torch.load(path, map_location=cfg.device, weights_only=True)
    ours = {k: getattr(cfg, k) for k in RESUME_KEYS}
    saved = {k: state["config"].get(k, TrainConfig.model_fields[k].default) for k in ours}  # keys added later
    diff = {k: (saved[k], v) for k, v in ours.items() if saved[k] != v}
    if diff:
        raise InputError(f"--resume: the checkpoint {path} was trained with other settings "
                         f"({', '.join(f'{k}: {a!r} there, {b!r} now' for k, (a, b) in diff.items())}); "
                         "pass the same options, or delete the checkpoint to start over")
    if state["vae"] != _vae_key(vae):
        raise InputError(f"--resume: the checkpoint {path} was trained on another VAE; use the same --out "
                         "(its vae/ folder), or delete the checkpoint to start over")
    transformer.load_state_dict(state["model"])
    with torch.no_grad():
        for e, saved in zip(ema, state["ema"]):
            e.copy_(saved)
    opt.load_state_dict(state["optimizer"])
    gen.set_state(state["generator"].cpu())
    return state["step"], state["seconds"]


def _write_summary(out: Path, cfg: TrainConfig, seconds: float, modules: dict[str, Any],
                   steps_done: int | None = None, paused: bool = False) -> None:
    steps_done = cfg.total_steps() if steps_done is None else steps_done
    summary = {"config": cfg.model_dump(), "steps": steps_done, "paused": paused, "batch_size": cfg.batch(),
               "seconds": round(seconds, 1),
               "seconds_per_step": round(seconds / max(1, steps_done), 4),
               "device": torch.cuda.get_device_name(cfg.device) if cfg.device.startswith("cuda") else "cpu",
               "parameters": {k: sum(p.numel() for p in m.parameters()) for k, m in modules.items()},
               "torch": torch.__version__}
    parent = Path(cfg.init_from) / "training.json" if cfg.init_from else None
    if parent is not None and parent.is_file():  # a continued run carries its history: what it started from
        summary["continued_from"] = json.loads(parent.read_text())
        summary["steps_in_all"] = steps_done + summary["continued_from"].get("steps_in_all",
                                                                             summary["continued_from"]["steps"])
    (out / "training.json").write_text(json.dumps(summary, indent=2) + "\n")


def train(family: str, out: str | Path | None = None, **overrides: Any) -> list[Path]:
    """Train ``family`` ("vae", "pixart", "sd3", "flux", "unet" or "all") into ``out`` (default: the world's
    shipped weights); returns the folders written."""
    if family not in ("vae", "all", *FAMILIES):
        raise InputError(f"family={family!r} is not one of vae, {', '.join(FAMILIES)}, all")
    if overrides.get("device", "cpu").startswith("cuda") and not torch.cuda.is_available():
        raise InputError(f"device={overrides['device']!r} but CUDA is not available here; pass --device cpu")
    out = Path(out) if out is not None else get_world(overrides.get("world", 1)).weights
    if overrides.get("device", "cpu").startswith("cuda"):
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    if family == "vae":
        train_vae(TrainConfig(family="vae", **{"lr": 1e-3, "warmup": 100, **overrides}), out / "vae")
        return [out / "vae"]
    families = FAMILIES if family == "all" else (family,)
    vae = None
    written = []
    for fam in families:
        cfg = TrainConfig(family=fam, **overrides)
        vae = vae if vae is not None else load_or_train_vae(out, cfg)
        written.append(train_family(cfg, out, vae))
    return written


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m eimsdk_toy.train", description=__doc__.split("\n\n")[0])
    p.add_argument("--family", required=True, choices=["vae", *FAMILIES, "all"])
    p.add_argument("--out", default=None, help="root folder; each family goes to OUT/<family> "
                   "(default: the package's shipped weights of the world)")
    p.add_argument("--world", type=int, default=1, choices=[1, 2], help="toy world: 1 (32 px) or 2 (64 px, "
                   "fine-grained named attributes and unnamed content)")
    p.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    p.add_argument("--steps", type=int, default=0, help="optimiser steps (default per family and device: "
                   f"{DEFAULTS})")
    p.add_argument("--batch-size", type=int, default=0, help="batch size (default per family and device)")
    p.add_argument("--lr", type=float, default=None, help="peak learning rate (default 5e-4; VAE 1e-3)")
    p.add_argument("--pool", type=int, default=16384, help="number of rendered training scenes")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--prediction-type", default="epsilon", choices=["epsilon", "v_prediction"],
                   help="PixArt and UNet only: eps (like the real checkpoints) or v prediction")
    p.add_argument("--vae-factor", type=int, default=2, choices=[2, 4], help="VAE only: downsampling factor "
                   "(4: a third block; 64 px world-2 scenes give 16x16 latents, as many tokens as world 1)")
    p.add_argument("--latent-channels", type=int, default=4, help="VAE only: latent channels")
    p.add_argument("--init-from", default="", help="continue from trained weights with a fresh optimiser and "
                   "schedule: the VAE saved in this folder, or a denoiser family's pipeline folder (OUT/<family>; "
                   "same world, seed, prediction type, text context and VAE required)")
    p.add_argument("--train-shift", type=float, default=0.0, help="SD3 and Flux: shift of the noise levels "
                   "training draws (1: unshifted logit-normal, more nearly clean levels than the sampler's; "
                   "0: the sampler's shift, SD3 3.0, Flux 1.65 at world 2)")
    p.add_argument("--edge-weight", type=float, default=0.0, help="VAE only: weight of an L1 loss on pixel "
                   "differences, which sharpens corners and thin rings (0: off)")
    p.add_argument("--max-minutes", type=float, default=0.0, help="wall-clock budget per family (0: none); the "
                   "learning-rate schedule follows whichever of steps and time runs out first, then it saves")
    p.add_argument("--pause-minutes", type=float, default=0.0, help="denoiser families (not the VAE): stop this "
                   "session after this long at a checkpoint (OUT/checkpoints/<family>.pt) without shortening the "
                   "schedule, and save the model so far; the same command with --resume continues")
    p.add_argument("--pause-at-step", type=int, default=0, help="denoiser families: stop at this step, "
                   "at a checkpoint")
    p.add_argument("--resume", action="store_true", help="denoiser families: continue from OUT/checkpoints/"
                   "<family>.pt when it exists (same options required)")
    args = p.parse_args(argv)
    overrides = dict(world=args.world, steps=args.steps, batch_size=args.batch_size, pool=args.pool, seed=args.seed,
                     device=args.device, prediction_type=args.prediction_type, max_seconds=60.0 * args.max_minutes,
                     vae_factor=args.vae_factor, latent_channels=args.latent_channels, init_from=args.init_from,
                     edge_weight=args.edge_weight, train_shift=args.train_shift,
                     pause_seconds=60.0 * args.pause_minutes, pause_step=args.pause_at_step, resume=args.resume)
    if args.lr is not None:
        overrides["lr"] = args.lr
    for folder in train(args.family, args.out, **overrides):
        print(f"wrote {folder}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
