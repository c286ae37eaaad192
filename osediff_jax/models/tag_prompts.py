"""RAM tags -> SD-2 prompt ids on the device, equal to CLIPTokenizer on the joined prompt.

The authors join the present tags in index order with ", " (`ram/models/ram_lora.py`,
`generate_tag`); training uses that string as the prompt (`train_osediff.py`), inference appends the
user's prompt as f"{tags}, {user}," (`test_osediff.py`). CLIP's BPE works word by word, and words
end at spaces, so every tag followed by its ", " tokenizes the same wherever it stands: the ids of
f"{tag}," are precomputed once per tag. They are not always the tag's ids plus the comma's: CLIP's
pre-tokenizer keeps runs of punctuation together, so "x)," is the single token "),". The last tag
of a training prompt has no comma, so the tag alone is kept too. Assembling a prompt is then a
scatter of the present tags' ids behind <start>, truncated to 75 ids, <end>, padding: the same ids
as `tokenizer.tokenize` on the string, without leaving the device.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from transformers import CLIPTokenizer

from osediff_jax.models.tokenizer import CONTEXT_LENGTH

DATA = Path(__file__).parent / "ram_data"


def load_tag_list() -> tuple[list[str], np.ndarray]:
    """RAM's 4585 tags in output order and their thresholds (float32 [4585]): tag i is present when
    sigmoid(logit_i) > threshold_i. The authors' `max_threthold`/`add_threthold` adjustment leaves
    every threshold of the file as it is (0.9 / 0)."""
    tags = (DATA / "ram_tag_list.txt").read_text(encoding="utf-8").splitlines()
    thresholds = np.array([float(s) for s in (DATA / "ram_tag_list_threshold.txt").read_text().split()], np.float32)
    if len(tags) != len(thresholds):
        raise ValueError(f"{DATA}: {len(tags)} tags but {len(thresholds)} thresholds")
    return tags, thresholds


class TagTable(NamedTuple):
    """Per-tag BPE ids, right-padded: a pytree to pass into jit."""

    ids: jax.Array  # int32 [N, L]: ids of f"{tag},", a tag that a ", " follows
    lengths: jax.Array  # int32 [N]
    last_ids: jax.Array  # int32 [N, L]: ids of the tag alone, the last tag of a training prompt
    last_lengths: jax.Array  # int32 [N]
    special: jax.Array  # int32 [4]: <start>, <end>, pad, ","


def _padded(seqs: list[list[int]], width: int) -> np.ndarray:
    out = np.zeros((len(seqs), width), np.int32)
    for i, s in enumerate(seqs):
        out[i, : len(s)] = s
    return out


def tag_table(tokenizer: CLIPTokenizer, tags: Sequence[str]) -> TagTable:
    """The table of `tags` (`load_tag_list()[0]`, or any list) for `tokenizer`."""
    with_comma = tokenizer([f"{t}," for t in tags], add_special_tokens=False).input_ids
    alone = tokenizer(list(tags), add_special_tokens=False).input_ids
    comma = tokenizer(",", add_special_tokens=False).input_ids
    if len(comma) != 1:
        raise ValueError(f"the tokenizer splits ',' into {comma}; expected one id")
    width = max(1, *map(len, with_comma))
    special = [tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id, comma[0]]
    return TagTable(jnp.asarray(_padded(with_comma, width)), jnp.asarray([len(s) for s in with_comma], jnp.int32),
                    jnp.asarray(_padded(alone, width)), jnp.asarray([len(s) for s in alone], jnp.int32),
                    jnp.asarray(special, jnp.int32))


def user_suffix(tokenizer: CLIPTokenizer, user_prompt: str) -> np.ndarray:
    """The ids that follow the tags at inference: those of f"{user_prompt}," (the reference's
    f"{tags}, {user}," ends with the user's prompt and a comma; an empty one leaves the comma)."""
    return np.asarray(tokenizer(f"{user_prompt},", add_special_tokens=False).input_ids, np.int32)


def prompt_text(tags: Sequence[str], present: np.ndarray, user_prompt: str | None = None) -> str:
    """The prompt string of one image's tag decisions (bool [N]): ", ".join(tags), or with
    `user_prompt` the inference format f"{tags}, {user},"."""
    joined = ", ".join(t for t, on in zip(tags, present) if on)
    return joined if user_prompt is None else f"{joined}, {user_prompt},"


def prompt_ids(table: TagTable, present: jax.Array, suffix: np.ndarray | None = None) -> jax.Array:
    """int32 [B, 77] ids of the prompts of `present` (bool [B, N]), jittable.

    suffix None: the training prompt ", ".join(tags). Otherwise (`user_suffix`) the inference prompt
    f"{', '.join(tags)}, {user},", which starts with ", " when no tag is present."""
    b, n = present.shape
    idx = jnp.arange(n)
    if suffix is None:
        last = jnp.max(jnp.where(present, idx, -1), axis=-1)
        is_last = idx == last[:, None]
        ids = jnp.where(is_last[..., None], table.last_ids, table.ids)
        lengths = jnp.where(is_last, table.last_lengths, table.lengths) * present
    else:
        # Two more spans after the tags: the comma of an empty tag string, then the suffix.
        suffix = jnp.asarray(suffix, jnp.int32)
        width = max(table.ids.shape[1], suffix.shape[0], 1)
        pad = lambda x: jnp.pad(x, ((0, 0), (0, width - x.shape[1])))
        tails = jnp.stack([pad(table.special[3][None, None])[0], pad(suffix[None])[0]])
        ids = jnp.concatenate([jnp.broadcast_to(pad(table.ids), (b, n, width)),
                               jnp.broadcast_to(tails, (b, 2, width))], axis=1)
        lengths = table.lengths * present
        no_tags = jnp.sum(lengths, axis=-1) == 0
        lengths = jnp.concatenate([lengths, no_tags[:, None].astype(jnp.int32),
                                   jnp.full((b, 1), suffix.shape[0], jnp.int32)], axis=1)
    lengths = lengths.astype(jnp.int32)
    start = 1 + jnp.cumsum(lengths, axis=-1) - lengths  # after <start>
    pos = start[..., None] + jnp.arange(ids.shape[-1])
    keep = (jnp.arange(ids.shape[-1]) < lengths[..., None]) & (pos < CONTEXT_LENGTH - 1)
    pos = jnp.where(keep, pos, CONTEXT_LENGTH)  # out of range: dropped by the scatter
    bos, eos, pad_id = table.special[0], table.special[1], table.special[2]
    out = jnp.full((b, CONTEXT_LENGTH), pad_id, jnp.int32).at[:, 0].set(bos)
    rows = jnp.broadcast_to(jnp.arange(b)[:, None, None], pos.shape)
    out = out.at[rows, pos].set(ids, mode="drop")
    end = jnp.minimum(1 + jnp.sum(lengths, axis=-1), CONTEXT_LENGTH - 1)
    return out.at[jnp.arange(b), end].set(eos)
