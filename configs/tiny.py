"""The embedded default: the whole training pipeline in minutes on a laptop's CPU, with no downloads.

    python -m osediff_jax.train --config configs/tiny.py --workdir tiny_run

A small SD-shaped model with RANDOM weights (written into the workdir), trained on photographs that
scikit-image ships (64-pixel crops, batch 4), LPIPS with a random VGG (said on screen), validation
on two other bundled photographs. It ends with the exported model, validation strips and one
upscaled sample image in the workdir. It shows the pipeline; real results need the SD-2.1-base
weights and real data (configs/a100x4.py, gpu1.py, gpu24gb.py).
"""

import ml_collections

from osediff_jax.training.config import train_fields


def get_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.sd_path = ""  # SD-2.1-base (diffusers folder or our bundle); empty: a random small model
    c.lpips_weights = ""  # folder with vgg16-397923af.pth and lpips_vgg.pth (and the LPIPS-alex files)
    c.random_lpips = True  # only with the random model
    c.data = ml_collections.ConfigDict(dict(
        skimage_photos=True,  # scikit-image's bundled photographs instead of `sources`
        sources=(),  # folders or list files of HQ images; "path:N" keeps the first N
        dir="tfds", name="hq_images", crop=64, workers=0))
    c.batch_size = 4  # global, over every device and process
    c.steps = 300
    c.log_every = 10
    c.checkpoint_every = 100
    c.keep = 3
    c.export_every = 0  # 0: only at the end
    c.val = ml_collections.ConfigDict(dict(every=150, hr_dir="", lq_dir="", count=2, crop=64, seed=0))
    c.fsdp = 1  # devices per model replica that share the frozen weights and optimiser states
    # A larger rate than the paper's 5e-5: the random model has to move in a few hundred steps.
    c.train = train_fields(learning_rate=2e-4)
    return c
