"""Toy scenes: reproducible from seeds, captioned in tokenizer words, bounded specs, exact object masks."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from pydantic import ValidationError

import eimsdk_toy
from eimsdk.errors import InputError
from eimsdk.tokenizers import WORDS, build_t5_tokenizer
from eimsdk_toy.scenes import (ATTRIBUTES, BACKGROUNDS, COLOURS, SceneSpec, caption, make_spec, random_spec,
                               region_mask, render)


def _all_specs():
    for values in itertools.product(*ATTRIBUTES.values()):
        yield SceneSpec(**dict(zip(ATTRIBUTES, values)))


def test_same_seed_same_scene_and_pixels():
    for seed in (0, 1, 12345):
        a, b = make_spec(seed), make_spec(seed)
        assert a == b
        assert np.array_equal(np.asarray(render(a)), np.asarray(render(b)))
    specs = {make_spec(s) for s in range(50)}
    assert len(specs) == 50, "different seeds must give different scenes (the jitter is continuous)"


def test_random_spec_covers_every_class_and_pins_attributes():
    rng = np.random.default_rng(0)
    specs = [random_spec(rng) for _ in range(400)]
    for name, classes in ATTRIBUTES.items():
        assert {getattr(s, name) for s in specs} == set(classes)
    pinned = [random_spec(rng, colour="blue", shape="triangle") for _ in range(20)]
    assert all(s.colour == "blue" and s.shape == "triangle" for s in pinned)
    with pytest.raises(InputError, match="texture"):
        random_spec(rng, texture="striped")


def test_captions_use_only_tokenizer_words_and_name_every_attribute():
    t5 = build_t5_tokenizer()
    unk = t5.unk_token_id
    for spec in _all_specs():
        text = caption(spec)
        assert set(text.split()) <= set(WORDS), text
        for value in spec.attributes().values():
            assert value in text
        # Every word is one T5 token: no character fallback, no unknowns.
        ids = t5(text, add_special_tokens=False).input_ids
        assert unk not in ids and len(ids) == len(text.split())


def test_captions_are_unique_per_attribute_combination():
    captions = {caption(s) for s in _all_specs()}
    assert len(captions) == int(np.prod([len(c) for c in ATTRIBUTES.values()]))


def test_render_colours_position_and_mask():
    spec = SceneSpec(shape="square", colour="green", position="bottom right", size="large", background="white")
    pixels = np.asarray(render(spec), dtype=np.int64)
    assert pixels.shape == (32, 32, 3)
    mask = region_mask(spec)
    # Outside the mask: exactly the background; the object's core: exactly its colour.
    assert (pixels[~mask] == BACKGROUNDS["white"]).all()
    assert (pixels[24, 24] == COLOURS["green"]).all()
    ys, xs = np.nonzero(mask)
    assert ys.min() >= 16 - 1 and xs.min() >= 16 - 1, "a bottom-right object stays in its quadrant"
    grown = region_mask(spec, dilate=2)
    assert grown.sum() > mask.sum() and (grown | mask).sum() == grown.sum()


def test_render_sizes_scale_geometry():
    spec = make_spec(7)
    small, big = render(spec, 32), render(spec, 64)
    assert big.size == (64, 64)
    down = np.asarray(big.resize((32, 32), resample=4), dtype=np.float32)  # BOX
    assert np.abs(down - np.asarray(small, dtype=np.float32)).mean() < 2.0
    with pytest.raises(InputError, match="size"):
        render(spec, 7)


def test_spec_bounds_reject_bad_values():
    with pytest.raises(ValidationError):
        SceneSpec(colour="purple")
    with pytest.raises(ValidationError):
        SceneSpec(dx=0.5)
    with pytest.raises(ValidationError):
        SceneSpec(grow=-1.0)
    with pytest.raises(InputError, match="dilate"):
        region_mask(SceneSpec(), dilate=-1)


def test_make_scene_helper():
    scene = eimsdk_toy.make_scene(3, colour="red", position="top left")
    assert scene.attributes["colour"] == "red" and scene.attributes["position"] == "top left"
    assert scene.caption == caption(scene.spec)
    assert scene.image.size == (32, 32) and scene.mask.shape == (32, 32) and scene.mask.any()
    assert np.array_equal(np.asarray(scene.image), np.asarray(eimsdk_toy.make_scene(3, colour="red",
                                                                                  position="top left").image))
    with pytest.raises(InputError, match="seed"):
        eimsdk_toy.make_scene(-1)
