"""MobileNet v1 (Howard et al. 2017) and MobileNet v2 (Sandler et al. 2018).

``mobilenet_v2`` has torchvision's parameter names and shapes (``features.0.0``,
``features.1.conv.0.0``, ``features.2.conv.1.0``, ..., ``classifier.1``): a
torchvision ``mobilenet_v2`` state_dict loads strictly and gives the same outputs.
MobileNet v1 is not in torchvision; its names are ``features.i`` (stem) and
``features.i.{0,1}`` (depthwise / pointwise conv-BN-ReLU, laid out like ConvNormAct),
``classifier``; each depthwise-separable layer is a ``DepthwiseSeparableConv2d``,
one fused op in eval mode (the depthwise output never reaches memory).

Both are built from tables: v1 from the paper's Table 1 (output channels and stride
of each depthwise-separable layer), v2 from (t, c, n, s) rows (expansion, channels,
repeats, stride). Every conv -> BN [-> + residual] [-> ReLU/ReLU6] is one fused op."""
from torch import nn

from fastcnn.models._layers import ConvNormAct, FusedSequential, make_divisible
from fastcnn.nn.fused import is_unfused
from fastcnn.models._registry import register_model
from fastcnn.nn import Conv2d
from fastcnn.nn.separable import DepthwiseSeparableConv2d, separable_forward

# MobileNet v1, Table 1: (output channels, stride) of the depthwise-separable layers
V1_CONFIG = [(64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2)] + [(512, 1)] * 5 + [(1024, 2), (1024, 1)]

# MobileNet v2, Table 2: expansion t, output channels c, repeats n, first stride s
V2_CONFIG = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
             (6, 320, 1, 1)]


def _init(model):
    for m in model.modules():
        if isinstance(m, Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0, 0.01)
            nn.init.zeros_(m.bias)


class MobileNetV1(nn.Module):
    """Stem 3x3/2 conv, 13 depthwise-separable layers (3x3 depthwise conv-BN-ReLU,
    1x1 conv-BN-ReLU: fastcnn.nn.separable.DepthwiseSeparableConv2d), global
    average pool, dropout, fc. ``width_mult`` is the
    paper's alpha."""

    def __init__(self, num_classes=1000, width_mult=1.0, dropout=0.001, config=V1_CONFIG, algo="auto"):
        super().__init__()
        c = make_divisible(32 * width_mult)
        layers = [ConvNormAct(3, c, 3, 2, algo=algo)]
        for out, stride in config:
            out = make_divisible(out * width_mult)
            layers.append(DepthwiseSeparableConv2d(c, out, 3, stride, algo=algo))
            c = out
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(c, num_classes)
        _init(self)

    def forward(self, x):
        return self.classifier(self.dropout(self.avgpool(self.features(x)).flatten(1)))


class InvertedResidual(nn.Module):
    """MobileNet v2's block (torchvision names): [1x1 expand conv-BN-ReLU6], 3x3
    depthwise conv-BN-ReLU6, 1x1 linear projection conv-BN (+ input when the shape
    allows, fused into the projection). At inference the depthwise and projection
    halves are one fused ``separable_conv2d``."""
    _fastcnn_fused = True

    def __init__(self, inp, oup, stride, expand_ratio, algo="auto"):
        super().__init__()
        hidden = int(round(inp * expand_ratio))
        self.use_res_connect = stride == 1 and inp == oup
        layers = []
        if expand_ratio != 1:
            layers.append(ConvNormAct(inp, hidden, 1, activation="relu6", algo=algo))
        layers += [ConvNormAct(hidden, hidden, 3, stride, groups=hidden, activation="relu6", algo=algo),
                   Conv2d(hidden, oup, 1, 1, 0, bias=False, algo=algo), nn.BatchNorm2d(oup)]
        self.conv = FusedSequential(*layers)
        self.out_channels = oup

    def forward(self, x):
        residual = x if self.use_res_connect else None
        *expand, depthwise, project, project_bn = self.conv
        if is_unfused() or self.training:
            return self.conv(x, residual=residual)
        # Inference: depthwise-BN-ReLU6 and the projection-BN (+ input) as one fused
        # separable op, which never writes the widest tensor of the block (the
        # depthwise output) to memory.
        for stage in expand:
            x = stage(x)
        return separable_forward(depthwise[0], depthwise[1], project, project_bn, x, residual, "relu6", "none")


class MobileNetV2(nn.Module):
    """torchvision's MobileNetV2: features (stem, inverted residuals, 1x1 to 1280),
    global average pool, classifier (dropout, linear)."""

    def __init__(self, num_classes=1000, width_mult=1.0, round_nearest=8, dropout=0.2, config=V2_CONFIG,
                 algo="auto"):
        super().__init__()
        c = make_divisible(32 * width_mult, round_nearest)
        self.last_channel = make_divisible(1280 * max(1.0, width_mult), round_nearest)
        features = [ConvNormAct(3, c, 3, 2, activation="relu6", algo=algo)]
        for t, ch, n, s in config:
            out = make_divisible(ch * width_mult, round_nearest)
            for i in range(n):
                features.append(InvertedResidual(c, out, s if i == 0 else 1, t, algo=algo))
                c = out
        features.append(ConvNormAct(c, self.last_channel, 1, activation="relu6", algo=algo))
        self.features = nn.Sequential(*features)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(self.last_channel, num_classes))
        _init(self)

    def forward(self, x):
        return self.classifier(self.avgpool(self.features(x)).flatten(1))


V1_WIDTHS = {"mobilenet_v1": 1.0, "mobilenet_v1_075": 0.75, "mobilenet_v1_050": 0.5, "mobilenet_v1_025": 0.25}
V2_WIDTHS = {"mobilenet_v2": 1.0}


def _register(name, cls, width):
    def fn(num_classes=1000, **config):
        config.setdefault("width_mult", width)
        return cls(num_classes=num_classes, **config)
    fn.__name__ = fn.__qualname__ = name
    fn.__doc__ = f"{cls.__name__} with width multiplier {width}; config keys: width_mult, dropout, config, algo."
    register_model(fn)
    globals()[name] = fn


for _name, _w in V1_WIDTHS.items():
    _register(_name, MobileNetV1, _w)
for _name, _w in V2_WIDTHS.items():
    _register(_name, MobileNetV2, _w)
