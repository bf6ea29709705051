"""HSDS against closed forms on the analytic Gaussian backend, its limits, and its plumbing on every tiny DiT."""

from __future__ import annotations

import pydantic
import pytest
import torch

from eimsdk import Editor
from eimsdk.errors import InputError, NumericalError
from eimsdk.methods.baselines import DDSFinder
from eimsdk.methods.hsds import HSDSConfig, HSDSFinder, draw_samples
from eimsdk.methods.text import text_direction
from eimsdk.records import JointLatent
from eimsdk.testing.analytic import GaussianEncoder

EXACT = dict(cg_iters=400, cg_tol=1e-13)


def _latent(enc, prompts=("a red circle",), seed=0):
    """Images drawn from the world itself: z0 ~ N(mu(c), Sigma(c))."""
    cond = enc.encode_prompts(list(prompts))
    g = torch.Generator().manual_seed(seed)
    chol = torch.linalg.cholesky(enc.covariance(cond))  # (B, D, D)
    noise = torch.randn(len(prompts), chol.shape[-1], 1, generator=g, dtype=torch.float64)
    z0 = enc.mean(cond) + (chol @ noise).reshape(len(prompts), *enc.latent_shape)
    return JointLatent(z0=z0, cond=cond, prompts=list(prompts), image_size=enc.default_image_size)


def _eps(enc, z, t, cond, guidance):
    """eps_hat from the world's definition (dense), guided: s (a^2 Sigma + s^2 I)^-1 (z - a mu)."""
    def plain(c):
        a, s = (x.double().reshape(-1, 1, 1) for x in enc.alpha_sigma(t))
        m = a**2 * enc.covariance(c.expand_to(z.shape[0])) + s**2 * torch.eye(z[0].numel(), dtype=torch.float64)
        x = z.flatten(1)[..., None] - a * enc.mean(c.expand_to(z.shape[0])).flatten(1)[..., None]
        return (s * torch.linalg.solve(m, x))[..., 0]  # (N, D)

    null = enc.encode_prompts([""])
    return plain(null) + guidance * (plain(cond) - plain(null))


def _jac(enc, t, cond, guidance, n):
    null = enc.encode_prompts([""]).expand_to(n)
    return enc.jacobian(t, null) + guidance * (enc.jacobian(t, cond.expand_to(n)) - enc.jacobian(t, null))


def _closed_form(enc, latent, target, cfg, preserve=(), seed=0, curvature_rows=None):
    """argmin of the (exactly quadratic) HSDS loss by a dense solve, with the finder's own samples.

    ``curvature_rows``: build ``J^T J`` from these rows only, their weights scaled up to the full sum's.
    """
    s = draw_samples(enc, latent, cfg, seed)
    n, g = s.t.shape[0], cfg.guidance_scale
    dc = text_direction(enc, latent.prompts, [target])
    edit = s.cond + dc
    w, a = s.w.flatten(), s.a.flatten()
    r = _eps(enc, s.z_t, s.t, edit, g) - _eps(enc, s.z_t, s.t, s.cond, g)  # (N, D)
    j_edit = _jac(enc, s.t, edit, g, n)  # (N, D, D)
    total = float((w * a**2).sum())
    rows = torch.arange(n) if curvature_rows is None else torch.as_tensor(curvature_rows)
    w_curv = w[rows] * (w.sum() / w[rows].sum())
    lhs = torch.einsum("k,kji,kjl->il", w_curv * a[rows] ** 2, j_edit[rows], j_edit[rows]) + cfg.lam * total * torch.eye(r.shape[1],
                                                                                                 dtype=torch.float64)
    for p in preserve:
        j_p = _jac(enc, s.t, enc.encode_prompts([p]), g, n)
        lhs += cfg.mu * torch.einsum("k,kji,kjl->il", w * a**2, j_p, j_p)
    rhs = -torch.einsum("k,kji,kj->i", w * a, j_edit, r)
    return torch.linalg.solve(lhs, rhs).reshape(1, *enc.latent_shape)


