"""GoogLeNet / Inception v1 (Szegedy et al. 2015), with torchvision's parameter names
and shapes (``conv1``, ``inception3a.branch2.1.conv``, ``aux1.fc1``...), BatchNorm
after every convolution as torchvision has it. Every BasicConv2d (conv -> BN -> ReLU,
submodules ``conv`` and ``bn``) is one fused fastcnn ConvBNAct.

The auxiliary classifiers after inception4a and inception4d run in training mode
when ``aux_logits=True`` (the default): the forward then returns
``GoogLeNetOutputs(logits, aux_logits2, aux_logits1)`` like torchvision. torchvision's
published parameter count (6,624,904) is the network without them
(``aux_logits=False``); with them it has 13,004,888.

torchvision's third branch uses a 3x3 convolution where the paper has 5x5 (a known
slip kept for weight compatibility); ``branch3_kernel=5`` builds the paper's."""
from collections import namedtuple

import torch
import torch.nn.functional as F
from torch import nn

from fastcnn.models._registry import register_model
from fastcnn.nn import ConvBNAct, Linear

GoogLeNetOutputs = namedtuple("GoogLeNetOutputs", ["logits", "aux_logits2", "aux_logits1"])

# Table 1 of the paper: (name, in, #1x1, #3x3 reduce, #3x3, #5x5 reduce, #5x5, pool proj);
# "M" is a 3x3/2 ceil-mode max-pool (named maxpool3/maxpool4 in torchvision).
INCEPTIONS = [
    ("inception3a", 192, 64, 96, 128, 16, 32, 32),
    ("inception3b", 256, 128, 128, 192, 32, 96, 64),
    "maxpool3",
    ("inception4a", 480, 192, 96, 208, 16, 48, 64),
    ("inception4b", 512, 160, 112, 224, 24, 64, 64),
    ("inception4c", 512, 128, 128, 256, 24, 64, 64),
    ("inception4d", 512, 112, 144, 288, 32, 64, 64),
    ("inception4e", 528, 256, 160, 320, 32, 128, 128),
    "maxpool4",
    ("inception5a", 832, 256, 160, 320, 32, 128, 128),
    ("inception5b", 832, 384, 192, 384, 48, 128, 128),
]
AUX = {"aux1": 512, "aux2": 528}  # in channels of the classifiers after inception4a / 4d


def basic_conv(in_channels, out_channels, algo="auto", **kwargs):
    """torchvision's BasicConv2d: conv (no bias) -> BN (eps 1e-3) -> ReLU, fused."""
    kwargs.setdefault("padding", 0)
    return ConvBNAct(in_channels, out_channels, eps=0.001, algo=algo, **kwargs)


