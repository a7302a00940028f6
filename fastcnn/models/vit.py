"""Vision Transformer (Dosovitskiy et al. 2021, "An Image is Worth 16x16 Words"):
ViT-B/16, B/32, L/16, L/32 and H/14, from a configuration table.

torchvision compatibility: parameter names and shapes are torchvision's
(``conv_proj``, ``class_token``, ``encoder.pos_embedding``,
``encoder.layers.encoder_layer_{i}.{ln_1, self_attention, ln_2, mlp.0, mlp.3}``,
``encoder.ln``, ``heads.head``), so a torchvision state_dict loads strictly.

On fastcnn's ops: the patch embedding is a fastcnn Conv2d, attention is
``fastcnn.nn.MultiheadSelfAttention`` (fused; the token x token matrix never
exists), the first MLP Linear applies bias + GELU in one fused pass
(``fastcnn.nn.Linear(activation="gelu")``; ``mlp.1`` is an Identity where
torchvision has its GELU), and the second LayerNorm of each block also does the
attention branch's residual add (``LayerNorm(x, residual=)``)."""
import math
from collections import OrderedDict

import torch
from torch import nn

from fastcnn.models._registry import register_model
from fastcnn.nn import Conv2d, LayerNorm, Linear, MultiheadSelfAttention


class MLPBlock(nn.Sequential):
    """Linear + GELU (fused), Dropout, Linear, Dropout; torchvision's indices."""

    def __init__(self, dim, hidden, dropout, algo="auto"):
        super().__init__(Linear(dim, hidden, activation="gelu", algo=algo), nn.Identity(), nn.Dropout(dropout),
                         Linear(hidden, dim, algo=algo), nn.Dropout(dropout))
        for m in (self[0], self[3]):
            nn.init.xavier_uniform_(m.weight)
            nn.init.normal_(m.bias, std=1e-6)


class EncoderBlock(nn.Module):
    """Pre-norm transformer block: x + attn(ln_1(x)), then h + mlp(ln_2(h))."""

    def __init__(self, num_heads, hidden_dim, mlp_dim, dropout, attention_dropout, algo="auto"):
        super().__init__()
        self.ln_1 = LayerNorm(hidden_dim, eps=1e-6, algo=algo)
        self.self_attention = MultiheadSelfAttention(hidden_dim, num_heads, dropout=attention_dropout,
                                                     batch_first=True, algo=algo)
        self.dropout = nn.Dropout(dropout)
        self.ln_2 = LayerNorm(hidden_dim, eps=1e-6, algo=algo)
        self.mlp = MLPBlock(hidden_dim, mlp_dim, dropout, algo=algo)

    def forward(self, input):
        x = self.ln_1(input)
        x, _ = self.self_attention(x, x, x, need_weights=False)
        y, x = self.ln_2(self.dropout(x), residual=input)  # (ln_2(h), h), h = x + input, one pass
        return x + self.mlp(y)


class Encoder(nn.Module):
    def __init__(self, seq_length, num_layers, num_heads, hidden_dim, mlp_dim, dropout, attention_dropout,
                 algo="auto"):
        super().__init__()
        self.pos_embedding = nn.Parameter(torch.empty(1, seq_length, hidden_dim).normal_(std=0.02))
        self.dropout = nn.Dropout(dropout)
        self.layers = nn.Sequential(OrderedDict(
            (f"encoder_layer_{i}", EncoderBlock(num_heads, hidden_dim, mlp_dim, dropout, attention_dropout, algo))
            for i in range(num_layers)))
        self.ln = LayerNorm(hidden_dim, eps=1e-6, algo=algo)

    def forward(self, x):
        return self.ln(self.layers(self.dropout(x + self.pos_embedding)))


class VisionTransformer(nn.Module):
    def __init__(self, image_size, patch_size, num_layers, num_heads, hidden_dim, mlp_dim, num_classes=1000,
                 dropout=0.0, attention_dropout=0.0, algo="auto"):
        super().__init__()
        if image_size % patch_size:
            raise ValueError(f"VisionTransformer: image_size {image_size} is not a multiple of patch_size "
                             f"{patch_size}")
        self.image_size, self.patch_size, self.hidden_dim = image_size, patch_size, hidden_dim
        self.conv_proj = Conv2d(3, hidden_dim, patch_size, patch_size, algo=algo)
        self.class_token = nn.Parameter(torch.zeros(1, 1, hidden_dim))
        seq_length = (image_size // patch_size) ** 2 + 1
        self.encoder = Encoder(seq_length, num_layers, num_heads, hidden_dim, mlp_dim, dropout, attention_dropout,
                               algo)
        self.heads = nn.Sequential(OrderedDict(head=Linear(hidden_dim, num_classes, algo=algo)))
        fan_in = 3 * patch_size ** 2
        nn.init.trunc_normal_(self.conv_proj.weight, std=math.sqrt(1 / fan_in))
        nn.init.zeros_(self.conv_proj.bias)
        nn.init.zeros_(self.heads.head.weight)
        nn.init.zeros_(self.heads.head.bias)

    def forward(self, x):
        n, _, h, w = x.shape
        if h != self.image_size or w != self.image_size:
            raise ValueError(f"VisionTransformer: expected {self.image_size}x{self.image_size} images, "
                             f"got {h}x{w}")
        x = self.conv_proj(x).flatten(2).transpose(1, 2)            # (n, tokens, hidden)
        x = torch.cat([self.class_token.expand(n, -1, -1), x], dim=1)
        return self.heads(self.encoder(x)[:, 0])


CONFIGS = {
    # name: (patch size, layers, heads, hidden dim, MLP dim); ViT paper, Table 1
    "vit_b_16": (16, 12, 12, 768, 3072),
    "vit_b_32": (32, 12, 12, 768, 3072),
    "vit_l_16": (16, 24, 16, 1024, 4096),
    "vit_l_32": (32, 24, 16, 1024, 4096),
    "vit_h_14": (14, 32, 16, 1280, 5120),
}


def _register(name):
    patch, layers, heads, hidden, mlp = CONFIGS[name]

    def fn(num_classes=1000, image_size=224, **config):
        return VisionTransformer(image_size, config.pop("patch_size", patch), config.pop("num_layers", layers),
                                 config.pop("num_heads", heads), config.pop("hidden_dim", hidden),
                                 config.pop("mlp_dim", mlp), num_classes, **config)
    fn.__name__ = fn.__qualname__ = name
    fn.__doc__ = (f"{name}: patch {patch}, {layers} layers, {heads} heads, hidden {hidden}, MLP {mlp}; config "
                  "keys: image_size, patch_size, num_layers, num_heads, hidden_dim, mlp_dim, dropout, "
                  "attention_dropout, algo.")
    register_model(fn)
    globals()[name] = fn


for _name in CONFIGS:
    _register(_name)
