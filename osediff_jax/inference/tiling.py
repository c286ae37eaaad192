"""Any image size with bounded memory.

The VAE runs on the whole image (its attention a block of queries at a time: models/attention.py), so
its GroupNorm statistics are exact and there is nothing to stitch. The UNet, trained on 64x64
latents, runs on overlapping latent tiles when the latent is larger than one tile (the reference's
rule: h * w > tile**2), the last tile anchored to the edge; the tiles' eps predictions are blended
with weights that rise smoothly (sin^2) across each overlap, a partition of unity, and the one-step
update then runs on the whole latent. Sizes that are not multiples of the VAE's factor are padded
(reflection) and cropped back: the output always has the input's size.
"""

from __future__ import annotations

from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from osediff_jax.inference import color_fix as color_fix_lib
from osediff_jax.inference.core import TIMESTEP, generate


def tile_starts(n: int, tile: int, stride: int) -> list[int]:
    """Tile offsets covering [0, n): every `stride`, the last one anchored to the end."""
    if n <= tile:
        return [0]
    return list(range(0, n - tile, stride)) + [n - tile]


def blend_window(tile: int, overlap: int) -> np.ndarray:
    """1-D weights: sin^2 ramps over `overlap` at both ends, 1 between; never 0."""
    w = np.ones(tile, np.float32)
    overlap = min(overlap, tile // 2)
    if overlap > 0:
        ramp = np.sin(0.5 * np.pi * (np.arange(overlap) + 0.5) / overlap) ** 2
        w[:overlap], w[tile - overlap:] = ramp, ramp[::-1]
    return w


def tiled_eps(eps_fn: Callable[[jax.Array, jax.Array], jax.Array], z: jax.Array, context: jax.Array,
              tile: int, overlap: int, tile_batch: int) -> jax.Array:
    """eps over the whole latent [B, H, W, C] from tiles of at most `tile` x `tile`, `tile_batch` at a time."""
    b, h, w, c = z.shape
    th, tw = min(tile, h), min(tile, w)
    ys, xs = tile_starts(h, th, th - overlap), tile_starts(w, tw, tw - overlap)
    boxes = [(y, x) for y in ys for x in xs]
    tiles = jnp.stack([z[:, y:y + th, x:x + tw] for y, x in boxes])  # [N, B, th, tw, C]
    n = len(boxes) * b
    tiles = tiles.reshape(n, th, tw, c)
    ctx = jnp.broadcast_to(context[None], (len(boxes), b, *context.shape[1:])).reshape(n, *context.shape[1:])
    groups = -(-n // tile_batch)
    pad = groups * tile_batch - n
    tiles = jnp.concatenate([tiles, tiles[:pad]]) if pad else tiles
    ctx = jnp.concatenate([ctx, ctx[:pad]]) if pad else ctx
    eps = jax.lax.map(lambda args: eps_fn(*args),
                      (tiles.reshape(groups, tile_batch, th, tw, c), ctx.reshape(groups, tile_batch, *ctx.shape[1:])))
    eps = eps.reshape(groups * tile_batch, th, tw, c)[:n].reshape(len(boxes), b, th, tw, c).astype(jnp.float32)
    window = jnp.asarray(np.outer(blend_window(th, overlap), blend_window(tw, overlap)))[None, :, :, None]
    total = jnp.zeros((b, h, w, c), jnp.float32)
    weight = jnp.zeros((1, h, w, 1), jnp.float32)
    for i, (y, x) in enumerate(boxes):
        total = total.at[:, y:y + th, x:x + tw].add(eps[i] * window)
        weight = weight.at[:, y:y + th, x:x + tw].add(window)
    return total / weight


def make_upscale_fn(unet: nn.Module, vae: nn.Module, alphas_cumprod: np.ndarray, *, color_fix: str = "adain",
                    latent_tile: int = 96, latent_overlap: int = 32, tile_batch: int = 4) -> Callable[..., jax.Array]:
    """fn(params, lq, prompt_embeds, key=None) -> sr for any H x W (NHWC in [0, 1]); see the module doc."""
    color_fix_lib.check(color_fix)
    if not 0 <= latent_overlap < latent_tile:
        raise ValueError(f"latent_overlap={latent_overlap} must be in [0, latent_tile={latent_tile})")
    factor = 2 ** (len(vae.block_out_channels) - 1)
    alpha_bar = jnp.float32(alphas_cumprod[TIMESTEP])

    def fn(params: Any, lq: jax.Array, prompt_embeds: jax.Array, key: jax.Array | None = None) -> jax.Array:
        lq = lq.astype(jnp.float32)
        _, h, w, _ = lq.shape
        ph, pw = -h % factor, -w % factor
        x = jnp.pad(lq, ((0, 0), (0, ph), (0, pw), (0, 0)), mode="reflect" if min(h, w) > max(ph, pw) else "edge")
        context = jnp.broadcast_to(prompt_embeds, (lq.shape[0], *prompt_embeds.shape[-2:]))

        def unet_eps(zt: jax.Array, ct: jax.Array) -> jax.Array:
            return unet.apply({"params": params["unet"]}, zt, jnp.full((zt.shape[0],), TIMESTEP), ct)

        def eps_fn(z: jax.Array, ct: jax.Array) -> jax.Array:
            if z.shape[1] * z.shape[2] <= latent_tile**2:
                return unet_eps(z, ct)
            return tiled_eps(unet_eps, z, ct, latent_tile, latent_overlap, tile_batch)

        _, out = generate(unet, vae, params, x * 2.0 - 1.0, context, alpha_bar, key=key, eps_fn=eps_fn)
        return color_fix_lib.apply(color_fix, out[:, :h, :w] * 0.5 + 0.5, lq)

    return fn
