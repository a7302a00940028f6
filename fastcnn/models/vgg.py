"""VGG-11/13/16/19 (configurations A, B, D, E), with and without BatchNorm, and A-LRN
(Simonyan & Zisserman 2015, Table 1). Parameter names and shapes are torchvision's
(``features.N`` / ``classifier.N``), so its state_dicts load.

``FusedSequential`` (also used by other families here) runs every
Conv2d -> BatchNorm2d [-> ReLU] run of its children as one fastcnn conv_bn_act op
while keeping the children (and so the state_dict keys) of the unfused Sequential."""
import torch
from torch import nn

from fastcnn.models._registry import register_model
from fastcnn.nn import Conv2d, Linear
from fastcnn.models._layers import FusedSequential, alexnet_lrn

# Table 1 of the paper: an int is a 3x3 conv (pad 1) with that many output channels,
# "M" a 2x2/2 max-pool, "LRN" local response normalisation (A-LRN only).
CONFIGS = {
    "A": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "A-LRN": [64, "LRN", "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "B": [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "D": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
    "E": [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M",
          512, 512, 512, 512, "M"],
}


def make_layers(cfg, batch_norm=False, in_channels=3, algo="auto"):
    layers = []
    for v in cfg:
        if v == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        elif v == "LRN":  # "the parameters are those of (Krizhevsky et al., 2012)"
            layers.append(alexnet_lrn(algo))
        else:
            layers.append(Conv2d(in_channels, v, kernel_size=3, padding=1, algo=algo))
            if batch_norm:
                layers.append(nn.BatchNorm2d(v))
            layers.append(nn.ReLU(inplace=True))
            in_channels = v
    return FusedSequential(*layers)


class VGG(nn.Module):
    def __init__(self, cfg, batch_norm=False, num_classes=1000, dropout=0.5, in_channels=3,
                 width=4096, algo="auto", init_weights=True):
        super().__init__()
        cfg = CONFIGS[cfg] if isinstance(cfg, str) else cfg
        self.features = make_layers(cfg, batch_norm, in_channels, algo)
        last = [v for v in cfg if isinstance(v, int)][-1]
        self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
        self.classifier = nn.Sequential(
            # bias + ReLU fused into the Linear; Identity keeps torchvision's indices
            Linear(last * 7 * 7, width, activation="relu", algo=algo), nn.Identity(), nn.Dropout(p=dropout),
            Linear(width, width, activation="relu", algo=algo), nn.Identity(), nn.Dropout(p=dropout),
            Linear(width, num_classes, algo=algo),
        )
        if init_weights:  # torchvision's initialisation
            for m in self.modules():
                if isinstance(m, nn.Conv2d):
                    nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                    if m.bias is not None:
                        nn.init.constant_(m.bias, 0)
                elif isinstance(m, nn.BatchNorm2d):
                    nn.init.constant_(m.weight, 1)
                    nn.init.constant_(m.bias, 0)
                elif isinstance(m, nn.Linear):
                    nn.init.normal_(m.weight, 0, 0.01)
                    nn.init.constant_(m.bias, 0)

    def forward(self, x):
        x = self.features(x)
        x = self.avgpool(x)
        x = torch.flatten(x, 1)
        return self.classifier(x)


def _builder(name, cfg, bn):
    def build(num_classes=1000, **config):
        return VGG(cfg, batch_norm=bn, num_classes=num_classes, **config)
    build.__name__ = name
    build.__doc__ = f"VGG configuration {cfg}{' with BatchNorm' if bn else ''} (torchvision's {name})."
    register_model(build, name=name)
    return build


vgg11 = _builder("vgg11", "A", False)
vgg11_bn = _builder("vgg11_bn", "A", True)
vgg11_lrn = _builder("vgg11_lrn", "A-LRN", False)
vgg13 = _builder("vgg13", "B", False)
vgg13_bn = _builder("vgg13_bn", "B", True)
vgg16 = _builder("vgg16", "D", False)
vgg16_bn = _builder("vgg16_bn", "D", True)
vgg19 = _builder("vgg19", "E", False)
vgg19_bn = _builder("vgg19_bn", "E", True)
