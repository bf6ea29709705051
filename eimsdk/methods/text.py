"""The text part of a direction: ``dc = mean_i (T(target_i) - T(source_i))`` over prompt pairs.

Only real tokens count: in pair i a sequence position contributes when it is a real (unmasked) token of the
source or the target prompt, and is zero where both are padding; the masks of ``dc`` are the union over pairs.
There ``dc`` is the full difference ``T(target) - T(source)``, padding embeddings included, so that
``T(source) + dc`` equals ``T(target)`` on every position the model attends to: strength 1 of a text direction
is an exact prompt swap. Pooled vectors (no mask) are part of ``c`` and of ``dc``.
"""

from __future__ import annotations

from typing import Sequence

import torch

from eimsdk.errors import InputError
from eimsdk.interfaces import Encoder
from eimsdk.records import Conditioning


def text_direction(encoder: Encoder, source_prompts: Sequence[str], target_prompts: Sequence[str]) -> Conditioning:
    """Batch-1 conditioning difference from ``source_prompts`` to ``target_prompts`` (paired), averaged over pairs."""
    for name, prompts in (("source_prompts", source_prompts), ("target_prompts", target_prompts)):
        if isinstance(prompts, str) or not prompts or not all(isinstance(p, str) and p.strip() for p in prompts):
            raise InputError(f"{name} must be a non-empty list of non-empty strings, got {prompts!r}")
    if len(source_prompts) != len(target_prompts):
        raise InputError(f"got {len(source_prompts)} source_prompts and {len(target_prompts)} target_prompts; pass "
                         "them in pairs that differ only in the attribute to edit")
    with torch.no_grad():
        src = encoder.encode_prompts(list(source_prompts))
        tgt = encoder.encode_prompts(list(target_prompts))
    embeds, masks = {}, {}
    for key, target in tgt.embeds.items():
        diff = target - src.embeds[key]  # (P, ...)
        if key in tgt.masks:
            real = torch.maximum(src.masks[key], tgt.masks[key])  # (P, L)
            diff = diff * real.to(diff.dtype).unsqueeze(-1)  # (P, L, D)
            masks[key] = real.amax(dim=0, keepdim=True)  # (1, L)
        embeds[key] = diff.mean(dim=0, keepdim=True)
    return Conditioning(embeds, masks)
