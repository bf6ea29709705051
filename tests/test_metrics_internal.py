"""The reader-free response-overlap score on the analytic Gaussian backend, where the true overlap is known."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from eimsdk.errors import InputError
from eimsdk.metrics.internal import ResponseOverlap
from eimsdk.records import Direction
from eimsdk.testing.analytic import GaussianEncoder

SOURCE = "a red circle small left"
EDITS = {"colour": "a blue circle small left", "shape": "a red square small left",
         "size": "a red circle large left", "position": "a red circle small right"}


def _setup(overlap: float, scale: float = 1.0, part: str = "dc"):
    enc = GaussianEncoder(overlap=overlap, seed=3)
    images = enc.decode_latents(enc.mean(enc.encode_prompts([SOURCE, SOURCE.replace("red", "green")])))
    latent = enc.encode(images, [SOURCE, SOURCE.replace("red", "green")])
    directions = {}
    for attr, target in EDITS.items():
        dc = enc.encode_prompts([target]) - enc.encode_prompts([SOURCE])
        dz = enc.mean(enc.encode_prompts([target])) - enc.mean(enc.encode_prompts([SOURCE]))
        d = Direction(dz, dc, {"signature": enc.signature(), "model_id": enc.model_id})
        directions[attr] = d.only(part) * scale
    return enc, latent, directions


def test_orthogonal_attributes_score_higher_than_overlapping_ones():
    scores = {ov: ResponseOverlap()(*_setup(ov)).score for ov in (0.0, 0.5, 0.9)}
    assert scores[0.0] == pytest.approx(1.0, abs=1e-4)  # disjoint latent rows -> disjoint pixel rows
    assert scores[0.0] > scores[0.5] > scores[0.9]


@pytest.mark.parametrize("part", ["dc", "dz"])
def test_both_parts_of_the_joint_space_and_both_spaces(part):
    for space in ("pixel", "latent"):
        orth = ResponseOverlap(space=space)(*_setup(0.0, part=part))
        tangled = ResponseOverlap(space=space)(*_setup(0.9, part=part))
        assert orth.score > tangled.score
        assert orth.overlap.shape == (4, 4) and np.allclose(np.diag(orth.overlap), 1.0)
        assert set(orth.per_attribute) == set(EDITS)


def test_scale_invariance_and_identical_directions():
    # x0_hat is linear in z_t here, so the latent-space response to dz scales with dz and cosines do not change.
    enc, latent, dirs = _setup(0.5, part="dz")
    base = ResponseOverlap(space="latent")(enc, latent, dirs)
    _, _, bigger = _setup(0.5, scale=3.0, part="dz")
    assert ResponseOverlap(space="latent")(enc, latent, bigger).score == pytest.approx(base.score, abs=1e-5)
    same = ResponseOverlap(space="latent")(enc, latent, {"a": dirs["colour"], "b": dirs["colour"] * -2.0})
    assert same.score == pytest.approx(0.0, abs=1e-5)
    assert base.response_norm["colour"] > 0


def test_per_image_directions_and_clear_errors():
    enc, latent, dirs = _setup(0.0)
    per_image = {a: [d, d] for a, d in dirs.items()}
    assert ResponseOverlap()(enc, latent, per_image).score == pytest.approx(ResponseOverlap()(enc, latent, dirs).score)
    with pytest.raises(InputError, match="at least two"):
        ResponseOverlap()(enc, latent, {"colour": dirs["colour"]})
    with pytest.raises(InputError, match="3 directions for 2 images"):
        ResponseOverlap()(enc, latent, {"colour": [dirs["colour"]] * 3, "shape": dirs["shape"]})
    zero = Direction(torch.zeros_like(dirs["colour"].dz), dirs["colour"].dc * 0.0, dirs["colour"].meta)
    with pytest.raises(InputError, match=r"\['nothing'\] do not change"):
        ResponseOverlap()(enc, latent, {"colour": dirs["colour"], "nothing": zero})
    with pytest.raises(ValueError, match="timestep"):
        ResponseOverlap(timesteps=[0.0, 0.5])
