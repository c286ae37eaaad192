"""The training step learns: on one fixed batch of a small random model, MSE, LPIPS and the
regulariser's loss fall within 40 steps (fixed draws); the curve is printed.

The VSD weight is 0 here: with random weights the real score is noise, and its normalised gradient
(g / mean|x0 - x0_real|) dominates the clipped update, so the pixel losses do not fall in so few
steps. VSD is still computed and shown. The decoder's output layer is scaled down so that the random
decoder's image is not clamped at -1 / 1 almost everywhere (clamped pixels get no gradient)."""

import jax
import numpy as np
import pytest

from osediff_jax.metrics.lpips import lpips_params
from osediff_jax.training.state import TrainConfig, init_train_state
from osediff_jax.training.step import sample_draws
from osediff_jax.weights import bundle, random_sd
from tests import train_small as small

SIZE, STEPS, WINDOW = 32, 40, 10


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    folder = tmp_path_factory.mktemp("train") / "sd"
    random_sd.write_random_sd(folder, seed=4)
    return bundle.load(folder)


def test_losses_fall_on_a_fixed_batch(model):
    cfg = TrainConfig(learning_rate=2e-3, lambda_vsd=0.0, donate=False)
    state, frozen = init_train_state(model, lpips_params("vgg", None, random_backbone=True), jax.random.key(0), cfg)
    conv_out = frozen["vae"]["decoder"]["conv_out"]
    frozen["vae"]["decoder"]["conv_out"] = {**conv_out, "kernel": conv_out["kernel"] * 0.2}
    step_fn = small.step_fn(cfg)
    # The draws are fixed too: one objective, whose fall the regulariser's random t would hide in so few steps.
    draws = sample_draws(jax.random.key(1), (1, SIZE // 8, SIZE // 8, 4))

    yy, xx = np.mgrid[:SIZE, :SIZE] / SIZE
    gt = (np.stack([np.sin(6 * xx), np.cos(5 * yy), xx * yy], -1)[None] * 0.5 + 0.5).astype(np.float32)
    lq = gt[:, ::4, ::4].repeat(4, 1).repeat(4, 2)
    names = ("l2", "lpips", "reg", "vsd")
    curve = []
    for i in range(STEPS):
        state, m = step_fn(state, frozen, lq, gt, draws)
        curve.append([float(m[k]) for k in names])
        if i % 10 == 0 or i == STEPS - 1:
            print(f"step {i:3d}: " + ", ".join(f"{k} {v:.4f}" for k, v in zip(names, curve[-1])))
    curve = np.array(curve)
    first, last = curve[:WINDOW].mean(0), curve[-WINDOW:].mean(0)
    print(f"mean of the first / last {WINDOW} steps: " + ", ".join(f"{k} {a:.4f} -> {b:.4f}"
                                                                   for k, a, b in zip(names, first, last)))
    assert int(state["step"]) == STEPS and np.all(np.isfinite(curve))
    assert last[0] < 0.9 * first[0] and last[1] < 0.9 * first[1] and last[2] < first[2]
