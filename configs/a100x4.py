"""The paper's setup: SD-2.1-base, LSDIR + the first 10k FFHQ faces, global batch 16 on 4 GPUs (4 per
GPU), lr 5e-5, LoRA rank 4, loss weights 1 / 2 / 1 (MSE / LPIPS-vgg / VSD), CFG 7.5 with the
authors' negative prompt, 512 crops, a checkpoint every 500 steps, bf16 compute.

    python -m osediff_jax.train --config configs/a100x4.py --workdir runs/a100x4 \\
        --config.sd_path=stable-diffusion-2-1-base --config.lpips_weights=weights --config.ram_path=ram_swin_large_14m.pth \\
        --config.data.sources="('LSDIR/HR', 'ffhq:10000')" --config.val.hr_dir=RealSR/HR

Prompts: RAM's tags of each GT crop, as the authors train (`ram_path`; '' for a fixed empty prompt).
The shards are built under data.dir at the first start and reused after.
"""

import ml_collections

from osediff_jax.training.config import base


def get_config() -> ml_collections.ConfigDict:
    c = base()
    c.dtype = "bfloat16"
    return c
