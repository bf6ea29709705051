"""The backend contract: tests every Encoder (built-in or third-party) must pass.

Use it from a plugin's test suite::

    import pytest
    from eimsdk.testing.contract import EncoderContract

    class TestMyBackend(EncoderContract):
        @pytest.fixture(scope="class")
        def encoder(self):
            return MyEncoder.from_pretrained(build_my_tiny_model())

The fixture must give a small float32 CPU encoder. Every test asserts a property the finders, manipulators and
metrics rely on; a backend that passes them gets all of eimsdk's methods for free. The rules behind them are
listed in docs/plugins.md ("Writing a backend").
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from eimsdk.errors import InputError
from eimsdk.interfaces import Encoder
from eimsdk.records import Conditioning, Direction


def _latent(encoder: Encoder, batch: int = 1, seed: int = 0) -> torch.Tensor:
    h, w = encoder.default_image_size
    g = torch.Generator("cpu").manual_seed(seed)
    pixels = torch.rand(batch, 3, h, w, generator=g) * 2 - 1
    with torch.no_grad():
        return encoder.encode_images(pixels.to(encoder.device, encoder.dtype))


def _noise_like(z: torch.Tensor, seed: int = 1) -> torch.Tensor:
    g = torch.Generator("cpu").manual_seed(seed)
    return torch.randn(z.shape, generator=g).to(z)


def _noisy(encoder: Encoder, prompt: str, t: float) -> tuple[torch.Tensor, Conditioning]:
    """A noised latent of a random image at level ``t`` and the conditioning of ``prompt``."""
    z0 = _latent(encoder)
    with torch.no_grad():
        return encoder.add_noise(z0, _noise_like(z0), t), encoder.encode_prompts([prompt])


class EncoderContract:
    """Mixin of contract tests; the subclass provides the ``encoder`` fixture."""

    prompts = ("a photo of a red circle", "a photo of a blue square on the left")

    def test_is_encoder_with_identity(self, encoder: Encoder) -> None:
        assert isinstance(encoder, Encoder)
        assert encoder.family, "Encoder.family must name the model family"
        assert isinstance(encoder.model_id, str)
        sig = encoder.signature()
        assert sig == encoder.signature(), "signature() must be deterministic"
        assert sig["family"] == encoder.family

    def test_identity_attributes_are_set(self, encoder: Encoder) -> None:
        assert isinstance(encoder.device, torch.device), "set self.device to a torch.device"
        assert isinstance(encoder.dtype, torch.dtype), "set self.dtype to the model's torch.dtype"
        assert hasattr(encoder, "counter"), "call super().__init__() in __init__ (it creates the eval counter)"
        assert callable(getattr(encoder, "count_tokens", None)), \
            "define count_tokens(prompt) so that over-long prompts are warned about"

    def test_overlong_prompt_warns(self, encoder: Encoder) -> None:
        h, w = encoder.default_image_size
        long_prompt = " ".join([self.prompts[0]] * (encoder.max_prompt_tokens // 2 + 1))
        assert encoder.count_tokens(self.prompts[0]) <= encoder.max_prompt_tokens
        assert encoder.count_tokens(long_prompt) > encoder.max_prompt_tokens
        with pytest.warns(UserWarning, match="limit"):
            encoder.encode(torch.zeros(1, 3, h, w), long_prompt)

    def test_geometry(self, encoder: Encoder) -> None:
        h, w = encoder.default_image_size
        m = encoder.image_multiple
        assert m >= 1 and h % m == 0 and w % m == 0
        assert encoder.max_prompt_tokens > 0
        assert encoder.latent_channels >= 1

    def test_alpha_sigma_endpoints_and_monotone(self, encoder: Encoder) -> None:
        t = torch.linspace(0, 1, 11)
        a, s = encoder.alpha_sigma(t)
        assert a.shape == t.shape and s.shape == t.shape
        assert float(a[0]) == pytest.approx(1.0, abs=1e-6) and float(s[0]) == pytest.approx(0.0, abs=1e-6)
        assert torch.all(a[1:] <= a[:-1] + 1e-6), "a(t) must not increase with t"
        assert torch.all(s[1:] >= s[:-1] - 1e-6), "s(t) must not decrease with t"
        assert torch.all(a >= 0) and torch.all(s >= 0)

    def test_timesteps_grid(self, encoder: Encoder) -> None:
        z = _latent(encoder)
        for t_start in (1.0, 0.6):
            grid = encoder.timesteps(8, t_start, latents=z)
            assert grid.shape == (9,)
            assert float(grid[-1]) == pytest.approx(0.0, abs=1e-6)
            assert float(grid[0]) <= t_start + 1e-6 and float(grid[0]) > 0
            assert torch.all(grid[1:] < grid[:-1]), "grid must be strictly descending"

    def test_encode_decode_shapes(self, encoder: Encoder) -> None:
        h, w = encoder.default_image_size
        z = _latent(encoder, batch=2)
        assert z.shape[0] == 2 and torch.isfinite(z).all()
        with torch.no_grad():
            x = encoder.decode_latents(z)
        assert tuple(x.shape) == (2, 3, h, w)
        assert torch.isfinite(x).all()

    def test_prompt_batch_consistency(self, encoder: Encoder) -> None:
        with torch.no_grad():
            both = encoder.encode_prompts(list(self.prompts))
            one = encoder.encode_prompts([self.prompts[1]])
        assert isinstance(both, Conditioning) and both.batch_size == 2
        for k in both.embeds:
            torch.testing.assert_close(both.embeds[k][1:], one.embeds[k], atol=1e-5, rtol=1e-4)
        assert not torch.allclose(both.flat()[0], both.flat()[1]), "different prompts must embed differently"

    def test_predict_eps_batch_consistency_and_prompt_dependence(self, encoder: Encoder) -> None:
        z0 = _latent(encoder, batch=2)
        with torch.no_grad():
            cond = encoder.encode_prompts(list(self.prompts))
            z_t = encoder.add_noise(z0, _noise_like(z0), 0.5)
            eps = encoder.predict_eps(z_t, 0.5, cond)
            eps1 = encoder.predict_eps(z_t[1:], 0.5, cond[1])
            eps_other = encoder.predict_eps(z_t[1:], 0.5, cond[0])
        assert eps.shape == z0.shape and torch.isfinite(eps).all()
        torch.testing.assert_close(eps[1:], eps1, atol=1e-4, rtol=1e-3)
        assert not torch.allclose(eps1, eps_other, atol=1e-7), "eps_hat must depend on the prompt"

    def test_guidance_one_is_conditional(self, encoder: Encoder) -> None:
        z_t, cond = _noisy(encoder, self.prompts[0], 0.7)
        with torch.no_grad():
            plain = encoder.predict_eps(z_t, 0.7, cond)
            g1 = encoder.predict_eps(z_t, 0.7, cond, guidance_scale=1.0, uncond=encoder.null_conditioning())
            g3 = encoder.predict_eps(z_t, 0.7, cond, guidance_scale=3.0)
        torch.testing.assert_close(plain, g1)
        assert not torch.allclose(plain, g3), "guidance_scale must change the prediction"

    def test_counter_counts_forwards(self, encoder: Encoder) -> None:
        z0 = _latent(encoder, batch=2)
        cond = encoder.encode_prompts([self.prompts[0]])
        before = encoder.counter.forwards
        with torch.no_grad():
            encoder.predict_eps(z0, 0.3, cond)
            encoder.predict_eps(z0, 0.3, cond, guidance_scale=2.0)
        assert encoder.counter.forwards - before == 2 + 4

    def test_differentiable_wrt_latent_and_conditioning(self, encoder: Encoder) -> None:
        z0 = _latent(encoder)
        cond = encoder.encode_prompts([self.prompts[0]])
        z_t = encoder.add_noise(z0, _noise_like(z0), 0.5).requires_grad_(True)
        emb = {k: v.detach().clone().requires_grad_(True) for k, v in cond.embeds.items()}
        eps = encoder.predict_eps(z_t, 0.5, Conditioning(emb, dict(cond.masks)))
        grads = torch.autograd.grad(eps.square().sum(), [z_t, *emb.values()], allow_unused=True)
        assert grads[0] is not None and torch.isfinite(grads[0]).all() and grads[0].abs().sum() > 0
        assert any(g is not None and g.abs().sum() > 0 for g in grads[1:]), "eps_hat must depend on cond.embeds"

    def test_second_order_under_math_kernel(self, encoder: Encoder) -> None:
        from torch.nn.attention import SDPBackend, sdpa_kernel

        z0 = _latent(encoder)
        cond = encoder.encode_prompts([self.prompts[0]])
        z_t = encoder.add_noise(z0, _noise_like(z0), 0.5).requires_grad_(True)
        with sdpa_kernel(SDPBackend.MATH):
            eps = encoder.predict_eps(z_t, 0.5, cond)
            (g,) = torch.autograd.grad(eps.square().sum(), z_t, create_graph=True)
            (hv,) = torch.autograd.grad((g * _noise_like(g, 3)).sum(), z_t)
        assert torch.isfinite(hv).all() and hv.abs().sum() > 0

    def test_invert_sample_round_trip(self, encoder: Encoder) -> None:
        z0 = _latent(encoder)
        cond = encoder.encode_prompts([self.prompts[0]])
        errors = []
        for steps in (4, 32):
            zt = encoder.invert(z0, cond, 0.6, steps)
            rec = encoder.sample(zt, cond, 0.6, steps)
            assert rec.shape == z0.shape
            errors.append(float((rec - z0).pow(2).mean().sqrt() / z0.pow(2).mean().sqrt()))
        assert all(np.isfinite(errors))
        assert errors[1] < errors[0] + 1e-6, f"round trip error must not grow with steps: {errors}"
        assert errors[1] < 0.5, f"round trip with 32 steps is too inaccurate: relative RMSE {errors[1]:.3f}"

    def test_encode_accepts_odd_images(self, encoder: Encoder) -> None:
        from PIL import Image

        h, w = encoder.default_image_size
        images = [Image.new("RGBA", (w + 3, h + 1), (255, 0, 0, 128)), Image.new("L", (w, h), 128)]
        latent = encoder.encode(images, self.prompts[0], size=(h, w))
        assert latent.z0.shape[0] == 2 and latent.cond.batch_size == 2
        assert latent.original_sizes == [(h + 1, w + 3), (h, w)]
        with pytest.raises(InputError):
            encoder.encode(images[0], "   ")
        with pytest.raises(InputError):
            encoder.encode(images[0], self.prompts[0], size=(h + 1, w))

    def test_generate_shape_and_seed(self, encoder: Encoder) -> None:
        h, w = encoder.default_image_size
        kw = dict(num_inference_steps=2, guidance_scale=2.0, height=h, width=w)
        a = encoder.generate([self.prompts[0]], generator=torch.Generator("cpu").manual_seed(0), **kw)
        b = encoder.generate([self.prompts[0]], generator=torch.Generator("cpu").manual_seed(0), **kw)
        c = encoder.generate([self.prompts[0]], generator=torch.Generator("cpu").manual_seed(1), **kw)
        assert tuple(a.shape) == (1, 3, h, w)
        torch.testing.assert_close(a, b)
        assert not torch.allclose(a, c)

    def test_text_direction_at_strength_one_is_a_prompt_swap(self, encoder: Encoder) -> None:
        """``c + 1 * dc`` must act as the target prompt. A token mask that hides positions the model reads (CLIP's
        padding mask on a model that attends to every position) zeroes part of ``dc`` and fails here."""
        from eimsdk.methods.baselines import TextOnlyFinder

        source, target = self.prompts
        h, w = encoder.default_image_size
        latent = encoder.encode(torch.rand(1, 3, h, w, generator=torch.Generator().manual_seed(0)) * 2 - 1, source)
        direction = TextOnlyFinder().find(encoder, latent, [target])
        moved = latent.cond + direction.dc.to(encoder.device, next(iter(latent.cond.embeds.values())).dtype) * 1.0
        with torch.no_grad():
            z_t = encoder.add_noise(latent.z0, _noise_like(latent.z0), 0.5)
            eps_moved = encoder.predict_eps(z_t, 0.5, moved)
            eps_swap = encoder.predict_eps(z_t, 0.5, encoder.encode_prompts([target]))
            eps_source = encoder.predict_eps(z_t, 0.5, latent.cond)
        change = float((eps_swap - eps_source).norm())
        assert change > 0, "the two prompts must predict differently for the check to mean anything"
        gap = float((eps_moved - eps_swap).norm()) / change
        assert gap < 1e-3, (f"a text direction at strength 1 differs from the prompt swap by {gap:.2%} of the swap's "
                            "effect: token masks must mark exactly the positions the model reads")

    @pytest.mark.parametrize("method", ["text", "dds"])
    def test_found_directions_carry_the_signature_and_fit(self, encoder: Encoder, method: str, tmp_path) -> None:
        from eimsdk.methods.baselines import DDSFinder, TextOnlyFinder

        finder = TextOnlyFinder() if method == "text" else DDSFinder(num_timesteps=1)
        latent = encoder.encode(torch.zeros(1, 3, *encoder.default_image_size), self.prompts[0])
        with torch.enable_grad():
            direction = finder.find(encoder, latent, [self.prompts[1]])
        assert direction.meta.get("signature") == encoder.signature(), "the direction must carry the signature"
        direction.check_fits(encoder, latent.z0)
        Direction.load(direction.save(tmp_path / "direction")).check_fits(encoder, latent.z0)

    def test_to_moves_and_casts_consistently(self, encoder: Encoder) -> None:
        z_t, cond = _noisy(encoder, self.prompts[0], 0.5)
        with torch.no_grad():
            reference = encoder.predict_eps(z_t, 0.5, cond)
        device = encoder.device
        try:
            assert encoder.to(torch.float64) is encoder, "to() returns the encoder"
            assert encoder.dtype == torch.float64
            _assert_modules_are(encoder, dtype=torch.float64)
            with torch.no_grad():
                eps64 = encoder.predict_eps(z_t.double(), 0.5, encoder.encode_prompts([self.prompts[0]]))
            assert eps64.dtype == torch.float64
            torch.testing.assert_close(eps64.float(), reference, atol=1e-3, rtol=1e-3)
            assert encoder.to(torch.device(device.type)) is encoder
            assert encoder.device.type == device.type, "to(device) must keep encoder.device up to date"
            _assert_modules_are(encoder, device=device)
        finally:
            encoder.to(device)
            encoder.to(torch.float32)
        assert encoder.dtype == torch.float32 and encoder.device.type == device.type
        _assert_modules_are(encoder, dtype=torch.float32)
        with torch.no_grad():
            again = encoder.predict_eps(z_t, 0.5, encoder.encode_prompts([self.prompts[0]]))
            null = encoder.null_conditioning()
        torch.testing.assert_close(again, reference)
        assert all(e.dtype != torch.float64 for e in null.embeds.values()), "to() must drop cached conditioning"


def _assert_modules_are(encoder: Encoder, *, dtype: torch.dtype | None = None,
                        device: torch.device | None = None) -> None:
    """Every floating parameter of the encoder's ``torch.nn.Module`` attributes has ``dtype`` / is on ``device``."""
    for name, module in vars(encoder).items():
        if not isinstance(module, torch.nn.Module):
            continue
        for param in module.parameters():
            if dtype is not None and param.is_floating_point():
                assert param.dtype == dtype, f"encoder.{name} has {param.dtype} parameters after to({dtype})"
            if device is not None:
                assert param.device.type == device.type, f"encoder.{name} stayed on {param.device} after to({device})"
