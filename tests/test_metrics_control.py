"""The control of both disentanglement measures: analytic worlds of known entanglement (``overlap``) must be ranked
correctly by the reader-based D and by the reader-free S."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from eimsdk.testing.analytic import GaussianEncoder
from eimsdk.testing.disentanglement_control import BandReader, measure_world


def test_band_reader_reads_a_disjoint_world_exactly():
    enc = GaussianEncoder(overlap=0.0, seed=1, dtype=torch.float64)
    rng = np.random.default_rng(1)
    specs = [{g: words[rng.integers(len(words))] for g, words in enc.attributes.items()} for _ in range(20)]
    images = enc.decode_latents(enc.mean(enc.encode_prompts(["a " + " ".join(s.values()) for s in specs])))
    assert BandReader(enc).read(images) == specs


def test_both_measures_rank_worlds_by_their_overlap():
    worlds = [measure_world(overlap, sources=16, resamples=200) for overlap in (0.0, 0.5, 0.75, 1.0)]
    s = [w["S"] for w in worlds]
    d = [w["D"] for w in worlds]
    assert s[0] == pytest.approx(1.0, abs=1e-6) and d[0] == pytest.approx(1.0)
    assert all(a > b for a, b in zip(s, s[1:])), s
    assert all(a > b for a, b in zip(d, d[1:3])) and d[3] <= d[2], d
    assert d[-1] < 0.25 and s[-1] < 0.25
    for w in worlds:
        assert w["D_interval"][0] <= w["D"] <= w["D_interval"][1]
        assert w["S_interval"][0] <= w["S"] + 1e-12 and w["S"] <= w["S_interval"][1] + 1e-12
