"""The training configuration, the trainable sets with their optimisers, and the train state
(the authors' `train_osediff.py` and `osediff.py`)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import optax

from osediff_jax.data.degradation import DegradationConfig
from osediff_jax.models import lora
from osediff_jax.weights import osediff_pkl
from osediff_jax.weights.diffusers_format import StableDiffusion
from osediff_jax.training import prompts
from osediff_jax.training.unmerged import REMAT

REGULARIZER_LORA = ("full", "mid_block")
LPIPS_NETS = ("vgg", "alex")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """The authors' defaults (`train_osediff.py` arguments and launch script) unless noted."""

    lambda_l2: float = 1.0
    lambda_lpips: float = 2.0
    lambda_vsd: float = 1.0
    lambda_reg: float = 1.0  # their lambda_vsd_lora
    cfg_vsd: float = 7.5
    # The LPIPS network of the generator's loss: "vgg" as the authors; "alex" is 20x cheaper at the
    # same crop (configs/tiny.py, where VGG16 would take half of the small model's step).
    lpips_net: str = "vgg"
    # "full": the regulariser LoRA on every UNet target, as the paper intends; "mid_block": only the
    # mid-block adapter, which is what the authors' code trains: the last of its three `add_adapter`
    # calls (`osediff.py`) leaves `default_others` active everywhere; layers without it skip LoRA.
    regularizer_lora: str = "full"
    rank: int = 4
    learning_rate: float = 5e-5
    adam_b1: float = 0.9
    adam_b2: float = 0.999
    weight_decay: float = 1e-2
    adam_eps: float = 1e-8
    max_grad_norm: float = 1.0
    prompt: str = ""  # the fixed prompt; the authors use RAM tags of the GT (a PromptSource)
    negative_prompt: str = prompts.NEGATIVE_PROMPT
    frozen_dtype: str = "float32"  # storage of the frozen base UNet and VAE; "bfloat16" halves them
    # Fold LoRA into the kernels inside the step, as inference does, instead of applying it unmerged:
    # the same gradients with full-size kernel gradients formed; kept to measure that cost.
    merged_lora: bool = False
    # What the backward pass stores (`unmerged.py`): "elementwise" keeps each block's input and layer
    # outputs and recomputes norms, activations and softmax; "blocks" recomputes whole blocks (the
    # forward's FLOPs again, least memory); "none" keeps whatever autodiff saves (most memory).
    remat: str = "elementwise"
    micro_batches: int = 1  # gradient accumulation: the batch is split, one update per step
    donate: bool = True  # the step reuses the state's buffers for the new state
    degradation: DegradationConfig = DegradationConfig()

    def __post_init__(self):
        if self.lpips_net not in LPIPS_NETS:
            raise ValueError(f"lpips_net={self.lpips_net!r}; expected one of {LPIPS_NETS}")
        if self.regularizer_lora not in REGULARIZER_LORA:
            raise ValueError(f"regularizer_lora={self.regularizer_lora!r}; expected one of {REGULARIZER_LORA}")
        if self.remat not in REMAT:
            raise ValueError(f"remat={self.remat!r}; expected one of {REMAT}")
        if self.micro_batches < 1:
            raise ValueError(f"micro_batches={self.micro_batches}; expected at least 1")


def optimizer(config: TrainConfig) -> optax.GradientTransformation:
    """AdamW (torch's decoupled weight decay; constant rate) behind global-norm clipping, as each of the
    authors' two optimisers. It is only ever given trainable trees, so frozen weights have no state."""
    return optax.chain(
        optax.clip_by_global_norm(config.max_grad_norm),
        optax.adamw(config.learning_rate, config.adam_b1, config.adam_b2, config.adam_eps,
                    weight_decay=config.weight_decay))


def regularizer_modules(unet_shapes: Any, mode: str) -> list[str]:
    """The UNet modules of the regulariser LoRA: every target, or the mid-block ones (`default_others`)."""
    lists = lora.unet_target_lists(unet_shapes)
    return lists["default_others"] if mode == "mid_block" else [m for ms in lists.values() for m in ms]


