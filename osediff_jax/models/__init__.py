"""Linen modules of SD-2.x (UNet, VAE, CLIP text encoder, NHWC, diffusers parameter names), their
building blocks and attention, LoRA trees, the noise schedule and the CLIP tokenizer.
May import: files."""
