"""Jacobian-vector and vector-Jacobian products of ``eps_hat`` with respect to ``z_t``, through the Encoder interface.

HSDS needs many products ``J v`` and ``J^T u`` at one point ``(z_t, t, c)`` (one pair per CG iteration), so the
workhorse is :class:`Linearization`: one forward with its autograd graph kept, then

- ``vjp(u) = J^T u``: one backward through the kept graph;
- ``jvp(v) = J v``: the double-backward trick. ``g(d) = J^T d`` is built once with ``create_graph=True`` (by the
  first ``vjp``, or with ``d = 0`` if a ``jvp`` comes first); since ``g`` is linear in ``d``,
  ``d <v, g(d)> / d d = J v`` is one backward through ``g``'s graph.

``benchmarks/autodiff_cost.py`` compared this with ``torch.func.jvp`` (forward-mode AD, 4.7-14x a forward on the
tiny backends, every call), ``torch.func.linearize`` (55-525x a forward to trace, then 1-1.9x) and a double
backward recomputed per call (3-4.3x): the kept graph is the cheapest by far (docs/method.md has the numbers).

Guidance is handled inside: with ``guidance_scale != 1`` the products are those of the guided prediction
``eps_u + g (eps_c - eps_u)``, computed on one batch of twice the size. The forward runs under
``sdpa_kernel(SDPBackend.MATH)``, the only attention kernel with double backward on CPU.

Counting (per sample, in ``encoder.counter``): the forward counts as ``forwards``, each product as one ``jvps`` or
``vjps`` (twice that with guidance); building ``g``'s graph with ``d = 0`` counts as one ``vjps``. The
forward-equivalent costs ``EvalCounter.jvp_cost`` / ``vjp_cost`` are the marginal costs of a product on a kept graph.
"""

from __future__ import annotations

from contextlib import nullcontext

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

from eimsdk.errors import InputError
from eimsdk.interfaces import Encoder
from eimsdk.records import Conditioning


class Linearization:
    """``eps_hat`` at a fixed ``(z_t, t, cond)`` with its graph kept, for repeated ``jvp`` / ``vjp`` products.

    ``z_t`` (B, ...), ``t`` (B,) or a float, ``cond`` of batch B or 1. ``eps`` is the (detached) prediction.
    Products take and return tensors shaped like ``z_t``. Call :meth:`release` (or drop the object) to free
    the graph. ``for_jvp=False`` promises VJPs only: the forward then keeps the default attention kernel and
    the first VJP builds no second-order graph.
    """

    def __init__(self, encoder: Encoder, z_t: torch.Tensor, t: torch.Tensor | float, cond: Conditioning, *,
                 guidance_scale: float = 1.0, uncond: Conditioning | None = None, for_jvp: bool = True) -> None:
        self.encoder = encoder
        self.for_jvp = for_jvp
        b = z_t.shape[0]
        self._t = encoder._as_t(t, b, z_t)
        self._evals = b if guidance_scale == 1.0 else 2 * b
        self._z = z_t.detach().requires_grad_(True)
        with torch.enable_grad(), (sdpa_kernel(SDPBackend.MATH) if for_jvp else nullcontext()):
            self._eps = _guided(encoder, self._z, self._t, cond.expand_to(b), guidance_scale, uncond)
        encoder.counter.forwards += self._evals
        self.eps = self._eps.detach()
        self._dual: torch.Tensor | None = None  # d, the dummy cotangent of g(d) = J^T d
        self._g: torch.Tensor | None = None

    def vjp(self, u: torch.Tensor) -> torch.Tensor:
        """``J^T u`` for ``u`` shaped like ``eps``."""
        self._check(u, "u")
        u = u.to(self._eps.dtype)
        self.encoder.counter.vjps += self._evals
        if self._g is None and self.for_jvp:
            self._build_dual(u)
            return self._g.detach()
        with torch.enable_grad():
            (out,) = torch.autograd.grad(self._eps, self._z, u, retain_graph=True)
        return out

    def jvp(self, v: torch.Tensor) -> torch.Tensor:
        """``J v`` for ``v`` shaped like ``z_t``."""
        self._check(v, "v")
        if not self.for_jvp:
            raise InputError("this Linearization was made with for_jvp=False; make it with for_jvp=True for JVPs")
        if self._g is None:
            self.encoder.counter.vjps += self._evals
            self._build_dual(torch.zeros_like(self._eps))
        self.encoder.counter.jvps += self._evals
        with torch.enable_grad():
            (out,) = torch.autograd.grad(self._g, self._dual, v.to(self._g.dtype), retain_graph=True)
        return out

    def release(self) -> None:
        """Free the kept graphs."""
        self._eps = self._g = self._dual = self._z = None  # type: ignore[assignment]

    def _build_dual(self, d: torch.Tensor) -> None:
        self._dual = d.detach().clone().requires_grad_(True)
        with torch.enable_grad():
            (self._g,) = torch.autograd.grad(self._eps, self._z, self._dual, create_graph=True)

    def _check(self, x: torch.Tensor, name: str) -> None:
        if self._eps is None:
            raise InputError("this Linearization was released; make a new one at the point you need")
        if tuple(x.shape) != tuple(self._eps.shape):
            raise InputError(f"{name} must have the shape of z_t {tuple(self._eps.shape)}, got {tuple(x.shape)}")


def _guided(encoder: Encoder, z: torch.Tensor, t: torch.Tensor, cond: Conditioning, guidance_scale: float,
            uncond: Conditioning | None) -> torch.Tensor:
    """Uncounted (guided) ``eps_hat``, one batched model call; the caller counts."""
    if guidance_scale == 1.0:
        return encoder._predict_eps(z, t, cond)
    b = z.shape[0]
    uncond = (uncond if uncond is not None else encoder.null_conditioning(b)).expand_to(b)
    eps_u, eps_c = encoder._predict_eps(torch.cat([z, z]), torch.cat([t, t]), Conditioning.cat([uncond, cond])).chunk(2)
    return eps_u + guidance_scale * (eps_c - eps_u)


def jvp(encoder: Encoder, z_t: torch.Tensor, t: torch.Tensor | float, cond: Conditioning, v: torch.Tensor, *,
        guidance_scale: float = 1.0, uncond: Conditioning | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(eps_hat, J v)`` at ``(z_t, t, cond)``, ``J = d eps_hat / d z_t``; for many products use a Linearization."""
    lin = Linearization(encoder, z_t, t, cond, guidance_scale=guidance_scale, uncond=uncond)
    out = lin.jvp(v)
    return lin.eps, out


def vjp(encoder: Encoder, z_t: torch.Tensor, t: torch.Tensor | float, cond: Conditioning, u: torch.Tensor, *,
        guidance_scale: float = 1.0, uncond: Conditioning | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(eps_hat, J^T u)`` at ``(z_t, t, cond)``. For many products use :class:`Linearization`."""
    lin = Linearization(encoder, z_t, t, cond, guidance_scale=guidance_scale, uncond=uncond, for_jvp=False)
    out = lin.vjp(u)
    return lin.eps, out