@pytest.mark.parametrize("overrides, preserve", [
    (dict(lam=0.3), ()),
    (dict(lam=0.05, guidance_scale=3.0, weighting="sigma2"), ()),
    (dict(lam=0.1, mu=2.0, weighting="x0", t_min=0.1, t_max=0.6), ("a circle", "a small square")),
])
def test_equals_the_closed_form_optimum(overrides, preserve):
    enc = GaussianEncoder(cov_rank=2, dtype=torch.float64)
    latent = _latent(enc)
    finder = HSDSFinder(num_timesteps=3, **EXACT, **overrides)
    d = finder.find(enc, latent, ["a blue circle"], preserve_prompts=list(preserve), seed=7)
    expected = _closed_form(enc, latent, "a blue circle", finder.config, preserve, seed=7)
    torch.testing.assert_close(d.dz, expected, atol=1e-7, rtol=1e-6)
    assert d.meta["cg"][0]["relative_residual"] <= 1e-13


@pytest.mark.parametrize("seed", [0, 1])
def test_recovers_the_true_mean_shift_without_damping(seed):
    """Swapping a word within a group keeps J, so the lam = 0 optimum is exactly mu(target) - mu(source)."""
    enc = GaussianEncoder(cov_rank=2, dtype=torch.float64)
    latent = _latent(enc, ("a small red circle on the left",), seed=seed)
    d = HSDSFinder(lam=0.0, **EXACT).find(enc, latent, ["a small blue circle on the left"], seed=seed)
    shift = enc.mean(enc.encode_prompts(["a small blue circle on the left"])) - enc.mean(latent.cond)
    torch.testing.assert_close(d.dz, shift, atol=1e-7, rtol=1e-6)


def test_huge_lambda_gives_the_scaled_gradient_of_the_loss():
    enc = GaussianEncoder(cov_rank=2, dtype=torch.float64)
    latent = _latent(enc)
    lam = 1e8
    finder = HSDSFinder(lam=lam, num_timesteps=3, guidance_scale=2.0, mu=0.5, cg_iters=5)
    d = finder.find(enc, latent, ["a blue circle"], preserve_prompts=["a circle"], seed=3)
    s = draw_samples(enc, latent, finder.config, 3)
    edit = s.cond + text_direction(enc, latent.prompts, ["a blue circle"])
    keep = enc.encode_prompts(["a circle"]).expand_to(s.t.shape[0])

    def loss(dz):  # the HSDS objective, written from its definition
        moved = s.z_t + s.a * dz
        f = lambda z, c: enc.predict_eps(z, s.t, c, guidance_scale=2.0)  # noqa: E731
        main = (s.w * (f(moved, edit) - f(s.z_t, s.cond)) ** 2).sum()
        kept = (s.w * (f(moved, keep) - f(s.z_t, keep)) ** 2).sum()
        return main + 0.5 * kept + lam * float((s.w * s.a**2).sum()) * (dz**2).sum()

    zero = torch.zeros_like(d.dz, requires_grad=True)
    (grad,) = torch.autograd.grad(loss(zero), zero)
    expected = -grad / (2 * lam * float((s.w * s.a**2).sum()))
    torch.testing.assert_close(d.dz, expected, atol=0, rtol=1e-6)


def test_identity_curvature_is_the_dds_direction():
    enc = GaussianEncoder(cov_rank=2, dtype=torch.float64)
    latent = _latent(enc)
    sampling = dict(num_timesteps=5, guidance_scale=2.0, t_min=0.3, t_max=0.7)  # HSDS's own defaults differ
    dds = DDSFinder(**sampling).find(enc, latent, ["a blue circle"], seed=4)
    for lam in (0.0, 0.25):
        d = HSDSFinder(curvature="identity", lam=lam, **sampling).find(enc, latent, ["a blue circle"], seed=4)
        torch.testing.assert_close(d.dz * (1 + lam), dds.dz, atol=1e-12, rtol=1e-10)
        assert d.meta["cost"]["jvps"] == 0 and d.meta["cost"]["vjps"] == 0


def test_preserve_prompts_remove_the_preserved_component():
    """Editing colour and shape while preserving 'a circle' must leave the shape block alone, colour moving."""
    enc = GaussianEncoder(dtype=torch.float64)
    latent = _latent(enc)
    blocks = {name: enc.group_masks[i].bool().reshape(1, *enc.latent_shape)
              for i, name in enumerate(enc.attributes)}
    cfg = dict(num_timesteps=6, t_min=0.05, t_max=0.3, cg_iters=100, cg_tol=1e-10)
    free = HSDSFinder(**cfg).find(enc, latent, ["a blue square"])
    kept = HSDSFinder(mu=100.0, **cfg).find(enc, latent, ["a blue square"], preserve_prompts=["a circle"])
    norm = lambda d, b: float(d.dz[blocks[b]].norm())  # noqa: E731
    assert norm(free, "shape") > 1.0 and norm(free, "colour") > 1.0
    assert norm(kept, "shape") < 0.02 * norm(free, "shape")
    assert norm(kept, "colour") > 0.8 * norm(free, "colour")


