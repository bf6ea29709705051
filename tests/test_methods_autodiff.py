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


STRATEGIES = ["double-backward", "forward", "finite-difference"]


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_every_strategy_equals_the_closed_form_jacobian(strategy):
    enc = GaussianEncoder(cov_rank=2, dtype=torch.float64)
    cond = enc.encode_prompts(["a red circle", "a blue square", "a small circle on the left"])
    z, t, g = _point(enc)
    v = torch.randn(z.shape, generator=g, dtype=torch.float64)
    jac = enc.jacobian(t, cond)
    _, jv = jvp(enc, z, t, cond, v, strategy=strategy)
    exact = torch.einsum("bij,bj->bi", jac, v.flatten(1))
    # the analytic prediction is affine in z, so central differences have no truncation error either
    torch.testing.assert_close(jv.flatten(1), exact, rtol=1e-9, atol=1e-9)


def test_finite_difference_step_follows_the_dtype_and_counts_two_forwards():
    from eimsdk.autodiff import finite_difference_step

    assert finite_difference_step(torch.float32) == pytest.approx(torch.finfo(torch.float32).eps ** (1 / 3))
    assert finite_difference_step(torch.bfloat16) > 30 * finite_difference_step(torch.float32)
    assert finite_difference_step(torch.float64) == finite_difference_step(torch.float32)
    enc = GaussianEncoder(dtype=torch.float64)
    cond = enc.encode_prompts(["a red circle"])
    z, t, _ = _point(enc, batch=2)
    lin = Linearization(enc, z, t, cond, jvp="finite-difference", keep_graph=False)
    before = enc.counter.snapshot()
    calls = []
    enc_predict = enc._predict_eps
    enc._predict_eps = lambda *a: calls.append(1) or enc_predict(*a)
    lin.jvp(torch.ones_like(z))
    assert len(calls) == 2 and enc.counter.since(before)["jvps"] == 2


def test_checkpointing_needs_a_transformer_and_unknown_strategies_are_refused():
    enc = GaussianEncoder(dtype=torch.float64)
    cond = enc.encode_prompts(["a red circle"])
    z, t, _ = _point(enc, batch=1)
    with pytest.raises(InputError, match="checkpointing=False"):
        Linearization(enc, z, t, cond, jvp="forward", checkpointing=True)
    with pytest.raises(InputError, match="finite-difference"):
        Linearization(enc, z, t, cond, jvp="reverse-reverse")


def _tiny_point(enc, dtype):
    h, w = enc.default_image_size
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        z0 = enc.encode_images((torch.rand(2, 3, h, w, generator=g) * 2 - 1).to(dtype))
        cond = enc.encode_prompts(["a red circle", "a blue square"])
    t = torch.tensor([0.3, 0.7])
    z = enc.add_noise(z0, torch.randn(z0.shape, generator=g, dtype=torch.float64).to(dtype), t)
    v, u = (torch.randn(z.shape, generator=g, dtype=torch.float64) for _ in range(2))
    return z, t, cond, v, u


@pytest.mark.parametrize("family", ["pixart", "sd3", "flux"])
def test_every_strategy_matches_the_float64_reference_on_tiny_dits(family, tiny_pipeline_path):
    """Each JVP strategy, and the VJP with and without a kept graph and checkpointing, in float32 and float64,
    against double backward in float64 (itself checked against differences above)."""
    ref_enc = Editor.from_pretrained(tiny_pipeline_path(family), dtype="float64").encoder
    z, t, cond, v, u = _tiny_point(ref_enc, torch.float64)
    ref = Linearization(ref_enc, z, t, cond, guidance_scale=2.0)
    ref_jv, ref_ju = ref.jvp(v), ref.vjp(u)
    encoders = {torch.float64: ref_enc, torch.float32: Editor.from_pretrained(tiny_pipeline_path(family)).encoder}
    for dtype, enc in encoders.items():
        _, _, cond_d, _, _ = _tiny_point(enc, dtype)
        for strategy in STRATEGIES:
            for keep, ckpt in [(True, False), (False, True)]:
                lin = Linearization(enc, z.to(dtype), t, cond_d, guidance_scale=2.0, jvp=strategy, keep_graph=keep,
                                    checkpointing=ckpt)
                jv, ju = lin.jvp(v.to(dtype)).double(), lin.vjp(u.to(dtype)).double()
                exact = strategy != "finite-difference" and dtype == torch.float64
                tol = 1e-10 if exact else 1e-3 if strategy == "finite-difference" else 1e-5
                label = f"{family} {dtype} {strategy} keep_graph={keep} checkpointing={ckpt}"
                assert float((jv - ref_jv).norm() / ref_jv.norm()) < tol, label
                assert float((ju - ref_ju).norm() / ref_ju.norm()) < (1e-10 if dtype == torch.float64 else 1e-5), label


def test_checkpointing_recomputes_the_blocks_in_eval_mode(tiny_pipeline_path):
    enc = Editor.from_pretrained(tiny_pipeline_path("pixart"), dtype="float64").encoder
    assert not enc.transformer.training
    z, t, cond, v, u = _tiny_point(enc, torch.float64)
    runs = []
    hook = enc.transformer.transformer_blocks[0].register_forward_pre_hook(lambda *a: runs.append(1))
    try:
        plain = Linearization(enc, z, t, cond, jvp="finite-difference")
        calls_plain = len(runs)
        plain.vjp(u)
        backward_plain = len(runs) - calls_plain
        runs.clear()
        ckpt = Linearization(enc, z, t, cond, jvp="finite-difference", checkpointing=True)
        calls_ckpt = len(runs)
        out = ckpt.vjp(u)
        backward_ckpt = len(runs) - calls_ckpt
    finally:
        hook.remove()
    assert (backward_plain, backward_ckpt) == (0, 1), "the checkpointed backward runs the block once more"
    assert not enc.transformer.is_gradient_checkpointing, "checkpointing is switched off again after use"
    torch.testing.assert_close(out, plain.vjp(u))


def test_strategies_work_through_sequential_offload_hooks(tiny_pipeline_path):
    """accelerate's ``cpu_offload`` (what ``enable_sequential_cpu_offload`` installs) keeps the weights on the meta
    device and loads them per module call; every strategy must give the products it gives without the hooks."""
    from accelerate import cpu_offload

    enc = Editor.from_pretrained(tiny_pipeline_path("sd3"), dtype="float64").encoder
    z, t, cond, v, u = _tiny_point(enc, torch.float64)
    plain = {s: Linearization(enc, z, t, cond, jvp=s) for s in STRATEGIES}
    expected = {s: (lin.jvp(v), lin.vjp(u)) for s, lin in plain.items()}
    cpu_offload(enc.transformer, execution_device=torch.device("cpu"))
    assert next(enc.transformer.parameters()).device.type == "meta"
    for strategy in STRATEGIES:
        lin = Linearization(enc, z, t, cond, jvp=strategy, checkpointing=strategy != "double-backward")
        torch.testing.assert_close(lin.jvp(v), expected[strategy][0], rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(lin.vjp(u), expected[strategy][1], rtol=1e-10, atol=1e-12)
