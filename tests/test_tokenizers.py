"""The offline tokenizers: every caption word is one token, specials match, and they round-trip through disk."""

from __future__ import annotations

from transformers import CLIPTokenizer, T5TokenizerFast

from eimsdk.tokenizers import WORDS, build_clip_tokenizer, build_t5_tokenizer


def test_every_word_is_one_token():
    t5, clip = build_t5_tokenizer(), build_clip_tokenizer()
    for word in WORDS:
        assert len(t5(word, add_special_tokens=False).input_ids) == 1, word
        assert len(clip(word, add_special_tokens=False).input_ids) == 1, word


def test_unknown_words_fall_back_to_characters():
    t5, clip = build_t5_tokenizer(), build_clip_tokenizer()
    assert t5.unk_token_id not in t5("zebra!").input_ids
    assert len(clip("zebra", add_special_tokens=False).input_ids) > 1


def test_special_ids_and_padding():
    t5 = build_t5_tokenizer(model_max_length=16)
    assert (t5.pad_token_id, t5.eos_token_id, t5.unk_token_id) == (0, 1, 2)
    ids = t5("a red circle", padding="max_length", max_length=16).input_ids
    assert len(ids) == 16 and ids[3] == t5.eos_token_id and ids[-1] == t5.pad_token_id
    clip = build_clip_tokenizer()
    ids = clip("a red circle").input_ids
    assert ids[0] == clip.bos_token_id and ids[-1] == clip.eos_token_id
    assert clip.pad_token_id == clip.eos_token_id


def test_save_and_reload(tmp_path):
    t5, clip = build_t5_tokenizer(), build_clip_tokenizer()
    t5.save_pretrained(tmp_path / "t5")
    clip.save_pretrained(tmp_path / "clip")
    text = "a large blue square at the top left, zebra"
    assert T5TokenizerFast.from_pretrained(tmp_path / "t5")(text).input_ids == t5(text).input_ids
    assert CLIPTokenizer.from_pretrained(tmp_path / "clip")(text).input_ids == clip(text).input_ids
