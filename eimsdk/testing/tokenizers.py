"""Tokenizers built from in-memory vocabularies, so tests and the toy world never touch a model hub.

The T5 tokenizer is a SentencePiece-unigram model over a small word list plus every printable ASCII
character (so any prompt tokenizes, falling back to characters); the CLIP tokenizer is a byte-level BPE
whose vocabulary is the 256 byte symbols, their end-of-word forms and merges for the same word list.
Both save with ``save_pretrained`` and reload with ``from_pretrained`` like the real ones.
"""

from __future__ import annotations

import string

# Words of the toy world's captions plus a few common ones; order fixes token ids, so only append.
WORDS: tuple[str, ...] = (
    "a", "an", "the", "photo", "picture", "of", "on", "in", "at", "and", "with", "background",
    "red", "green", "blue", "yellow", "purple", "orange", "cyan", "white", "black", "gray", "magenta",
    "circle", "square", "triangle", "diamond", "cross", "ring", "star", "shape", "object",
    "small", "large", "big", "tiny", "medium",
    "left", "right", "top", "bottom", "center", "middle", "upper", "lower",
    "dark", "light", "striped", "plain", "dotted",
    "man", "woman", "person", "cat", "dog", "smiling", "old", "young", "painting", "style",
    "face", "hair", "glasses", "house", "tree", "car", "sky", "sunset", "snow", "winter", "summer",
)

T5_SPECIAL = ("<pad>", "</s>", "<unk>")  # ids 0, 1, 2 as in the real T5 tokenizer


def t5_vocab() -> list[tuple[str, float]]:
    """SentencePiece unigram vocabulary: specials, then words (high score), then characters (low score)."""
    vocab: list[tuple[str, float]] = [(tok, 0.0) for tok in T5_SPECIAL]
    vocab += [("\u2581" + w, -2.0) for w in WORDS]
    vocab += [("\u2581", -3.0)]
    chars = string.ascii_letters + string.digits + string.punctuation
    vocab += [(c, -8.0) for c in chars]
    return vocab


def build_t5_tokenizer(model_max_length: int = 32):
    """A ``T5TokenizerFast``-compatible tokenizer (pad=0, eos=1, unk=2) built offline."""
    from transformers import T5Tokenizer

    tok = T5Tokenizer(vocab=t5_vocab(), extra_ids=0)
    tok.model_max_length = model_max_length
    return tok


def _bytes_to_unicode() -> dict[int, str]:
    # GPT-2/CLIP byte-level alphabet: printable bytes map to themselves, the rest to code points >= 256.
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


def clip_vocab_and_merges() -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Byte-level BPE vocabulary: bytes, bytes + ``</w>``, merges that spell each word, then specials."""
    alphabet = list(_bytes_to_unicode().values())
    vocab: dict[str, int] = {}
    for sym in alphabet:
        vocab[sym] = len(vocab)
    for sym in alphabet:
        vocab[sym + "</w>"] = len(vocab)
    merges: list[tuple[str, str]] = []
    for word in WORDS:
        if len(word) < 2:
            continue
        # Left-to-right merges: "r e" -> "re", "re d</w>" -> "red</w>".
        cur = word[0]
        for i, ch in enumerate(word[1:], start=1):
            nxt = ch + ("</w>" if i == len(word) - 1 else "")
            merged = cur + nxt
            pair = (cur, nxt)
            if pair not in merges:
                merges.append(pair)
            if merged not in vocab:
                vocab[merged] = len(vocab)
            cur = merged
    for special in ("<|startoftext|>", "<|endoftext|>"):
        vocab[special] = len(vocab)
    return vocab, merges


def build_clip_tokenizer(model_max_length: int = 77):
    """A ``CLIPTokenizer`` built offline; bos/eos/pad ids are the last two vocabulary entries."""
    from transformers import CLIPTokenizer

    vocab, merges = clip_vocab_and_merges()
    tok = CLIPTokenizer(vocab=vocab, merges=merges)
    tok.model_max_length = model_max_length
    return tok
