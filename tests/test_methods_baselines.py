"""Baseline finders: text-only, SDS, DDS and inversion + prompt swap, each one flag away from HSDS."""

from __future__ import annotations

import pytest
import torch

from eimsdk import Editor
from eimsdk.methods.baselines import DDSFinder, SDSFinder, SwapFinder, TextOnlyFinder
from eimsdk.methods.hsds import HSDSFinder, SamplingConfig, draw_samples
from eimsdk.methods.manipulate import LinearJointManipulator
from eimsdk.methods.text import text_direction
from eimsdk.plugins import PluginManager
from eimsdk.testing import analytic
from eimsdk.testing.analytic import GaussianEncoder


@pytest.fixture
def world():
    enc = GaussianEncoder(dtype=torch.float64)
    g = torch.Generator().manual_seed(0)
    cond = enc.encode_prompts(["a red circle"])
    z0 = enc.mean(cond) + 0.5 * torch.randn(1, *enc.latent_shape, generator=g, dtype=torch.float64)
    latent = enc.encode(enc.decode_latents(z0), "a red circle")
    return enc, latent


def _by_formula(enc, latent, target, cfg, seed, source_branch):
    """-sum w a (f(z, c + dc) - baseline) / sum w a^2 with the world's own predictions."""
    s = draw_samples(enc, latent, cfg, seed)
    edit = s.cond + text_direction(enc, latent.prompts, [target])
    f = enc.predict_eps(s.z_t, s.t, edit, guidance_scale=cfg.guidance_scale)
    other = s.eps if source_branch is None else enc.predict_eps(s.z_t, s.t, s.cond, guidance_scale=cfg.guidance_scale)
    w, a = s.w.flatten(), s.a.flatten()
    return -torch.einsum("k,k,k...->...", w, a, f - other)[None] / float((w * a**2).sum())


def test_text_only_has_no_image_part(world):
    enc, latent = world
    d = TextOnlyFinder().find(enc, latent, ["a blue circle"])
    assert torch.equal(d.dz, torch.zeros_like(latent.z0))
    torch.testing.assert_close(d.dc.flat(), text_direction(enc, ["a red circle"], ["a blue circle"]).flat())
    assert d.meta["method"] == "text" and d.meta["cost"]["forwards"] == 0


@pytest.mark.parametrize("finder, source_branch", [(DDSFinder, "source"), (SDSFinder, None)])
def test_first_order_directions_follow_their_formula(world, finder, source_branch):
    enc, latent = world
    f = finder(num_timesteps=6, guidance_scale=3.0, weighting="sigma2")
    d = f.find(enc, latent, ["a blue circle"], seed=2)
    torch.testing.assert_close(d.dz, _by_formula(enc, latent, "a blue circle", f.config, 2, source_branch))
    assert len(d.meta["timesteps"]) == 6


def test_first_order_baselines_use_the_hsds_samples(world):
    enc, latent = world
    sampling = dict(num_timesteps=3, t_min=0.2, t_max=0.8)  # HSDS's own default range is higher
    hsds = HSDSFinder(**sampling).find(enc, latent, ["a blue circle"], seed=8)
    dds = DDSFinder(**sampling).find(enc, latent, ["a blue circle"], seed=8)
    assert hsds.meta["timesteps"] == dds.meta["timesteps"]
    assert set(SamplingConfig.model_fields) <= set(HSDSFinder.Config.model_fields), "one sampling config for all"


def test_dds_points_at_the_true_shift_and_sds_is_biased(world):
    """On the Gaussian world DDS is nearly the mean shift; SDS also pulls toward the prompt's mean."""
    enc, latent = world
    shift = (enc.mean(enc.encode_prompts(["a blue circle"])) - enc.mean(latent.cond)).flatten()
    cos = lambda d: float(d.dz.flatten() @ shift / (d.dz.norm() * shift.norm()))  # noqa: E731
    dds = DDSFinder(num_timesteps=8).find(enc, latent, ["a blue circle"])
    sds = SDSFinder(num_timesteps=8).find(enc, latent, ["a blue circle"])
    assert cos(dds) > 0.99
    assert cos(sds) < cos(dds)


def test_swap_is_a_full_inversion_and_prompt_swap(world):
    enc, latent = world
    d = SwapFinder().find(enc, latent, ["a blue circle"])
    assert d.meta["t_edit"] == 1.0 and torch.equal(d.dz, torch.zeros_like(latent.z0))
    edited = LinearJointManipulator(num_steps=10).apply(enc, latent, [(d, 1.0)])
    noise = enc.invert(latent.z0, latent.cond, 1.0, 10)
    swapped = enc.sample(noise, enc.encode_prompts(["a blue circle"]), 1.0, 10)
    torch.testing.assert_close(edited, swapped, atol=1e-10, rtol=1e-10)


def test_every_method_is_one_flag_away(tmp_path):
    pm = PluginManager()
    pm.register(analytic, "analytic")
    GaussianEncoder().save_pretrained(tmp_path)
    editor = Editor.from_pretrained(tmp_path, plugin_manager=pm)
    image = editor.encoder.decode_latents(torch.randn(1, *editor.encoder.latent_shape))
    methods = {"hsds", "text", "sds", "dds", "swap"}
    assert methods <= set(pm.names("finder"))
    for method in sorted(methods):
        d = editor.find_direction(image, "a red circle", "a blue circle", method=method)
        assert d.meta["method"] == method
        res = editor.apply(image, "a red circle", d, 1.0)
        assert res.image.size == (16, 16)
