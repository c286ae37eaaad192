"""RAM's tagging path in PyTorch for the parity tests: random weights in the authors' checkpoint key
format (original Swin names under `visual_encoder.`, the BLIP/BERT tagging head), timm's Swin loaded
from them through timm's own `checkpoint_filter_fn`, and a tagging head assembled from transformers'
BERT layers as the authors' `ram/models/bert_lora.py` wires them ('tagging' mode: cross-attention
only, key/value projections from the 512-wide image embeddings)."""

from __future__ import annotations

import numpy as np
import timm.models.swin_transformer as timm_swin
import torch
from torch import nn
from transformers import BertConfig
from transformers.models.bert.modeling_bert import BertAttention, BertIntermediate, BertOutput

from osediff_jax.models.ram import RAMConfig


def _windows(cfg: RAMConfig) -> list[int]:
    res = cfg.image_size // cfg.patch_size
    return [min(cfg.window_size, res // 2**i) for i in range(len(cfg.depths))]


def random_state_dict(cfg: RAMConfig, seed: int = 0) -> dict[str, torch.Tensor]:
    """Every tagging-path tensor of a RAM checkpoint, with the buffers the authors' model also saves
    and two keys of the captioning branches that tagging ignores. Norm scales are 1 + 0.1 N(0, 1)
    and matrices N(0, 1/fan_in), so that activations stay O(1) through every block."""
    g = torch.Generator().manual_seed(seed)
    sd: dict[str, torch.Tensor] = {}

    def lin(key, out, inp, bias=True):
        sd[f"{key}.weight"] = torch.randn(out, inp, generator=g) / inp**0.5
        if bias:
            sd[f"{key}.bias"] = 0.1 * torch.randn(out, generator=g)

    def norm(key, n):
        sd[f"{key}.weight"] = 1 + 0.1 * torch.randn(n, generator=g)
        sd[f"{key}.bias"] = 0.1 * torch.randn(n, generator=g)

    e, p = cfg.embed_dim, cfg.patch_size
    sd["visual_encoder.patch_embed.proj.weight"] = torch.randn(e, 3, p, p, generator=g) / (3 * p * p) ** 0.5
    sd["visual_encoder.patch_embed.proj.bias"] = 0.1 * torch.randn(e, generator=g)
    norm("visual_encoder.patch_embed.norm", e)
    for i, (depth, heads, w) in enumerate(zip(cfg.depths, cfg.num_heads, _windows(cfg))):
        dim = e * 2**i
        for j in range(depth):
            b = f"visual_encoder.layers.{i}.blocks.{j}"
            norm(f"{b}.norm1", dim)
            sd[f"{b}.attn.relative_position_bias_table"] = torch.randn((2 * w - 1) ** 2, heads, generator=g)
            sd[f"{b}.attn.relative_position_index"] = torch.zeros(w * w, w * w, dtype=torch.long)
            lin(f"{b}.attn.qkv", 3 * dim, dim)
            lin(f"{b}.attn.proj", dim, dim)
            norm(f"{b}.norm2", dim)
            lin(f"{b}.mlp.fc1", int(dim * cfg.mlp_ratio), dim)
            lin(f"{b}.mlp.fc2", dim, int(dim * cfg.mlp_ratio))
        if i < len(cfg.depths) - 1:
            norm(f"visual_encoder.layers.{i}.downsample.norm", 4 * dim)
            lin(f"visual_encoder.layers.{i}.downsample.reduction", 2 * dim, 4 * dim, bias=False)
    norm("visual_encoder.norm", cfg.vision_width)
    lin("image_proj", cfg.embed_width, cfg.vision_width)
    sd["label_embed"] = torch.randn(cfg.num_classes, cfg.embed_width, generator=g)
    lin("wordvec_proj", cfg.head_hidden, cfg.embed_width)
    h = cfg.head_hidden
    for layer in range(cfg.head_layers):
        b = f"tagging_head.encoder.layer.{layer}"
        lin(f"{b}.crossattention.self.query", h, h)
        lin(f"{b}.crossattention.self.key", h, cfg.embed_width)
        lin(f"{b}.crossattention.self.value", h, cfg.embed_width)
        lin(f"{b}.crossattention.output.dense", h, h)
        norm(f"{b}.crossattention.output.LayerNorm", h)
        lin(f"{b}.intermediate.dense", cfg.head_intermediate, h)
        lin(f"{b}.output.dense", h, cfg.head_intermediate)
        norm(f"{b}.output.LayerNorm", h)
    lin("fc", 1, h)
    sd["tag_encoder.encoder.layer.0.output.dense.weight"] = torch.zeros(2, 2)
    sd["text_decoder.cls.predictions.bias"] = torch.zeros(2)
    return sd


def timm_swin_encoder(cfg: RAMConfig, sd: dict[str, torch.Tensor]) -> nn.Module:
    """timm's SwinTransformer (num_classes=0) with the checkpoint's `visual_encoder.` weights."""
    model = timm_swin.SwinTransformer(img_size=cfg.image_size, patch_size=cfg.patch_size, embed_dim=cfg.embed_dim,
                                      depths=cfg.depths, num_heads=cfg.num_heads, window_size=cfg.window_size,
                                      mlp_ratio=cfg.mlp_ratio, num_classes=0)
    visual = {k.removeprefix("visual_encoder."): v for k, v in sd.items() if k.startswith("visual_encoder.")}
    model.load_state_dict(timm_swin.checkpoint_filter_fn(visual, model), strict=True)
    return model.eval()


class TaggingLayer(nn.Module):
    def __init__(self, config: BertConfig, encoder_width: int):
        super().__init__()
        self.crossattention = BertAttention(config, is_cross_attention=True)
        # transformers builds key/value from hidden_size; the authors' layer takes encoder_width.
        self.crossattention.self.key = nn.Linear(encoder_width, config.hidden_size)
        self.crossattention.self.value = nn.Linear(encoder_width, config.hidden_size)
        self.intermediate = BertIntermediate(config)
        self.output = BertOutput(config)

    def forward(self, x, image):
        att = self.crossattention(x, encoder_hidden_states=image)[0]
        return self.output(self.intermediate(att), att)


class RAMTagger(nn.Module):
    """image (normalised NCHW) -> logits [B, num_classes], the authors' `generate_tag` up to `fc`."""

    def __init__(self, cfg: RAMConfig, sd: dict[str, torch.Tensor]):
        super().__init__()
        self.visual_encoder = timm_swin_encoder(cfg, sd)
        self.image_proj = nn.Linear(cfg.vision_width, cfg.embed_width)
        self.label_embed = nn.Parameter(torch.zeros(cfg.num_classes, cfg.embed_width))
        self.wordvec_proj = nn.Linear(cfg.embed_width, cfg.head_hidden)
        config = BertConfig(hidden_size=cfg.head_hidden, num_attention_heads=cfg.head_heads,
                            intermediate_size=cfg.head_intermediate, layer_norm_eps=1e-12, hidden_act="gelu",
                            attn_implementation="eager")
        self.tagging_head = nn.Module()
        self.tagging_head.encoder = nn.Module()
        self.tagging_head.encoder.layer = nn.ModuleList(TaggingLayer(config, cfg.embed_width)
                                                        for _ in range(cfg.head_layers))
        self.fc = nn.Linear(cfg.head_hidden, 1)
        head = {k: v for k, v in sd.items() if not k.startswith(("visual_encoder.", "tag_encoder.", "text_decoder."))}
        self.load_state_dict({**{f"visual_encoder.{k}": v for k, v in self.visual_encoder.state_dict().items()},
                              **head}, strict=True)
        self.eval()

    def image_embeds(self, x):
        tokens = self.visual_encoder.forward_features(x).flatten(1, 2)  # [B, L, C] after the final norm
        return self.image_proj(torch.cat([tokens.mean(1, keepdim=True), tokens], 1))

    def forward(self, x):
        image = self.image_embeds(x)
        h = torch.relu(self.wordvec_proj(self.label_embed)).unsqueeze(0).repeat(x.shape[0], 1, 1)
        for layer in self.tagging_head.encoder.layer:
            h = layer(h, image)
        return self.fc(h).squeeze(-1)


def to_numpy(sd: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    return {k: v.detach().numpy() for k, v in sd.items()}
