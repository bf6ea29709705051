"""Matrix-free conjugate gradients for the Gauss-Newton systems of HSDS: ``A x = b``, ``A`` symmetric positive definite.

``A`` is only ever applied (``matvec``), never formed: in HSDS one application is one batched JVP plus one VJP.
Vectors are tensors of any shape; inner products accumulate in float64.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch

from eimsdk.errors import InputError, NumericalError


@dataclass
class CGResult:
    """The solution, the iterations used, ``||r_i|| / ||b||`` after each iteration, and whether tol was met."""

    x: torch.Tensor
    iterations: int
    relative_residuals: list[float] = field(default_factory=list)
    converged: bool = False


def _dot(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.sum(a.to(torch.float64) * b.to(torch.float64)))


def conjugate_gradient(matvec: Callable[[torch.Tensor], torch.Tensor], b: torch.Tensor, *,
                       x0: torch.Tensor | None = None, max_iter: int = 10, tol: float = 1e-3) -> CGResult:
    """Solve ``A x = b`` for SPD ``A`` given as ``matvec(v) = A v``; stops at ``||r|| <= tol ||b||`` or ``max_iter``.

    Each iteration applies ``A`` once. Raises :class:`NumericalError` on NaN/Inf or on non-positive curvature
    ``p^T A p <= 0`` (``A`` is not positive definite: raise the damping).
    """
    if isinstance(max_iter, bool) or not isinstance(max_iter, int) or max_iter < 0:
        raise InputError(f"max_iter must be a non-negative integer, got {max_iter!r}")
    if not tol >= 0:
        raise InputError(f"tol must be >= 0, got {tol!r}")
    x = torch.zeros_like(b) if x0 is None else x0.clone()
    b_norm = _dot(b, b) ** 0.5
    if b_norm == 0.0:
        return CGResult(torch.zeros_like(b), 0, [0.0], True)
    if b_norm != b_norm or b_norm == float("inf"):
        raise NumericalError("the right-hand side of the CG system is NaN/Inf; check the model's predictions "
                             "(lower guidance_scale, or compute in float32)")
    r = b - matvec(x) if x0 is not None else b.clone()
    p = r.clone()
    rr = _dot(r, r)
    history = [rr**0.5 / b_norm]
    it = 0
    while history[-1] > tol and it < max_iter:
        ap = matvec(p)
        curvature = _dot(p, ap)
        if not curvature > 0.0:
            raise NumericalError(f"CG met non-positive curvature p^T A p = {curvature:.3g} at iteration {it + 1}: "
                                 "the system is not positive definite in this precision; raise the damping "
                                 "lambda (HSDSConfig.lam) or compute in float32/float64")
        alpha = rr / curvature
        x = x + alpha * p
        r = r - alpha * ap
        rr_new = _dot(r, r)
        p = r + (rr_new / rr) * p
        rr = rr_new
        it += 1
        history.append(rr**0.5 / b_norm)
    return CGResult(x, it, history, history[-1] <= tol)
