"""EfficientNet-B0..B7 (Tan & Le 2019): the B0 table of MBConv stages, scaled by
compound scaling (a width and a depth multiplier per variant; the resolution is the
canonical input size in ``RESOLUTIONS``).

torchvision compatibility: ``efficientnet_b0`` ... ``efficientnet_b7`` have
torchvision's parameter names and shapes (``features.0.0``,
``features.1.0.block.0.0``, ``features.2.0.block.3.1``, ``features.8.0``,
``classifier.1``; squeeze-excitation ``block.2.fc1/fc2``): a torchvision state_dict
loads strictly and gives the same outputs (B5-B7 use torchvision's BatchNorm eps=1e-3,
momentum=0.01).

Every conv -> BN [-> SiLU] (depthwise included) is one fused fastcnn op; in eval
mode (or without stochastic depth) the residual add is fused into the projection."""
import math

from torch import nn

from fastcnn.models._layers import ConvNormAct, SqueezeExcitation, StochasticDepth, make_divisible
from fastcnn.models._registry import register_model
from fastcnn.nn import Conv2d

# EfficientNet-B0 (the paper's Table 1): expand ratio, kernel, stride, in, out, layers
B0_CONFIG = [
    (1, 3, 1, 32, 16, 1),
    (6, 3, 2, 16, 24, 2),
    (6, 5, 2, 24, 40, 2),
    (6, 3, 2, 40, 80, 3),
    (6, 5, 1, 80, 112, 3),
    (6, 5, 2, 112, 192, 4),
    (6, 3, 1, 192, 320, 1),
]

# variant: (width multiplier, depth multiplier, dropout, canonical resolution)
VARIANTS = {
    "efficientnet_b0": (1.0, 1.0, 0.2, 224),
    "efficientnet_b1": (1.0, 1.1, 0.2, 240),
    "efficientnet_b2": (1.1, 1.2, 0.3, 260),
    "efficientnet_b3": (1.2, 1.4, 0.3, 300),
    "efficientnet_b4": (1.4, 1.8, 0.4, 380),
    "efficientnet_b5": (1.6, 2.2, 0.4, 456),
    "efficientnet_b6": (1.8, 2.6, 0.5, 528),
    "efficientnet_b7": (2.0, 3.1, 0.5, 600),
}
RESOLUTIONS = {name: v[3] for name, v in VARIANTS.items()}


class MBConv(nn.Module):
    """[1x1 expand conv-BN-SiLU], kxk depthwise conv-BN-SiLU, squeeze-excitation
    (squeeze to in/4), 1x1 projection conv-BN, stochastic depth + input when the
    shape allows."""
    _fastcnn_fused = True

    def __init__(self, inp, out, expand_ratio, kernel, stride, sd_prob, bn_kw, algo="auto"):
        super().__init__()
        self.use_res_connect = stride == 1 and inp == out
        hidden = make_divisible(inp * expand_ratio, 8)
        layers = []
        if hidden != inp:
            layers.append(ConvNormAct(inp, hidden, 1, activation="silu", algo=algo, **bn_kw))
        layers += [ConvNormAct(hidden, hidden, kernel, stride, groups=hidden, activation="silu", algo=algo, **bn_kw),
                   SqueezeExcitation(hidden, max(1, inp // 4), activation="silu", algo=algo),
                   ConvNormAct(hidden, out, 1, activation="none", algo=algo, **bn_kw)]
        self.block = nn.Sequential(*layers)
        self.stochastic_depth = StochasticDepth(sd_prob, "row")
        self.out_channels = out

    def forward(self, x):
        h = x
        for m in self.block[:-1]:
            h = m(h)
        if not self.use_res_connect:
            return self.block[-1](h)
        if not self.training or self.stochastic_depth.p == 0:
            return self.block[-1](h, residual=x)
        return self.stochastic_depth(self.block[-1](h)) + x


class EfficientNet(nn.Module):
    def __init__(self, width_mult=1.0, depth_mult=1.0, dropout=0.2, num_classes=1000, stochastic_depth_prob=0.2,
                 config=B0_CONFIG, bn_eps=1e-5, bn_momentum=0.1, algo="auto"):
        super().__init__()
        bn_kw = {"eps": bn_eps, "momentum": bn_momentum}
        rows = [(t, k, s, make_divisible(i * width_mult, 8), make_divisible(o * width_mult, 8),
                 int(math.ceil(n * depth_mult))) for t, k, s, i, o, n in config]
        layers = [ConvNormAct(3, rows[0][3], 3, 2, activation="silu", algo=algo, **bn_kw)]
        total, block_id = sum(r[5] for r in rows), 0
        for t, k, s, inp, out, n in rows:
            stage = []
            for j in range(n):
                sd = stochastic_depth_prob * float(block_id) / total
                stage.append(MBConv(inp if j == 0 else out, out, t, k, s if j == 0 else 1, sd, bn_kw, algo=algo))
                block_id += 1
            layers.append(nn.Sequential(*stage))
        last_in = rows[-1][4]
        layers.append(ConvNormAct(last_in, 4 * last_in, 1, activation="silu", algo=algo, **bn_kw))
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Dropout(dropout, inplace=True), nn.Linear(4 * last_in, num_classes))
        for m in self.modules():
            if isinstance(m, Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                r = 1.0 / math.sqrt(m.out_features)
                nn.init.uniform_(m.weight, -r, r)
                nn.init.zeros_(m.bias)

    def forward(self, x):
        return self.classifier(self.avgpool(self.features(x)).flatten(1))


def _register(name):
    w, d, p, _ = VARIANTS[name]
    late = name in ("efficientnet_b5", "efficientnet_b6", "efficientnet_b7")

    def fn(num_classes=1000, **config):
        config.setdefault("width_mult", w)
        config.setdefault("depth_mult", d)
        config.setdefault("dropout", p)
        if late:
            config.setdefault("bn_eps", 1e-3)
            config.setdefault("bn_momentum", 0.01)
        return EfficientNet(num_classes=num_classes, **config)
    fn.__name__ = fn.__qualname__ = name
    fn.__doc__ = (f"{name}: width x{w}, depth x{d}, dropout {p}, input {RESOLUTIONS[name]}px; config keys: "
                  "width_mult, depth_mult, dropout, stochastic_depth_prob, config, bn_eps, bn_momentum, algo.")
    register_model(fn)
    globals()[name] = fn


for _name in VARIANTS:
    _register(_name)
