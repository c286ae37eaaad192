"""The one-step generator: its forward core, `sr_fn`, tiling, colour fix, LQ upsampling, and the
file-to-file upscaler the `upscale` command runs.
May import: files, models, weights, data."""
