"""Tags -> prompt ids on the device against transformers' CLIPTokenizer on the joined string, with
SD-2's real tokenizer (rebuilt from open_clip's BPE merges): every RAM tag alone, 1,000 random tag
subsets in both prompt formats (some longer than 77 ids), and made-up tags with the characters the
RAM list lacks (non-ASCII letters, punctuation that CLIP merges with the comma)."""

import numpy as np
import pytest

import jax
from osediff_jax.models.tag_prompts import load_tag_list, prompt_ids, tag_table, user_suffix
from osediff_jax.models.tokenizer import load_tokenizer, tokenize
from tests.references import SHARED
from tests.references.clip_tokenizer import write_clip_tokenizer_folder

pytestmark = pytest.mark.reference

EXTRA_TAGS = ["café", "naïve art", "Ünïcödé", "日本", "x)", "(round)", "rock 'n' roll", "well-known", "3D", "co.",
              "a!b", "tag ,", "Ελληνικά", "r&b", "50s", "rubik's"]


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tokenizer")
    write_clip_tokenizer_folder(folder, SHARED / "reference" / "sd21-base" / "tokenizer")
    return load_tokenizer(folder)


def _check(tokenizer, tags, present, suffix_text=None):
    table = tag_table(tokenizer, tags)
    suffix = None if suffix_text is None else user_suffix(tokenizer, suffix_text)
    ours = np.asarray(jax.jit(lambda t, p: prompt_ids(t, p, suffix))(table, present))
    joined = [", ".join(t for t, on in zip(tags, row) if on) for row in present]
    if suffix_text is not None:
        joined = [f"{j}, {suffix_text}," for j in joined]
    ref = tokenize(tokenizer, joined)
    for i in range(len(joined)):
        np.testing.assert_array_equal(ours[i], ref[i], err_msg=repr(joined[i]))
    return ref


def test_tag_list():
    tags, thresholds = load_tag_list()
    assert len(tags) == len(set(tags)) == 4585 and tags[0] == "3D CG rendering"
    assert thresholds.shape == (4585,) and 0.45 <= thresholds.min() and thresholds.max() <= 1.0


def test_every_tag_alone(tokenizer):
    tags, _ = load_tag_list()
    _check(tokenizer, tags, np.eye(len(tags), dtype=bool))


@pytest.mark.parametrize("suffix_text", [None, "", "clean, high-resolution, 8k"])
def test_random_subsets(tokenizer, suffix_text):
    tags, _ = load_tag_list()
    rng = np.random.default_rng(0)
    n = 1000 if suffix_text is None else 200
    # Mostly the 0-12 tags of a typical image; every 10th subset long enough to be truncated.
    counts = np.where(np.arange(n) % 10 == 0, rng.integers(20, 60, n), rng.integers(0, 13, n))
    present = np.zeros((n, len(tags)), bool)
    for row, k in zip(present, counts):
        row[rng.choice(len(tags), k, replace=False)] = True
    ref = _check(tokenizer, tags, present, suffix_text)
    assert (ref[:, -1] == tokenizer.eos_token_id).sum() >= n // 20  # truncation was exercised


@pytest.mark.parametrize("suffix_text", [None, "", "a photo!"])
def test_made_up_tags(tokenizer, suffix_text):
    rng = np.random.default_rng(1)
    present = np.concatenate([np.eye(len(EXTRA_TAGS), dtype=bool), np.zeros((1, len(EXTRA_TAGS)), bool),
                              np.ones((1, len(EXTRA_TAGS)), bool), rng.random((50, len(EXTRA_TAGS))) < 0.4])
    _check(tokenizer, EXTRA_TAGS, present, suffix_text)
    # The case the per-tag table exists for: ")" and the joining comma become one token.
    assert len(tokenizer("x),", add_special_tokens=False).input_ids) == 2
