"""Jacobian-vector and vector-Jacobian products of ``eps_hat`` with respect to ``z_t``, through the Encoder interface.

HSDS needs many products ``J v`` and ``J^T u`` at one point ``(z_t, t, c)`` (one pair per CG iteration), so the
workhorse is :class:`Linearization`: one prediction at the point, then products by one of three JVP strategies
(``jvp=``), which trade exactness, time and memory (docs/method.md and docs/backends/memory.md have the numbers):

- ``"double-backward"``: the forward runs under ``sdpa_kernel(SDPBackend.MATH)`` (the only attention kernel with
  double backward on CPU) and keeps its graph. ``vjp(u) = J^T u`` is one backward; ``g(d) = J^T d`` is built once
  with ``create_graph=True`` (by the first ``vjp``, or with ``d = 0`` if a ``jvp`` comes first) and, since ``g`` is
  linear in ``d``, ``jvp(v) = d <v, g(d)> / d d`` is one backward through ``g``'s graph. Exact, cheapest per
  product, and the heaviest: every attention map and the second-order graph stay alive.
- ``"forward"``: forward-mode AD (``torch.func.jvp``), exact, recomputed per product; only the JVP runs under the
  MATH kernel (no fused kernel has a forward-mode derivative), and it keeps no graph.
- ``"finite-difference"``: ``(f(z + h v) - f(z - h v)) / 2h`` without any graph, two forwards per product, with a
  step from the model's dtype (``h = eps^(1/3)`` relative to ``z``, the optimum of central differences) and the
  perturbation and the difference formed in at least float32.

With the last two, ``vjp`` needs only a first-order graph, built with the default (efficient) attention kernel,
optionally with the transformer's gradient checkpointing (``checkpointing=True``: its blocks' activations are
recomputed in the backward), and either kept for all products (``keep_graph=True``) or rebuilt per product
(``keep_graph=False``, one more forward per VJP, nothing kept between products).

Guidance is handled inside: with ``guidance_scale != 1`` the products are those of the guided prediction
``eps_u + g (eps_c - eps_u)``, computed on one batch of twice the size.

Counting (per sample, in ``encoder.counter``): the first prediction counts as ``forwards``, each product as one
``jvps`` or ``vjps`` (twice that with guidance); building ``g``'s graph with ``d = 0`` counts as one ``vjps``.
"""

from __future__ import annotations

from contextlib import contextmanager, nullcontext
from typing import Iterator, Literal

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

from eimsdk.errors import InputError
from eimsdk.interfaces import Encoder
from eimsdk.records import Conditioning

JvpStrategy = Literal["double-backward", "forward", "finite-difference"]
JVP_STRATEGIES: tuple[str, ...] = ("double-backward", "forward", "finite-difference")


