"""The linear joint manipulator: strength 0 is the round trip, strengths are signed, directions compose."""

from __future__ import annotations

import pydantic
import pytest
import torch

from eimsdk import Editor
from eimsdk.errors import DirectionMismatchError, InputError
from eimsdk.methods.baselines import SwapFinder, TextOnlyFinder
from eimsdk.methods.hsds import HSDSFinder
from eimsdk.methods.manipulate import LinearJointConfig, LinearJointManipulator
from eimsdk.records import Direction
from eimsdk.testing.analytic import GaussianEncoder


@pytest.fixture(scope="module")
def world():
    enc = GaussianEncoder(dtype=torch.float64)
    g = torch.Generator().manual_seed(1)
    z0 = enc.mean(enc.encode_prompts(["a small red circle", "a small red square"])) \
        + 0.4 * torch.randn(2, *enc.latent_shape, generator=g, dtype=torch.float64)
    latent = enc.encode(enc.decode_latents(z0), ["a small red circle", "a small red square"])
    colour = HSDSFinder().find(enc, latent, ["a small blue circle", "a small blue square"])
    size = HSDSFinder().find(enc, latent, ["a large red circle", "a large red square"])
    return enc, latent, colour, size


def _along(enc, z, d, group):
    """How far latents z (B, ...) sit along d.dz inside an attribute group's block."""
    block = enc.group_masks[list(enc.attributes).index(group)].reshape(1, *enc.latent_shape)
    u = d.dz * block
    return ((z * u).flatten(1).sum(1) / u.norm() ** 2)


def test_strength_zero_is_exactly_the_inversion_round_trip(world):
    enc, latent, colour, size = world
    m = LinearJointManipulator(t_edit=0.7, num_steps=12)
    out = m.apply(enc, latent, [(colour, 0.0), (size, 0.0)])
    round_trip = enc.sample(enc.invert(latent.z0, latent.cond, 0.7, 12), latent.cond, 0.7, 12)
    assert torch.equal(out, round_trip)


def test_strength_zero_round_trip_on_a_tiny_dit(tiny_pipeline_path, scene_image):
    editor = Editor.from_pretrained(tiny_pipeline_path("pixart"))
    enc = editor.encoder
    latent = enc.encode(scene_image, "a red circle")
    d = TextOnlyFinder().find(enc, latent, ["a blue square on the left"])
    out = LinearJointManipulator(num_steps=4).apply(enc, latent, [(d, 0.0)])
    assert torch.equal(out, enc.sample(enc.invert(latent.z0, latent.cond, 0.6, 4), latent.cond, 0.6, 4))
    assert not torch.equal(out, LinearJointManipulator(num_steps=4).apply(enc, latent, [(d, 0.5)]))


def test_signed_continuous_strength_moves_the_attribute_monotonically(world):
    enc, latent, colour, _ = world
    m = LinearJointManipulator(num_steps=10)
    positions = torch.stack([_along(enc, m.apply(enc, latent, [(colour, s)]), colour, "colour")
                             for s in (-1.0, -0.5, 0.0, 0.5, 1.0)])  # (5, B)
    assert torch.all(positions[1:] > positions[:-1]), positions
    assert torch.all(positions[4] - positions[2] > 0.5) and torch.all(positions[0] - positions[2] < -0.5)


def test_directions_compose_by_addition(world):
    enc, latent, colour, size = world
    m = LinearJointManipulator(num_steps=8)
    both = m.apply(enc, latent, [(colour, 0.8), (size, -0.6)])
    swapped = m.apply(enc, latent, [(size, -0.6), (colour, 0.8)])
    summed = m.apply(enc, latent, [(colour * 0.8 + size * -0.6, 1.0)])
    torch.testing.assert_close(both, swapped, atol=1e-12, rtol=1e-12)
    torch.testing.assert_close(both, summed, atol=1e-12, rtol=1e-12)
    base = m.apply(enc, latent, [(colour, 0.0)])
    assert _along(enc, both - base, colour, "colour").min() > 0.5
    assert _along(enc, both - base, size, "size").max() < -0.3


def test_ablations_move_one_part_only(world):
    enc, latent, colour, _ = world
    joint = LinearJointManipulator(num_steps=8).apply(enc, latent, [(colour, 1.0)])
    only_dz = LinearJointManipulator(num_steps=8, ablation="dz").apply(enc, latent, [(colour, 1.0)])
    only_dc = LinearJointManipulator(num_steps=8, ablation="dc").apply(enc, latent, [(colour, 1.0)])
    plain = LinearJointManipulator(num_steps=8)
    torch.testing.assert_close(only_dc, plain.apply(enc, latent, [(colour.only("dc"), 1.0)]))
    torch.testing.assert_close(only_dz, plain.apply(enc, latent, [(colour.only("dz"), 1.0)]))
    assert not torch.allclose(joint, only_dz) and not torch.allclose(joint, only_dc)


