"""Parameter names: a torch module name `a.b.0.c` is the Flax path `a/b_0/c` (diffusers and
transformers number list entries; Flax modules carry the index in their name)."""

from __future__ import annotations

import re

# Module-list names whose index diffusers/transformers join with "." (`resnets.0`); other names
# ending in _N are plain names (`linear_1`) and stay as they are when mapping back.
LIST_NAMES = ("down_blocks", "up_blocks", "resnets", "attentions", "downsamplers", "upsamplers",
              "transformer_blocks", "to_out", "net", "layers", "blocks", "layer")  # the last two: RAM's Swin and BERT
_LIST_RE = re.compile(rf"^({'|'.join(LIST_NAMES)})_(\d+)$")


def torch_key_to_path(key: str) -> tuple[str, ...]:
    out: list[str] = []
    for part in key.split("."):
        if part.isdigit() and out:
            out[-1] = f"{out[-1]}_{part}"
        else:
            out.append(part)
    return tuple(out)


def path_to_torch_key(path: tuple[str, ...]) -> str:
    return ".".join(m.expand(r"\1.\2") if (m := _LIST_RE.match(p)) else p for p in path)