def _f32(tree: Any) -> Any:
    return jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), tree)


def train_state(w: osediff_pkl.OSEDiffWeights, unet_shapes: Any, reg_key: jax.Array, run_key: jax.Array,
                config: TrainConfig = TrainConfig()) -> dict:
    """The state of `init_train_state` for generator weights `w`, with a fresh regulariser LoRA drawn
    from `reg_key`. Needs only the base UNet's shapes (`jax.ShapeDtypeStruct`s will do), so a state for
    the full model can be built without its weights."""
    if (w.rank_unet, w.rank_vae) != (config.rank, config.rank):
        raise ValueError(f"the OSEDiff weights have ranks {w.rank_unet}/{w.rank_vae}; config.rank is {config.rank}")
    gen = _f32({"unet_lora": w.unet_lora, "conv_in": w.conv_in, "vae_lora": w.vae_lora})
    reg = _f32({"unet_lora": lora.init(reg_key, unet_shapes, regularizer_modules(unet_shapes, config.regularizer_lora),
                                      config.rank)})
    opt = optimizer(config)
    return {"step": jnp.zeros((), jnp.int32), "key": run_key, "gen": gen, "reg": reg,
            "gen_opt": opt.init(gen), "reg_opt": opt.init(reg)}


def init_train_state(model: StableDiffusion, lpips_params: Any, key: jax.Array, config: TrainConfig = TrainConfig(),
                     osediff: str | Path | osediff_pkl.OSEDiffWeights | None = None) -> tuple[dict, dict]:
    """(state, frozen) for `step.make_train_step`, from an SD-2.x model (`weights.bundle.load` of our
    checkpoint or a diffusers folder; its text encoder encodes the prompts once).

    `osediff` warm-starts the generator from an `osediff.pkl`, our OSEDiff checkpoint or weights in
    memory; without it the generator LoRA is peft's seeded gaussian init and `conv_in` the base one.
    `key` is split into (generator LoRA, regulariser LoRA, run key).

    state (float32, donated to the step):
        step      int32 []
        key       the run's PRNG key (the loop passes fold_in(key, step) to the step)
        gen       {"unet_lora": LoRA tree (3 adapters), "conv_in": {"kernel", "bias"},
                   "vae_lora": LoRA tree (encoder + quant_conv)}
        reg       {"unet_lora": LoRA tree (every target, or the mid block)}
        gen_opt   optax state of `optimizer(config)` over gen
        reg_opt   optax state of `optimizer(config)` over reg
    frozen (never updated; `frozen_dtype`):
        unet, vae       the base parameters (the one copy shared by generator, fake and real score)
        lpips           LPIPS parameters of `config.lpips_net` (float32)
        prompt_embeds   [1, 77, C] the fixed prompt; neg_embeds [1, 77, C] the negative prompt
    LoRA trees have `lora.py`'s layout: module path -> {"lora_A": {"kernel"}, "lora_B": {"kernel"}}.
    """
    unet_params, vae_params = model.params["unet"], model.params["vae"]
    k_gen, k_reg, k_run = jax.random.split(key, 3)
    if osediff is None:
        w = osediff_pkl.new(k_gen, unet_params, vae_params, unet_params, config.rank)
    elif isinstance(osediff, osediff_pkl.OSEDiffWeights):
        w = osediff
    else:
        w = osediff_pkl.load(osediff, unet_params, vae_params)
    state = train_state(w, unet_params, k_reg, k_run, config)
    emb = prompts.encode(model.modules["text_encoder"], model.params["text_encoder"], model.tokenizer_dir,
                         [config.prompt, config.negative_prompt])
    cast = lambda tree: jax.tree.map(lambda x: jnp.asarray(x, config.frozen_dtype), tree)
    frozen = {"unet": cast(unet_params), "vae": cast(vae_params), "lpips": _f32(lpips_params),
              "prompt_embeds": emb[:1], "neg_embeds": emb[1:]}
    return state, frozen
