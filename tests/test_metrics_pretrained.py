"""Pretrained-network metrics and the CLIP probe reader: local folders only, clear errors when weights are absent."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from eimsdk.metrics.pretrained import (
    ClipProbeReader,
    ClipScore,
    DinoSimilarity,
    LpipsDistance,
    MissingWeightsError,
)


@pytest.fixture(scope="module")
def clip_folder(tmp_path_factory):
    """A tiny random CLIP with its processor, saved like a real checkpoint."""
    import torch
    from transformers import CLIPConfig, CLIPImageProcessorPil, CLIPModel, CLIPProcessor

    from eimsdk.tokenizers import build_clip_tokenizer

    tok = build_clip_tokenizer(77)
    config = CLIPConfig(
        text_config=dict(vocab_size=len(tok), hidden_size=32, intermediate_size=37, num_hidden_layers=2,
                         num_attention_heads=4, max_position_embeddings=77, bos_token_id=tok.bos_token_id,
                         eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id),
        vision_config=dict(image_size=32, patch_size=8, hidden_size=32, intermediate_size=37, num_hidden_layers=2,
                           num_attention_heads=4),
        projection_dim=16,
    )
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("clip")
    CLIPModel(config).eval().save_pretrained(path)
    processor = CLIPImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    CLIPProcessor(image_processor=processor, tokenizer=tok).save_pretrained(path)
    return path


def _images(n: int = 3) -> list[Image.Image]:
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)) for _ in range(n)]


def test_clip_probe_reads_every_attribute(clip_folder):
    reader = ClipProbeReader(clip_folder, {"colour": ["red", "blue", "green"], "mood": {"happy": "a smiling face",
                                                                                        "sad": "a sad face"}})
    assert reader.attributes == {"colour": ["red", "blue", "green"], "mood": ["happy", "sad"]}
    probs = reader.probabilities(_images())
    reads = reader.read(_images())
    assert len(probs) == len(reads) == 3
    for p, r in zip(probs, reads):
        for attr, dist in p.items():
            assert sum(dist.values()) == pytest.approx(1.0, abs=1e-5)
            assert r[attr] == max(dist, key=dist.get)
    assert probs != [probs[0]] * 3  # the reading depends on the image


def test_clip_probe_identical_prompts_are_undecided(clip_folder, tmp_path):
    spec = tmp_path / "probes.json"
    spec.write_text(json.dumps({"x": {"one": "a photo of a cat", "two": "a photo of a cat"}}))
    reader = ClipProbeReader(clip_folder, spec)
    for p in reader.probabilities(_images(2)):
        assert p["x"]["one"] == pytest.approx(0.5, abs=1e-5)


def test_clip_probe_is_a_reader_plugin(clip_folder, fresh_plugin_manager):
    from eimsdk.metrics import plugin

    if "clip-probe" not in fresh_plugin_manager.names("reader"):
        fresh_plugin_manager.register(plugin, "metrics-under-test")
    reader = fresh_plugin_manager.load("reader", "clip-probe")(model_path=str(clip_folder))
    assert set(reader.read(_images(1))[0]) == set(reader.attributes)


def test_missing_weights_name_the_path_and_the_fix(tmp_path, clip_folder):
    missing = tmp_path / "no-such-clip"
    with pytest.raises(MissingWeightsError, match=r"no-such-clip.*does not exist.*huggingface-cli download"):
        ClipProbeReader(missing)
    with pytest.raises(MissingWeightsError, match="needs a local model folder"):
        ClipProbeReader()
    (tmp_path / "empty").mkdir()
    with pytest.raises(MissingWeightsError, match="no config.json"):
        ClipScore(tmp_path / "empty")
    half = tmp_path / "model-only"
    half.mkdir()
    (half / "config.json").write_text((clip_folder / "config.json").read_text())
    with pytest.raises(MissingWeightsError, match="could not be loaded"):
        ClipScore(half)
    with pytest.raises(MissingWeightsError, match="facebook/dinov2"):
        DinoSimilarity(tmp_path / "no-dino")


def test_bad_probe_specs(clip_folder):
    from eimsdk.errors import InputError

    with pytest.raises(InputError, match="at least two"):
        ClipProbeReader(clip_folder, {"x": ["only"]})
    with pytest.raises(InputError, match="template"):
        ClipProbeReader(clip_folder, template="no slot")


def test_clip_score(clip_folder):
    score = ClipScore(clip_folder)
    images = _images(2)
    values = score.score(images, ["a red circle", "a blue square"])
    assert len(values) == 2 and all(0.0 <= v <= 100.0 for v in values)
    assert score.score(images[:1], ["a red circle"])[0] == pytest.approx(values[0], abs=1e-4)
    with pytest.raises(ValueError, match="one prompt per image"):
        score.score(images, ["a red circle"])
    from eimsdk.bench.manifest import ManifestItem
    from eimsdk.images import to_model_tensor

    item = ManifestItem(id="a", image="x.png", source_prompt="a circle", attribute="colour",
                        target_prompts=["a blue square", "a red circle"])
    edited = to_model_tensor(images[1], multiple=8)[0][0]  # (3, H, W) in [-1, 1]
    assert score(edited, edited, item=item) == {"clip_score": pytest.approx(values[1], abs=1e-3)}


def test_dino_similarity(tmp_path):
    import torch
    from transformers import BitImageProcessorPil, Dinov2Config, Dinov2Model

    torch.manual_seed(0)
    Dinov2Model(Dinov2Config(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                             intermediate_size=37)).save_pretrained(tmp_path)
    BitImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(tmp_path)
    dino = DinoSimilarity(tmp_path)
    a, b = _images(2)
    same, other = dino.similarity([a, a], [a, b])
    assert same == pytest.approx(1.0, abs=1e-5) and other < same
    from eimsdk.images import to_model_tensor

    pixels_a, pixels_b = (to_model_tensor(im, multiple=8)[0][0] for im in (a, b))
    assert dino(pixels_a, pixels_b, item=None) == {"dino_similarity": pytest.approx(other, abs=1e-4)}


def test_lpips_fails_clearly_without_its_package():
    try:  # lpips is deliberately not a dependency: without it the error must say how to get it
        import lpips  # noqa: F401
    except ImportError:
        with pytest.raises(MissingWeightsError, match="pip install lpips"):
            LpipsDistance()
    else:
        with pytest.raises(ValueError, match="net="):
            LpipsDistance(net="resnet")
