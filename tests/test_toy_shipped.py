"""The shipped toy models: each family loads from the package, follows captions and survives inversion.

Small samples of what ``python -m eimsdk_toy.evaluate`` measures on 256 scenes (docs/toy-world.md); the bounds are
loose enough for 16 samples and far above what an untrained or broken model reaches (an earlier, under-trained
toy PixArt read back all attributes in 4% of samples).
"""

from __future__ import annotations

import pytest

from eimsdk_toy import default_model_path
from eimsdk_toy.evaluate import evaluate_inversion, evaluate_sampling, load_pipeline

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("family", ["pixart", "sd3", "flux", "unet"])
def test_shipped_model_follows_captions_and_inverts(family):
    path = default_model_path(family)
    pipe, loaded_family = load_pipeline(path)
    assert loaded_family == family
    sampling = evaluate_sampling(pipe, family, 16, steps=12, batch=16)
    assert sampling["all"] >= 0.75, sampling
    assert min(sampling["attributes"].values()) >= 0.8, sampling
    inversion = evaluate_inversion(path, 8, steps=25, batch=8)
    assert inversion["all"] >= 0.75, inversion
