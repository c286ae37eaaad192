"""The embedded default: the whole training pipeline in minutes on a laptop's CPU, with no downloads.

    python -m osediff_jax.train --config configs/tiny.py --workdir tiny_run

A small SD-shaped model with RANDOM weights (written into the workdir), trained on photographs that
scikit-image ships (64-pixel crops, batch 4) with LPIPS-alex on a random backbone (said on screen;
the paper's VGG16 would take half of this small model's step), validation on two other bundled
photographs. It ends with the exported model, validation strips and one upscaled sample image in
the workdir. It shows the pipeline; real results need the SD-2.1-base weights and real data
(configs/a100x4.py, gpu1.py, gpu24gb.py).
"""

import ml_collections

from osediff_jax.training.config import base


def get_config() -> ml_collections.ConfigDict:
    c = base()
    c.sd_path = ""
    c.lpips_weights = ""
    c.random_lpips = True
    c.ram_path = ""
    c.data.skimage_photos = True
    c.data.sources = ()
    c.data.name = "skimage_photos"
    c.data.crop = 64
    c.batch_size = 4
    c.steps = 300
    c.checkpoint_every = 100
    c.export_every = 0
    c.val.update(every=150, hr_dir="", count=2, crop=64)
    # A larger rate than the paper's 5e-5: the random model has to move in a few hundred steps.
    c.train.learning_rate = 2e-4
    c.train.lpips_net = "alex"
    return c