class Linearization:
    """``eps_hat`` at a fixed ``(z_t, t, cond)`` for repeated ``jvp`` / ``vjp`` products.

    ``z_t`` (B, ...), ``t`` (B,) or a float, ``cond`` of batch B or 1. ``eps`` is the (detached) prediction.
    Products take and return tensors shaped like ``z_t``. Call :meth:`release` (or drop the object) to free
    what is kept. ``for_jvp=False`` promises VJPs only: with ``"double-backward"`` the forward then keeps the
    default attention kernel and the first VJP builds no second-order graph. ``keep_graph`` and
    ``checkpointing`` apply to the first-order graph of the ``"forward"`` and ``"finite-difference"`` strategies
    and of ``for_jvp=False`` (double backward always keeps its graph).
    """

    def __init__(self, encoder: Encoder, z_t: torch.Tensor, t: torch.Tensor | float, cond: Conditioning, *,
                 guidance_scale: float = 1.0, uncond: Conditioning | None = None, for_jvp: bool = True,
                 jvp: JvpStrategy = "double-backward", keep_graph: bool = True, checkpointing: bool = False) -> None:
        if jvp not in JVP_STRATEGIES:
            raise InputError(f"jvp={jvp!r} is not a JVP strategy; use one of {list(JVP_STRATEGIES)}")
        self.encoder = encoder
        self.for_jvp = for_jvp
        self.strategy = jvp
        self.second_order = for_jvp and jvp == "double-backward"
        self.keep_graph = keep_graph or self.second_order
        self.checkpointing = checkpointing
        b = z_t.shape[0]
        self._t = encoder._as_t(t, b, z_t)
        self._cond = cond.expand_to(b)
        self._scale = guidance_scale
        self._uncond = uncond
        self._evals = b if guidance_scale == 1.0 else 2 * b
        self._z = z_t.detach().requires_grad_(True)
        if self.keep_graph:
            with self._graph_mode():
                self._eps = self._f(self._z)
            self.eps = self._eps.detach()
        else:
            with torch.no_grad():
                self.eps = self._eps = self._f(self._z.detach())
        encoder.counter.forwards += self._evals
        self._released = False
        self._dual: torch.Tensor | None = None  # d, the dummy cotangent of g(d) = J^T d
        self._g: torch.Tensor | None = None

    def vjp(self, u: torch.Tensor) -> torch.Tensor:
        """``J^T u`` for ``u`` shaped like ``eps``."""
        self._check(u, "u")
        u = u.to(self.eps.dtype)
        self.encoder.counter.vjps += self._evals
        if self.second_order and self._g is None:
            self._build_dual(u)
            return self._g.detach()
        if self.keep_graph:
            with self._graph_mode():
                (out,) = torch.autograd.grad(self._eps, self._z, u, retain_graph=True)
            return out
        z = self._z.detach().requires_grad_(True)
        with self._graph_mode():
            (out,) = torch.autograd.grad(self._f(z), z, u)
        return out

    def jvp(self, v: torch.Tensor) -> torch.Tensor:
        """``J v`` for ``v`` shaped like ``z_t``."""
        self._check(v, "v")
        if not self.for_jvp:
            raise InputError("this Linearization was made with for_jvp=False; make it with for_jvp=True for JVPs")
        if self.strategy == "finite-difference":
            return self._jvp_finite_difference(v)
        if self.strategy == "forward":
            self.encoder.counter.jvps += self._evals
            with torch.no_grad(), sdpa_kernel(SDPBackend.MATH):
                return torch.func.jvp(self._f, (self._z.detach(),), (v.to(self._z.dtype),))[1]
        if self._g is None:
            self.encoder.counter.vjps += self._evals
            self._build_dual(torch.zeros_like(self.eps))
        self.encoder.counter.jvps += self._evals
        with self._graph_mode():
            (out,) = torch.autograd.grad(self._g, self._dual, v.to(self._g.dtype), retain_graph=True)
        return out

    def release(self) -> None:
        """Free what is kept (graphs, the point)."""
        self._eps = self._g = self._dual = self._z = None  # type: ignore[assignment]
        self._released = True

    def _f(self, z: torch.Tensor) -> torch.Tensor:
        return self.encoder.raw_eps(z, self._t, self._cond, guidance_scale=self._scale, uncond=self._uncond)

    @contextmanager
    def _graph_mode(self) -> Iterator[None]:
        """Autograd on, the MATH kernel for second-order graphs (also while a checkpoint recomputes in a backward),
        and the transformer's gradient checkpointing when asked."""
        with torch.enable_grad(), (sdpa_kernel(SDPBackend.MATH) if self.second_order else nullcontext()), \
                gradient_checkpointing(self.encoder, self.checkpointing):
            yield

    def _jvp_finite_difference(self, v: torch.Tensor) -> torch.Tensor:
        """Central differences along ``v`` with a per-sample step ``h = eps^(1/3) max(rms(z), 1) / rms(v)``."""
        work = torch.promote_types(self._z.dtype, torch.float32)
        z, v = self._z.detach().to(work), v.to(work)
        dims = tuple(range(1, z.ndim))
        rms = lambda x: x.square().mean(dims, keepdim=True).sqrt()  # noqa: E731
        h = finite_difference_step(self.encoder.dtype) * rms(z).clamp_min(1.0) / rms(v).clamp_min(1e-30)
        with torch.no_grad():
            plus = self._f((z + h * v).to(self._z.dtype)).to(work)
            minus = self._f((z - h * v).to(self._z.dtype)).to(work)
        self.encoder.counter.jvps += self._evals
        return ((plus - minus) / (2 * h)).to(self.eps.dtype)

    def _build_dual(self, d: torch.Tensor) -> None:
        self._dual = d.detach().clone().requires_grad_(True)
        with self._graph_mode():
            (self._g,) = torch.autograd.grad(self._eps, self._z, self._dual, create_graph=True)

    def _check(self, x: torch.Tensor, name: str) -> None:
        if self._released:
            raise InputError("this Linearization was released; make a new one at the point you need")
        if tuple(x.shape) != tuple(self.eps.shape):
            raise InputError(f"{name} must have the shape of z_t {tuple(self.eps.shape)}, got {tuple(x.shape)}")


