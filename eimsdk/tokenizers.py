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


def _bpe(symbols: list[str], ranks: dict[tuple[str, str], int]) -> list[str]:
    """Apply BPE merges by rank, as the tokenizer does."""
    while len(symbols) > 1:
        pairs = [(ranks.get(p, 1 << 30), i) for i, p in enumerate(zip(symbols, symbols[1:]))]
        rank, i = min(pairs)
        if rank == 1 << 30:
            break
        symbols = symbols[:i] + [symbols[i] + symbols[i + 1]] + symbols[i + 2 :]
    return symbols


def clip_vocab_and_merges() -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Byte-level BPE vocabulary: bytes, bytes + ``</w>``, merges that make each word one token, then specials.

    Merges are added word by word: BPE (by rank) is run on the word with the merges so far, and the pieces it
    leaves are joined left to right by new merges, so every word of :data:`WORDS` ends as a single token whatever
    merges earlier words added.
    """
    alphabet = list(_bytes_to_unicode().values())
    vocab: dict[str, int] = {}
    for sym in alphabet:
        vocab[sym] = len(vocab)
    for sym in alphabet:
        vocab[sym + "</w>"] = len(vocab)
    merges: list[tuple[str, str]] = []
    ranks: dict[tuple[str, str], int] = {}
    for word in WORDS:
        pieces = _bpe(list(word[:-1]) + [word[-1] + "</w>"], ranks)
        while len(pieces) > 1:
            pair = (pieces[0], pieces[1])
            ranks[pair] = len(merges)
            merges.append(pair)
            vocab.setdefault(pair[0] + pair[1], len(vocab))
            pieces = _bpe(pieces, ranks)
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
