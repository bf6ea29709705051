"""Measured peak memory of HSDS derivative work and of plain forwards, for checking :mod:`eimsdk.memory`.

Run as ``python -m eimsdk.testing.memprobe SPEC.json``: one process, one model, a list of measurements, one JSON
line per measurement on stdout. Each measurement runs twice (the first warms caches) and reports the second.

How peak host memory is measured: the process's resident set. ``MALLOC_MMAP_THRESHOLD_`` must be set (the
runner does) so that every tensor buffer is its own mapping and is returned to the system when freed; then
before each measurement the kernel's peak counter is reset (``/proc/self/clear_refs`` = 5, Linux) and the
peak ``VmHWM`` minus the resident set ``VmRSS`` before the work is the work's peak. Python's tracemalloc does not
see torch's allocations, and torch's CPU allocator keeps no statistics, hence this.
"""

from __future__ import annotations

import dataclasses
import gc
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch


def _status_kib(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{key} not in /proc/self/status")


def peak_bytes(work) -> tuple[int, float]:
    """(peak resident bytes above the resident set before ``work()``, seconds) of one call."""
    gc.collect()
    Path("/proc/self/clear_refs").write_text("5")
    before = _status_kib("VmRSS")
    t0 = time.perf_counter()
    work()
    seconds = time.perf_counter() - t0
    return (_status_kib("VmHWM") - before) * 1024, seconds


def build_encoder(family: str, transformer: dict[str, Any], folder: Path, dtype: str = "float32"):
    """The tiny pipeline of ``family`` (``pixart``, ``pixart-sigma``, ``sd3``, ``flux``) with its transformer's config
    overridden by ``transformer`` (random weights) and text encoders and VAE latents widened to match, saved to
    ``folder`` and loaded through the installed backend. The VAE stays tiny (factor 2, not 8)."""
    import diffusers

    from eimsdk import Editor
    from eimsdk.testing.tiny import PIPELINE_CLASSES, get_dummy_components, tiny_clip_encoder, tiny_t5_encoder, tiny_vae

    parts = get_dummy_components(family)
    old = parts["transformer"]
    config = {**{k: v for k, v in old.config.items() if not k.startswith("_")}, **transformer}
    parts["transformer"] = type(old)(**config).eval()
    if family.startswith("pixart"):
        parts["text_encoder"], parts["tokenizer"] = tiny_t5_encoder(config["caption_channels"])
    else:
        latent = config["in_channels"] // (4 if family == "flux" else 1)  # Flux packs 2x2 latent cells per token
        parts["vae"] = tiny_vae(latent, use_quant_conv=False, use_post_quant_conv=False, shift_factor=0.0609,
                                scaling_factor=1.5035)
        t5 = "text_encoder_3" if family == "sd3" else "text_encoder_2"
        parts[t5], parts[t5.replace("text_encoder", "tokenizer")] = tiny_t5_encoder(config["joint_attention_dim"])
        if family == "sd3":  # two projected CLIPs whose pooled vectors are concatenated
            for name in ("text_encoder", "text_encoder_2"):
                parts[name], parts[name.replace("text_encoder", "tokenizer")] = tiny_clip_encoder(
                    True, config["pooled_projection_dim"] // 2)
        else:
            parts["text_encoder"], parts["tokenizer"] = tiny_clip_encoder(False, config["pooled_projection_dim"])
    getattr(diffusers, PIPELINE_CLASSES[family])(**parts).save_pretrained(str(folder))
    return Editor.from_pretrained(folder, dtype=dtype).encoder


def hsds_work(encoder, image_size: int, rows: int, options: dict[str, Any]):
    """One Gauss-Newton linearisation of ``rows`` rows and one CG iteration (VJP, JVP, VJP), as HSDS runs it."""
    from eimsdk.methods.hsds import HSDSConfig, _Linearized

    z, t, cond = _point(encoder, image_size, rows)
    config = HSDSConfig(**options)

    def work():
        lin = _Linearized(encoder, z, t, cond, config)
        u = lin.vjp(torch.ones_like(lin.eps))
        lin.vjp(lin.jvp(u))

    return work


def forward_work(encoder, image_size: int, rows: int, guidance_scale: float = 1.0):
    """One counted prediction without gradient, as inversion and sampling make."""
    z, t, cond = _point(encoder, image_size, rows)
    return lambda: torch.no_grad()(encoder.predict_eps)(z, t, cond, guidance_scale=guidance_scale)


def _point(encoder, image_size: int, rows: int):
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        z0 = encoder.encode_images((torch.rand(1, 3, image_size, image_size, generator=g) * 2 - 1).to(encoder.dtype))
        cond = encoder.encode_prompts(["a photo of a red circle on the left"]).expand_to(rows)
    z0 = z0.expand(rows, *z0.shape[1:])
    t = torch.linspace(0.5, 0.9, rows)
    return encoder.add_noise(z0, torch.randn(z0.shape, generator=g).to(z0), t), t, cond


def run(spec: dict[str, Any]) -> list[dict[str, Any]]:
    """Measure in a fresh subprocess (so that the allocator and the peak counter are this work's alone)."""
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536", "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(spec, f)
    try:
        out = subprocess.run([sys.executable, "-m", "eimsdk.testing.memprobe", f.name], env=env, check=True,
                             capture_output=True, text=True).stdout
    finally:
        os.unlink(f.name)
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def main(path: str) -> None:
    from eimsdk.memory import estimate_forward, estimate_hsds, transformer_shape

    spec = json.loads(Path(path).read_text())
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        encoder = build_encoder(spec["family"], spec.get("transformer", {}), Path(tmp) / "pipe",
                                spec.get("dtype", "float32"))
        shape = transformer_shape(encoder)
        for m in spec["measurements"]:
            size, rows = m["image_size"], m["rows"]
            if m["kind"] == "hsds":
                work = hsds_work(encoder, size, rows, m.get("options", {}))
                options = {"jvp": "double-backward", "keep_graph": True, "checkpointing": False,
                           **m.get("options", {})}
                estimate = estimate_hsds(shape, shape.image_tokens((size, size)), rows, jvp=options["jvp"],
                                         keep_graph=options["keep_graph"], checkpointing=options["checkpointing"],
                                         max_batch=options.get("max_batch") or rows)
            else:
                scale = m.get("guidance_scale", 1.0)
                work = forward_work(encoder, size, rows, scale)
                estimate = estimate_forward(shape, shape.image_tokens((size, size)), rows * (1 if scale == 1 else 2))
            if m.get("warmup", spec.get("warmup", True)):
                peak_bytes(work)
            peak, seconds = peak_bytes(work)
            print(json.dumps({**m, "family": spec["family"], "peak_bytes": peak, "estimate_bytes": estimate,
                              "seconds": seconds, "shape": dataclasses.asdict(shape)}), flush=True)


if __name__ == "__main__":
    main(sys.argv[1])
