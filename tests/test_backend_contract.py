"""The contract suite catches the backend mistakes it is meant to catch (each check must be able to fail)."""

from __future__ import annotations

import pytest
import torch

from eimsdk.records import Conditioning
from eimsdk.testing.contract import EncoderContract
from eimsdk_sd.encoder import SDEncoder


class PaddingMaskSD(SDEncoder):
    """The trap an outside author fell into: CLIP's padding mask as the token mask of a UNet that reads every
    position."""

    def encode_prompts(self, prompts):
        cond = super().encode_prompts(prompts)
        tokens = self.tokenizer(list(prompts), padding="max_length", max_length=77, truncation=True,
                                return_tensors="pt")
        return Conditioning(dict(cond.embeds), {"prompt_embeds": tokens.attention_mask})


class CastOnlyTheFlagSD(SDEncoder):
    """A ``to`` that records the dtype but leaves the modules as they were."""

    def to(self, *targets, device=None, dtype=None):
        for target in targets:
            if isinstance(target, torch.dtype):
                self.dtype = target
        return self


@pytest.fixture(scope="module")
def tiny_path(tiny_pipeline_path):
    return tiny_pipeline_path("sd")


def test_the_swap_check_passes_the_backend_and_fails_a_padding_mask(tiny_path):
    contract = EncoderContract()
    contract.test_text_direction_at_strength_one_is_a_prompt_swap(SDEncoder.from_pretrained(tiny_path))
    with pytest.raises(AssertionError, match="prompt swap"):
        contract.test_text_direction_at_strength_one_is_a_prompt_swap(PaddingMaskSD.from_pretrained(tiny_path))


def test_the_to_check_fails_a_backend_that_does_not_cast_its_modules(tiny_path):
    with pytest.raises(AssertionError, match="float64"):
        EncoderContract().test_to_moves_and_casts_consistently(CastOnlyTheFlagSD.from_pretrained(tiny_path))