def test_edit_time_comes_from_config_or_the_direction(world):
    enc, latent, colour, _ = world
    swap = SwapFinder().find(enc, latent, ["a small blue circle", "a small blue square"])
    auto = LinearJointManipulator(num_steps=6).apply(enc, latent, [(swap, 1.0)])
    full = LinearJointManipulator(num_steps=6, t_edit=1.0).apply(enc, latent, [(swap, 1.0)])
    partial = LinearJointManipulator(num_steps=6, t_edit=0.5).apply(enc, latent, [(swap, 1.0)])
    assert torch.equal(auto, full) and not torch.allclose(auto, partial)


def test_a_cached_edit_costs_one_inversion_and_one_sampling_pass(world):
    enc, latent, colour, _ = world
    before = enc.counter.snapshot()
    LinearJointManipulator(num_steps=15).apply(enc, latent, [(colour, 1.0)])
    counts = enc.counter.since(before)
    assert counts["forwards"] == 2 * 15 * latent.batch_size and counts["jvps"] == counts["vjps"] == 0


def test_bad_edits_are_refused(world, tiny_pipeline_path):
    enc, latent, colour, _ = world
    m = LinearJointManipulator()
    with pytest.raises(InputError, match="strength"):
        m.apply(enc, latent, [(colour, float("inf"))])
    with pytest.raises(InputError, match="pairs"):
        m.apply(enc, latent, colour)
    with pytest.raises(InputError, match="empty"):
        m.apply(enc, latent, [])
    with pytest.raises(InputError, match=r"edits\[0\]"):
        m.apply(enc, latent, [("colour", 1.0)])
    alien = Direction(torch.zeros(1, 4, 8, 8), colour.dc, {**colour.meta, "signature": {"family": "pixart"}})
    with pytest.raises(DirectionMismatchError, match="pixart"):
        m.apply(enc, latent, [(alien, 1.0)])
    with pytest.raises(pydantic.ValidationError):
        LinearJointConfig(t_edit=1.5)
    with pytest.raises(pydantic.ValidationError):
        LinearJointConfig(ablation="both")


def test_inverting_under_the_edited_conditioning_lets_dz_carry_the_edit(world):
    """In the Gaussian world the HSDS dz is the exact mean shift; inverted and resampled under c', it stays put."""
    enc, latent, colour, _ = world
    m = LinearJointManipulator(num_steps=40, t_edit=0.4, invert_under="edited")
    assert torch.equal(m.apply(enc, latent, [(colour, 0.0)]),
                       LinearJointManipulator(num_steps=40, t_edit=0.4).apply(enc, latent, [(colour, 0.0)]))
    moved = m.apply(enc, latent, [(colour, 1.0)]) - m.apply(enc, latent, [(colour, 0.0)])
    torch.testing.assert_close(moved, colour.dz.expand_as(moved), atol=0.05, rtol=0)
    dc_only = LinearJointManipulator(num_steps=40, t_edit=0.4, invert_under="edited", ablation="dc")
    source_dc = LinearJointManipulator(num_steps=40, t_edit=0.4, ablation="dc")
    assert float((dc_only.apply(enc, latent, [(colour, 1.0)]) - m.apply(enc, latent, [(colour, 0.0)])).norm()) < \
        0.2 * float((source_dc.apply(enc, latent, [(colour, 1.0)]) - m.apply(enc, latent, [(colour, 0.0)])).norm())


def test_fixed_point_inversion_tightens_the_round_trip_at_its_evaluation_cost(world):
    """inversion_fixed_point=K is Encoder.invert's refinement: strength 0 returns a closer round trip of the source,
    for K more forward passes per inversion step, and the sampling half is unchanged."""
    enc, latent, colour, _ = world
    steps = 6
    errors, forwards = [], []
    for k in (0, 2):
        m = LinearJointManipulator(t_edit=0.8, num_steps=steps, inversion_fixed_point=k)
        before = enc.counter.snapshot()
        out = m.apply(enc, latent, [(colour, 0.0)])
        forwards.append(enc.counter.since(before)["forwards"])
        expected = enc.sample(enc.invert(latent.z0, latent.cond, 0.8, steps, fixed_point_iterations=k),
                              latent.cond, 0.8, steps)
        assert torch.equal(out, expected)
        errors.append(float((out - latent.z0).norm() / latent.z0.norm()))
    assert errors[1] < 0.5 * errors[0], errors
    assert forwards[1] - forwards[0] == 2 * steps * latent.batch_size
    with pytest.raises(pydantic.ValidationError):
        LinearJointConfig(inversion_fixed_point=-1)
    with pytest.raises(pydantic.ValidationError):
        LinearJointConfig(inversion_fixed_point=101)
