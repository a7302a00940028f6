"""ConvNeXt-T/S/B (Liu et al. 2022, "A ConvNet for the 2020s"), from a table of
stage widths and depths.

torchvision compatibility: ``convnext_tiny/small/base`` have torchvision's parameter
names and shapes (``features.0.0`` stem conv, ``features.0.1`` LayerNorm2d,
``features.1.0.layer_scale``, ``features.1.0.block.0`` depthwise 7x7,
``block.2`` LayerNorm, ``block.3``/``block.5`` Linear, ``features.2.0/1`` downsample,
``classifier.0/2``): a torchvision state_dict loads strictly and gives the same
outputs.

The convolutions (4x4/4 stem, 7x7 depthwise, 2x2/2 downsampling) are fastcnn
Conv2d; no BatchNorm follows them, so there is nothing to fuse. LayerNorms are
fastcnn.nn.LayerNorm, and the first pointwise Linear applies bias + GELU in one
pass (``block.3``, fastcnn.nn.Linear(activation="gelu"); ``block.4`` is an
Identity where torchvision has its GELU)."""
import torch
from torch import nn

from fastcnn.models._layers import LayerNorm2d, Permute, StochasticDepth
from fastcnn.models._registry import register_model
from fastcnn.nn import Conv2d, LayerNorm, Linear


class CNBlock(nn.Module):
    """7x7 depthwise conv, LayerNorm, Linear 4x, GELU, Linear, layer scale,
    stochastic depth, + input."""
    _fastcnn_fused = True

    def __init__(self, dim, layer_scale, sd_prob, algo="auto"):
        super().__init__()
        self.block = nn.Sequential(
            Conv2d(dim, dim, 7, padding=3, groups=dim, bias=True, algo=algo),
            Permute([0, 2, 3, 1]),
            LayerNorm(dim, eps=1e-6, algo=algo),
            Linear(dim, 4 * dim, activation="gelu", algo=algo),
            nn.Identity(),
            Linear(4 * dim, dim, algo=algo),
            Permute([0, 3, 1, 2]),
        )
        self.layer_scale = nn.Parameter(torch.ones(dim, 1, 1) * layer_scale)
        self.stochastic_depth = StochasticDepth(sd_prob, "row")

    def forward(self, x):
        return self.stochastic_depth(self.layer_scale * self.block(x)) + x


class ConvNeXt(nn.Module):
    _fastcnn_fused = True

    def __init__(self, widths, depths, num_classes=1000, stochastic_depth_prob=0.0, layer_scale=1e-6,
                 algo="auto"):
        super().__init__()
        layers = [nn.Sequential(Conv2d(3, widths[0], 4, 4, 0, bias=True, algo=algo), LayerNorm2d(widths[0], eps=1e-6, algo=algo))]
        total, block_id = sum(depths), 0
        for i, (dim, depth) in enumerate(zip(widths, depths)):
            stage = []
            for _ in range(depth):
                sd = stochastic_depth_prob * block_id / (total - 1.0)
                stage.append(CNBlock(dim, layer_scale, sd, algo=algo))
                block_id += 1
            layers.append(nn.Sequential(*stage))
            if i + 1 < len(widths):
                layers.append(nn.Sequential(LayerNorm2d(dim, eps=1e-6, algo=algo),
                                            Conv2d(dim, widths[i + 1], 2, 2, bias=True, algo=algo)))
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(LayerNorm2d(widths[-1], eps=1e-6, algo=algo), nn.Flatten(1),
                                        nn.Linear(widths[-1], num_classes))
        for m in self.modules():
            if isinstance(m, (Conv2d, nn.Linear)):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward(self, x):
        return self.classifier(self.avgpool(self.features(x)))


CONFIGS = {
    # name: (stage widths, stage depths, stochastic depth probability)
    "convnext_tiny": ((96, 192, 384, 768), (3, 3, 9, 3), 0.1),
    "convnext_small": ((96, 192, 384, 768), (3, 3, 27, 3), 0.4),
    "convnext_base": ((128, 256, 512, 1024), (3, 3, 27, 3), 0.5),
}


def _register(name):
    widths, depths, sd = CONFIGS[name]

    def fn(num_classes=1000, **config):
        config.setdefault("stochastic_depth_prob", sd)
        return ConvNeXt(config.pop("widths", widths), config.pop("depths", depths), num_classes, **config)
    fn.__name__ = fn.__qualname__ = name
    fn.__doc__ = (f"{name}: widths {widths}, depths {depths}; config keys: widths, depths, "
                  "stochastic_depth_prob, layer_scale, algo.")
    register_model(fn)
    globals()[name] = fn


for _name in CONFIGS:
    _register(_name)
