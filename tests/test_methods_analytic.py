"""The analytic Gaussian backend: it passes the backend contract, and its closed forms are right."""

from __future__ import annotations

import pytest
import torch

from eimsdk import Editor
from eimsdk.errors import InputError
from eimsdk.plugins import PluginManager
from eimsdk.testing import analytic
from eimsdk.testing.analytic import GaussianEncoder
from eimsdk.testing.contract import EncoderContract


class TestAnalyticContract(EncoderContract):
    prompts = ("a photo of a red circle", "a photo of a blue square on the left")

    @pytest.fixture(scope="class")
    def encoder(self):
        return GaussianEncoder()


def test_eps_hat_is_the_posterior_mean_by_regression():
    """Regress eps on z_t over samples of the world: the fitted map must equal the closed-form J and offset."""
    enc = GaussianEncoder(attributes={"colour": ["red", "blue"], "shape": ["circle", "square"]},
                          latent_shape=(1, 2, 2), cov_rank=1, dtype=torch.float64)
    cond = enc.encode_prompts(["a red circle"])
    t = torch.tensor([0.3], dtype=torch.float64)
    a, s = (float(x) for x in enc.alpha_sigma(t))
    g = torch.Generator().manual_seed(0)
    n = 400_000
    chol = torch.linalg.cholesky(enc.covariance(cond)[0])  # (4, 4)
    x0 = enc.mean(cond).flatten(1) + torch.randn(n, 4, generator=g, dtype=torch.float64) @ chol.T
    eps = torch.randn(n, 4, generator=g, dtype=torch.float64)
    z = a * x0 + s * eps
    design = torch.cat([z, torch.ones(n, 1, dtype=torch.float64)], dim=1)  # (n, 5)
    coef = torch.linalg.lstsq(design, eps).solution  # (5, 4)
    jac = enc.jacobian(t, cond)[0]
    torch.testing.assert_close(coef[:4].T, jac, atol=5e-3, rtol=0)
    probe = torch.randn(3, 4, generator=g, dtype=torch.float64)
    fitted = torch.cat([probe, torch.ones(3, 1, dtype=torch.float64)], 1) @ coef
    predicted = enc.predict_eps(probe.reshape(3, 1, 2, 2), t.expand(3), cond).flatten(1)
    torch.testing.assert_close(predicted, fitted, atol=1e-2, rtol=0)


def test_jacobian_matches_autograd_with_low_rank_covariance():
    enc = GaussianEncoder(cov_rank=3, dtype=torch.float64)
    cond = enc.encode_prompts(["a small green triangle"])
    z = torch.randn(1, *enc.latent_shape, dtype=torch.float64)
    t = torch.tensor([0.45])
    full = torch.autograd.functional.jacobian(lambda x: enc._predict_eps(x, t, cond).flatten(), z).reshape(256, 256)
    torch.testing.assert_close(full, enc.jacobian(t, cond)[0], atol=1e-10, rtol=1e-8)


def test_mean_is_the_sum_of_word_patterns_and_named_groups_are_certain():
    enc = GaussianEncoder(dtype=torch.float64)
    c = enc.encode_prompts(["a red circle", "a photo of a circle", "a red circle with an unknownword"])
    mu = enc.mean(c).flatten(1)
    red = enc.patterns[:, enc.word_index["red"]]
    torch.testing.assert_close(mu[0] - mu[1], red)
    torch.testing.assert_close(mu[2], mu[0])
    var = enc.variance(c)
    colour, size = enc.group_masks[0].bool(), enc.group_masks[2].bool()
    assert torch.all(var[0][colour] < 1.01 * enc.sigma0_sq[colour])  # named: certain
    assert torch.all(var[1][colour] > 50 * enc.sigma0_sq[colour])  # not named: vague
    assert torch.all(var[0][size] > 50 * enc.sigma0_sq[size])


def test_overlap_builds_orthogonal_or_shared_attributes():
    def shift_cos(overlap):
        enc = GaussianEncoder(overlap=overlap, dtype=torch.float64)
        c = enc.encode_prompts(["a red circle", "a blue circle", "a red square"])
        mu = enc.mean(c).flatten(1)
        colour, shape = mu[1] - mu[0], mu[2] - mu[0]
        return float((colour @ shape).abs() / (colour.norm() * shape.norm())), enc

    cos0, enc0 = shift_cos(0.0)
    cos1, _ = shift_cos(1.0)
    assert cos0 < 1e-12, "disjoint blocks: orthogonal up to rounding"
    assert cos1 > 0.99
    pixels = enc0.decode_latents(enc0.patterns[:, [enc0.word_index["red"], enc0.word_index["circle"]]].T
                                 .reshape(2, *enc0.latent_shape))
    assert float((pixels[0] * pixels[1]).sum()) == 0.0, "orthogonal attributes stay disjoint in pixel space"


def test_registers_as_a_plugin_and_loads_from_a_folder(tmp_path):
    pm = PluginManager(load_entry_points=False)
    info = pm.register(analytic, "analytic")
    assert info.status == "ok" and info.provides == {"backend": ["analytic"]}
    GaussianEncoder(overlap=0.5, seed=3).save_pretrained(tmp_path)
    editor = Editor.from_pretrained(tmp_path, plugin_manager=pm)
    assert isinstance(editor.encoder, GaussianEncoder)
    assert editor.encoder.config["overlap"] == 0.5 and editor.encoder.model_id == str(tmp_path)
    same = GaussianEncoder(overlap=0.5, seed=3)
    torch.testing.assert_close(editor.encoder.patterns, same.patterns)


@pytest.mark.parametrize("kwargs, match", [
    (dict(overlap=1.5), "overlap"),
    (dict(attributes={"colour": ["red", "a"]}), "filler"),
    (dict(attributes={str(i): [f"w{chr(97 + i)}"] for i in range(9)}), "latent rows"),
    (dict(sigma0=0.0), "sigma0"),
])
def test_bad_construction_is_refused(kwargs, match):
    with pytest.raises(InputError, match=match):
        GaussianEncoder(**kwargs)
