"""Toy readers recover every attribute from pixels: exact on clean renders, robust to noise, with confidences."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from eimsdk.errors import InputError
from eimsdk.interfaces import AttributeReader
from eimsdk_toy.readers import ToyReader
from eimsdk_toy.scenes import ATTRIBUTES, BACKGROUNDS, COLOURS, random_spec, render

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


OBJECT = ("shape", "colour", "position", "size")


@pytest.mark.parametrize("background", ["black", "white"])
def test_blank_image_reads_none_for_every_object_attribute(background):
    blank = np.full((32, 32, 3), 0 if background == "black" else 255, dtype=np.uint8)
    (reading,) = ToyReader().read_detailed([blank])
    assert not reading.found
    assert reading.values == {"shape": "none", "colour": "none", "position": "none", "size": "none",
                              "background": background}
    for name in OBJECT:
        assert reading.probabilities[name] == {"none": 1.0}


def _faded(spec, fraction):
    """The render with its object blended toward the background: 0 erases it, 1 is the render."""
    background = np.asarray(BACKGROUNDS[spec.background], dtype=np.float32)
    return (background + fraction * (np.asarray(render(spec), dtype=np.float32) - background)).round().astype(np.uint8)


def test_near_blank_images_read_none(scenes):
    specs, _ = scenes
    rng = np.random.default_rng(7)
    images = []
    for spec in specs[:50]:
        images.append(_faded(spec, 0.1))  # a ghost at a tenth of the contrast
        speck = _faded(spec, 0.0)  # two object-coloured pixels on the background
        y, x = rng.integers(0, 31, size=2)
        speck[y, x : x + 2] = COLOURS[spec.colour]
        images.append(speck)
        noise = np.asarray(_faded(spec, 0.0), dtype=np.float32) + rng.normal(0, 6, (32, 32, 3))
        images.append(np.clip(noise, 0, 255).astype(np.uint8))  # background with sensor-like noise
    readings = ToyReader().read_detailed(images)
    assert all(not r.found for r in readings)
    assert all(r.values[name] == "none" for r in readings for name in OBJECT)
    assert [r.values["background"] for r in readings] == [s.background for s in specs[:50] for _ in range(3)]


def test_an_erased_object_is_neither_a_success_nor_preserved(scenes):
    specs, images = scenes
    reader = ToyReader()
    for spec, image in zip(specs[:40], images[:40]):
        source, erased = reader.read([image, _faded(spec, 0.0)])
        for name in OBJECT:
            assert erased[name] not in ATTRIBUTES[name]  # matches no expected class of any edit
            assert erased[name] != source[name]  # and never the source's reading


def test_a_visible_object_is_still_read_once_it_has_enough_contrast(scenes):
    specs, _ = scenes
    readings = ToyReader().read_detailed([_faded(s, 0.6) for s in specs[:100]])
    assert np.mean([r.found for r in readings]) == 1.0
    assert np.mean([r.values["position"] == s.position for r, s in zip(readings, specs)]) >= 0.95


def test_bad_inputs_name_the_argument():
    reader = ToyReader()
    with pytest.raises(InputError, match="images"):
        reader.read(np.zeros((32, 32, 3), dtype=np.uint8))  # a single array, not a list
    with pytest.raises(InputError, match="square"):
        reader.read([np.zeros((32, 48, 3), dtype=np.uint8)])
    with pytest.raises(InputError, match="images"):
        reader.read(torch.zeros(1, 4, 32, 32))
