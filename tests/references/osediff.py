"""The authors' OSEDiff pipeline rebuilt with diffusers + peft as their `osediff.py` builds it, with
random weights, saved as a real `osediff.pkl`: the reference for our import and `sr_fn`."""

from __future__ import annotations

import torch
from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
from peft import LoraConfig

from tests.references.sd import randomize_

UNET_GREP = ["to_k", "to_q", "to_v", "to_out.0", "conv", "conv1", "conv2", "conv_in", "conv_shortcut", "conv_out",
             "proj_out", "proj_in", "ff.net.2", "ff.net.0.proj"]
VAE_GREP = ["conv1", "conv2", "conv_in", "conv_shortcut", "conv", "conv_out", "to_k", "to_q", "to_v", "to_out.0"]


def authors_unet_lists(unet):
    enc, dec, oth = [], [], []
    for n, _ in unet.named_parameters():
        if "bias" in n or "norm" in n:
            continue
        for pattern in UNET_GREP:
            if pattern in n and ("down_blocks" in n or "conv_in" in n):
                enc.append(n.replace(".weight", ""))
                break
            elif pattern in n and ("up_blocks" in n or "conv_out" in n):
                dec.append(n.replace(".weight", ""))
                break
            elif pattern in n:
                oth.append(n.replace(".weight", ""))
                break
    return enc, dec, oth


def authors_vae_list(vae):
    out = []
    for n, _ in vae.named_parameters():
        if "bias" in n or "norm" in n:
            continue
        for pattern in VAE_GREP:
            if pattern in n and "encoder" in n:
                out.append(n.replace(".weight", ""))
            elif "quant_conv" in n and "post_quant_conv" not in n:
                out.append(n.replace(".weight", ""))
    return out


def build(unet_config: dict, vae_config: dict, folder, rank: int = 4, seed: int = 0):
    """Saves base weights to `folder/{unet,vae}` and `folder/osediff.pkl`; returns the adapted models."""
    unet = randomize_(UNet2DConditionModel(**unet_config), seed)
    vae = randomize_(AutoencoderKL(**vae_config), seed + 1)
    unet.save_pretrained(folder / "unet")
    vae.save_pretrained(folder / "vae")
    enc, dec, oth = authors_unet_lists(unet)
    for name, targets in (("default_encoder", enc), ("default_decoder", dec), ("default_others", oth)):
        unet.add_adapter(LoraConfig(r=rank, init_lora_weights="gaussian", target_modules=targets), adapter_name=name)
    unet.set_adapter(["default_encoder", "default_decoder", "default_others"])
    vae_list = authors_vae_list(vae)
    vae.add_adapter(LoraConfig(r=rank, init_lora_weights="gaussian", target_modules=vae_list),
                    adapter_name="default_encoder")
    vae.set_adapter(["default_encoder"])
    # Trained-looking values: non-zero B everywhere, and a changed conv_in.
    g = torch.Generator().manual_seed(seed + 2)
    with torch.no_grad():
        for model in (unet, vae):
            for n, p in model.named_parameters():
                if "lora_B" in n or "conv_in.base_layer" in n and model is unet:
                    p.add_(0.05 * torch.randn(p.shape, generator=g))
    sd = {"vae_lora_encoder_modules": vae_list, "unet_lora_encoder_modules": enc, "unet_lora_decoder_modules": dec,
          "unet_lora_others_modules": oth, "rank_unet": rank, "rank_vae": rank,
          "state_dict_unet": {k: v for k, v in unet.state_dict().items() if "lora" in k or "conv_in" in k},
          "state_dict_vae": {k: v for k, v in vae.state_dict().items() if "lora" in k}}
    torch.save(sd, folder / "osediff.pkl")
    return unet.eval(), vae.eval()


@torch.no_grad()
def forward(unet, vae, lq_m11: torch.Tensor, prompt_embeds: torch.Tensor) -> torch.Tensor:
    """The authors' OSEDiff_test.forward with the posterior mean (theirs samples, unseeded)."""
    scheduler = DDPMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, clip_sample=False)
    # diffusers 0.25's set_timesteps(1) stepped from 999 to "t = -1" (alpha_bar 1); newer diffusers
    # finds the previous step by index, so give it the one-step schedule that way.
    scheduler.num_inference_steps, scheduler.timesteps = 1, torch.tensor([999])
    t = torch.tensor([999])
    z = vae.encode(lq_m11).latent_dist.mean * 0.18215
    eps = unet(z, t, encoder_hidden_states=prompt_embeds).sample
    x0 = scheduler.step(eps, t, z, return_dict=True, generator=torch.Generator().manual_seed(0)).prev_sample
    return vae.decode(x0 / 0.18215).sample.clamp(-1, 1)


def load_authors(sd_folder, pkl_path):
    """(unet, vae) of an SD folder with an osediff.pkl applied as the authors' `OSEDiff_test.load_ckpt`
    does: peft adapters added from the pkl's module lists, then every "lora" / "conv_in" parameter
    copied from its state dicts."""
    ckpt = torch.load(pkl_path, map_location="cpu", weights_only=True)
    unet = UNet2DConditionModel.from_pretrained(sd_folder, subfolder="unet")
    vae = AutoencoderKL.from_pretrained(sd_folder, subfolder="vae")
    for name, key in (("default_encoder", "unet_lora_encoder_modules"), ("default_decoder", "unet_lora_decoder_modules"),
                      ("default_others", "unet_lora_others_modules")):
        unet.add_adapter(LoraConfig(r=ckpt["rank_unet"], init_lora_weights="gaussian", target_modules=ckpt[key]),
                         adapter_name=name)
    with torch.no_grad():
        for n, p in unet.named_parameters():
            if "lora" in n or "conv_in" in n:
                p.copy_(ckpt["state_dict_unet"][n])
    unet.set_adapter(["default_encoder", "default_decoder", "default_others"])
    vae.add_adapter(LoraConfig(r=ckpt["rank_vae"], init_lora_weights="gaussian",
                               target_modules=ckpt["vae_lora_encoder_modules"]), adapter_name="default_encoder")
    with torch.no_grad():
        for n, p in vae.named_parameters():
            if "lora" in n:
                p.copy_(ckpt["state_dict_vae"][n])
    vae.set_adapter(["default_encoder"])
    return unet.eval(), vae.eval()
