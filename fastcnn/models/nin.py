"""Network in Network (Lin, Chen & Yan 2014): stacks of "mlpconv" layers (a spatial
convolution followed by 1x1 convolutions, each with ReLU), ending in a 1x1 conv to
the classes and global average pooling instead of fully connected layers.

- ``nin_cifar``: the paper's CIFAR-10 network (192/160/96, 192/192/192, 192/192/C;
  966,986 parameters for 10 classes), 32x32 input.
- ``nin``: the ImageNet network of the authors' Caffe model zoo entry
  (96/96/96 11x11/4, 256/256/256 5x5, 384/384/384 3x3, 1024/1024/C 3x3;
  7,595,176 parameters for 1000 classes), 224x224 input."""
import torch
from torch import nn

from fastcnn.models._layers import FusedSequential
from fastcnn.models._registry import register_model
from fastcnn.nn import Conv2d

# One row per mlpconv block: ([(out, kernel, stride, padding), 1x1 width, 1x1 width],
# what follows: "max" / "avg" 3x3/2 pooling (+ "drop" dropout) or "gap" the global pool)
# The last block's last 1x1 width None means num_classes.
CIFAR = [((192, 5, 1, 2), 160, 96, "max,drop"),
         ((192, 5, 1, 2), 192, 192, "avg,drop"),
         ((192, 3, 1, 1), 192, None, "gap")]
IMAGENET = [((96, 11, 4, 0), 96, 96, "max"),
            ((256, 5, 1, 2), 256, 256, "max"),
            ((384, 3, 1, 1), 384, 384, "max,drop"),
            ((1024, 3, 1, 1), 1024, None, "gap")]


class NiN(nn.Module):
    def __init__(self, cfg, num_classes=10, in_channels=3, dropout=0.5, ceil_mode=True, algo="auto"):
        super().__init__()
        layers = []
        for (out, k, s, p), w1, w2, after in cfg:
            w2 = num_classes if w2 is None else w2
            layers += [Conv2d(in_channels, out, k, stride=s, padding=p, algo=algo), nn.ReLU(inplace=True),
                       Conv2d(out, w1, 1, algo=algo), nn.ReLU(inplace=True),
                       Conv2d(w1, w2, 1, algo=algo), nn.ReLU(inplace=True)]
            for op in after.split(","):
                if op == "max":
                    layers.append(nn.MaxPool2d(3, 2, ceil_mode=ceil_mode))
                elif op == "avg":
                    layers.append(nn.AvgPool2d(3, 2, ceil_mode=ceil_mode))
                elif op == "drop":
                    layers.append(nn.Dropout(dropout))
                elif op == "gap":
                    layers.append(nn.AdaptiveAvgPool2d(1))
            in_channels = w2
        self.features = FusedSequential(*layers)  # conv -> ReLU: one op

    def forward(self, x):
        return torch.flatten(self.features(x), 1)


@register_model
def nin_cifar(num_classes=1000, **config):
    """The paper's CIFAR-10 NIN (use num_classes=10), 3x32x32 input."""
    return NiN(CIFAR, num_classes, **config)


@register_model
def nin(num_classes=1000, **config):
    """The ImageNet NIN of the Caffe model zoo, 3x224x224 input."""
    return NiN(IMAGENET, num_classes, **config)
