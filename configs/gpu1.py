"""The paper's setup on one 80 GB GPU: global batch 16 as 4 micro-batches of 4 (gradient
accumulation: one update per 16 images, as on 4 GPUs), bf16 compute, frozen weights stored in bf16.

    python -m osediff_jax.train --config configs/gpu1.py --workdir runs/gpu1 \\
        --config.sd_path=stable-diffusion-2-1-base --config.lpips_weights=weights --config.ram_path=ram_swin_large_14m.pth \\
        --config.data.sources="('LSDIR/HR', 'ffhq:10000')" --config.val.hr_dir=RealSR/HR
"""

import ml_collections

from osediff_jax.training.config import base


def get_config() -> ml_collections.ConfigDict:
    c = base()
    c.dtype = "bfloat16"
    c.train.frozen_dtype = "bfloat16"
    c.train.micro_batches = 4
    return c
