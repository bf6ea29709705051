"""The text direction: mean over prompt pairs of T(target) - T(source), real tokens only, pooled vectors included."""

from __future__ import annotations

import pytest
import torch

from eimsdk import Editor
from eimsdk.errors import InputError
from eimsdk.methods.text import text_direction
from eimsdk.testing.analytic import GaussianEncoder


@pytest.mark.parametrize("family", ["pixart", "sd3", "flux"])
def test_source_plus_direction_is_the_target_prompt(family, tiny_pipeline_path):
    """Strength 1 is an exact prompt swap on every position the model reads (padding embeddings are not zero)."""
    enc = Editor.from_pretrained(tiny_pipeline_path(family)).encoder
    src, tgt = "a photo of a red circle", "a photo of a big blue square on the left"
    with torch.no_grad():
        c_src, c_tgt = enc.encode_prompts([src]), enc.encode_prompts([tgt])
    dc = text_direction(enc, [src], [tgt])
    assert dc.batch_size == 1 and set(dc.embeds) == set(c_src.embeds)
    edited = c_src + dc
    for key, target in c_tgt.embeds.items():
        if key in c_tgt.masks:
            real = edited.masks[key][0].bool()
            torch.testing.assert_close(real, c_tgt.masks[key][0].bool() | c_src.masks[key][0].bool())
            torch.testing.assert_close(edited.embeds[key][0][real], target[0][real], atol=1e-5, rtol=1e-5)
            assert torch.all(dc.embeds[key][0][~real] == 0), "positions padded in both prompts do not count"
        else:
            torch.testing.assert_close(edited.embeds[key], target, atol=1e-5, rtol=1e-5)


def test_pairs_are_averaged_and_pooled_vectors_count():
    enc = GaussianEncoder(dtype=torch.float64)
    sources = ["a red circle", "a red square on the left"]
    targets = ["a blue circle", "a blue square on the left"]
    dc = text_direction(enc, sources, targets)
    each = [text_direction(enc, [s], [t]) for s, t in zip(sources, targets)]
    for key in dc.embeds:
        torch.testing.assert_close(dc.embeds[key], (each[0].embeds[key] + each[1].embeds[key]) / 2)
    torch.testing.assert_close(dc.masks["prompt_embeds"], torch.maximum(each[0].masks["prompt_embeds"],
                                                                         each[1].masks["prompt_embeds"]))
    assert float(dc.embeds["pooled_prompt_embeds"].norm()) > 0
    base = enc.encode_prompts(["a red circle"])
    shift = enc.mean(base + dc) - enc.mean(base)
    red_to_blue = enc.patterns[:, enc.word_index["blue"]] - enc.patterns[:, enc.word_index["red"]]
    torch.testing.assert_close(shift.flatten(), red_to_blue, msg="both the sequence and the pooled half move the mean")


@pytest.mark.parametrize("sources, targets, match", [
    (["a red circle"], ["a blue circle", "a green circle"], "pairs"),
    ([], ["a blue circle"], "source_prompts"),
    (["a red circle"], [" "], "target_prompts"),
    ("a red circle", ["a blue circle"], "source_prompts"),
])
def test_bad_prompts_are_refused(sources, targets, match):
    with pytest.raises(InputError, match=match):
        text_direction(GaussianEncoder(), sources, targets)
