"""Matrix-free conjugate gradients: equal to a direct solve on small SPD systems, clear failures otherwise."""

from __future__ import annotations

import pytest
import torch

from eimsdk.errors import InputError, NumericalError
from eimsdk.methods.cg import conjugate_gradient


def _spd(n, cond, seed):
    g = torch.Generator().manual_seed(seed)
    q = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64))[0]
    eig = torch.logspace(0, torch.log10(torch.tensor(float(cond))), n, dtype=torch.float64)
    return q @ torch.diag(eig) @ q.T, torch.randn(n, generator=g, dtype=torch.float64)


@pytest.mark.parametrize("n, cond, seed", [(2, 3.0, 0), (5, 10.0, 1), (12, 1e3, 2), (30, 50.0, 3)])
def test_matches_direct_solve(n, cond, seed):
    a, b = _spd(n, cond, seed)
    res = conjugate_gradient(lambda v: a @ v, b, max_iter=4 * n, tol=1e-12)
    torch.testing.assert_close(res.x, torch.linalg.solve(a, b), atol=1e-9, rtol=1e-9)
    assert res.converged and res.relative_residuals[-1] <= 1e-12
    assert res.iterations <= 2 * n, "CG solves an n x n system in about n iterations (more with rounding)"


def test_distinct_eigenvalues_bound_the_iterations():
    g = torch.Generator().manual_seed(0)
    q = torch.linalg.qr(torch.randn(40, 40, generator=g, dtype=torch.float64))[0]
    a = q @ torch.diag(torch.tensor([1.0, 4.0, 9.0] * 13 + [1.0], dtype=torch.float64)) @ q.T
    b = torch.randn(40, generator=g, dtype=torch.float64)
    res = conjugate_gradient(lambda v: a @ v, b, max_iter=40, tol=1e-10)
    assert res.iterations <= 3 + 1 and res.converged


def test_works_on_latent_shaped_tensors_and_warm_starts():
    a, b = _spd(2 * 3 * 4, 20.0, 4)
    shape = (1, 2, 3, 4)
    matvec = lambda v: (a @ v.flatten()).reshape(shape)  # noqa: E731
    res = conjugate_gradient(matvec, b.reshape(shape), max_iter=100, tol=1e-12)
    assert res.x.shape == shape
    torch.testing.assert_close(res.x.flatten(), torch.linalg.solve(a, b))
    again = conjugate_gradient(matvec, b.reshape(shape), x0=res.x, max_iter=100, tol=1e-8)
    assert again.iterations == 0 and again.converged


def test_truncated_iterations_reduce_the_residual_monotonically_in_energy():
    a, b = _spd(20, 1e4, 5)
    x_star = torch.linalg.solve(a, b)
    errors = []
    for k in range(1, 8):
        x = conjugate_gradient(lambda v: a @ v, b, max_iter=k, tol=0.0).x
        errors.append(float((x - x_star) @ a @ (x - x_star)))
    assert all(e2 < e1 for e1, e2 in zip(errors, errors[1:])), "CG minimises the A-norm error over growing spaces"


def test_zero_rhs_and_bad_inputs():
    res = conjugate_gradient(lambda v: 2 * v, torch.zeros(3))
    assert res.iterations == 0 and torch.equal(res.x, torch.zeros(3))
    with pytest.raises(NumericalError, match="not positive definite"):
        conjugate_gradient(lambda v: -v, torch.ones(3))
    with pytest.raises(NumericalError, match="NaN"):
        conjugate_gradient(lambda v: v, torch.tensor([1.0, float("nan")]))
    with pytest.raises(InputError, match="max_iter"):
        conjugate_gradient(lambda v: v, torch.ones(3), max_iter=-1)
