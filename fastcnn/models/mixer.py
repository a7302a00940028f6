"""MLP-Mixer (Tolstikhin et al. 2021): B/16 and L/16 from a configuration table.

timm compatibility: parameter names and shapes are timm's ``mixer_b16_224`` /
``mixer_l16_224`` (``stem.proj``, ``blocks.{i}.{norm1, mlp_tokens.fc1/fc2, norm2,
mlp_channels.fc1/fc2}``, ``norm``, ``head``).

On fastcnn's ops: the patch embedding is a fastcnn Conv2d, each MLP's first Linear
applies bias + GELU in one fused pass (``fastcnn.nn.Linear(activation="gelu")``),
and ``norm2`` also does the token-mixing branch's residual add."""
from torch import nn

from fastcnn.models._registry import register_model
from fastcnn.nn import Conv2d, LayerNorm, Linear


class Mlp(nn.Module):
    """fc1 + GELU (fused), fc2."""

    def __init__(self, dim, hidden, algo="auto"):
        super().__init__()
        self.fc1 = Linear(dim, hidden, activation="gelu", algo=algo)
        self.fc2 = Linear(hidden, dim, algo=algo)
        for m in (self.fc1, self.fc2):
            nn.init.xavier_uniform_(m.weight)
            nn.init.normal_(m.bias, std=1e-6)

    def forward(self, x):
        return self.fc2(self.fc1(x))


class MixerBlock(nn.Module):
    """Token mixing (an MLP across patches, per channel), then channel mixing."""

    def __init__(self, dim, tokens, tokens_hidden, channels_hidden, algo="auto"):
        super().__init__()
        self.norm1 = LayerNorm(dim, eps=1e-6, algo=algo)
        self.mlp_tokens = Mlp(tokens, tokens_hidden, algo)
        self.norm2 = LayerNorm(dim, eps=1e-6, algo=algo)
        self.mlp_channels = Mlp(dim, channels_hidden, algo)

    def forward(self, x):
        mixed = self.mlp_tokens(self.norm1(x).transpose(1, 2)).transpose(1, 2)
        y, x = self.norm2(mixed, residual=x)  # (norm2(h), h), h = mixed + x, one pass
        return x + self.mlp_channels(y)


class PatchEmbed(nn.Module):
    def __init__(self, patch, dim, algo="auto"):
        super().__init__()
        self.proj = Conv2d(3, dim, patch, patch, algo=algo)

    def forward(self, x):
        return self.proj(x).flatten(2).transpose(1, 2)  # (n, tokens, dim)


class MlpMixer(nn.Module):
    def __init__(self, image_size, patch_size, num_blocks, dim, tokens_hidden, channels_hidden,
                 num_classes=1000, algo="auto"):
        super().__init__()
        if image_size % patch_size:
            raise ValueError(f"MlpMixer: image_size {image_size} is not a multiple of patch_size {patch_size}")
        tokens = (image_size // patch_size) ** 2
        self.stem = PatchEmbed(patch_size, dim, algo)
        self.blocks = nn.Sequential(*(MixerBlock(dim, tokens, tokens_hidden, channels_hidden, algo)
                                      for _ in range(num_blocks)))
        self.norm = LayerNorm(dim, eps=1e-6, algo=algo)
        self.head = Linear(dim, num_classes, algo=algo)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward(self, x):
        return self.head(self.norm(self.blocks(self.stem(x))).mean(dim=1))


CONFIGS = {
    # name: (patch size, blocks, hidden dim, token-mixing MLP dim, channel-mixing MLP dim); Mixer paper, Table 1
    "mixer_b16": (16, 12, 768, 384, 3072),
    "mixer_l16": (16, 24, 1024, 512, 4096),
}


def _register(name):
    patch, blocks, dim, tokens_hidden, channels_hidden = CONFIGS[name]

    def fn(num_classes=1000, image_size=224, **config):
        return MlpMixer(image_size, config.pop("patch_size", patch), config.pop("num_blocks", blocks),
                        config.pop("dim", dim), config.pop("tokens_hidden", tokens_hidden),
                        config.pop("channels_hidden", channels_hidden), num_classes, **config)
    fn.__name__ = fn.__qualname__ = name
    fn.__doc__ = (f"{name}: patch {patch}, {blocks} blocks, hidden {dim}, MLP dims {tokens_hidden} (tokens) / "
                  f"{channels_hidden} (channels); config keys: image_size, patch_size, num_blocks, dim, "
                  "tokens_hidden, channels_hidden, algo.")
    register_model(fn)
    globals()[name] = fn


for _name in CONFIGS:
    _register(_name)
