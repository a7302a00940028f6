"""Res2Net (Gao et al. 2019, "Res2Net: A New Multi-scale Backbone Architecture"):
the ResNet-50/101 skeleton of ``fastcnn.models.resnet`` with Bottle2neck blocks,
whose 3x3 stage is split into ``scale`` groups of ``width`` channels processed as a
hierarchy (each group's 3x3 conv also sees the previous group's output).

Parameter names follow timm's ``res2net50_26w_4s`` (``conv1``, ``bn1``,
``layerX.Y.conv1/bn1/convs.i/bns.i/conv3/bn3/downsample.0/1``, ``fc``); torchvision
has no Res2Net. Every conv -> BN [-> + residual] -> ReLU runs as one fused op."""
import math

import torch
from torch import nn

from fastcnn.models._layers import FusedSequential, fused
from fastcnn.models._registry import register_model
from fastcnn.models.resnet import ResNet
from fastcnn.nn import Conv2d


class Bottle2neck(nn.Module):
    expansion = 4
    _fastcnn_fused = True

    def __init__(self, inplanes, planes, stride=1, groups=1, base_width=26, se=False, scale=4, algo="auto"):
        super().__init__()
        if se:
            raise ValueError("Bottle2neck: se=True is not supported")
        width = int(math.floor(planes * (base_width / 64.0))) * groups
        out = planes * self.expansion
        self.width, self.scale = width, scale
        self.conv1 = Conv2d(inplanes, width * scale, 1, bias=False, algo=algo)
        self.bn1 = nn.BatchNorm2d(width * scale)
        n = max(1, scale - 1)
        self.convs = nn.ModuleList(Conv2d(width, width, 3, stride, 1, groups=groups, bias=False, algo=algo)
                                   for _ in range(n))
        self.bns = nn.ModuleList(nn.BatchNorm2d(width) for _ in range(n))
        self.downsample = (FusedSequential(Conv2d(inplanes, out, 1, stride, bias=False, algo=algo),
                                           nn.BatchNorm2d(out))
                           if stride != 1 or inplanes != out else None)
        self.is_first = stride > 1 or self.downsample is not None
        self.pool = nn.AvgPool2d(3, stride, 1) if self.is_first else None
        self.conv3 = Conv2d(width * scale, out, 1, bias=False, algo=algo)
        self.bn3 = nn.BatchNorm2d(out)

    def forward(self, x):
        shortcut = x if self.downsample is None else self.downsample(x)
        spx = torch.split(fused(self.conv1, self.bn1, x, None, "relu"), self.width, 1)
        spo, sp = [], spx[0]
        for i, (conv, bn) in enumerate(zip(self.convs, self.bns)):
            sp = spx[i] if (i == 0 or self.is_first) else sp + spx[i]
            sp = fused(conv, bn, sp, None, "relu")
            spo.append(sp)
        if self.scale > 1:
            spo.append(self.pool(spx[-1]) if self.pool is not None else spx[-1])
        return fused(self.conv3, self.bn3, torch.cat(spo, 1), shortcut, "relu")


CONFIGS = {
    # name: (layers, base width, scale)
    "res2net50_26w_4s": ((3, 4, 6, 3), 26, 4),
    "res2net101_26w_4s": ((3, 4, 23, 3), 26, 4),
    "res2net50_48w_2s": ((3, 4, 6, 3), 48, 2),
    "res2net50_14w_8s": ((3, 4, 6, 3), 14, 8),
}


def _res2net(name, num_classes=1000, algo="auto", **config):
    layers, width, scale = CONFIGS[name]
    return ResNet(Bottle2neck, config.pop("layers", layers), num_classes, 1, config.pop("base_width", width),
                  block_kwargs={"scale": config.pop("scale", scale)}, algo=algo, **config)


def _register(name):
    def fn(num_classes=1000, **config):
        return _res2net(name, num_classes=num_classes, **config)
    fn.__name__ = fn.__qualname__ = name
    fn.__doc__ = f"{name} (layers, base width, scale = {CONFIGS[name]}); config keys: layers, base_width, scale, algo."
    register_model(fn)
    globals()[name] = fn


for _name in CONFIGS:
    _register(_name)
