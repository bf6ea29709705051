"""The memory planner: shapes read generically, estimates within 25% of measured peaks, plans that fit, refusals."""

from __future__ import annotations

import pytest
import torch

from eimsdk import Editor
from eimsdk import memory
from eimsdk.errors import InputError, MemoryLimitError
from eimsdk.memory import guard, plan_derivatives, transformer_shape
from eimsdk.testing import memprobe
from eimsdk.testing.analytic import GaussianEncoder


@pytest.mark.parametrize("family, expected", [
    # from the tiny configs in eimsdk.testing.tiny and the text lengths of each pipeline (T5 120 for PixArt-alpha;
    # CLIP 77 + T5 256 for SD3; T5 512 for Flux); a token is 2x2 latent cells (patch 2; Flux: patch 1, 2x2 packing)
    # of a VAE with factor 2
    ("pixart", dict(blocks=2, width=24, heads=3, text_tokens=120, joint=False, token_pixels=4, cells=2)),
    ("sd3", dict(blocks=1, width=32, heads=4, text_tokens=333, joint=True, token_pixels=4, cells=2)),
    ("flux", dict(blocks=2, width=32, heads=2, text_tokens=512, joint=True, token_pixels=4, cells=2)),
])
def test_transformer_shape_is_read_from_the_config(family, expected, tiny_pipeline_path):
    enc = Editor.from_pretrained(tiny_pipeline_path(family)).encoder
    shape = transformer_shape(enc)
    assert {k: getattr(shape, k) for k in expected} == expected
    assert shape.param_bytes == 4 * enc.transformer.num_parameters() and shape.dtype_bytes == 4
    assert shape.image_tokens(enc.default_image_size) == shape.latent_tokens(
        enc.encode_images(torch.zeros(1, 3, *enc.default_image_size))[0].shape)
    assert transformer_shape(GaussianEncoder()) is None


HELD_OUT = {  # widths, depths and sizes the coefficients were not fitted on (they were: width 128, 2 and 4 blocks)
    "pixart": {"num_attention_heads": 5, "attention_head_dim": 32, "num_layers": 3, "cross_attention_dim": 160},
    "sd3": {"num_attention_heads": 5, "attention_head_dim": 32, "num_layers": 3, "caption_projection_dim": 160},
    "flux": {"num_attention_heads": 5, "attention_head_dim": 32, "num_layers": 2, "num_single_layers": 1,
             "axes_dims_rope": [8, 12, 12]},
}
PLANS = [{"jvp": "double-backward", "keep_graph": True, "checkpointing": False},
         {"jvp": "forward", "keep_graph": True, "checkpointing": False},
         {"jvp": "finite-difference", "keep_graph": True, "checkpointing": False},
         {"jvp": "finite-difference", "keep_graph": True, "checkpointing": True},
         {"jvp": "finite-difference", "keep_graph": False, "checkpointing": True, "max_batch": 1},
         {"jvp": "forward", "keep_graph": False, "checkpointing": True, "max_batch": 1}]


@pytest.mark.parametrize("family", ["pixart", "sd3", "flux"])
def test_estimates_are_within_25_percent_of_measured_peaks(family):
    """Peak resident memory above the weights, measured in a fresh process (see eimsdk.testing.memprobe), for a
    plain forward and one HSDS linearisation + CG iteration by every plan, at 144 and 400 image tokens."""
    measurements = [{"kind": "forward", "image_size": size, "rows": 3} for size in (48, 80)]
    measurements += [{"kind": "hsds", "image_size": size, "rows": 2, "options": plan}
                     for size in (48, 80) for plan in PLANS]
    results = memprobe.run({"family": family, "transformer": HELD_OUT[family], "measurements": measurements})
    assert len(results) == len(measurements)
    errors = {f"{r['image_size']}px {r.get('options', 'forward')}": r["estimate_bytes"] / r["peak_bytes"] - 1
              for r in results}
    assert min(r["peak_bytes"] for r in results) > 2**20, "a peak this small would be allocator noise"
    assert all(abs(e) <= 0.25 for e in errors.values()), {k: round(e, 3) for k, e in errors.items()}