def test_several_images_and_pairs_share_one_direction():
    enc = GaussianEncoder(dtype=torch.float64)
    latent = _latent(enc, ("a red circle", "a red square"))
    d = HSDSFinder(num_timesteps=2).find(enc, latent, ["a blue circle", "a blue square"])
    assert d.dz.shape == (1, *enc.latent_shape) and len(d.meta["timesteps"]) == 4
    pairs = text_direction(enc, latent.prompts, ["a blue circle", "a blue square"])
    torch.testing.assert_close(d.dc.flat(), pairs.flat())
    one = HSDSFinder(num_timesteps=2).find(enc, JointLatent(latent.z0[:1], latent.cond[0], latent.prompts[:1]),
                                           ["a blue circle"])
    assert not torch.allclose(one.dz, d.dz)


def test_meta_cost_and_reproducibility():
    enc = GaussianEncoder()
    latent = enc.encode(torch.zeros(1, 3, 16, 16), "a red circle")
    finder = HSDSFinder(num_timesteps=4, cg_iters=3, cg_tol=0.0)
    d = finder.find(enc, latent, ["a blue circle"], seed=5)
    meta = d.meta
    assert meta["method"] == "hsds" and meta["family"] == "analytic" and meta["model_id"] == "analytic"
    assert meta["signature"] == enc.signature() and meta["image_size"] == [16, 16]
    assert meta["prompts"] == {"source": ["a red circle"], "target": ["a blue circle"], "preserve": []}
    assert meta["config"]["cg_iters"] == 3 and meta["seed"] == 5 and meta["name"] == "red->blue"
    assert len(meta["timesteps"]) == 4 and all(0.5 <= t <= 0.9 for t in meta["timesteps"])
    assert meta["eimsdk_version"]
    # K = 4 rows, one Gauss-Newton step: a source forward and a linearised forward per row, one gradient VJP, and
    # a JVP + VJP per CG iteration
    cost = meta["cost"]
    assert (cost["forwards"], cost["jvps"], cost["vjps"]) == (8, 12, 16)
    assert cost["model_evals"] == pytest.approx(8 + enc.counter.jvp_cost * 12 + enc.counter.vjp_cost * 16)
    assert cost["seconds"] > 0 and cost["peak_memory_mb"] > 0
    again = finder.find(enc, latent, ["a blue circle"], seed=5)
    assert torch.equal(again.dz, d.dz)
    other = finder.find(enc, latent, ["a blue circle"], seed=6)
    assert not torch.equal(other.dz, d.dz)
    pinned = HSDSFinder(num_timesteps=4, cg_iters=3, cg_tol=0.0, seed=5).find(enc, latent, ["a blue circle"], seed=9)
    assert torch.equal(pinned.dz, d.dz), "config.seed overrides find()'s seed"


def test_chunked_rows_give_the_same_direction():
    enc = GaussianEncoder(dtype=torch.float64)
    latent = _latent(enc)
    whole = HSDSFinder(num_timesteps=5).find(enc, latent, ["a blue circle"], preserve_prompts=["a circle"])
    parts = HSDSFinder(num_timesteps=5, max_batch=3).find(enc, latent, ["a blue circle"], preserve_prompts=["a circle"])
    torch.testing.assert_close(parts.dz, whole.dz, atol=1e-12, rtol=1e-10)


def test_nan_predictions_raise_numerical_error(monkeypatch):
    enc = GaussianEncoder()
    latent = enc.encode(torch.zeros(1, 3, 16, 16), "a red circle")
    monkeypatch.setattr(enc, "_predict_eps", lambda z, t, c: z * float("nan"))
    with pytest.raises(NumericalError, match="NaN"):
        HSDSFinder().find(enc, latent, ["a blue circle"])


@pytest.mark.parametrize("overrides", [dict(t_min=0.7, t_max=0.3), dict(num_timesteps=0), dict(lam=-1.0),
                                       dict(curvature="exact"), dict(unknown=1)])
