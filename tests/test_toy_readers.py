"""Toy readers recover every attribute from pixels: exact on clean renders, robust to noise, with confidences."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from eimsdk.errors import InputError
from eimsdk.interfaces import AttributeReader
from eimsdk_toy.readers import ToyReader
from eimsdk_toy.scenes import ATTRIBUTES, random_spec, render

N = 1000


@pytest.fixture(scope="module")
def scenes():
    rng = np.random.default_rng(2024)
    specs = [random_spec(rng) for _ in range(N)]
    return specs, [render(s) for s in specs]


def _accuracy(specs, readings):
    per = {k: np.mean([r[k] == getattr(s, k) for s, r in zip(specs, readings)]) for k in ATTRIBUTES}
    every = np.mean([all(r[k] == getattr(s, k) for k in ATTRIBUTES) for s, r in zip(specs, readings)])
    return per, every


def test_reader_is_registered_interface():
    reader = ToyReader()
    assert isinstance(reader, AttributeReader)
    assert reader.attributes == ATTRIBUTES
    reader.check("colour")
    with pytest.raises(InputError, match="texture"):
        reader.check("texture")


def test_reads_clean_renders(scenes):
    specs, images = scenes
    per, every = _accuracy(specs, ToyReader().read(images))
    assert every >= 0.995, per
    assert min(per.values()) >= 0.995, per


def test_confidence_is_high_on_clean_renders(scenes):
    specs, images = scenes
    details = ToyReader().read_detailed(images[:200])
    for d in details:
        assert d.found
        assert set(d.probabilities) == set(ATTRIBUTES)
        for name, probs in d.probabilities.items():
            assert set(probs) == set(ATTRIBUTES[name])
            assert abs(sum(probs.values()) - 1) < 1e-6
    mean_conf = {k: np.mean([d.confidence[k] for d in details]) for k in ATTRIBUTES}
    assert min(mean_conf.values()) > 0.9, mean_conf


def test_robust_to_noise_and_blur_on_tensor_input(scenes):
    specs, images = scenes
    specs, images = specs[:300], images[:300]
    x = torch.from_numpy(np.stack([np.asarray(im, dtype=np.float32) for im in images]) / 127.5 - 1)
    x = x.permute(0, 3, 1, 2)
    g = torch.Generator().manual_seed(0)
    noisy = (x + 0.08 * torch.randn(x.shape, generator=g)).clamp(-1, 1)  # ~10/255 per channel
    per, every = _accuracy(specs, ToyReader().read(noisy))
    assert every >= 0.98, per
    kernel = torch.tensor([[1.0, 2.0, 1.0], [2.0, 4.0, 2.0], [1.0, 2.0, 1.0]]) / 16
    blurred = torch.nn.functional.conv2d(torch.nn.functional.pad(x, (1, 1, 1, 1), mode="replicate"),
                                         kernel.expand(3, 1, 3, 3), groups=3)
    per, every = _accuracy(specs, ToyReader().read(blurred))
    assert every >= 0.98, per


def test_other_image_sizes(scenes):
    specs, _ = scenes
    specs = specs[:100]
    per, every = _accuracy(specs, ToyReader().read([render(s, 64) for s in specs]))
    assert every >= 0.99, per


def test_blank_image_has_no_object_and_uniform_confidence():
    blank = np.zeros((32, 32, 3), dtype=np.uint8)
    (reading,) = ToyReader().read_detailed([blank])
    assert not reading.found
    assert reading.values["background"] == "black"
    assert reading.confidence["shape"] == pytest.approx(1 / 3)
    assert reading.confidence["colour"] == pytest.approx(1 / 4)


def test_bad_inputs_name_the_argument():
    reader = ToyReader()
    with pytest.raises(InputError, match="images"):
        reader.read(np.zeros((32, 32, 3), dtype=np.uint8))  # a single array, not a list
    with pytest.raises(InputError, match="square"):
        reader.read([np.zeros((32, 48, 3), dtype=np.uint8)])
    with pytest.raises(InputError, match="images"):
        reader.read(torch.zeros(1, 4, 32, 32))