class Inception(nn.Module):
    def __init__(self, in_channels, ch1x1, ch3x3red, ch3x3, ch5x5red, ch5x5, pool_proj, branch3_kernel=3,
                 algo="auto"):
        super().__init__()
        self.branch1 = basic_conv(in_channels, ch1x1, algo, kernel_size=1)
        self.branch2 = nn.Sequential(basic_conv(in_channels, ch3x3red, algo, kernel_size=1),
                                     basic_conv(ch3x3red, ch3x3, algo, kernel_size=3, padding=1))
        self.branch3 = nn.Sequential(basic_conv(in_channels, ch5x5red, algo, kernel_size=1),
                                     basic_conv(ch5x5red, ch5x5, algo, kernel_size=branch3_kernel,
                                                padding=branch3_kernel // 2))
        self.branch4 = nn.Sequential(nn.MaxPool2d(kernel_size=3, stride=1, padding=1, ceil_mode=True),
                                     basic_conv(in_channels, pool_proj, algo, kernel_size=1))

    def forward(self, x):
        return torch.cat([self.branch1(x), self.branch2(x), self.branch3(x), self.branch4(x)], 1)


class InceptionAux(nn.Module):
    def __init__(self, in_channels, num_classes, dropout=0.7, algo="auto"):
        super().__init__()
        self.conv = basic_conv(in_channels, 128, algo, kernel_size=1)
        self.fc1 = Linear(2048, 1024, activation="relu", algo=algo)  # bias + ReLU fused
        self.fc2 = Linear(1024, num_classes, algo=algo)
        self.dropout = nn.Dropout(p=dropout)

    def forward(self, x):
        x = F.adaptive_avg_pool2d(x, (4, 4))  # 14x14 -> 4x4 (the paper's 5x5/3 average pool)
        x = torch.flatten(self.conv(x), 1)
        x = self.dropout(self.fc1(x))
        return self.fc2(x)


class GoogLeNet(nn.Module):
    def __init__(self, num_classes=1000, aux_logits=True, transform_input=False, dropout=0.2,
                 dropout_aux=0.7, branch3_kernel=3, in_channels=3, algo="auto", init_weights=True):
        super().__init__()
        self.aux_logits = aux_logits
        self.transform_input = transform_input
        self.conv1 = basic_conv(in_channels, 64, algo, kernel_size=7, stride=2, padding=3)
        self.maxpool1 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        self.conv2 = basic_conv(64, 64, algo, kernel_size=1)
        self.conv3 = basic_conv(64, 192, algo, kernel_size=3, padding=1)
        self.maxpool2 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        self.stages = []  # the order of the forward, from the configuration table
        for entry in INCEPTIONS:
            if isinstance(entry, str):
                setattr(self, entry, nn.MaxPool2d(3, stride=2, ceil_mode=True) if entry != "maxpool4"
                        else nn.MaxPool2d(2, stride=2, ceil_mode=True))
                self.stages.append(entry)
            else:
                setattr(self, entry[0], Inception(*entry[1:], branch3_kernel=branch3_kernel, algo=algo))
                self.stages.append(entry[0])
        if aux_logits:
            self.aux1 = InceptionAux(AUX["aux1"], num_classes, dropout_aux, algo)
            self.aux2 = InceptionAux(AUX["aux2"], num_classes, dropout_aux, algo)
        else:
            self.aux1 = None
            self.aux2 = None
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.dropout = nn.Dropout(p=dropout)
        self.fc = nn.Linear(1024, num_classes)
        if init_weights:  # torchvision's
            for m in self.modules():
                if isinstance(m, (nn.Conv2d, nn.Linear)):
                    nn.init.trunc_normal_(m.weight, mean=0.0, std=0.01, a=-2, b=2)
                elif isinstance(m, nn.BatchNorm2d):
                    nn.init.constant_(m.weight, 1)
                    nn.init.constant_(m.bias, 0)

    def _transform_input(self, x):
        if self.transform_input:  # ImageNet normalisation -> the (x - 0.5) / 0.5 the weights were trained on
            x = torch.cat([x[:, 0:1] * (0.229 / 0.5) + (0.485 - 0.5) / 0.5,
                           x[:, 1:2] * (0.224 / 0.5) + (0.456 - 0.5) / 0.5,
                           x[:, 2:3] * (0.225 / 0.5) + (0.406 - 0.5) / 0.5], 1)
        return x

    def forward(self, x):
        x = self._transform_input(x)
        x = self.maxpool2(self.conv3(self.conv2(self.maxpool1(self.conv1(x)))))
        aux1 = aux2 = None
        for name in self.stages:
            x = getattr(self, name)(x)
            if self.aux1 is not None and self.training and name == "inception4a":
                aux1 = self.aux1(x)
            if self.aux2 is not None and self.training and name == "inception4d":
                aux2 = self.aux2(x)
        x = torch.flatten(self.avgpool(x), 1)
        x = self.fc(self.dropout(x))
        if self.training and self.aux_logits:
            return GoogLeNetOutputs(x, aux2, aux1)
        return x


@register_model
def googlenet(num_classes=1000, **config):
    """GoogLeNet (torchvision's names), 224x224 input; aux classifiers in training mode."""
    return GoogLeNet(num_classes, **config)
