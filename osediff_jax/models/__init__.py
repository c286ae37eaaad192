"""Linen modules of SD-2.x: UNet, VAE and CLIP text encoder, NHWC, diffusers parameter names."""
