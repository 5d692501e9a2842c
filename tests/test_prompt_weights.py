"""ComfyUI prompt conventions: emphasis parsing and 77-token chunking (no model weights needed)."""

from __future__ import annotations

import pytest

from twosamplers.models.sd_text import END_TOKEN, START_TOKEN, TokenizerSpec, normalize_clip_skip, parse_prompt_weights


def test_plain_text_is_one_segment_at_weight_one():
    assert parse_prompt_weights("a photo of a cat") == [("a photo of a cat", 1.0)]
    assert parse_prompt_weights("") == []


def test_parentheses_multiply_by_1_1_per_level():
    got = parse_prompt_weights("a (b) ((c)) d")
    assert [s for s, _ in got] == ["a ", "b", " ", "c", " d"]
    assert got[1][1] == pytest.approx(1.1) and got[3][1] == pytest.approx(1.21)


def test_explicit_weight_replaces_the_outer_weight():
    assert parse_prompt_weights("(red:1.5)") == [("red", 1.5)]
    assert parse_prompt_weights("((red:0.5))") == [("red", 0.5)]  # not 0.5 * 1.1
    assert parse_prompt_weights("(a (b:2) c:0.8)") == [("a ", 0.8), ("b", 2.0), (" c", 0.8)]
    # the last colon counts; a non-number after it keeps the text and the 1.1 emphasis
    assert parse_prompt_weights("(time: 10:30)") == [("time: 10", 30.0)]
    assert parse_prompt_weights("(a:b)") == [("a:b", pytest.approx(1.1))]


def test_escapes_square_brackets_and_unbalanced():
    assert parse_prompt_weights(r"\(not weighted\)") == [("(not weighted)", 1.0)]
    assert parse_prompt_weights("[word]") == [("[word]", 1.0)]  # ComfyUI has no [] de-emphasis
    assert parse_prompt_weights("(open ended") == [("(open ended", 1.0)]
    # an unmatched ")" makes later brackets plain text, as ComfyUI does
    assert parse_prompt_weights("a) (b)") == [("a) (b)", 1.0)]


class FakeTok:
    """One token per non-space character (a tokenizer splits at whitespace): easy to count."""

    def __call__(self, word, add_special_tokens=False):
        return {"input_ids": [100 + (ord(c) % 50) for c in word if not c.isspace()]}


def spec(pad=END_TOKEN):
    return TokenizerSpec(FakeTok(), pad_token=pad)


def test_chunk_layout_and_padding():
    chunks = spec().tokenize("ab (cd:1.5)")
    assert len(chunks) == 1 and len(chunks[0]) == 77
    toks = [t for t, _ in chunks[0]]
    weights = [w for _, w in chunks[0]]
    assert toks[0] == START_TOKEN and toks[5] == END_TOKEN and toks[6:] == [END_TOKEN] * 71
    assert weights[:6] == [1.0, 1.0, 1.0, 1.5, 1.5, 1.0]
    assert [t for t, _ in spec(pad=0).tokenize("ab")[0]][4:] == [0] * 73  # OpenCLIP pads with 0


def test_pieces_move_to_the_next_chunk_whole_unless_long():
    """ComfyUI 0.30 tokenizes each weighted segment whole (it no longer splits on spaces first): a piece that
    does not fit starts the next chunk whole, unless it is 8 tokens or longer; then it is split."""
    ab = [100 + ord("a") % 50, 100 + ord("b") % 50]
    # 74 tokens of plain text, then a 2-token segment of another weight: it does not fit and starts chunk 2
    chunks = spec().tokenize(" ".join(["ab"] * 37) + " (ab:1.2)")
    assert len(chunks) == 2
    assert [t for t, _ in chunks[0]][75:] == [END_TOKEN, END_TOKEN]
    assert chunks[1][:4] == [(START_TOKEN, 1.0), (ab[0], 1.2), (ab[1], 1.2), (END_TOKEN, 1.0)]
    # a segment of >= 8 tokens is split across the boundary instead
    chunks = spec().tokenize(" ".join(["ab"] * 37) + " (abcdefghij:1.2)")
    assert len(chunks) == 2
    letters = [100 + ord(c) % 50 for c in "abcdefghij"]
    assert [t for t, _ in chunks[0]][75:] == [letters[0], END_TOKEN]  # one token fits, the rest go on
    assert [t for t, _ in chunks[1]][:11] == [START_TOKEN] + letters[1:] + [END_TOKEN]
    # and 38 plain words are one 76-token piece: split after 75 tokens, not moved word by word
    chunks = spec().tokenize(" ".join(["ab"] * 38))
    assert [t for t, _ in chunks[0]][74:] == [ab[1], ab[0], END_TOKEN]
    assert [t for t, _ in chunks[1]][:3] == [START_TOKEN, ab[1], END_TOKEN]


def test_embedding_pieces_follow_comfyui():
    """`embedding:` starts a piece only at a segment's start or after whitespace; the name ends at whitespace,
    `<` or `[`, and a name's trailing commas are read as text when only the bare name exists."""
    from twosamplers.models.embeddings import split_embedding_words

    assert split_embedding_words("a embedding:x b, embedding:y") == ["a ", "embedding:x b, ", "embedding:y"]
    assert split_embedding_words("a,embedding:x") == ["a,embedding:x"]  # no whitespace before it: plain text
    with pytest.warns(UserWarning, match="embedding:x"):
        chunks = spec().tokenize("embedding:x[c] d")
    assert [t for t, _ in chunks[0]][:5] == [START_TOKEN, 100 + ord("[") % 50, 100 + ord("c") % 50,
                                             100 + ord("]") % 50, 100 + ord("d") % 50]


def test_long_prompt_chunk_count():
    assert len(spec().tokenize("x " * 75)) == 1
    assert len(spec().tokenize("x " * 76)) == 2
    assert len(spec().tokenize("x " * 200)) == 3


def test_embedding_words_are_dropped_with_a_warning():
    with pytest.warns(UserWarning, match="embedding"):
        chunks = spec().tokenize("a embedding:foo b")
    assert [t for t, _ in chunks[0]][:4] == [START_TOKEN, 100 + ord("a") % 50, 100 + ord("b") % 50, END_TOKEN]


def test_clip_skip_normalization():
    assert normalize_clip_skip(None) is None
    assert normalize_clip_skip(-2) == -2 and normalize_clip_skip(2) == -2
    with pytest.raises(ValueError):
        normalize_clip_skip(0)


def test_real_clip_tokenizer_ids():
    pytest.importorskip("transformers")
    from twosamplers.models.sd_text import clip_tokenizer

    tok = clip_tokenizer()
    assert len(tok) == 49408
    assert tok("a photo of a cat", add_special_tokens=False)["input_ids"] == [320, 1125, 539, 320, 2368]
    chunks = TokenizerSpec(tok).tokenize("a photo of a cat")
    assert [t for t, _ in chunks[0]][:7] == [49406, 320, 1125, 539, 320, 2368, 49407]
