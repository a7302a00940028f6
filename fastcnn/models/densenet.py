"""DenseNet-121/169/201/161 (Huang et al. 2017), torchvision's parameter names and
shapes (``features.conv0``, ``features.denseblockN.denselayerM.{norm1,conv1,norm2,conv2}``,
``features.transitionN``, ``features.norm5``, ``classifier``).

A dense layer is pre-activation, BN -> ReLU -> 1x1 conv -> BN -> ReLU -> 3x3 conv: the
first BN -> ReLU has no fastcnn kernel (torch BatchNorm2d), the 1x1 conv -> BN -> ReLU
in the middle runs as one fused fastcnn op, as does the stem's conv0 -> norm0 -> relu0."""
from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn

from fastcnn.models._registry import register_model
from fastcnn.models._layers import FusedSequential, fused
from fastcnn.nn import Conv2d

# name: (growth_rate, block_config, num_init_features)
CONFIGS = {
    "densenet121": (32, (6, 12, 24, 16), 64),
    "densenet161": (48, (6, 12, 36, 24), 96),
    "densenet169": (32, (6, 12, 32, 32), 64),
    "densenet201": (32, (6, 12, 48, 32), 64),
}


class _DenseLayer(nn.Module):
    _fastcnn_fused = True  # fastcnn.nn.convert: conv1 -> norm2 -> relu2 is fused already

    def __init__(self, num_input_features, growth_rate, bn_size, drop_rate, algo="auto"):
        super().__init__()
        self.norm1 = nn.BatchNorm2d(num_input_features)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv1 = Conv2d(num_input_features, bn_size * growth_rate, kernel_size=1, stride=1, bias=False,
                            algo=algo)
        self.norm2 = nn.BatchNorm2d(bn_size * growth_rate)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv2 = Conv2d(bn_size * growth_rate, growth_rate, kernel_size=3, stride=1, padding=1, bias=False,
                            algo=algo)
        self.drop_rate = float(drop_rate)

    def forward(self, features):
        x = torch.cat(features, 1) if isinstance(features, (list, tuple)) else features
        x = self.relu1(self.norm1(x))
        x = self.conv2(fused(self.conv1, self.norm2, x, None, "relu"))  # relu2 stays for torchvision's layout
        if self.drop_rate > 0:
            x = F.dropout(x, p=self.drop_rate, training=self.training)
        return x


class _DenseBlock(nn.ModuleDict):
    def __init__(self, num_layers, num_input_features, bn_size, growth_rate, drop_rate, algo="auto"):
        super().__init__()
        for i in range(num_layers):
            self.add_module(f"denselayer{i + 1}", _DenseLayer(num_input_features + i * growth_rate, growth_rate,
                                                              bn_size, drop_rate, algo))

    def forward(self, init_features):
        features = [init_features]
        for layer in self.values():
            features.append(layer(features))
        return torch.cat(features, 1)


class _Transition(nn.Sequential):
    def __init__(self, num_input_features, num_output_features, algo="auto"):
        super().__init__()
        self.norm = nn.BatchNorm2d(num_input_features)
        self.relu = nn.ReLU(inplace=True)
        self.conv = Conv2d(num_input_features, num_output_features, kernel_size=1, stride=1, bias=False, algo=algo)
        self.pool = nn.AvgPool2d(kernel_size=2, stride=2)


class DenseNet(nn.Module):
    def __init__(self, growth_rate=32, block_config=(6, 12, 24, 16), num_init_features=64, bn_size=4,
                 drop_rate=0.0, num_classes=1000, in_channels=3, algo="auto"):
        super().__init__()
        self.features = FusedSequential(OrderedDict([
            ("conv0", Conv2d(in_channels, num_init_features, kernel_size=7, stride=2, padding=3, bias=False,
                             algo=algo)),
            ("norm0", nn.BatchNorm2d(num_init_features)),
            ("relu0", nn.ReLU(inplace=True)),
            ("pool0", nn.MaxPool2d(kernel_size=3, stride=2, padding=1)),
        ]))
        num_features = num_init_features
        for i, num_layers in enumerate(block_config):
            self.features.add_module(f"denseblock{i + 1}", _DenseBlock(num_layers, num_features, bn_size,
                                                                       growth_rate, drop_rate, algo))
            num_features += num_layers * growth_rate
            if i != len(block_config) - 1:
                self.features.add_module(f"transition{i + 1}", _Transition(num_features, num_features // 2, algo))
                num_features //= 2
        self.features.add_module("norm5", nn.BatchNorm2d(num_features))
        self.classifier = nn.Linear(num_features, num_classes)
        for m in self.modules():  # torchvision's initialisation
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)
            elif isinstance(m, nn.Linear):
                nn.init.constant_(m.bias, 0)

    def forward(self, x):
        out = F.relu(self.features(x))
        out = F.adaptive_avg_pool2d(out, (1, 1))
        return self.classifier(torch.flatten(out, 1))


def _builder(name):
    growth, blocks, init = CONFIGS[name]

    def build(num_classes=1000, **config):
        config.setdefault("growth_rate", growth)
        config.setdefault("block_config", blocks)
        config.setdefault("num_init_features", init)
        return DenseNet(num_classes=num_classes, **config)
    build.__name__ = name
    build.__doc__ = f"{name} (torchvision's names): growth {growth}, blocks {blocks}, stem width {init}."
    return register_model(build, name=name)


densenet121 = _builder("densenet121")
densenet161 = _builder("densenet161")
densenet169 = _builder("densenet169")
densenet201 = _builder("densenet201")
