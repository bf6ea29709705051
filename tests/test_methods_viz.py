"""Strength-sweep grids: layout, readable labels, checked inputs, and the Editor.sweep path."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from eimsdk import Editor
from eimsdk.errors import InputError
from eimsdk.methods.hsds import HSDSFinder
from eimsdk.testing.analytic import GaussianEncoder
from eimsdk.viz import MIN_CELL, edit_grid


def _tiles(n, size=16):
    return [Image.new("RGB", (size, size), (40 * i % 256, 90, 200)) for i in range(n)]


def test_layout_upscales_small_images_and_draws_labels():
    rows = [_tiles(4), _tiles(4)]
    grid = edit_grid(rows, row_labels=["colour", "size"], col_labels=["source", "-1", "+0", "+1"])
    plain = edit_grid(rows)
    assert plain.width >= 4 * MIN_CELL and plain.height >= 2 * MIN_CELL
    assert grid.width > plain.width and grid.height > plain.height, "labels take a margin on the left and on top"
    arr = np.asarray(grid)
    left = arr[grid.height - plain.height :, : grid.width - plain.width]
    assert (left < 128).any(), "row labels are drawn in dark ink"
    cell = np.asarray(plain)[10, 10]
    assert tuple(cell) == (0, 90, 200), "images are pasted unchanged, only upscaled"


@pytest.mark.parametrize("rows, kwargs, match", [
    ([], {}, "non-empty"),
    ([_tiles(2), _tiles(3)], {}, r"rows\[1\]"),
    ([_tiles(2)], {"row_labels": ["a", "b"]}, "row_labels"),
    ([_tiles(2)], {"col_labels": ["a"]}, "col_labels"),
    ([[np.zeros((4, 4, 3))]], {}, "PIL"),
])
def test_bad_inputs_are_refused(rows, kwargs, match):
    with pytest.raises(InputError, match=match):
        edit_grid(rows, **kwargs)


def test_editor_sweep_writes_one_row_per_direction(tmp_path):
    enc = GaussianEncoder()
    editor = Editor(enc)
    image = enc.decode_latents(enc.mean(enc.encode_prompts(["a red circle"])).float())
    latent = enc.encode(image, "a red circle")
    directions = {name: HSDSFinder(num_timesteps=2).find(enc, latent, [target])
                  for name, target in (("colour", "a blue circle"), ("shape", "a red square"))}
    grid, results = editor.sweep(image, "a red circle", directions, strengths=(-1.0, 0.0, 1.0))
    assert set(results) == {"colour", "shape"} and all(len(r) == 3 for r in results.values())
    assert grid.height > 2 * MIN_CELL and grid.width > 4 * MIN_CELL
    assert not np.array_equal(np.asarray(results["colour"][0].image), np.asarray(results["colour"][2].image))
    assert torch.is_tensor(results["colour"][1].latents)
