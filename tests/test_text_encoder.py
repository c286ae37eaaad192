"""Parity of the Flax CLIP text encoder with transformers' CLIPTextModel (random weights saved
with save_pretrained as safetensors, read back without torch)."""

import gc
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers
from conftest import SHARED
from safetensors.numpy import load_file
from safetensors.torch import save_file as save_torch_file

from osediff_jax.models.text_encoder import CLIPTextModel

SD21_CONFIG = SHARED / "reference" / "sd21-base" / "text_encoder" / "config.json"

SMALL = dict(vocab_size=1000, hidden_size=64, intermediate_size=256, num_hidden_layers=2,
             num_attention_heads=4, max_position_embeddings=77, layer_norm_eps=1e-5,
             bos_token_id=998, eos_token_id=999, pad_token_id=1)


def state_dict_to_params(state: dict[str, np.ndarray], target: dict) -> dict:
    """torch state dict -> Flax params by the project's mechanical rules: `.N.` joins its list
    name as `name_N`; Linear weight [out, in] -> kernel [in, out]; LayerNorm weight -> scale;
    Embedding weight -> embedding; buffers (position_ids) dropped. `target` (from eval_shape)
    tells which of kernel/scale/embedding a weight is. transformers 5 saves CLIPTextModel without
    the `text_model.` prefix that SD checkpoints (transformers 4) have; both are accepted."""
    params: dict = {}
    for key in list(state):
        value = state.pop(key)  # frees each numpy array once it is converted
        if key.endswith("position_ids"):
            continue
        key = key if key.startswith("text_model.") else "text_model." + key
        parts = key.split(".")
        path = []
        for part in parts[:-1]:
            if part.isdigit():
                path[-1] = f"{path[-1]}_{part}"
            else:
                path.append(part)
        node = target
        for name in path:
            node = node[name]
        leaf = parts[-1]
        if leaf == "weight":
            leaf = next(name for name in ("kernel", "scale", "embedding") if name in node)
            value = value.T if leaf == "kernel" else value
        assert node[leaf].shape == value.shape, (key, node[leaf].shape, value.shape)
        sub = params
        for name in path:
            sub = sub.setdefault(name, {})
        sub[leaf] = jnp.asarray(value)
    return params


def prompt_like_ids(rng: np.random.Generator, vocab_size: int, lengths: list[int]) -> np.ndarray:
    """[B, 77] ids shaped like tokenized prompts: <start>, tokens, <end>, pad 0 (ids < vocab)."""
    bos, eos = vocab_size - 2, vocab_size - 1
    ids = np.zeros((len(lengths), 77), np.int64)
    for row, n in zip(ids, lengths):
        n = min(n, 75)  # longer prompts are truncated to keep <end> at position 76
        row[0], row[1:n + 1], row[n + 1] = bos, rng.integers(1, bos, n), eos
    return ids


