"""AlexNet (Krizhevsky et al. 2012) in two forms, and ZFNet (Zeiler & Fergus 2014).

- ``alexnet``: torchvision's one-tower variant (64/192/384/256/256 filters, no LRN);
  its parameter names and shapes, so torchvision's state_dict loads.
- ``alexnet_v1``: the paper's two-tower network. The two GPUs' towers are grouped
  convolutions (groups=2 in conv2, conv4, conv5, whose inputs come from their own
  tower only; conv3 and the fully connected layers see both), with local response
  normalisation (k=2, n=5, alpha=1e-4, beta=0.75) after conv1 and conv2, overlapping
  3x3/2 max-pooling, and the 227x227 input the 11x11/4 conv1 really needs (Caffe's
  bvlc_alexnet layout: 60,965,224 parameters).
- ``zfnet``: 7x7/2 conv1 and 5x5/2 conv2 (Fig. 3 of Zeiler & Fergus), contrast
  normalisation after the first two poolings, one tower, 224x224 input.

The layers are listed in configuration tables; LRN is fastcnn.nn.LocalResponseNorm
with the paper's constants (``_layers.alexnet_lrn``: torch's alpha is the paper's x n)."""
import torch
from torch import nn

from fastcnn.models._layers import FusedSequential, alexnet_lrn
from fastcnn.models._registry import register_model
from fastcnn.nn import Conv2d, Linear

# (out_channels, kernel, stride, padding, groups, then after conv + ReLU, in this order:
#  "L" LRN, "P" max-pool 3x3/2). AlexNet normalises before pooling, ZFNet after.
TORCHVISION = [(64, 11, 4, 2, 1, "P"), (192, 5, 1, 2, 1, "P"), (384, 3, 1, 1, 1, ""),
               (256, 3, 1, 1, 1, ""), (256, 3, 1, 1, 1, "P")]
ORIGINAL = [(96, 11, 4, 0, 1, "LP"), (256, 5, 1, 2, 2, "LP"), (384, 3, 1, 1, 1, ""),
            (384, 3, 1, 1, 2, ""), (256, 3, 1, 1, 2, "P")]
ZFNET = [(96, 7, 2, 1, 1, "PL"), (256, 5, 2, 0, 1, "PL"), (384, 3, 1, 1, 1, ""),
         (384, 3, 1, 1, 1, ""), (256, 3, 1, 1, 1, "P")]


class AlexNet(nn.Module):
    """``features`` (conv/ReLU/LRN/pool as listed in ``cfg``), ``avgpool`` (adaptive,
    6x6) and ``classifier`` (Dropout, FC, ReLU, Dropout, FC, ReLU, FC), torchvision's
    layout and indices for the torchvision configuration."""

    def __init__(self, cfg=TORCHVISION, num_classes=1000, dropout=0.5, in_channels=3, width=4096,
                 ceil_mode=False, algo="auto"):
        super().__init__()
        layers = []
        for out, k, s, p, g, after in cfg:
            layers += [Conv2d(in_channels, out, k, stride=s, padding=p, groups=g, algo=algo), nn.ReLU(inplace=True)]
            for op in after:  # in the listed order
                if op == "L":
                    layers.append(alexnet_lrn(algo))
                elif op == "P":
                    layers.append(nn.MaxPool2d(kernel_size=3, stride=2, ceil_mode=ceil_mode))
            in_channels = out
        self.features = FusedSequential(*layers)  # conv -> ReLU: one op
        self.avgpool = nn.AdaptiveAvgPool2d((6, 6))
        self.classifier = nn.Sequential(
            # bias + ReLU fused into the Linear; Identity keeps torchvision's indices
            nn.Dropout(p=dropout), Linear(in_channels * 6 * 6, width, activation="relu", algo=algo), nn.Identity(),
            nn.Dropout(p=dropout), Linear(width, width, activation="relu", algo=algo), nn.Identity(),
            Linear(width, num_classes, algo=algo),
        )

    def forward(self, x):
        x = self.features(x)
        x = self.avgpool(x)
        x = torch.flatten(x, 1)
        return self.classifier(x)


@register_model
def alexnet(num_classes=1000, **config):
    """torchvision's one-tower AlexNet (61,100,840 parameters), 224x224 input."""
    return AlexNet(TORCHVISION, num_classes, **config)


@register_model
def alexnet_v1(num_classes=1000, **config):
    """The paper's two-tower AlexNet with LRN and grouped convolutions, 227x227 input."""
    return AlexNet(ORIGINAL, num_classes, **config)


@register_model
def zfnet(num_classes=1000, **config):
    """ZFNet (Zeiler & Fergus 2014, Fig. 3), 224x224 input -> 110, 55, 26, 13, 13, 13, 6."""
    config.setdefault("ceil_mode", True)  # the paper's 110 -> 55 and 26 -> 13 pools
    return AlexNet(ZFNET, num_classes, **config)
