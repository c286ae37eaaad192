"""The CLIP text encoder of SD-2.x (transformers' `CLIPTextModel`) as Flax linen modules.

The module tree mirrors the transformers state-dict keys (`text_model.encoder.layers.0.mlp.fc1`
-> `text_model/encoder/layers_0/mlp/fc1`), so converting a checkpoint is a mechanical mapping.
Only `last_hidden_state` is computed: SD-2 conditions on it and never uses the pooled output.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp

from osediff_jax.models.attention import dot_product_attention
from osediff_jax.models.layers import gelu

ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "gelu": gelu,  # exact erf GELU, as torch's nn.GELU()
    "quick_gelu": lambda x: x * jax.nn.sigmoid(1.702 * x),
}

# transformers' CLIPTextConfig defaults, used for keys a config.json leaves out.
ARCHITECTURE_DEFAULTS: dict[str, Any] = {
    "vocab_size": 49408,
    "hidden_size": 512,
    "intermediate_size": 2048,
    "num_hidden_layers": 12,
    "num_attention_heads": 8,
    "max_position_embeddings": 77,
    "hidden_act": "quick_gelu",
    "layer_norm_eps": 1e-5,
}

# Keys whose only supported value is the one transformers writes by default: anything else
# would change the forward pass in a way this implementation does not reproduce.
FIXED_VALUES: dict[str, tuple[Any, ...]] = {
    "model_type": ("clip_text_model",),
    "architectures": (["CLIPTextModel"],),
    "attention_dropout": (0, 0.0),
    "dropout": (0, 0.0),
    "pruned_heads": ({},),
    "is_decoder": (False,),
    "add_cross_attention": (False,),
    "chunk_size_feed_forward": (0,),
}

# Keys that do not affect `last_hidden_state` (bookkeeping, initialisation, the stale token ids
# of SD-2's config, the unused projection head size, generation and output options).
IGNORED_KEYS = frozenset({
    "_name_or_path", "transformers_version", "torch_dtype", "dtype", "_commit_hash",
    "bos_token_id", "eos_token_id", "pad_token_id", "sep_token_id", "decoder_start_token_id",
    "projection_dim", "initializer_range", "initializer_factor",
    "return_dict", "output_hidden_states", "output_attentions", "torchscript", "use_bfloat16",
    "tf_legacy_loss", "tie_word_embeddings", "is_encoder_decoder", "tie_encoder_decoder",
    "cross_attention_hidden_size", "finetuning_task", "id2label", "label2id", "tokenizer_class",
    "prefix", "task_specific_params", "problem_type", "max_length", "min_length", "do_sample",
    "early_stopping", "num_beams", "num_beam_groups", "diversity_penalty", "temperature", "top_k",
    "top_p", "typical_p", "repetition_penalty", "length_penalty", "no_repeat_ngram_size",
    "encoder_no_repeat_ngram_size", "bad_words_ids", "num_return_sequences", "output_scores",
    "return_dict_in_generate", "forced_bos_token_id", "forced_eos_token_id",
    "remove_invalid_values", "exponential_decay_length_penalty", "suppress_tokens",
    "begin_suppress_tokens",
})


class CLIPAttention(nn.Module):
    hidden_size: int
    num_heads: int
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32

    def setup(self) -> None:
        dense = lambda: nn.Dense(self.hidden_size, dtype=self.dtype, param_dtype=self.param_dtype)
        self.q_proj, self.k_proj, self.v_proj, self.out_proj = dense(), dense(), dense(), dense()

    def __call__(self, x: jax.Array) -> jax.Array:
        heads = lambda y: y.reshape(*y.shape[:2], self.num_heads, -1)
        length = x.shape[1]
        causal = jnp.tril(jnp.ones((length, length), dtype=bool))
        # Causal only: no padding mask, SD-2 attends to the pad tokens. [1, 1, L, L] broadcasts.
        bias = jnp.where(causal, 0.0, jnp.finfo(jnp.float32).min).astype(jnp.float32)[None, None]
        out = dot_product_attention(heads(self.q_proj(x)), heads(self.k_proj(x)), heads(self.v_proj(x)),
                                    bias=bias)
        return self.out_proj(out.reshape(*x.shape[:2], self.hidden_size))


class CLIPMLP(nn.Module):
    hidden_size: int
    intermediate_size: int
    hidden_act: str
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32

    def setup(self) -> None:
        self.fc1 = nn.Dense(self.intermediate_size, dtype=self.dtype, param_dtype=self.param_dtype)
        self.fc2 = nn.Dense(self.hidden_size, dtype=self.dtype, param_dtype=self.param_dtype)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.fc2(ACTIVATIONS[self.hidden_act](self.fc1(x)))


class CLIPEncoderLayer(nn.Module):
    """Pre-LN transformer block: x + attn(ln1(x)), then x + mlp(ln2(x))."""

    hidden_size: int
    intermediate_size: int
    num_heads: int
    hidden_act: str
    layer_norm_eps: float
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32

    def setup(self) -> None:
        norm = lambda: nn.LayerNorm(self.layer_norm_eps, dtype=self.dtype, param_dtype=self.param_dtype)
        self.layer_norm1, self.layer_norm2 = norm(), norm()
        self.self_attn = CLIPAttention(self.hidden_size, self.num_heads, self.dtype, self.param_dtype)
        self.mlp = CLIPMLP(self.hidden_size, self.intermediate_size, self.hidden_act, self.dtype,
                           self.param_dtype)

    def __call__(self, x: jax.Array) -> jax.Array:
        x = x + self.self_attn(self.layer_norm1(x))
        return x + self.mlp(self.layer_norm2(x))


class CLIPEncoder(nn.Module):
    num_layers: int
    hidden_size: int
    intermediate_size: int
    num_heads: int
    hidden_act: str
    layer_norm_eps: float
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32

    def setup(self) -> None:
        # A list attribute named `layers` gets the submodule names layers_0, layers_1, ...
        self.layers = [
            CLIPEncoderLayer(self.hidden_size, self.intermediate_size, self.num_heads, self.hidden_act,
                             self.layer_norm_eps, self.dtype, self.param_dtype)
            for _ in range(self.num_layers)
        ]

    def __call__(self, x: jax.Array) -> jax.Array:
        for layer in self.layers:
            x = layer(x)
        return x


class CLIPTextEmbeddings(nn.Module):
    vocab_size: int
    max_position_embeddings: int
    hidden_size: int
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32

    def setup(self) -> None:
        self.token_embedding = nn.Embed(self.vocab_size, self.hidden_size, dtype=self.dtype,
                                        param_dtype=self.param_dtype)
        self.position_embedding = nn.Embed(self.max_position_embeddings, self.hidden_size,
                                           dtype=self.dtype, param_dtype=self.param_dtype)

    def __call__(self, input_ids: jax.Array) -> jax.Array:
        positions = jnp.arange(input_ids.shape[-1])[None]
        return self.token_embedding(input_ids) + self.position_embedding(positions)


class CLIPTextTransformer(nn.Module):
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    max_position_embeddings: int
    hidden_act: str
    layer_norm_eps: float
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32

    def setup(self) -> None:
        self.embeddings = CLIPTextEmbeddings(self.vocab_size, self.max_position_embeddings,
                                             self.hidden_size, self.dtype, self.param_dtype)
        self.encoder = CLIPEncoder(self.num_hidden_layers, self.hidden_size, self.intermediate_size,
                                   self.num_attention_heads, self.hidden_act, self.layer_norm_eps,
                                   self.dtype, self.param_dtype)
        self.final_layer_norm = nn.LayerNorm(self.layer_norm_eps, dtype=self.dtype,
                                             param_dtype=self.param_dtype)

    def __call__(self, input_ids: jax.Array) -> jax.Array:
        return self.final_layer_norm(self.encoder(self.embeddings(input_ids)))


class CLIPTextModel(nn.Module):
    """input_ids [B, L] (L <= max_position_embeddings) -> last_hidden_state [B, L, hidden_size].

    Causal attention and no padding mask, as SD-2 runs it (the pad tokens are attended to).
    """

    vocab_size: int = ARCHITECTURE_DEFAULTS["vocab_size"]
    hidden_size: int = ARCHITECTURE_DEFAULTS["hidden_size"]
    intermediate_size: int = ARCHITECTURE_DEFAULTS["intermediate_size"]
    num_hidden_layers: int = ARCHITECTURE_DEFAULTS["num_hidden_layers"]
    num_attention_heads: int = ARCHITECTURE_DEFAULTS["num_attention_heads"]
    max_position_embeddings: int = ARCHITECTURE_DEFAULTS["max_position_embeddings"]
    hidden_act: str = ARCHITECTURE_DEFAULTS["hidden_act"]
    layer_norm_eps: float = ARCHITECTURE_DEFAULTS["layer_norm_eps"]
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32

    def setup(self) -> None:
        if self.hidden_act not in ACTIVATIONS:
            raise ValueError(f"hidden_act={self.hidden_act!r} is not supported; expected one of "
                             f"{tuple(ACTIVATIONS)}")
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(f"hidden_size={self.hidden_size} is not a multiple of "
                             f"num_attention_heads={self.num_attention_heads}")
        self.text_model = CLIPTextTransformer(
            self.vocab_size, self.hidden_size, self.intermediate_size, self.num_hidden_layers,
            self.num_attention_heads, self.max_position_embeddings, self.hidden_act,
            self.layer_norm_eps, self.dtype, self.param_dtype)

    def __call__(self, input_ids: jax.Array) -> jax.Array:
        if input_ids.shape[-1] > self.max_position_embeddings:
            raise ValueError(f"input_ids has length {input_ids.shape[-1]}; the text encoder takes at "
                             f"most max_position_embeddings={self.max_position_embeddings}")
        return self.text_model(input_ids)

    @classmethod
    def from_config(cls, config: Mapping[str, Any], *, dtype: jnp.dtype = jnp.float32,
                    param_dtype: jnp.dtype = jnp.float32,
                    source: str = "text_encoder/config.json") -> "CLIPTextModel":
        """Build from a transformers `text_encoder/config.json` dict.

        Keys transformers writes at their defaults are accepted; an unknown key or an unsupported
        value is a ValueError naming `source`, the key and the value.
        """
        for key, value in config.items():
            if key in ARCHITECTURE_DEFAULTS or key in IGNORED_KEYS:
                continue
            if key not in FIXED_VALUES:
                raise ValueError(f"{source}: unknown key {key}={value!r}")
            if value not in FIXED_VALUES[key]:
                raise ValueError(f"{source}: {key}={value!r} is not supported; expected "
                                 f"{FIXED_VALUES[key][0]!r}")
        arch = {key: config.get(key, default) for key, default in ARCHITECTURE_DEFAULTS.items()}
        if arch["hidden_act"] not in ACTIVATIONS:
            raise ValueError(f"{source}: hidden_act={arch['hidden_act']!r} is not supported; "
                             f"expected one of {tuple(ACTIVATIONS)}")
        for key in ARCHITECTURE_DEFAULTS:
            if key in ("hidden_act", "layer_norm_eps"):
                continue
            if not isinstance(arch[key], int) or isinstance(arch[key], bool) or arch[key] <= 0:
                raise ValueError(f"{source}: {key}={arch[key]!r} is not supported; expected a "
                                 f"positive integer")
        if not isinstance(arch["layer_norm_eps"], (int, float)) or not arch["layer_norm_eps"] > 0:
            raise ValueError(f"{source}: layer_norm_eps={arch['layer_norm_eps']!r} is not "
                             f"supported; expected a positive number")
        if arch["hidden_size"] % arch["num_attention_heads"]:
            raise ValueError(f"{source}: hidden_size={arch['hidden_size']} is not a multiple of "
                             f"num_attention_heads={arch['num_attention_heads']}")
        return cls(**arch, dtype=dtype, param_dtype=param_dtype)
