"""PSNR and SSIM, whole-image and outside an edited region: known answers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from eimsdk.errors import InputError
from eimsdk.metrics.pixels import PSNR_CAP, psnr, ssim


def _image(seed: int = 0, size: int = 32) -> np.ndarray:
    return np.random.default_rng(seed).integers(40, 200, (size, size, 3), dtype=np.uint8)


def test_identical_images():
    a = _image()
    assert psnr(a, a) == PSNR_CAP
    assert ssim(a, a) == pytest.approx(1.0)


def test_psnr_of_a_known_offset():
    a = torch.full((3, 16, 16), 0.2) * 2 - 1  # tensors are in [-1, 1]: 0.2 and 0.3 in [0, 1]
    b = torch.full((3, 16, 16), 0.3) * 2 - 1  # MSE = 0.01 -> 20 dB
    assert psnr(a, b) == pytest.approx(20.0, abs=1e-4)


def test_changes_inside_the_region_do_not_count():
    a = _image(1)
    b = a.copy()
    b[8:20, 10:24] = 255 - b[8:20, 10:24]
    region = np.zeros((32, 32), bool)
    region[8:20, 10:24] = True
    assert psnr(a, b, region) == PSNR_CAP
    assert ssim(a, b, region) == pytest.approx(1.0)
    assert psnr(a, b) < 20.0 and ssim(a, b) < 0.9
    assert psnr(a, b, np.ones((32, 32), bool)) is None and ssim(a, b, np.ones((32, 32), bool)) is None


def test_ssim_falls_with_noise_and_is_symmetric():
    a = _image(2).astype(np.float64) / 255
    rng = np.random.default_rng(3)
    scores = [ssim(a, np.clip(a + s * rng.standard_normal(a.shape), 0, 1)) for s in (0.02, 0.1, 0.3)]
    assert scores[0] > scores[1] > scores[2] > 0
    b = np.clip(a + 0.1 * rng.standard_normal(a.shape), 0, 1)
    assert ssim(a, b) == pytest.approx(ssim(b, a))


def test_pil_and_tensor_inputs_agree():
    a, b = _image(4), _image(5)
    ta = torch.from_numpy(a).permute(2, 0, 1).float() / 127.5 - 1
    assert psnr(Image.fromarray(a), Image.fromarray(b)) == pytest.approx(psnr(ta, b), abs=1e-6)
    assert ssim(Image.fromarray(a), b) == pytest.approx(ssim(ta[None], b), abs=1e-6)


def test_clear_errors():
    with pytest.raises(InputError, match="same size"):
        psnr(_image(0, 32), _image(0, 16))
    with pytest.raises(InputError, match="region has shape"):
        ssim(_image(), _image(), np.zeros((8, 8), bool))
    with pytest.raises(InputError, match="too small"):
        ssim(_image(0, 4), _image(1, 4))


def test_edit_metrics_score_the_whole_image_and_outside_the_item_region():
    from eimsdk.bench.manifest import ManifestItem, Region
    from eimsdk.metrics.pixels import PSNR, SSIM

    a = torch.full((3, 16, 16), 0.2) * 2 - 1
    b = a.clone()
    b[:, :4] = 0.5 * 2 - 1  # change the top four rows only
    region = np.zeros((16, 16), bool)
    region[:4] = True
    item = ManifestItem(id="a", image="x.png", source_prompt="p", attribute="colour", target_prompts=["q"])
    with_region = item.model_copy(update={"region": Region.from_mask(region)})
    assert PSNR()(a, b, item=item) == {"psnr": pytest.approx(psnr(a, b))}
    scores = PSNR()(a, b, item=with_region)
    assert scores["psnr_outside"] == PSNR_CAP and scores["psnr"] < 20.0
    assert SSIM()(a, b, item=with_region)["ssim_outside"] == pytest.approx(1.0)
    assert set(SSIM()(a, b, item=item)) == {"ssim"}
