"""The Flax CLIP text encoder against transformers' CLIPTextModel on the same random weights, saved
as real safetensors files and loaded by our loader (no torch on our side)."""

import gc
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers
from safetensors.torch import save_file

from osediff_jax.models.text_encoder import CLIPTextModel
from osediff_jax.weights import diffusers_format
from tests.references.sd import SHARED_SD, randomize_, rel_err

pytestmark = pytest.mark.reference

torch.set_grad_enabled(False)

SMALL = dict(vocab_size=1000, hidden_size=64, intermediate_size=256, num_hidden_layers=2,
             num_attention_heads=4, max_position_embeddings=77, layer_norm_eps=1e-5,
             bos_token_id=998, eos_token_id=999, pad_token_id=1)


def prompt_like_ids(rng: np.random.Generator, vocab_size: int, lengths: list[int]) -> np.ndarray:
    """[B, 77] ids shaped like tokenized prompts: <start>, tokens, <end>, pad 0 (ids < vocab)."""
    bos, eos = vocab_size - 2, vocab_size - 1
    ids = np.zeros((len(lengths), 77), np.int64)
    for row, n in zip(ids, lengths):
        n = min(n, 75)  # longer prompts are truncated to keep <end> at position 76
        row[0], row[1:n + 1], row[n + 1] = bos, rng.integers(1, bos, n), eos
    return ids


def save_reference(config: dict, folder, seed: int, legacy_names: bool) -> transformers.CLIPTextModel:
    """A random transformers CLIPTextModel saved in `folder/text_encoder`, either by
    save_pretrained (transformers 5 drops the `text_model.` prefix) or in the layout of SD-2.1's
    file (written by transformers 4: `text_model.` prefix and the `position_ids` buffer)."""
    torch.manual_seed(seed)
    ref = randomize_(transformers.CLIPTextModel(transformers.CLIPTextConfig(**config)).float(), seed)
    out = folder / "text_encoder"
    if legacy_names:
        ref.config.save_pretrained(out)
        state = {"text_model." + k: v for k, v in ref.state_dict().items()}
        state["text_model.embeddings.position_ids"] = torch.arange(config["max_position_embeddings"])[None]
        save_file(state, out / "model.safetensors", metadata={"format": "pt"})
    else:
        ref.save_pretrained(out)
    return ref


def load_ours(folder, dtype=jnp.float32):
    return diffusers_format.load_component(folder, "text_encoder", dtype=dtype)[:2]


def run(module: CLIPTextModel, params: dict, ids: np.ndarray) -> jax.Array:
    return jax.jit(module.apply)({"params": params}, jnp.asarray(ids, jnp.int32))


@pytest.mark.parametrize("act,legacy_names", [("gelu", True), ("quick_gelu", False)])
def test_small_config_matches_transformers(tmp_path, act, legacy_names):
    ref = save_reference({**SMALL, "hidden_act": act}, tmp_path, seed=0, legacy_names=legacy_names)
    ids = prompt_like_ids(np.random.default_rng(0), SMALL["vocab_size"], [3, 20, 80])
    want = ref(torch.from_numpy(ids)).last_hidden_state.numpy()
    module, params = load_ours(tmp_path)
    assert module.hidden_act == act
    got = run(module, params, ids)
    assert got.shape == want.shape == (3, 77, SMALL["hidden_size"])
    err = rel_err(got, want)
    print(f"\nsmall config, {act}: float32 max|ours-ref|/max|ref| = {err:.2e}")
    assert err <= 1e-5


def test_bf16_compute_error_small_config(tmp_path):
    ref = save_reference({**SMALL, "hidden_act": "gelu"}, tmp_path, seed=1, legacy_names=True)
    ids = prompt_like_ids(np.random.default_rng(1), SMALL["vocab_size"], [5, 40])
    want = ref(torch.from_numpy(ids)).last_hidden_state.numpy()
    module, params = load_ours(tmp_path, dtype=jnp.bfloat16)
    got = run(module, params, ids)
    assert got.dtype == jnp.bfloat16
    assert all(p.dtype == jnp.float32 for p in jax.tree_util.tree_leaves(params))
    err = rel_err(got.astype(jnp.float32), want)
    print(f"\nsmall config, bf16 compute / float32 params: max|ours-ref|/max|ref| = {err:.2e}")
    assert err <= 5e-2


def test_sd21_config_matches_transformers(tmp_path):
    config_path = SHARED_SD / "text_encoder" / "config.json"
    if not config_path.is_file():
        pytest.skip(f"{config_path} not present (../shared is absent)")
    config = json.loads(config_path.read_text())
    # The stored dtype says float16; the reference must run in float32.
    ref = save_reference({k: v for k, v in config.items() if k != "torch_dtype"}, tmp_path, seed=2,
                         legacy_names=True)
    ids = prompt_like_ids(np.random.default_rng(2), config["vocab_size"], [7, 90])
    want = ref(torch.from_numpy(ids)).last_hidden_state.numpy()
    del ref
    gc.collect()
    # Our side reads the exact SD-2.1 config, stale token ids and all.
    (tmp_path / "text_encoder" / "config.json").write_text(json.dumps(config))
    module, params = load_ours(tmp_path)
    got = run(module, params, ids)
    assert got.shape == want.shape == (2, 77, 1024)
    err = rel_err(got, want)
    print(f"\nSD-2.1 config: float32 max|ours-ref|/max|ref| = {err:.2e}")
    assert err <= 1e-4
    # The bf16 compute path on the same float32 parameters, against the same reference.
    module16 = CLIPTextModel.from_config(config, dtype=jnp.bfloat16, param_dtype=jnp.float32)
    err16 = rel_err(run(module16, params, ids).astype(jnp.float32), want)
    print(f"SD-2.1 config, bf16 compute / float32 params: max|ours-ref|/max|ref| = {err16:.2e}")
    assert err16 <= 5e-2


@pytest.mark.parametrize("key,value", [("hidden_act", "gelu_new"), ("hidden_act", "relu"),
                                       ("model_type", "bert"), ("attention_dropout", 0.1),
                                       ("rope_theta", 10000.0)])
def test_unsupported_config_value_is_named(key, value):
    config = {**SMALL, "hidden_act": "gelu", "model_type": "clip_text_model", key: value}
    with pytest.raises(ValueError, match=rf"text_encoder/config\.json: .*{key}={value!r}"):
        CLIPTextModel.from_config(config, dtype=jnp.float32, param_dtype=jnp.float32,
                                  source="text_encoder/config.json")
