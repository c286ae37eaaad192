"""`sr_fn(params, lq)`: the authors' whole inference pipeline (tags of the upsampled LQ -> prompt ids
-> CLIP -> UNet -> SR) as one jitted function, against the same steps one by one with the tokenizer
on the host; and a stored prompt embedding. A small random SD model (`weights.random_sd`) and a small
random RAM-shaped tagger (its parity with the PyTorch reference is `test_ram.py`'s)."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from osediff_jax.inference import tagger
from osediff_jax.inference.sr import encode_prompt, make_sr_fn
from osediff_jax.models.ram import RAM, RAMConfig
from osediff_jax.models.tag_prompts import load_tag_list, tag_table, user_suffix
from osediff_jax.models.tokenizer import load_tokenizer, tokenize
from osediff_jax.training import prompts
from osediff_jax.weights import bundle, random_sd

CFG = RAMConfig(image_size=96, embed_dim=16, depths=(2, 2), num_heads=(2, 4), window_size=6, num_classes=40,
                embed_width=24, head_layers=2, head_hidden=32, head_heads=4, head_intermediate=64)
NAMES = [f"thing {i}" if i % 4 else f"x-{i})" for i in range(CFG.num_classes)]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    folder = tmp_path_factory.mktemp("sd") / "sd"
    random_sd.write_random_sd(folder)
    model = bundle.load(folder)
    ram = RAM(CFG)
    ram_params = ram.init(jax.random.key(0), jnp.zeros((1, 96, 96, 3)))["params"]
    # Flax initialises label_embed to zeros (every tag alike): give it values, as a checkpoint has.
    ram_params = {**ram_params, "label_embed": jax.random.normal(jax.random.key(1), ram_params["label_embed"].shape)}
    return model, ram, ram_params, load_tokenizer(model.tokenizer_dir)


def test_sr_fn_of_lq_alone_equals_step_by_step(setup):
    model, ram, ram_params, tok = setup
    te, te_params = model.modules["text_encoder"], model.params["text_encoder"]
    lq = jax.random.uniform(jax.random.key(2), (2, 32, 32, 3))
    logits = np.asarray(jax.jit(lambda p, x: tagger.tag_logits(ram, p, x))(ram_params, lq))
    thresholds = np.full(CFG.num_classes, np.median(1 / (1 + np.exp(-logits))), np.float32)
    present = 1 / (1 + np.exp(-logits)) > thresholds
    assert present.any(axis=1).all() and not present.all(axis=1).any()

    prompt_fn = tagger.make_prompt_fn(ram, te, tag_table(tok, NAMES), thresholds, user_suffix(tok, "sharp"))
    sr_fn = make_sr_fn(model.modules["unet"], model.modules["vae"], model.alphas_cumprod, prompt_fn=prompt_fn)
    base = {"unet": model.params["unet"], "vae": model.params["vae"]}
    ours = np.asarray(jax.jit(sr_fn)({**base, "prompt": {"ram": ram_params, "text_encoder": te_params}}, lq))

    prompts = [", ".join(n for n, on in zip(NAMES, row) if on) + ", sharp," for row in present]
    emb = encode_prompt(te, te_params, tokenize(tok, prompts))
    want = np.asarray(jax.jit(sr_fn)(base, lq, emb))
    assert np.abs(ours - want).max() <= 1e-4 * (want.max() - want.min())
    # prompt_embeds = f(images) compiles once per batch shape.
    fn = jax.jit(prompt_fn)
    for seed in (8, 9):
        fn({"ram": ram_params, "text_encoder": te_params}, jax.random.uniform(jax.random.key(seed), lq.shape))
    assert fn._cache_size() == 1
    # The prompts matter: the empty prompt gives another image.
    empty = encode_prompt(te, te_params, tokenize(tok, [""]))
    assert np.abs(np.asarray(jax.jit(sr_fn)(base, lq, empty)) - want).max() > 1e-3


def test_stored_prompt_embedding(setup):
    model, *_ = setup
    sr_fn = jax.jit(make_sr_fn(model.modules["unet"], model.modules["vae"], model.alphas_cumprod))
    base = {"unet": model.params["unet"], "vae": model.params["vae"]}
    emb = encode_prompt(model.modules["text_encoder"], model.params["text_encoder"],
                        tokenize(load_tokenizer(model.tokenizer_dir), ["a photo"]))
    lq = jax.random.uniform(jax.random.key(3), (1, 32, 32, 3))
    np.testing.assert_array_equal(np.asarray(sr_fn({**base, "prompt_embeds": emb}, lq)), np.asarray(sr_fn(base, lq, emb)))
    with pytest.raises(ValueError, match="sr_fn needs prompt embeddings"):
        sr_fn(base, lq)


def test_ram_training_prompts(setup):
    """The training hook: RAM's tags of the GT crop ([-1, 1] in the step), ", ".join(tags), encoded."""
    model, *_ = setup
    te, te_params = model.modules["text_encoder"], model.params["text_encoder"]
    ram = RAM(dataclasses.replace(CFG, num_classes=4585))
    params = ram.init(jax.random.key(5), jnp.zeros((1, 96, 96, 3)))["params"]
    params = {**params, "label_embed": jax.random.normal(jax.random.key(6), params["label_embed"].shape)}
    gt = jax.random.uniform(jax.random.key(7), (2, 64, 64, 3), minval=-1.0, maxval=1.0)
    emb = jax.jit(prompts.ram_prompt(ram, te, model.tokenizer_dir))(prompts.with_ram({}, params, te_params), gt)

    names, thresholds = load_tag_list()
    present = np.asarray(jax.nn.sigmoid(tagger.tag_logits(ram, params, gt * 0.5 + 0.5))) > thresholds
    assert present.any(axis=1).all() and not present.all(axis=1).any()
    joined = [", ".join(n for n, on in zip(names, row) if on) for row in present]
    want = np.asarray(te.apply({"params": te_params}, tokenize(load_tokenizer(model.tokenizer_dir), joined)))
    assert emb.shape == want.shape and emb.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(emb), want, rtol=0, atol=1e-5 * np.abs(want).max())
