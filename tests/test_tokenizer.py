"""Tokenizer parity with open_clip.tokenize (an independent implementation of the same CLIP BPE)."""

import shutil

import numpy as np
import open_clip
import pytest

from osediff_jax.models.tokenizer import CONTEXT_LENGTH, load_tokenizer, tokenize
from tests.references import SHARED
from tests.references.clip_tokenizer import write_clip_tokenizer_folder

pytestmark = pytest.mark.reference

SD21_TOKENIZER = SHARED / "reference" / "sd21-base" / "tokenizer"

PROMPTS = {
    "empty": "",
    "short": "a photo of a cat",
    "spaces": "  Leading,\tTABS and\nnew lines  ",
    "long": "high resolution photograph of an old stone bridge over a quiet river, " * 12,
    "unicode": "Café crème brûlée, naïve — 日本語の写真 🐱 Ünïcödé Ελληνικά русский العربية",
    "combining": "cafe\u0301 de\u0301ja\u0300 vu",
}


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
    if not SD21_TOKENIZER.is_dir():
        pytest.skip(f"{SD21_TOKENIZER} not present (../shared is absent)")
    folder = tmp_path_factory.mktemp("tokenizer")
    write_clip_tokenizer_folder(folder, SD21_TOKENIZER)
    return folder


def test_ids_match_open_clip(tokenizer_dir):
    names = list(PROMPTS)
    ours = tokenize(load_tokenizer(tokenizer_dir), [PROMPTS[n] for n in names])
    ref = open_clip.tokenize([PROMPTS[n] for n in names]).numpy()
    assert ours.dtype == np.int32 and ours.shape == (len(names), CONTEXT_LENGTH)
    for i, name in enumerate(names):
        np.testing.assert_array_equal(ours[i], ref[i], err_msg=f"prompt {name!r}")
    # The long prompt really is truncated: 77 ids, the last one <|endoftext|>, no padding.
    long_row = ours[names.index("long")]
    assert long_row[-1] == 49407 and 0 not in long_row


def test_pad_token_comes_from_special_tokens_map(tokenizer_dir, tmp_path):
    tok = load_tokenizer(tokenizer_dir)
    assert tok.pad_token == "!" and tok.pad_token_id == 0
    ids = tokenize(tok, ["a cat"])[0]
    np.testing.assert_array_equal(ids[:4], [49406, tok.convert_tokens_to_ids("a</w>"),
                                            tok.convert_tokens_to_ids("cat</w>"), 49407])
    assert (ids[4:] == 0).all()
    # Without the map, tokenizer_config.json's stale pad token <|endoftext|> would be used.
    for name in ("vocab.json", "merges.txt", "tokenizer_config.json"):
        shutil.copy(tokenizer_dir / name, tmp_path / name)
    assert (tokenize(load_tokenizer(tmp_path), ["a cat"])[0, 4:] == 49407).all()


def test_literal_exclamation_mark_is_the_pad_token(tokenizer_dir):
    # transformers (4.x, which the reference ran, and 5.x alike) matches "!" as the special pad
    # token, so it gets id 0 where open_clip gives "!</w>" id 256: we keep the reference's ids.
    tok = load_tokenizer(tokenizer_dir)
    ours = tokenize(tok, ["hi !"])[0]
    ref = open_clip.tokenize(["hi !"])[0].numpy()
    assert ref[2] == tok.convert_tokens_to_ids("!</w>") and ours[2] == tok.pad_token_id == 0
    np.testing.assert_array_equal(np.delete(ours, 2), np.delete(ref, 2))


@pytest.mark.parametrize("missing", ["vocab.json", "merges.txt"])
def test_missing_file_is_named(tokenizer_dir, tmp_path, missing):
    for name in ("vocab.json", "merges.txt", "special_tokens_map.json"):
        if name != missing:
            shutil.copy(tokenizer_dir / name, tmp_path / name)
    with pytest.raises(FileNotFoundError, match=missing.replace(".", r"\.")):
        load_tokenizer(tmp_path)