def randomize_(model: torch.nn.Module, seed: int) -> None:
    """Non-trivial values for every parameter (transformers inits biases to 0 and LN to 1)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "layer_norm" in name and name.endswith("weight"):
                p.copy_(1 + 0.2 * torch.randn(p.shape, generator=gen))
            elif name.endswith("bias"):
                p.copy_(0.05 * torch.randn(p.shape, generator=gen))


def run_ours(model: CLIPTextModel, params: dict, ids: np.ndarray) -> np.ndarray:
    out = jax.jit(model.apply)({"params": params}, jnp.asarray(ids, jnp.int32))
    return np.asarray(out.astype(jnp.float32))


def rel_err(ours: np.ndarray, ref: np.ndarray) -> float:
    return float(np.abs(ours - ref).max() / np.abs(ref).max())


def build_and_save(config: dict, tmp_path, seed: int, legacy_names: bool):
    """A random transformers CLIPTextModel, saved and read back as numpy; returns the model."""
    torch.manual_seed(seed)
    ref_model = transformers.CLIPTextModel(transformers.CLIPTextConfig(**config)).float().eval()
    randomize_(ref_model, seed)
    folder = tmp_path / "text_encoder"
    if legacy_names:  # the layout of SD-2.1's file (transformers 4): prefix and position_ids
        ref_model.config.save_pretrained(folder)
        state = {"text_model." + k: v for k, v in ref_model.state_dict().items()}
        state["text_model.embeddings.position_ids"] = torch.arange(77)[None]
        save_torch_file(state, folder / "model.safetensors", metadata={"format": "pt"})
    else:
        ref_model.save_pretrained(folder)
    return ref_model


def load_ours(tmp_path, dtype=jnp.float32):
    folder = tmp_path / "text_encoder"
    config = json.loads((folder / "config.json").read_text())
    model = CLIPTextModel.from_config(config, dtype=dtype, param_dtype=jnp.float32,
                                      source=str(folder / "config.json"))
    target = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 77), jnp.int32))["params"]
    return model, state_dict_to_params(load_file(folder / "model.safetensors"), target)


@pytest.mark.parametrize("act,legacy_names", [("gelu", True), ("quick_gelu", False)])
def test_small_config_matches_transformers(tmp_path, act, legacy_names):
    ref_model = build_and_save(dict(SMALL, hidden_act=act), tmp_path, seed=0, legacy_names=legacy_names)
    ids = prompt_like_ids(np.random.default_rng(0), SMALL["vocab_size"], [3, 20, 80])
    with torch.no_grad():
        ref = ref_model(torch.from_numpy(ids)).last_hidden_state.numpy()
    model, params = load_ours(tmp_path)
    ours = run_ours(model, params, ids)
    assert ours.shape == ref.shape == (3, 77, SMALL["hidden_size"])
    err = rel_err(ours, ref)
    print(f"\nsmall config, {act}: float32 max|ours-ref|/max|ref| = {err:.2e}")
    assert err <= 1e-5


def test_bf16_compute_error_small_config(tmp_path):
    ref_model = build_and_save(dict(SMALL, hidden_act="gelu"), tmp_path, seed=1, legacy_names=False)
    ids = prompt_like_ids(np.random.default_rng(1), SMALL["vocab_size"], [5, 40])
    with torch.no_grad():
        ref = ref_model(torch.from_numpy(ids)).last_hidden_state.numpy()
    model16, params = load_ours(tmp_path, dtype=jnp.bfloat16)
    out16 = jax.jit(model16.apply)({"params": params}, jnp.asarray(ids, jnp.int32))
    assert out16.dtype == jnp.bfloat16
    assert all(p.dtype == jnp.float32 for p in jax.tree_util.tree_leaves(params))
    err = rel_err(np.asarray(out16.astype(jnp.float32)), ref)
    print(f"\nsmall config, bf16 compute / float32 params: max|ours-ref|/max|ref| = {err:.2e}")
    assert err <= 5e-2


def test_sd21_config_matches_transformers(tmp_path):
    if not SD21_CONFIG.is_file():
        pytest.skip(f"{SD21_CONFIG} not present (../shared is absent)")
    config = json.loads(SD21_CONFIG.read_text())
    # The stored dtype says float16; the reference must run in float32.
    ref_model = build_and_save({k: v for k, v in config.items() if k != "torch_dtype"}, tmp_path,
                               seed=2, legacy_names=True)
    ids = prompt_like_ids(np.random.default_rng(2), config["vocab_size"], [7, 90])
    with torch.no_grad():
        ref = ref_model(torch.from_numpy(ids)).last_hidden_state.numpy()
    del ref_model
    gc.collect()
    # Our model is built from the exact SD-2.1 config, stale token ids and all.
    (tmp_path / "text_encoder" / "config.json").write_text(json.dumps(config))
    model, params = load_ours(tmp_path)
    ours = run_ours(model, params, ids)
    assert ours.shape == ref.shape == (2, 77, 1024)
    err = rel_err(ours, ref)
    print(f"\nSD-2.1 config: float32 max|ours-ref|/max|ref| = {err:.2e}")
    assert err <= 1e-4
    # The bf16 compute path on the same float32 parameters, measured against the same reference.
    model16 = CLIPTextModel.from_config(config, dtype=jnp.bfloat16, param_dtype=jnp.float32)
    err16 = rel_err(run_ours(model16, params, ids), ref)
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
