"""The shipped world-2 VAE: its round trip keeps what the `toy2` reader reads, named and unnamed.

A sample of what ``eimsdk_toy.recipe.vae_roundtrip`` measures on 1000 scenes (docs/toy-world.md); the bounds are
loose enough for 300 scenes and far above what a VAE that cannot hold world 2 reaches (the world-1 VAE keeps all 13
attributes in 8% of round trips).
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from eimsdk_toy.evaluate import evaluate_vae
from eimsdk_toy.worlds import get_world

pytestmark = pytest.mark.slow


def test_shipped_world2_vae_keeps_every_attribute():
    from diffusers import AutoencoderKL

    folder = get_world(2).weights / "vae"
    vae = AutoencoderKL.from_pretrained(folder, torch_dtype=torch.float32)
    assert vae.config.sample_size == 64 and vae.config.latent_channels == 4
    assert len(vae.config.block_out_channels) == 2  # 64 px -> 4 x 32 x 32 latents
    with torch.no_grad():
        result = evaluate_vae(SimpleNamespace(vae=vae), "vae", 300, world=2)
    assert min(result["attributes"].values()) >= 0.98, result
    assert result["all"] >= 0.96, result
