"""An analytic backend: data given a prompt is Gaussian, so ``eps_hat``, its Jacobian and the HSDS optimum are exact.

The world: a latent ``z0`` of shape (C, h, w) whose rows are split into one block per attribute group (colour,
shape, size, position by default). A prompt is a bag of words from a fixed vocabulary; each attribute word ``v``
has a latent pattern ``m_v``, filler words ("a", "photo", ...) have none, unknown words embed to zero. Given the
conditioning ``c`` of a prompt::

    x0 | c  ~  N(mu(c), Sigma(c))
    mu(c)     = b + A_seq (sum_l mask_l e_l) + A_pool pooled          (= b + sum of the prompt's word patterns)
    Sigma(c)  = diag(sigma0^2 * v(c)) + U U^T                        (U: optional low-rank correlation)
    v_i(c)    = 1 + (rho - 1) exp(-kappa q_g(i)(c)),   q_g(c) = sum_l mask_l ||P_g e_l||^2

so a group the prompt names is certain (variance ``sigma0^2``) and a group it leaves out is vague (``rho`` times
larger). Under the noise path ``z_t = a z0 + s eps`` the posterior mean of the noise is exact::

    eps_hat(z_t, t, c) = s (a^2 Sigma(c) + s^2 I)^{-1} (z_t - a mu(c)),   d eps_hat / d z_t = s (a^2 Sigma + s^2 I)^{-1}

``overlap`` in [0, 1] mixes a shared latent direction into every attribute word's pattern: 0 gives attributes that
live in disjoint latent (and pixel) blocks, 1 gives attributes that all move the same direction. Metric tests use
it to build worlds whose true disentanglement is known.

Register it like any plugin (it is test-only, so not an entry point)::

    from eimsdk.testing import analytic
    plugin_manager.register(analytic, "analytic")   # backend "analytic"
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any, Sequence

import torch
from einops import rearrange, repeat

import eimsdk
from eimsdk.errors import InputError
from eimsdk.interfaces import Encoder, uniform_timesteps
from eimsdk.records import Conditioning

PIPELINE_CLASS = "AnalyticGaussianPipeline"
CONFIG_NAME = "analytic.json"
FILLER = ("a", "an", "the", "photo", "picture", "image", "scene", "of", "on", "in", "at", "with", "and")
DEFAULT_ATTRIBUTES: dict[str, list[str]] = {
    "colour": ["red", "green", "blue", "yellow"],
    "shape": ["circle", "square", "triangle"],
    "size": ["small", "large"],
    "position": ["left", "right", "top", "bottom"],
}
WORD_RE = re.compile(r"[a-z]+")


@eimsdk.hookimpl
def register_backends(register):
    register("analytic", "eimsdk.testing.analytic:GaussianEncoder", pipeline_classes=(PIPELINE_CLASS,),
             description="Gaussian data given the prompt: closed-form eps_hat, Jacobians and HSDS optimum")


class GaussianEncoder(Encoder):
    """The analytic backend (module docstring). All parameters are drawn from ``seed``; float64 for exact tests."""

    family = "analytic"
    pipeline_classes = (PIPELINE_CLASS,)

    def __init__(self, *, attributes: dict[str, list[str]] | None = None, overlap: float = 0.0,
                 latent_shape: tuple[int, int, int] = (4, 8, 8), vae_factor: int = 2, max_tokens: int = 16,
                 sigma0: float = 0.5, vague_ratio: float = 100.0, kappa: float = 10.0, cov_rank: int = 0,
                 seed: int = 0, dtype: torch.dtype = torch.float32, model_id: str = "analytic") -> None:
        super().__init__()
        attributes = {k: list(v) for k, v in (attributes or DEFAULT_ATTRIBUTES).items()}
        self._check_config(attributes, overlap, latent_shape, vae_factor, max_tokens, sigma0, vague_ratio, kappa,
                           cov_rank)
        self.config = dict(attributes=attributes, overlap=overlap, latent_shape=list(latent_shape),
                           vae_factor=vae_factor, max_tokens=max_tokens, sigma0=sigma0, vague_ratio=vague_ratio,
                           kappa=kappa, cov_rank=cov_rank, seed=seed)
        self.attributes = attributes
        self.model_id = model_id
        self.dtype = dtype
        self.latent_shape = tuple(latent_shape)
        self.vae_factor = vae_factor
        self.max_tokens = max_tokens
        self.vague_ratio = vague_ratio
        self.kappa = kappa
        self.vocab = list(FILLER) + [w for words in attributes.values() for w in words]
        self.word_index = {w: i for i, w in enumerate(self.vocab)}
        self._build(attributes, overlap, sigma0, cov_rank, seed)

    @staticmethod
    def _check_config(attributes, overlap, latent_shape, vae_factor, max_tokens, sigma0, vague_ratio, kappa,
                      cov_rank) -> None:
        words = [w for ws in attributes.values() for w in ws]
        if not attributes or any(not ws for ws in attributes.values()):
            raise InputError(f"attributes must map each group to a non-empty word list, got {attributes!r}")
        if len(set(words)) != len(words) or set(words) & set(FILLER) or not all(WORD_RE.fullmatch(w) for w in words):
            raise InputError(f"attribute words must be distinct lowercase words, not filler words {FILLER}; got "
                             f"{words}")
        if len(latent_shape) != 3 or min(latent_shape) < 1:
            raise InputError(f"latent_shape must be (C, h, w) of positive ints, got {latent_shape!r}")
        if len(attributes) > latent_shape[1]:
            raise InputError(f"{len(attributes)} attribute groups need at least as many latent rows; latent_shape "
                             f"{tuple(latent_shape)} has {latent_shape[1]}: raise h")
        if not 0.0 <= overlap <= 1.0:
            raise InputError(f"overlap must lie in [0, 1] (0: disjoint attributes, 1: shared), got {overlap!r}")
        for name, value in (("vae_factor", vae_factor), ("max_tokens", max_tokens)):
            if not isinstance(value, int) or value < 1:
                raise InputError(f"{name} must be a positive integer, got {value!r}")
        if sigma0 <= 0 or vague_ratio < 1 or kappa < 0 or cov_rank < 0:
            raise InputError(f"need sigma0 > 0, vague_ratio >= 1, kappa >= 0, cov_rank >= 0; got sigma0={sigma0}, "
                             f"vague_ratio={vague_ratio}, kappa={kappa}, cov_rank={cov_rank}")

    def _build(self, attributes: dict[str, list[str]], overlap: float, sigma0: float, cov_rank: int,
               seed: int) -> None:
        """Draw the world's parameters (float64; cast on use)."""
        g = torch.Generator("cpu").manual_seed(seed)
        c, h, w = self.latent_shape
        d, v = c * h * w, len(self.vocab)
        # Group g owns a band of latent rows: (G, D) 0/1 masks.
        rows = torch.arange(h).tensor_split(len(attributes))
        band = torch.zeros(len(attributes), c, h, w, dtype=torch.float64)
        for i, r in enumerate(rows):
            band[i, :, r] = 1.0
        self.group_masks = rearrange(band, "g c h w -> g (c h w)")  # (G, D)
        shared = torch.randn(d, generator=g, dtype=torch.float64)  # (D,)
        patterns = torch.zeros(d, v, dtype=torch.float64)  # (D, V): column = a word's mean shift
        word_group = torch.full((v,), -1, dtype=torch.long)
        for gi, words in enumerate(attributes.values()):
            for word in words:
                j = self.word_index[word]
                own = torch.randn(d, generator=g, dtype=torch.float64) * self.group_masks[gi]
                amount = torch.randn((), generator=g, dtype=torch.float64)
                patterns[:, j] = math.sqrt(1.0 - overlap**2) * own + overlap * amount * shared
                word_group[j] = gi
        self.patterns = patterns
        self.word_group = word_group
        # Embedding tables: rotated one-hots, so embeddings are dense but the world stays exactly linear.
        self.table_seq = torch.linalg.qr(torch.randn(v, v, generator=g, dtype=torch.float64))[0]  # (V, V) columns
        self.table_pool = torch.linalg.qr(torch.randn(v, v, generator=g, dtype=torch.float64))[0]
        self.base_mean = 0.3 * torch.randn(d, generator=g, dtype=torch.float64)  # (D,)
        self.sigma0_sq = sigma0**2 * (0.5 + torch.rand(d, generator=g, dtype=torch.float64))  # (D,)
        self.cov_factor = (torch.randn(d, cov_rank, generator=g, dtype=torch.float64) * 0.3 * sigma0
                           / math.sqrt(max(cov_rank, 1)))  # (D, r)
        if c <= 4:  # (3, C): RGB = the first three channels, plus a fourth mixed in
            mix = torch.tensor([[1.0, 0.0, 0.0, 0.5], [0.0, 1.0, 0.0, -0.5], [0.0, 0.0, 1.0, 0.5]], dtype=torch.float64)
            self.decoder_mix = mix[:, :c]
        else:
            self.decoder_mix = torch.randn(3, c, generator=g, dtype=torch.float64) / math.sqrt(c)

    # ------------------------------------------------------------------------------------------ loading
    @classmethod
    def from_pretrained(cls, path: str, *, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
                        **kwargs: Any) -> "GaussianEncoder":
        """Load a folder written by :meth:`save_pretrained` (``analytic.json`` holds the constructor arguments)."""
        config_path = Path(path) / CONFIG_NAME
        if not config_path.is_file():
            raise InputError(f"path={str(path)!r} has no {CONFIG_NAME}; write one with GaussianEncoder(...)"
                             ".save_pretrained(path)")
        if torch.device(device).type != "cpu":
            raise InputError(f"device={device!r}: the analytic backend runs on CPU only; pass device='cpu'")
        config = {**json.loads(config_path.read_text()), **kwargs}
        return cls(**config, dtype=dtype, model_id=str(path))

    def save_pretrained(self, path: str | Path) -> Path:
        """Write ``analytic.json`` and a ``model_index.json`` naming this backend's pipeline class."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        (path / CONFIG_NAME).write_text(json.dumps(self.config, indent=2))
        (path / "model_index.json").write_text(json.dumps({"_class_name": PIPELINE_CLASS}))
        return path

    def to(self, *targets: str | torch.device | torch.dtype) -> "GaussianEncoder":
        """Compute in a dtype (float64 for finite-difference and closed-form tests); the device stays the CPU."""
        for target in targets:
            if not isinstance(target, torch.dtype):
                if torch.device(target).type != "cpu":
                    raise InputError(f"device={target!r}: the analytic backend runs on CPU only")
                continue
            self.dtype = target
        self._null = None
        return self

    # ------------------------------------------------------------------------------------------ geometry
    @property
    def image_multiple(self) -> int:
        return self.vae_factor

    @property
    def default_image_size(self) -> tuple[int, int]:
        return (self.latent_shape[1] * self.vae_factor, self.latent_shape[2] * self.vae_factor)

    @property
    def max_prompt_tokens(self) -> int:
        return self.max_tokens

    @property
    def latent_channels(self) -> int:
        return self.latent_shape[0]

    # ------------------------------------------------------------------------------------------ encode
    def encode_images(self, pixels: torch.Tensor) -> torch.Tensor:
        """Average-pool by the VAE factor, then the least-squares inverse of the decoder's channel mix."""
        f = self.vae_factor
        if pixels.ndim != 4 or pixels.shape[1] != 3 or pixels.shape[-2] % f or pixels.shape[-1] % f:
            raise InputError(f"pixels must be (B, 3, H, W) with H and W multiples of {f}, got {tuple(pixels.shape)}")
        pooled = torch.nn.functional.avg_pool2d(pixels.to(torch.float64), f)  # (B, 3, h, w)
        z = torch.einsum("cr,brhw->bchw", torch.linalg.pinv(self.decoder_mix), pooled) * 2.0
        return z.to(self.dtype)

    def decode_latents(self, z0: torch.Tensor) -> torch.Tensor:
        """Channel mix to RGB, nearest upsampling by the VAE factor, clamp to [-1, 1]."""
        rgb = 0.5 * torch.einsum("rc,bchw->brhw", self.decoder_mix.to(z0.dtype), z0)  # (B, 3, h, w)
        rgb = repeat(rgb, "b r h w -> b r (h fh) (w fw)", fh=self.vae_factor, fw=self.vae_factor)
        return rgb.clamp(-1, 1)

    def tokenize(self, prompt: str) -> list[str]:
        return WORD_RE.findall(prompt.lower())

    def count_tokens(self, prompt: str) -> int:
        return len(self.tokenize(prompt))

    def encode_prompts(self, prompts: Sequence[str]) -> Conditioning:
        """Bag of words: ``prompt_embeds`` (B, L, V) rows of the word table (zero for padding and unknown words),
        mask (B, L) of real tokens, ``pooled_prompt_embeds`` (B, V) the sum of the pooled table's rows."""
        if isinstance(prompts, str) or not all(isinstance(p, str) for p in prompts):
            raise InputError(f"prompts must be a list of strings, got {prompts!r}")
        b, length, v = len(prompts), self.max_tokens, len(self.vocab)
        seq = torch.zeros(b, length, v, dtype=torch.float64)
        mask = torch.zeros(b, length, dtype=torch.long)
        pooled = torch.zeros(b, v, dtype=torch.float64)
        for i, prompt in enumerate(prompts):
            for pos, word in enumerate(self.tokenize(prompt)[:length]):
                mask[i, pos] = 1
                j = self.word_index.get(word)
                if j is not None:
                    seq[i, pos] = self.table_seq[:, j]
                    pooled[i] += self.table_pool[:, j]
        return Conditioning({"prompt_embeds": seq.to(self.dtype), "pooled_prompt_embeds": pooled.to(self.dtype)},
                            {"prompt_embeds": mask})

    # ------------------------------------------------------------------------------------------ the model
    def mean(self, cond: Conditioning) -> torch.Tensor:
        """``mu(c)`` (B, C, h, w): the data mean given the conditioning; linear in the embeddings."""
        seq = cond.embeds["prompt_embeds"]  # (B, L, V)
        mask = cond.masks["prompt_embeds"].to(seq.dtype)  # (B, L)
        words = torch.einsum("blv,bl->bv", seq, mask) @ self.table_seq.to(seq) \
            + cond.embeds["pooled_prompt_embeds"] @ self.table_pool.to(seq)  # (B, V): word counts (x2)
        mu = self.base_mean.to(seq) + 0.5 * words @ self.patterns.to(seq).T  # (B, D)
        return mu.reshape(-1, *self.latent_shape)

    def variance(self, cond: Conditioning) -> torch.Tensor:
        """The diagonal ``sigma0^2 v(c)`` (B, D) of ``Sigma(c)``: certain where the prompt names the group."""
        seq = cond.embeds["prompt_embeds"]  # (B, L, V)
        mask = cond.masks["prompt_embeds"].to(seq.dtype)
        coords = seq @ self.table_seq.to(seq)  # (B, L, V): each token's word coordinates
        in_group = torch.nn.functional.one_hot(self.word_group.clamp_min(0), len(self.attributes)).to(seq)
        in_group = in_group * (self.word_group >= 0).to(seq)[:, None]  # (V, G)
        q = torch.einsum("blv,bl,vg->bg", coords.square(), mask, in_group)  # (B, G)
        vague = 1.0 + (self.vague_ratio - 1.0) * torch.exp(-self.kappa * q)  # (B, G)
        return self.sigma0_sq.to(seq) * (vague @ self.group_masks.to(seq))  # (B, D)

    def covariance(self, cond: Conditioning) -> torch.Tensor:
        """Dense ``Sigma(c)`` (B, D, D), for closed-form tests."""
        factor = self.cov_factor.to(self.dtype)
        return torch.diag_embed(self.variance(cond)) + factor @ factor.T

    def alpha_sigma(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Variance-preserving path ``log alpha_bar(t) = -(0.1 t + 9.95 t^2)`` (a(1) = 0.0066 > 0)."""
        t = torch.as_tensor(t)
        if t.numel() and (float(t.min()) < 0 or float(t.max()) > 1):
            raise InputError(f"t must lie in [0, 1] (0 = clean), got values in [{float(t.min())}, {float(t.max())}]")
        log_ab = -(0.1 * t.to(torch.float64) + 9.95 * t.to(torch.float64) ** 2)
        out = torch.promote_types(t.dtype, torch.float32) if t.is_floating_point() else torch.float32
        return (0.5 * log_ab).exp().to(out), torch.expm1(log_ab).abs().sqrt().to(out)

    def timesteps(self, num_steps: int, t_start: float = 1.0, *, latents: torch.Tensor | None = None) -> torch.Tensor:
        return uniform_timesteps(num_steps, t_start)

    def _predict_eps(self, z_t: torch.Tensor, t: torch.Tensor, cond: Conditioning) -> torch.Tensor:
        """``s (a^2 Sigma + s^2 I)^{-1} (z_t - a mu)`` with Woodbury for the low-rank part; differentiable."""
        dtype = z_t.dtype
        cond = cond.to(dtype)
        a, s = (x.to(dtype).reshape(-1, 1) for x in self.alpha_sigma(t.to(torch.float64)))  # (B, 1)
        x = (z_t - a.reshape(-1, 1, 1, 1) * self.mean(cond)).flatten(1)  # (B, D)
        lam = a**2 * self.variance(cond) + s**2  # (B, D): diagonal of a^2 Sigma + s^2 I before the low-rank part
        y = x / lam
        if self.cov_factor.shape[1]:
            u = a[:, :, None] * self.cov_factor.to(dtype)  # (B, D, r)
            small = torch.eye(u.shape[-1], dtype=dtype) + torch.einsum("bdr,bd,bdq->brq", u, 1.0 / lam, u)
            y = y - torch.einsum("bdr,br->bd", u, torch.linalg.solve(small, torch.einsum("bdr,bd->br", u, y))) / lam
        return (s * y).reshape(z_t.shape)

    def jacobian(self, t: torch.Tensor, cond: Conditioning) -> torch.Tensor:
        """Dense ``d eps_hat / d z_t = s (a^2 Sigma + s^2 I)^{-1}`` (B, D, D), for closed-form tests."""
        a, s = (x.to(self.dtype).reshape(-1, 1, 1) for x in self.alpha_sigma(t.to(torch.float64)))
        eye = torch.eye(math.prod(self.latent_shape), dtype=self.dtype)
        return s * torch.linalg.inv(a**2 * self.covariance(cond.to(self.dtype)) + s**2 * eye)

    # ------------------------------------------------------------------------------------------ generation
    def prepare_latents(self, batch: int, height: int, width: int, generator: torch.Generator | None = None,
                        latents: torch.Tensor | None = None) -> torch.Tensor:
        f = self.vae_factor
        shape = (batch, self.latent_channels, height // f, width // f)
        if latents is not None:
            if tuple(latents.shape) != shape:
                raise InputError(f"latents must have shape {shape}, got {tuple(latents.shape)}")
            return latents.to(self.dtype)
        return torch.randn(shape, generator=generator, dtype=torch.float32).to(self.dtype)

    @torch.no_grad()
    def generate(self, prompts: Sequence[str], *, num_inference_steps: int, guidance_scale: float, height: int,
                 width: int, generator: torch.Generator | None = None, latents: torch.Tensor | None = None,
                 negative_prompts: Sequence[str] | None = None, progress: bool = False) -> torch.Tensor:
        """DDIM from pure noise (``t = 1``) with classifier-free guidance, decoded to (B, 3, H, W)."""
        if isinstance(prompts, str) or not prompts:
            raise InputError(f"prompts must be a non-empty list of strings, got {prompts!r}")
        m = self.image_multiple
        if height % m or width % m or height <= 0 or width <= 0:
            raise InputError(f"height={height}, width={width}: both must be positive multiples of {m}")
        cond = self.encode_prompts(list(prompts))
        uncond = self.encode_prompts(list(negative_prompts)) if negative_prompts is not None else None
        z = self.prepare_latents(len(prompts), height, width, generator, latents)
        z0 = self.sample(z, cond, 1.0, num_inference_steps, guidance_scale=guidance_scale, uncond=uncond,
                         progress=progress)
        return self.decode_latents(z0)
