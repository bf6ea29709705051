"""JVP/VJP of eps_hat: exact on the analytic backend, equal to finite differences in float64 on tiny DiTs."""

from __future__ import annotations

import pytest
import torch

from eimsdk import Editor
from eimsdk.autodiff import Linearization, jvp, vjp
from eimsdk.errors import InputError
from eimsdk.testing.analytic import GaussianEncoder


def _point(enc, batch=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(batch, *enc.latent_shape, generator=g, dtype=torch.float64)
    t = torch.tensor([0.2, 0.5, 0.8][:batch])
    return z, t, g


def test_products_equal_the_closed_form_jacobian():
    enc = GaussianEncoder(cov_rank=2, dtype=torch.float64)
    cond = enc.encode_prompts(["a red circle", "a blue square", "a small circle on the left"])
    z, t, g = _point(enc)
    v, u = (torch.randn(z.shape, generator=g, dtype=torch.float64) for _ in range(2))
    jac = enc.jacobian(t, cond)  # (3, D, D)
    eps, jv = jvp(enc, z, t, cond, v)
    _, jtu = vjp(enc, z, t, cond, u)
    torch.testing.assert_close(eps, enc.predict_eps(z, t, cond))
    torch.testing.assert_close(jv.flatten(1), torch.einsum("bij,bj->bi", jac, v.flatten(1)))
    torch.testing.assert_close(jtu.flatten(1), torch.einsum("bji,bj->bi", jac, u.flatten(1)))


def test_guided_products_match_central_differences():
    enc = GaussianEncoder(dtype=torch.float64)
    cond = enc.encode_prompts(["a red circle on the left"] * 3)
    z, t, g = _point(enc)
    v = torch.randn(z.shape, generator=g, dtype=torch.float64)
    h = 1e-5
    fd = (enc.predict_eps(z + h * v, t, cond, guidance_scale=4.0)
          - enc.predict_eps(z - h * v, t, cond, guidance_scale=4.0)) / (2 * h)
    _, jv = jvp(enc, z, t, cond, v, guidance_scale=4.0)
    torch.testing.assert_close(jv, fd, atol=1e-8, rtol=1e-7)
    unguided = jvp(enc, z, t, cond, v)[1]
    assert not torch.allclose(jv, unguided), "the vague null prompt makes the guided Jacobian differ"


def test_linearization_reuses_one_forward_and_counts_products():
    enc = GaussianEncoder(dtype=torch.float64)
    cond = enc.encode_prompts(["a red circle"])
    z, t, g = _point(enc)
    vs = [torch.randn(z.shape, generator=g, dtype=torch.float64) for _ in range(3)]
    before = enc.counter.snapshot()
    lin = Linearization(enc, z, t, cond, guidance_scale=2.0)
    first = lin.vjp(vs[0])
    products = [lin.jvp(v) for v in vs] + [lin.vjp(v) for v in vs[1:]]
    after = enc.counter.since(before)
    # one guided forward of 3 samples = 6 evaluations; every product likewise doubles
    assert (after["forwards"], after["jvps"], after["vjps"]) == (6, 18, 18)
    for v, out in zip(vs, products[:3]):
        torch.testing.assert_close(out, jvp(enc, z, t, cond, v, guidance_scale=2.0)[1])
    torch.testing.assert_close(first, vjp(enc, z, t, cond, vs[0], guidance_scale=2.0)[1])
    torch.testing.assert_close(products[3], vjp(enc, z, t, cond, vs[1], guidance_scale=2.0)[1])


def test_jvp_first_builds_the_dual_graph_and_counts_it():
    enc = GaussianEncoder(dtype=torch.float64)
    cond = enc.encode_prompts(["a red circle"])
    z, t, g = _point(enc, batch=1)
    before = enc.counter.snapshot()
    lin = Linearization(enc, z, t, cond)
    lin.jvp(torch.ones_like(z))
    assert enc.counter.since(before)["vjps"] == 1 and enc.counter.since(before)["jvps"] == 1


def test_misuse_is_refused():
    enc = GaussianEncoder(dtype=torch.float64)
    cond = enc.encode_prompts(["a red circle"])
    z, t, _ = _point(enc, batch=1)
    with pytest.raises(InputError, match="shape of z_t"):
        Linearization(enc, z, t, cond).jvp(torch.ones(1, 3))
    with pytest.raises(InputError, match="for_jvp=True"):
        Linearization(enc, z, t, cond, for_jvp=False).jvp(torch.ones_like(z))
    lin = Linearization(enc, z, t, cond)
    lin.release()
    with pytest.raises(InputError, match="released"):
        lin.vjp(torch.ones_like(z))


@pytest.mark.parametrize("family", ["pixart", "sd3", "flux"])
def test_tiny_dit_products_match_finite_differences_in_float64(family, tiny_pipeline_path):
    enc = Editor.from_pretrained(tiny_pipeline_path(family), dtype="float64").encoder
    h, w = enc.default_image_size
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        z0 = enc.encode_images((torch.rand(2, 3, h, w, generator=g) * 2 - 1).double())
        cond = enc.encode_prompts(["a red circle", "a blue square"])
    t = torch.tensor([0.3, 0.7])
    z = enc.add_noise(z0, torch.randn(z0.shape, generator=g, dtype=torch.float64), t)
    v, u = (torch.randn(z.shape, generator=g, dtype=torch.float64) for _ in range(2))
    step = 1e-3  # central differences: O(step^2) truncation; smaller steps meet the float32 parts some backends keep
    with torch.no_grad():
        fd = (enc.predict_eps(z + step * v, t, cond, guidance_scale=2.0)
              - enc.predict_eps(z - step * v, t, cond, guidance_scale=2.0)) / (2 * step)
    lin = Linearization(enc, z, t, cond, guidance_scale=2.0)
    jv, jtu = lin.jvp(v), lin.vjp(u)
    torch.testing.assert_close(jv, fd, atol=1e-4, rtol=1e-4)
    assert float(jv.abs().max()) > 1e-3, "a zero Jacobian would pass trivially"
    # the VJP is the adjoint of the JVP: <u, J v> = <J^T u, v>
    assert float((u * jv).sum()) == pytest.approx(float((jtu * v).sum()), rel=1e-6)