def finite_difference_step(dtype: torch.dtype) -> float:
    """Relative step of central differences for a model in ``dtype``: ``eps^(1/3)`` balances the O(h^2) truncation
    against the O(eps / h) rounding (5e-3 in float32, 0.2 in bfloat16). Never below float32's, since float64
    backends keep float32 parts (Flux's position embeddings, for one)."""
    eps = max(torch.finfo(dtype).eps, torch.finfo(torch.float32).eps) if dtype.is_floating_point else 1.0
    return float(eps) ** (1 / 3)


@contextmanager
def gradient_checkpointing(encoder: Encoder, enable: bool) -> Iterator[None]:
    """Turn on the encoder's transformer's gradient checkpointing (diffusers' ``enable_gradient_checkpointing``)
    for the duration; it applies whenever autograd is on, in eval mode too. A no-op when ``enable`` is False."""
    model = getattr(encoder, "transformer", None)
    if not enable:
        yield
        return
    if model is None or not getattr(model, "_supports_gradient_checkpointing", False):
        raise InputError(f"checkpointing=True needs a transformer with gradient checkpointing; the {encoder.family!r} "
                         "encoder has none: use checkpointing=False")
    was = model.is_gradient_checkpointing
    model.enable_gradient_checkpointing()
    try:
        yield
    finally:
        if not was:
            model.disable_gradient_checkpointing()


def jvp(encoder: Encoder, z_t: torch.Tensor, t: torch.Tensor | float, cond: Conditioning, v: torch.Tensor, *,
        guidance_scale: float = 1.0, uncond: Conditioning | None = None,
        strategy: JvpStrategy = "double-backward") -> tuple[torch.Tensor, torch.Tensor]:
    """``(eps_hat, J v)`` at ``(z_t, t, cond)``, ``J = d eps_hat / d z_t``; for many products use a Linearization."""
    lin = Linearization(encoder, z_t, t, cond, guidance_scale=guidance_scale, uncond=uncond, jvp=strategy,
                        keep_graph=strategy == "double-backward")
    out = lin.jvp(v)
    return lin.eps, out


def vjp(encoder: Encoder, z_t: torch.Tensor, t: torch.Tensor | float, cond: Conditioning, u: torch.Tensor, *,
        guidance_scale: float = 1.0, uncond: Conditioning | None = None,
        checkpointing: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """``(eps_hat, J^T u)`` at ``(z_t, t, cond)``. For many products use :class:`Linearization`."""
    lin = Linearization(encoder, z_t, t, cond, guidance_scale=guidance_scale, uncond=uncond, for_jvp=False,
                        checkpointing=checkpointing)
    out = lin.vjp(u)
    return lin.eps, out