def test_config_is_bounded(overrides):
    with pytest.raises(pydantic.ValidationError):
        HSDSConfig(**overrides)


def test_inputs_are_checked():
    enc = GaussianEncoder()
    latent = enc.encode(torch.zeros(1, 3, 16, 16), "a red circle")
    with pytest.raises(InputError, match="nothing to edit"):
        HSDSFinder().find(enc, latent, ["a red circle"])
    with pytest.raises(InputError, match="target_prompts"):
        HSDSFinder().find(enc, latent, [])
    with pytest.raises(InputError, match="preserve_prompts"):
        HSDSFinder().find(enc, latent, ["a blue circle"], preserve_prompts=[""])
    with pytest.raises(InputError, match="seed"):
        HSDSFinder().find(enc, latent, ["a blue circle"], seed=-1)
    with pytest.raises(InputError, match="pairs"):
        HSDSFinder().find(enc, latent, ["a blue circle", "a green circle"], source_prompts=["a", "b", "c"])


@pytest.mark.parametrize("family", ["pixart", "sd3", "flux"])
def test_runs_on_every_tiny_backend(family, tiny_pipeline_path, scene_image):
    editor = Editor.from_pretrained(tiny_pipeline_path(family))
    d = editor.find_direction(scene_image, "a red circle", "a blue circle", preserve_prompts=["a circle"],
                              num_timesteps=2, cg_iters=2, guidance_scale=2.0)
    assert d.dz.shape[0] == 1 and torch.isfinite(d.dz).all() and float(d.dz.abs().sum()) > 0
    assert d.meta["family"] == editor.encoder.family and d.meta["cost"]["jvps"] > 0


# ------------------------------------------------------------------------------------------ estimator options
def test_antithetic_samples_come_in_pairs_over_stratified_levels():
    enc = GaussianEncoder(dtype=torch.float64)
    latent = _latent(enc, ("a red circle", "a blue square"))
    cfg = HSDSConfig(num_timesteps=6, antithetic=True, t_min=0.2, t_max=0.8)
    s = draw_samples(enc, latent, cfg, seed=3)
    t = s.t.reshape(2, 6)
    assert torch.equal(t[:, 0::2], t[:, 1::2])  # a pair shares its noise level
    edges = torch.tensor([0.2, 0.4, 0.6, 0.8])
    for image in t[:, 0::2].double():  # one draw per third of the range
        assert ((image >= edges[:-1] - 1e-6) & (image <= edges[1:] + 1e-6)).all()
    eps = s.eps.reshape(2, 3, 2, -1)
    assert torch.equal(eps[:, :, 0], -eps[:, :, 1])
    with pytest.raises(pydantic.ValidationError, match="even"):
        HSDSConfig(num_timesteps=5, antithetic=True)


def test_antithetic_dds_cancels_the_noise_of_a_model_linear_in_z():
    """eps_hat is affine in z_t on the Gaussian world, so a pair (eps, -eps) leaves the residual at z_t = a z0."""
    enc = GaussianEncoder(dtype=torch.float64)
    latent = _latent(enc)
    cfg = dict(num_timesteps=4, antithetic=True, t_min=0.3, t_max=0.7)
    target = "a circle"  # drops the colour word: the colour block's variance changes, so the residual sees eps
    d = DDSFinder(**cfg).find(enc, latent, [target], seed=2)
    s = draw_samples(enc, latent, DDSFinder(**cfg).config, 2)
    clean = s.a * latent.z0  # every row's z_t without its noise
    edit = s.cond + text_direction(enc, latent.prompts, [target])
    r = enc.predict_eps(clean, s.t, edit) - enc.predict_eps(clean, s.t, s.cond)
    expected = -(s.w * s.a * r).sum(0, keepdim=True) / float((s.w * s.a**2).sum())
    torch.testing.assert_close(d.dz, expected, atol=1e-12, rtol=1e-10)
    plain = DDSFinder(num_timesteps=4, t_min=0.3, t_max=0.7).find(enc, latent, [target], seed=2)
    assert float((plain.dz - expected).norm()) > 1e-3  # without pairs the noise does not cancel


