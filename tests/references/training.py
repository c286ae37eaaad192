"""The authors' training step (`train_osediff.py` with `OSEDiff_gen` / `OSEDiff_reg` of `osediff.py`)
rebuilt with diffusers + peft + lpips in float32 on the CPU, with every random draw given: the
reference for our `osediff_jax.training.step`. Models come from a diffusers folder, adapters are added as the
authors add them, and the generator starts from an `osediff.pkl` written here with non-zero LoRA B."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
from peft import LoraConfig

from osediff_jax.models.names import torch_key_to_path
from osediff_jax.weights.torch_format import to_flax_layout
from tests.references.osediff import authors_unet_lists, authors_vae_list

ADAPTERS = ["default_encoder", "default_decoder", "default_others"]


def initialize_unet(folder: Path, rank: int):
    """The authors' `initialize_unet`: three `add_adapter` calls (the last one leaves only
    `default_others` active, their quirk)."""
    unet = UNet2DConditionModel.from_pretrained(folder / "unet")
    unet.requires_grad_(False)
    unet.train()
    lists = authors_unet_lists(unet)
    for name, targets in zip(ADAPTERS, lists):
        unet.add_adapter(LoraConfig(r=rank, init_lora_weights="gaussian", target_modules=targets), adapter_name=name)
    return unet, lists


def initialize_vae(folder: Path, rank: int):
    vae = AutoencoderKL.from_pretrained(folder / "vae")
    vae.requires_grad_(False)
    vae.train()
    targets = authors_vae_list(vae)
    vae.add_adapter(LoraConfig(r=rank, init_lora_weights="gaussian", target_modules=targets),
                    adapter_name="default_encoder")
    return vae, targets


def flax_path(name: str) -> tuple[str, ...]:
    """A trainable torch parameter name -> its path in our generator / regulariser trees."""
    parts = name.split(".")
    if "base_layer" in parts:  # conv_in.base_layer.weight/bias, trained in full
        return ("conv_in", "kernel" if parts[-1] == "weight" else "bias")
    return torch_key_to_path(".".join(parts[:-3])) + (parts[-3], "kernel")


def to_ours(name: str, t: torch.Tensor) -> np.ndarray:
    return to_flax_layout(t.detach().numpy().copy(), "bias" if name.endswith("bias") else "kernel")


class ReferenceStep:
    """One training step of the authors' loop: generator loss, backward, clip, AdamW; then the
    regulariser loss, backward, clip, AdamW. `regularizer_lora="full"` activates all three
    regulariser adapters (the paper's intent); "mid_block" keeps the authors' code as it is."""

    def __init__(self, folder: Path, lpips_net: torch.nn.Module, regularizer_lora: str, rank: int = 4,
                 seed: int = 0, cfg_vsd: float = 7.5, lr: float = 5e-5):
        torch.manual_seed(seed)
        self.cfg_vsd = cfg_vsd
        # OSEDiff_gen
        self.unet, unet_lists = initialize_unet(folder, rank)
        self.vae, vae_list = initialize_vae(folder, rank)
        self.lists = {"unet": unet_lists, "vae": vae_list}
        g = torch.Generator().manual_seed(seed + 1)
        with torch.no_grad():  # trained-looking values: non-zero B everywhere and a changed conv_in
            for model in (self.unet, self.vae):
                for n, p in model.named_parameters():
                    if "lora_B" in n or (model is self.unet and "conv_in.base_layer" in n):
                        p.add_(0.05 * torch.randn(p.shape, generator=g))
        for n, p in self.unet.named_parameters():  # set_train
            p.requires_grad_("lora" in n)
        self.unet.conv_in.requires_grad_(True)
        for n, p in self.vae.named_parameters():
            p.requires_grad_("lora" in n)
        self.vae.set_adapter(["default_encoder"])
        self.unet.set_adapter(ADAPTERS)
        # OSEDiff_reg
        self.unet_fix = UNet2DConditionModel.from_pretrained(folder / "unet").requires_grad_(False)
        self.unet_update, _ = initialize_unet(folder, rank)
        if regularizer_lora == "full":
            self.unet_update.set_adapter(ADAPTERS)
        with torch.no_grad():
            for n, p in self.unet_update.named_parameters():
                if "lora_B" in n:
                    p.add_(0.05 * torch.randn(p.shape, generator=g))
        for n, p in self.unet_update.named_parameters():
            p.requires_grad_("lora" in n)
        self.lpips = lpips_net.requires_grad_(False)
        self.scheduler = DDPMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
                                       clip_sample=False)
        # diffusers 0.25's set_timesteps(1) stepped from 999 to "t = -1" (alpha_bar 1); newer diffusers
        # finds the previous step by index, so give it the one-step schedule that way.
        self.scheduler.num_inference_steps, self.scheduler.timesteps = 1, torch.tensor([999])
        # The authors' list names conv_in's LoRA twice ("lora" parameters, then conv_in.parameters()),
        # and torch's AdamW then updates those two tensors twice per step and the clipping counts
        # their gradient twice. We train each parameter once, so the reference here is deduplicated.
        authors = [p for n, p in self.unet.named_parameters() if "lora" in n] + list(self.unet.conv_in.parameters())
        authors += [p for n, p in self.vae.named_parameters() if "lora" in n]
        self.duplicates = len(authors) - len({id(p) for p in authors})
        self.gen_params = {**{f"unet.{n}": p for n, p in self.unet.named_parameters() if p.requires_grad},
                           **{f"vae.{n}": p for n, p in self.vae.named_parameters() if p.requires_grad}}
        self.reg_params = {n: p for n, p in self.unet_update.named_parameters() if "lora" in n}
        adamw = dict(lr=lr, betas=(0.9, 0.999), weight_decay=1e-2, eps=1e-8)
        self.opt = torch.optim.AdamW(list(self.gen_params.values()), **adamw)
        self.opt_reg = torch.optim.AdamW(list(self.reg_params.values()), **adamw)

    def write_pkl(self, path: Path, rank: int = 4) -> None:
        """The generator's weights as `OSEDiff_gen.save_model` writes them."""
        enc, dec, oth = self.lists["unet"]
        torch.save({"vae_lora_encoder_modules": self.lists["vae"], "unet_lora_encoder_modules": enc,
                    "unet_lora_decoder_modules": dec, "unet_lora_others_modules": oth,
                    "rank_unet": rank, "rank_vae": rank,
                    "state_dict_unet": {k: v for k, v in self.unet.state_dict().items()
                                        if "lora" in k or "conv_in" in k},
                    "state_dict_vae": {k: v for k, v in self.vae.state_dict().items() if "lora" in k}}, path)

    def reg_lora(self) -> dict:
        """The regulariser LoRA that our tree holds (every adapter, or `default_others` only), flattened."""
        active = ADAPTERS if self.unet_update.active_adapters() == ADAPTERS else ["default_others"]
        return {flax_path(n): to_ours(n, p) for n, p in self.reg_params.items() if n.split(".")[-2] in active}

    def eps_to_mu(self, eps, sample, t):
        a = self.scheduler.alphas_cumprod[t][:, None, None, None]
        return (sample - (1 - a) ** 0.5 * eps) / a**0.5

    @torch.enable_grad()  # other test modules turn gradients off for the whole session
    def step(self, lq, gt, prompt_embeds, neg_prompt_embeds, vae_noise, vsd_t, vsd_noise, reg_t, reg_noise):
        """lq, gt NCHW in [-1, 1]; returns the loss terms (unweighted) and both raw gradients."""
        # OSEDiff_gen.forward, with the posterior sample's noise given.
        dist = self.vae.encode(lq).latent_dist
        z = (dist.mean + dist.std * vae_noise) * self.vae.config.scaling_factor
        t999 = torch.tensor([999])
        eps = self.unet(z, t999, encoder_hidden_states=prompt_embeds).sample
        x0 = self.scheduler.step(eps, t999, z, return_dict=True, generator=torch.Generator().manual_seed(0)).prev_sample
        sr = self.vae.decode(x0 / self.vae.config.scaling_factor).sample.clamp(-1, 1)
        loss_l2 = F.mse_loss(sr.float(), gt.float(), reduction="mean")
        loss_lpips = self.lpips(sr.float(), gt.float()).mean() * 2.0
        # distribution_matching_loss, with its noise and timesteps given
        noisy = self.scheduler.add_noise(x0, vsd_noise, vsd_t)
        with torch.no_grad():
            x0_update = self.eps_to_mu(self.unet_update(noisy, vsd_t, encoder_hidden_states=prompt_embeds).sample,
                                       noisy, vsd_t)
            both = self.unet_fix(torch.cat([noisy] * 2), torch.cat([vsd_t] * 2),
                                 encoder_hidden_states=torch.cat([neg_prompt_embeds, prompt_embeds])).sample
            uncond, text = both.chunk(2)
            x0_fix = self.eps_to_mu(uncond + self.cfg_vsd * (text - uncond), noisy, vsd_t)
        w = torch.abs(x0 - x0_fix).mean(dim=[1, 2, 3], keepdim=True)
        grad = (x0_update - x0_fix) / w
        loss_kl = F.mse_loss(x0, (x0 - grad).detach())
        (loss_l2 + loss_lpips + loss_kl).backward()
        gen_grads = {n: p.grad.clone() for n, p in self.gen_params.items()}
        torch.nn.utils.clip_grad_norm_(list(self.gen_params.values()), 1.0)
        self.opt.step()
        self.opt.zero_grad()
        # diff_loss
        latents, emb = x0.detach(), prompt_embeds.detach()
        noisy = self.scheduler.add_noise(latents, reg_noise, reg_t)
        loss_d = F.mse_loss(self.unet_update(noisy, timestep=reg_t, encoder_hidden_states=emb).sample.float(),
                            reg_noise.float(), reduction="mean")
        loss_d.backward()
        reg_grads = {n: p.grad.clone() for n, p in self.reg_params.items() if p.grad is not None}
        torch.nn.utils.clip_grad_norm_(list(self.unet_update.parameters()), 1.0)
        self.opt_reg.step()
        self.opt_reg.zero_grad()
        terms = {"l2": loss_l2.item(), "lpips": loss_lpips.item() / 2.0, "vsd": loss_kl.item(), "reg": loss_d.item(),
                 "vsd_normaliser": w.mean().item()}
        return terms, gen_grads, reg_grads

    def moments(self) -> dict:
        """{"gen" | "reg": {name: (exp_avg, exp_avg_sq)}} of every parameter the optimisers hold state for."""
        out = {}
        for key, opt, params in (("gen", self.opt, self.gen_params), ("reg", self.opt_reg, self.reg_params)):
            out[key] = {n: (opt.state[p]["exp_avg"], opt.state[p]["exp_avg_sq"]) for n, p in params.items()
                        if p in opt.state}
        return out
