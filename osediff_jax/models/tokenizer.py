"""CLIP tokenization of prompts as SD-2 does it: transformers' CLIPTokenizer, pad token `!`, 77 ids.

SD-2's `tokenizer/special_tokens_map.json` sets the pad token to `!` (id 0) while its
`tokenizer_config.json` still says `<|endoftext|>`; the special-tokens map wins, as it does in the
transformers version the reference release used. Like that release, a literal `!` in a prompt is
matched as the pad token and also becomes id 0 (open_clip's tokenizer gives it id 256 instead).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

# transformers announces at import that PyTorch is missing, which reads as if this package needed it;
# only its tokenizer is used here.
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
from transformers import CLIPTokenizer  # noqa: E402
from transformers.convert_slow_tokenizer import bytes_to_unicode  # noqa: E402,F401  (random_sd's vocabulary)

CONTEXT_LENGTH = 77
REQUIRED_FILES = ("vocab.json", "merges.txt")
SPECIAL_TOKENS = ("bos_token", "eos_token", "unk_token", "pad_token")


def _token_content(value: str | dict, path: Path, key: str) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and isinstance(value.get("content"), str):
        return value["content"]
    raise ValueError(f"{path}: {key}={value!r} is not supported; expected a string or an object "
                     f"with a string 'content'")


def load_tokenizer(folder: str | Path) -> CLIPTokenizer:
    """transformers' CLIPTokenizer from a diffusers `tokenizer/` folder (vocab.json, merges.txt,
    optionally special_tokens_map.json and tokenizer_config.json)."""
    folder = Path(folder)
    for name in REQUIRED_FILES:
        if not (folder / name).is_file():
            raise FileNotFoundError(f"{folder / name}: missing; a CLIP tokenizer folder needs "
                                    f"{' and '.join(REQUIRED_FILES)}")
    # Passed explicitly so that the special-tokens map decides on every transformers version.
    special = {}
    map_path = folder / "special_tokens_map.json"
    if map_path.is_file():
        with open(map_path, encoding="utf-8") as f:
            entries = json.load(f)
        special = {key: _token_content(entries[key], map_path, key)
                   for key in SPECIAL_TOKENS if key in entries}
    return CLIPTokenizer.from_pretrained(str(folder), **special)


def tokenize(tokenizer: CLIPTokenizer, prompts: list[str]) -> np.ndarray:
    """Token ids int32 [B, 77]: <start>, BPE ids, <end>, then pad ids; longer prompts are cut so
    that the 77th id is <end>. No attention mask: SD-2's text encoder attends to the padding."""
    if isinstance(prompts, str) or not all(isinstance(p, str) for p in prompts):
        raise TypeError(f"prompts must be a list of strings, got {prompts!r}")
    if not prompts:
        return np.zeros((0, CONTEXT_LENGTH), np.int32)
    ids = tokenizer(list(prompts), padding="max_length", max_length=CONTEXT_LENGTH, truncation=True,
                    return_tensors="np").input_ids
    return ids.astype(np.int32)