def test_curvature_from_a_subset_equals_its_closed_form():
    enc = GaussianEncoder(cov_rank=2, dtype=torch.float64)
    latent = _latent(enc)
    finder = HSDSFinder(num_timesteps=6, curvature_samples=2, lam=0.05, t_min=0.2, t_max=0.8, **EXACT)
    d = finder.find(enc, latent, ["a blue circle"], seed=5)
    expected = _closed_form(enc, latent, "a blue circle", finder.config, seed=5, curvature_rows=[0, 3])
    torch.testing.assert_close(d.dz, expected, atol=1e-7, rtol=1e-6)
    full = HSDSFinder(num_timesteps=6, lam=0.05, t_min=0.2, t_max=0.8, cg_iters=3, cg_tol=0.0)
    part = HSDSFinder(num_timesteps=6, lam=0.05, t_min=0.2, t_max=0.8, cg_iters=3, cg_tol=0.0, curvature_samples=2)
    jvps = [f.find(enc, latent, ["a blue circle"], seed=5).meta["cost"]["jvps"] for f in (full, part)]
    assert jvps == [6 * 3, 2 * 3]  # one JVP per curvature row and CG iteration
    same = HSDSFinder(num_timesteps=6, curvature_samples=6).find(enc, latent, ["a blue circle"], seed=5)
    torch.testing.assert_close(same.dz, HSDSFinder(num_timesteps=6).find(enc, latent, ["a blue circle"], seed=5).dz)


def test_trust_radius_caps_the_norm_and_keeps_the_direction():
    enc = GaussianEncoder(dtype=torch.float64)
    latent = _latent(enc)
    free = HSDSFinder(num_timesteps=4).find(enc, latent, ["a blue circle"], seed=1)
    dds = DDSFinder(num_timesteps=4, t_min=0.5, t_max=0.9).find(enc, latent, ["a blue circle"], seed=1)
    ratio = float(free.dz.norm() / dds.dz.norm())
    capped = HSDSFinder(num_timesteps=4, trust_radius=ratio / 2).find(enc, latent, ["a blue circle"], seed=1)
    assert float(capped.dz.norm()) == pytest.approx(ratio / 2 * float(dds.dz.norm()), rel=1e-9)
    torch.testing.assert_close(capped.dz * 2, free.dz)
    loose = HSDSFinder(num_timesteps=4, trust_radius=ratio * 2).find(enc, latent, ["a blue circle"], seed=1)
    assert torch.equal(loose.dz, free.dz)


def test_locality_keeps_dz_where_the_dds_direction_is_large():
    enc = GaussianEncoder(dtype=torch.float64)
    latent = _latent(enc)
    target = "a blue square"
    free = HSDSFinder(num_timesteps=4).find(enc, latent, [target], seed=1).dz
    dds = DDSFinder(num_timesteps=4, t_min=0.5, t_max=0.9).find(enc, latent, [target], seed=1).dz
    local = HSDSFinder(num_timesteps=4, locality=1.0).find(enc, latent, [target], seed=1).dz
    large = dds.abs() >= dds.pow(2).mean().sqrt()
    assert large.any() and (~large).any()
    torch.testing.assert_close(local[large], free[large])
    assert (local[~large].abs() <= free[~large].abs() + 1e-15).all()
    assert float(local[~large].abs().sum()) < float(free[~large].abs().sum())


def test_line_search_keeps_the_exact_step_on_a_quadratic_loss():
    """L is exactly quadratic on the Gaussian world, so a converged Gauss-Newton step is best at scale 1."""
    enc = GaussianEncoder(dtype=torch.float64)
    latent = _latent(enc)
    plain = HSDSFinder(num_timesteps=3, lam=0.05, **EXACT).find(enc, latent, ["a blue circle"], seed=2)
    searched = HSDSFinder(num_timesteps=3, lam=0.05, line_search=True, **EXACT).find(enc, latent, ["a blue circle"],
                                                                                     seed=2)
    assert searched.meta["line_search"] == [1.0]
    torch.testing.assert_close(searched.dz, plain.dz)
    assert searched.meta["cost"]["forwards"] - plain.meta["cost"]["forwards"] == 3 * 3  # one per row and scale
    two = HSDSFinder(num_timesteps=3, lam=0.05, gn_steps=2, line_search=True, cg_iters=1).find(
        enc, latent, ["a blue circle"], seed=2)
    assert len(two.meta["line_search"]) == 2 and set(two.meta["line_search"]) <= {1.0, 0.5, 0.25}
