"""FlowEdit: exact on the Gaussian world, the paper's update on flow models, runs on every tiny backend."""

from __future__ import annotations

import pytest
import torch

from eimsdk import Editor
from eimsdk.bench.runner import parse_method
from eimsdk.errors import InputError
from eimsdk.methods.baselines import DDSFinder
from eimsdk.methods.flowedit import FlowEditConfig, FlowEditFinder, FlowEditManipulator
from eimsdk.methods.manipulate import LinearJointManipulator
from eimsdk.testing.analytic import GaussianEncoder
from test_methods_hsds import _latent


@pytest.fixture
def world():
    enc = GaussianEncoder(dtype=torch.float64)
    latent = _latent(enc)
    shift = enc.mean(enc.encode_prompts(["a blue circle"])) - enc.mean(latent.cond)  # the exact edit
    return enc, latent, shift


def _edit(enc, latent, strength=1.0, seed=0, target="a blue circle", **cfg):
    """FlowEdit without guidance (then both branches share the world's Jacobian), unless ``cfg`` says otherwise."""
    d = FlowEditFinder(**{"target_guidance": 1.0, **cfg}).find(enc, latent, [target], seed=seed)
    return FlowEditManipulator().apply(enc, latent, [(d, strength)])


def test_strength_zero_returns_the_source_bit_for_bit(world):
    enc, latent, _ = world
    before = enc.counter.forwards
    assert torch.equal(_edit(enc, latent, strength=0.0), latent.z0)
    assert enc.counter.forwards == before  # nothing was integrated


def test_the_shared_noise_cancels_on_the_gaussian_world(world):
    """Both branches are linear in z with the same Jacobian, so v_tar - v_src does not depend on the noise N."""
    enc, latent, _ = world
    a, b = _edit(enc, latent, seed=0), _edit(enc, latent, seed=123)
    torch.testing.assert_close(a, b, atol=1e-12, rtol=0)
    assert float((a - latent.z0).abs().max()) > 0.1
    guided = [_edit(enc, latent, seed=seed, target_guidance=3.0) for seed in (0, 123)]  # Jacobians now differ
    assert float((guided[0] - guided[1]).abs().max()) > 1e-6


def test_full_range_converges_to_the_exact_mean_shift(world):
    enc, latent, shift = world
    dz = (_edit(enc, latent, num_steps=200, n_max=199) - latent.z0).flatten()
    shift = shift.flatten()
    along = float(dz @ shift / shift.norm() ** 2)
    assert along == pytest.approx(1.0, abs=0.01)
    assert float((dz - along * shift).norm() / shift.norm()) < 0.002
    unnamed = shift.abs() < 1e-12  # rows the edit does not name stay put, up to round-off
    assert unnamed.sum() > 0 and float(dz[unnamed].abs().max()) < 1e-12
    partial = (_edit(enc, latent, num_steps=200, n_max=100) - latent.z0).flatten()
    assert 0.5 < float(partial @ shift / shift.norm() ** 2) < along  # starting lower moves less of the way


def test_cost_is_two_predictions_per_step_and_draw(world):
    enc, latent, _ = world
    d = FlowEditFinder(num_steps=10, n_max=6, n_avg=3, target_guidance=2.0).find(enc, latent, ["a blue circle"])
    assert d.meta["cost"]["forwards"] == 0 and torch.equal(d.dz, torch.zeros_like(latent.z0))
    assert d.meta["flowedit"]["n_max"] == 6 and d.meta["flowedit"]["seed"] == 0
    before = enc.counter.forwards
    FlowEditManipulator().apply(enc, latent, [(d, 1.0)])
    assert enc.counter.forwards - before == 6 * 3 * (1 + 2)  # source unguided, target guided (2 per row)
    d = FlowEditFinder(num_steps=10, n_max=6, n_min=2, target_guidance=1.0).find(enc, latent, ["a blue circle"])
    before = enc.counter.forwards
    out = FlowEditManipulator().apply(enc, latent, [(d, 1.0)])
    assert enc.counter.forwards - before == 4 * 2 + 2 and torch.isfinite(out).all()  # then 2 sampling steps


def test_flow_family_update_is_the_papers_with_the_native_velocity(tiny_pipeline_path, scene_image):
    """One step on tiny SD3 equals Z + (t_next - t) (v(z_tar, c_tar) - v(z_src, c_src)), v the transformer's."""
    enc = Editor.from_pretrained(tiny_pipeline_path("sd3")).encoder
    latent = enc.encode(scene_image, "a red circle")
    d = FlowEditFinder(num_steps=8, n_max=1, target_guidance=1.0).find(enc, latent, ["a blue circle"], seed=5)
    out = FlowEditManipulator().apply(enc, latent, [(d, 1.0)])
    t, t_next = enc.timesteps(8, 1.0, latents=latent.z0).tolist()[-2:]
    noise = torch.randn(latent.z0.shape, generator=torch.Generator("cpu").manual_seed(5))
    z_src = (1 - t) * latent.z0 + t * noise  # Z = x at the first step, so z_tar = z_src
    tt = torch.full((1,), t)
    with torch.no_grad():
        v_tar = enc._predict_velocity(z_src, tt, latent.cond + d.dc)
        v_src = enc._predict_velocity(z_src, tt, latent.cond)
    torch.testing.assert_close(out, latent.z0 + (t_next - t) * (v_tar - v_src), atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize("family", ["pixart", "sd3", "flux"])
def test_runs_on_every_tiny_backend(family, tiny_pipeline_path, scene_image):
    editor = Editor(Editor.from_pretrained(tiny_pipeline_path(family)).encoder, manipulator="flowedit")
    d = editor.find_direction(scene_image, "a red circle", "a blue circle", method="flowedit", num_steps=6, n_max=4,
                              target_guidance=3.0)
    latent = editor.encoder.encode(scene_image, "a red circle")
    out = FlowEditManipulator().apply(editor.encoder, latent, [(d, 1.0)])
    assert out.shape == latent.z0.shape and torch.isfinite(out).all()
    assert float((out - latent.z0).abs().max()) > 0
    assert editor.apply(scene_image, "a red circle", d, 1.0).image.size == scene_image.size


def test_each_manipulator_refuses_the_others_directions(world):
    enc, latent, _ = world
    flow = FlowEditFinder().find(enc, latent, ["a blue circle"])
    with pytest.raises(InputError, match="flowedit"):
        LinearJointManipulator().apply(enc, latent, [(flow, 1.0)])
    dds = DDSFinder().find(enc, latent, ["a blue circle"])
    with pytest.raises(InputError, match="method='flowedit'"):
        FlowEditManipulator().apply(enc, latent, [(dds, 1.0)])
    with pytest.raises(InputError, match="pairs"):
        FlowEditManipulator().apply(enc, latent, [])


def test_settings_are_checked():
    for bad in ({"n_max": 21}, {"n_min": 17}, {"n_max": 3, "n_min": 5}):
        with pytest.raises(ValueError, match="n_min < n_max <= num_steps"):
            FlowEditConfig(**bad)


def test_a_benchmark_method_can_name_its_manipulator():
    spec = parse_method("flowedit:manipulator=flowedit,n_max=10,t_edit=0.5", manipulator_fields=["t_edit"])
    assert spec.manipulator == "flowedit" and spec.finder_config == {"n_max": 10}
    assert spec.manipulator_config == {"t_edit": 0.5}
    assert parse_method("dds").manipulator is None
