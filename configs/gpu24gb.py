"""The paper's setup on one 24 GB GPU: global batch 16 as 16 micro-batches of 1 (one update per 16
images), whole UNet/VAE blocks recomputed in the backward pass (remat "blocks"), bf16 compute and
frozen weights. XLA's GPU compiler plans 4.9 GiB for this step at batch 1 with the prompt embeddings
given (`python -m benchmarks.train_memory --run b1-remat --gpu-target h100_sxm.txtpb`, compiled without a
GPU; BENCHMARKS.md, training memory); the RAM tagger inside the step adds its weights and activations.
Not yet run on a GPU.

    python -m osediff_jax.train --config configs/gpu24gb.py --workdir runs/gpu24gb \\
        --config.sd_path=stable-diffusion-2-1-base --config.lpips_weights=weights --config.ram_path=ram_swin_large_14m.pth \\
        --config.data.sources="('LSDIR/HR', 'ffhq:10000')" --config.val.hr_dir=RealSR/HR
"""

import ml_collections

from osediff_jax.training.config import base


def get_config() -> ml_collections.ConfigDict:
    c = base()
    c.dtype = "bfloat16"
    c.train.frozen_dtype = "bfloat16"
    c.train.micro_batches = 16
    c.train.remat = "blocks"
    c.val.count = 8
    return c
