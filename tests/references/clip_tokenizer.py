"""SD-2's real CLIP tokenizer folder, rebuilt from the BPE merges open_clip ships (no download)."""

import gzip
import json
import shutil

from open_clip.tokenizer import bytes_to_unicode, default_bpe


def write_clip_tokenizer_folder(dst, special_tokens_dir) -> None:
    """vocab.json and merges.txt as the CLIP/SD tokenizer folders have them, built from the BPE
    merges open_clip ships, plus SD-2's real special_tokens_map.json and tokenizer_config.json."""
    dst.mkdir(parents=True, exist_ok=True)
    # CLIP uses the first 49152 - 256 - 2 merges; ids: 256 bytes, 256 bytes + </w>, merges, specials.
    merges = gzip.open(default_bpe()).read().decode("utf-8").split("\n")[1:49152 - 256 - 2 + 1]
    byte_chars = list(bytes_to_unicode().values())
    vocab = (byte_chars + [c + "</w>" for c in byte_chars] + ["".join(m.split()) for m in merges]
             + ["<|startoftext|>", "<|endoftext|>"])
    (dst / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(vocab)}), encoding="utf-8")
    (dst / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    for name in ("special_tokens_map.json", "tokenizer_config.json"):
        shutil.copy(special_tokens_dir / name, dst / name)