def test_the_plan_fits_and_gets_lighter_as_memory_shrinks(tiny_pipeline_path):
    enc = Editor.from_pretrained(tiny_pipeline_path("sd3")).encoder
    latent = (4, 32, 32)  # 256 image tokens
    roomy = plan_derivatives(enc, 8, latent, available=2**40)
    budgets = [roomy.estimate_bytes * f for f in (1.0, 0.5, 0.25, 0.1)]
    plans = [plan_derivatives(enc, 8, latent, available=int(b / memory.HEADROOM) + 1) for b in budgets]
    costs = [memory.iteration_cost(p, 8) for p in plans]
    assert all(p.estimate_bytes <= b for p, b in zip(plans, budgets))
    assert costs == sorted(costs) and costs[-1] > costs[0], "less memory costs more model evaluations"
    assert plans[-1].estimate_bytes < roomy.estimate_bytes / 5
    with pytest.raises(MemoryLimitError) as info:
        plan_derivatives(enc, 8, latent, available=1000)
    message = str(info.value)
    assert "\n" not in message and "MiB above the weights" in message
    assert "smaller image size" in message and "another GPU" in message
    assert isinstance(info.value, InputError)


def test_forced_settings_are_kept(tiny_pipeline_path):
    enc = Editor.from_pretrained(tiny_pipeline_path("pixart")).encoder
    plan = plan_derivatives(enc, 4, (4, 8, 8), jvp="forward", checkpointing=True, max_batch=1, available=2**40)
    assert (plan.jvp, plan.checkpointing, plan.max_batch) == ("forward", True, 1)
    roomy = plan_derivatives(enc, 4, (4, 8, 8), jvp="double-backward", available=2**40)
    with pytest.raises(MemoryLimitError, match="forced"):
        plan_derivatives(enc, 4, (4, 8, 8), jvp="double-backward", available=roomy.estimate_bytes // 4)
    assert plan_derivatives(GaussianEncoder(), 4, (8,)).jvp == "double-backward", "no shape: the exact strategy"


def test_hsds_follows_the_plan_and_its_direction_does_not_depend_on_it(tiny_pipeline_path, monkeypatch):
    from eimsdk.methods.hsds import HSDSConfig, HSDSFinder

    editor = Editor.from_pretrained(tiny_pipeline_path("pixart"), dtype="float64")
    latent = editor.encode(torch.rand(1, 3, 32, 32) * 2 - 1, "a red circle")
    exact = HSDSFinder(HSDSConfig(jvp="double-backward")).find(editor.encoder, latent, ["a blue circle"])
    roomy = plan_derivatives(editor.encoder, 4, latent.z0.shape[1:], jvp="double-backward", available=2**40)
    monkeypatch.setattr(memory, "available_memory", lambda device: roomy.estimate_bytes // 4)
    light = HSDSFinder(HSDSConfig()).find(editor.encoder, latent, ["a blue circle"])
    cos = torch.nn.functional.cosine_similarity(light.dz.flatten(), exact.dz.flatten(), dim=0)
    assert float(cos) > 0.999 and light.meta["config"]["jvp"] == "auto"
    config = HSDSConfig(**{"jvp": "forward", "checkpointing": True, "keep_graph": False})  # as --set parses them
    assert (config.jvp, config.checkpointing, config.keep_graph) == ("forward", True, False)
    with pytest.raises(ValueError):
        HSDSConfig(jvp="backward")


def test_guard_refuses_before_the_model_runs(tiny_pipeline_path, monkeypatch):
    editor = Editor.from_pretrained(tiny_pipeline_path("flux"))
    guard(editor.encoder, (32, 32), 2, "edit", available=2**30)
    with pytest.raises(MemoryLimitError, match="edit at 4096x4096 px"):
        guard(editor.encoder, (4096, 4096), 2, "edit", available=2**30)
    monkeypatch.setattr(memory, "available_memory", lambda device: 1000)
    before = editor.encoder.counter.snapshot()
    with pytest.raises(MemoryLimitError, match="generate"):
        editor.generate("a red circle", num_inference_steps=2)
    with pytest.raises(MemoryLimitError, match="edit"):
        editor.edit(torch.rand(1, 3, 32, 32) * 2 - 1, "a red circle", "a blue circle")
    assert editor.encoder.counter.snapshot() == before, "refused before any model evaluation"
