"""Inception-v3 (Szegedy et al. 2016), Inception-v4 and Inception-ResNet-v2
(Szegedy et al. 2017).

- ``inception_v3``: torchvision's parameter names and shapes (``Conv2d_1a_3x3``,
  ``Mixed_5b.branch1x1``, ``AuxLogits``, ``fc``); 27,161,264 parameters with the
  auxiliary classifier (torchvision's published count), 299x299 input.
- ``inception_v4``, ``inception_resnet_v2``: timm's parameter names and shapes
  (``features.N`` / ``last_linear``; ``conv2d_1a``, ``repeat``, ``block8``,
  ``classif``), which are those of the Cadene ``pretrainedmodels`` ports of the
  TF-slim checkpoints: 42,679,816 and 55,843,464 parameters, 299x299 input.

Every conv -> BN -> ReLU (BasicConv2d, submodules ``conv`` and ``bn``, BN eps 1e-3)
is one fused fastcnn ConvBNAct. Each network is a table of (name, block, arguments)."""
from collections import namedtuple

import torch
import torch.nn.functional as F
from torch import nn

from fastcnn.models._registry import register_model
from fastcnn.nn import Conv2d, ConvBNAct

InceptionOutputs = namedtuple("InceptionOutputs", ["logits", "aux_logits"])


def BasicConv2d(in_channels, out_channels, kernel_size, stride=1, padding=0, algo="auto"):
    """conv (no bias) -> BatchNorm (eps 1e-3) -> ReLU, one fused fastcnn op."""
    return ConvBNAct(in_channels, out_channels, kernel_size, stride=stride, padding=padding, eps=0.001, algo=algo)


def _seq(algo, *convs):
    """nn.Sequential of BasicConv2d from (in, out, kernel, stride, padding) tuples; a
    string entry "avg" / "max" puts a 3x3 pool (stride 1 avg, stride 2 max) there."""
    layers = []
    for c in convs:
        if c == "avg":
            layers.append(nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False))
        elif c == "max":
            layers.append(nn.MaxPool2d(3, stride=2))
        else:
            layers.append(BasicConv2d(*c, algo=algo))
    return nn.Sequential(*layers)


class _Branches(nn.Module):
    """Runs the branches (child modules whose names are in ``self.order``) on the same
    input and concatenates their outputs along channels."""
    order = ()

    def forward(self, x):
        return torch.cat([getattr(self, name)(x) for name in self.order], 1)


# ---------------------------------------------------------------- Inception-v3 (torchvision)

class InceptionA(nn.Module):
    def __init__(self, in_channels, pool_features, algo="auto"):
        super().__init__()
        self.branch1x1 = BasicConv2d(in_channels, 64, 1, algo=algo)
        self.branch5x5_1 = BasicConv2d(in_channels, 48, 1, algo=algo)
        self.branch5x5_2 = BasicConv2d(48, 64, 5, padding=2, algo=algo)
        self.branch3x3dbl_1 = BasicConv2d(in_channels, 64, 1, algo=algo)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1, algo=algo)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, padding=1, algo=algo)
        self.branch_pool = BasicConv2d(in_channels, pool_features, 1, algo=algo)

    def forward(self, x):
        b1 = self.branch1x1(x)
        b5 = self.branch5x5_2(self.branch5x5_1(x))
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        bp = self.branch_pool(F.avg_pool2d(x, kernel_size=3, stride=1, padding=1))
        return torch.cat([b1, b5, b3, bp], 1)


class InceptionB(nn.Module):
    def __init__(self, in_channels, algo="auto"):
        super().__init__()
        self.branch3x3 = BasicConv2d(in_channels, 384, 3, stride=2, algo=algo)
        self.branch3x3dbl_1 = BasicConv2d(in_channels, 64, 1, algo=algo)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1, algo=algo)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, stride=2, algo=algo)

    def forward(self, x):
        b3 = self.branch3x3(x)
        bd = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return torch.cat([b3, bd, F.max_pool2d(x, kernel_size=3, stride=2)], 1)


class InceptionC(nn.Module):
    def __init__(self, in_channels, channels_7x7, algo="auto"):
        super().__init__()
        c7 = channels_7x7
        self.branch1x1 = BasicConv2d(in_channels, 192, 1, algo=algo)
        self.branch7x7_1 = BasicConv2d(in_channels, c7, 1, algo=algo)
        self.branch7x7_2 = BasicConv2d(c7, c7, (1, 7), padding=(0, 3), algo=algo)
        self.branch7x7_3 = BasicConv2d(c7, 192, (7, 1), padding=(3, 0), algo=algo)
        self.branch7x7dbl_1 = BasicConv2d(in_channels, c7, 1, algo=algo)
        self.branch7x7dbl_2 = BasicConv2d(c7, c7, (7, 1), padding=(3, 0), algo=algo)
        self.branch7x7dbl_3 = BasicConv2d(c7, c7, (1, 7), padding=(0, 3), algo=algo)
        self.branch7x7dbl_4 = BasicConv2d(c7, c7, (7, 1), padding=(3, 0), algo=algo)
        self.branch7x7dbl_5 = BasicConv2d(c7, 192, (1, 7), padding=(0, 3), algo=algo)
        self.branch_pool = BasicConv2d(in_channels, 192, 1, algo=algo)

    def forward(self, x):
        b1 = self.branch1x1(x)
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        bd = x
        for i in range(1, 6):
            bd = getattr(self, f"branch7x7dbl_{i}")(bd)
        bp = self.branch_pool(F.avg_pool2d(x, kernel_size=3, stride=1, padding=1))
        return torch.cat([b1, b7, bd, bp], 1)


class InceptionD(nn.Module):
    def __init__(self, in_channels, algo="auto"):
        super().__init__()
        self.branch3x3_1 = BasicConv2d(in_channels, 192, 1, algo=algo)
        self.branch3x3_2 = BasicConv2d(192, 320, 3, stride=2, algo=algo)
        self.branch7x7x3_1 = BasicConv2d(in_channels, 192, 1, algo=algo)
        self.branch7x7x3_2 = BasicConv2d(192, 192, (1, 7), padding=(0, 3), algo=algo)
        self.branch7x7x3_3 = BasicConv2d(192, 192, (7, 1), padding=(3, 0), algo=algo)
        self.branch7x7x3_4 = BasicConv2d(192, 192, 3, stride=2, algo=algo)

    def forward(self, x):
        b3 = self.branch3x3_2(self.branch3x3_1(x))
        b7 = x
        for i in range(1, 5):
            b7 = getattr(self, f"branch7x7x3_{i}")(b7)
        return torch.cat([b3, b7, F.max_pool2d(x, kernel_size=3, stride=2)], 1)


class InceptionE(nn.Module):
    def __init__(self, in_channels, algo="auto"):
        super().__init__()
        self.branch1x1 = BasicConv2d(in_channels, 320, 1, algo=algo)
        self.branch3x3_1 = BasicConv2d(in_channels, 384, 1, algo=algo)
        self.branch3x3_2a = BasicConv2d(384, 384, (1, 3), padding=(0, 1), algo=algo)
        self.branch3x3_2b = BasicConv2d(384, 384, (3, 1), padding=(1, 0), algo=algo)
        self.branch3x3dbl_1 = BasicConv2d(in_channels, 448, 1, algo=algo)
        self.branch3x3dbl_2 = BasicConv2d(448, 384, 3, padding=1, algo=algo)
        self.branch3x3dbl_3a = BasicConv2d(384, 384, (1, 3), padding=(0, 1), algo=algo)
        self.branch3x3dbl_3b = BasicConv2d(384, 384, (3, 1), padding=(1, 0), algo=algo)
        self.branch_pool = BasicConv2d(in_channels, 192, 1, algo=algo)

    def forward(self, x):
        b1 = self.branch1x1(x)
        b3 = self.branch3x3_1(x)
        b3 = torch.cat([self.branch3x3_2a(b3), self.branch3x3_2b(b3)], 1)
        bd = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        bd = torch.cat([self.branch3x3dbl_3a(bd), self.branch3x3dbl_3b(bd)], 1)
        bp = self.branch_pool(F.avg_pool2d(x, kernel_size=3, stride=1, padding=1))
        return torch.cat([b1, b3, bd, bp], 1)


class InceptionAux(nn.Module):
    def __init__(self, in_channels, num_classes, algo="auto"):
        super().__init__()
        self.conv0 = BasicConv2d(in_channels, 128, 1, algo=algo)
        self.conv1 = BasicConv2d(128, 768, 5, algo=algo)
        self.fc = nn.Linear(768, num_classes)

    def forward(self, x):
        x = F.avg_pool2d(x, kernel_size=5, stride=3)  # 17x17 -> 5x5
        x = self.conv1(self.conv0(x))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, (1, 1)), 1))


_MAXPOOL = "maxpool"
# torchvision's layout: (attribute name, block, constructor arguments)
INCEPTION_V3 = [
    ("Conv2d_1a_3x3", BasicConv2d, (3, 32, 3, 2)),
    ("Conv2d_2a_3x3", BasicConv2d, (32, 32, 3)),
    ("Conv2d_2b_3x3", BasicConv2d, (32, 64, 3, 1, 1)),
    ("maxpool1", _MAXPOOL, ()),
    ("Conv2d_3b_1x1", BasicConv2d, (64, 80, 1)),
    ("Conv2d_4a_3x3", BasicConv2d, (80, 192, 3)),
    ("maxpool2", _MAXPOOL, ()),
    ("Mixed_5b", InceptionA, (192, 32)),
    ("Mixed_5c", InceptionA, (256, 64)),
    ("Mixed_5d", InceptionA, (288, 64)),
    ("Mixed_6a", InceptionB, (288,)),
    ("Mixed_6b", InceptionC, (768, 128)),
    ("Mixed_6c", InceptionC, (768, 160)),
    ("Mixed_6d", InceptionC, (768, 160)),
    ("Mixed_6e", InceptionC, (768, 192)),
    ("AuxLogits", InceptionAux, (768,)),  # taps Mixed_6e's output, training mode only
    ("Mixed_7a", InceptionD, (768,)),
    ("Mixed_7b", InceptionE, (1280,)),
    ("Mixed_7c", InceptionE, (2048,)),
]


class Inception3(nn.Module):
    def __init__(self, num_classes=1000, aux_logits=True, transform_input=False, dropout=0.5, algo="auto",
                 init_weights=True):
        super().__init__()
        self.aux_logits = aux_logits
        self.transform_input = transform_input
        self.stages = []
        for name, block, args in INCEPTION_V3:
            if block is _MAXPOOL:
                module = nn.MaxPool2d(kernel_size=3, stride=2)
            elif block is InceptionAux:
                module = InceptionAux(*args, num_classes, algo=algo) if aux_logits else None
            else:
                module = block(*args, algo=algo)
            setattr(self, name, module)
            self.stages.append(name)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.dropout = nn.Dropout(p=dropout)
        self.fc = nn.Linear(2048, num_classes)
        if init_weights:  # torchvision's
            for m in self.modules():
                if isinstance(m, (nn.Conv2d, nn.Linear)):
                    nn.init.trunc_normal_(m.weight, mean=0.0, std=getattr(m, "stddev", 0.1), a=-2, b=2)
                elif isinstance(m, nn.BatchNorm2d):
                    nn.init.constant_(m.weight, 1)
                    nn.init.constant_(m.bias, 0)

    def _transform_input(self, x):
        if self.transform_input:
            x = torch.cat([x[:, 0:1] * (0.229 / 0.5) + (0.485 - 0.5) / 0.5,
                           x[:, 1:2] * (0.224 / 0.5) + (0.456 - 0.5) / 0.5,
                           x[:, 2:3] * (0.225 / 0.5) + (0.406 - 0.5) / 0.5], 1)
        return x

    def forward(self, x):
        x = self._transform_input(x)
        aux = None
        for name in self.stages:
            if name == "AuxLogits":
                if self.AuxLogits is not None and self.training:
                    aux = self.AuxLogits(x)
                continue
            x = getattr(self, name)(x)
        x = self.fc(torch.flatten(self.dropout(self.avgpool(x)), 1))
        if self.training and self.aux_logits:
            return InceptionOutputs(x, aux)
        return x


@register_model
def inception_v3(num_classes=1000, **config):
    """Inception-v3 (torchvision's names), 299x299 input; aux classifier in training mode."""
    return Inception3(num_classes, **config)


# ---------------------------------------------------------------- Inception-v4 (timm / Cadene names)

class Mixed3a(nn.Module):
    def __init__(self, algo="auto"):
        super().__init__()
        self.maxpool = nn.MaxPool2d(3, stride=2)
        self.conv = BasicConv2d(64, 96, 3, stride=2, algo=algo)

    def forward(self, x):
        return torch.cat([self.maxpool(x), self.conv(x)], 1)


class Mixed5a(nn.Module):
    def __init__(self, algo="auto"):
        super().__init__()
        self.conv = BasicConv2d(192, 192, 3, stride=2, algo=algo)
        self.maxpool = nn.MaxPool2d(3, stride=2)

    def forward(self, x):
        return torch.cat([self.conv(x), self.maxpool(x)], 1)


def _branches(table, algo="auto"):
    """A concatenating multi-branch block from ``{branch name: [conv tuples / "avg" / "max"]}``;
    a branch given as a tuple is a single BasicConv2d, "max" alone a max-pool."""
    block = _Branches()
    for name, spec in table.items():
        if spec == "max":
            module = nn.MaxPool2d(3, stride=2)
        elif isinstance(spec, tuple):
            module = BasicConv2d(*spec, algo=algo)
        else:
            module = _seq(algo, *spec)
        block.add_module(name, module)
    block.order = tuple(table)
    return block


def _1x7(i, o):
    return (i, o, (1, 7), 1, (0, 3))


def _7x1(i, o):
    return (i, o, (7, 1), 1, (3, 0))


V4_BLOCKS = {
    "Mixed_4a": {"branch0": [(160, 64, 1), (64, 96, 3)],
                 "branch1": [(160, 64, 1), _1x7(64, 64), _7x1(64, 64), (64, 96, 3)]},
    "Inception_A": {"branch0": (384, 96, 1),
                    "branch1": [(384, 64, 1), (64, 96, 3, 1, 1)],
                    "branch2": [(384, 64, 1), (64, 96, 3, 1, 1), (96, 96, 3, 1, 1)],
                    "branch3": ["avg", (384, 96, 1)]},
    "Reduction_A": {"branch0": (384, 384, 3, 2),
                    "branch1": [(384, 192, 1), (192, 224, 3, 1, 1), (224, 256, 3, 2)],
                    "branch2": "max"},
    "Inception_B": {"branch0": (1024, 384, 1),
                    "branch1": [(1024, 192, 1), _1x7(192, 224), _7x1(224, 256)],
                    "branch2": [(1024, 192, 1), _7x1(192, 192), _1x7(192, 224), _7x1(224, 224), _1x7(224, 256)],
                    "branch3": ["avg", (1024, 128, 1)]},
    "Reduction_B": {"branch0": [(1024, 192, 1), (192, 192, 3, 2)],
                    "branch1": [(1024, 256, 1), _1x7(256, 256), _7x1(256, 320), (320, 320, 3, 2)],
                    "branch2": "max"},
}


class InceptionV4C(nn.Module):
    """Inception-C of Inception-v4: two of its branches split into 1x3 and 3x1 halves."""

    def __init__(self, algo="auto"):
        super().__init__()
        self.branch0 = BasicConv2d(1536, 256, 1, algo=algo)
        self.branch1_0 = BasicConv2d(1536, 384, 1, algo=algo)
        self.branch1_1a = BasicConv2d(384, 256, (1, 3), padding=(0, 1), algo=algo)
        self.branch1_1b = BasicConv2d(384, 256, (3, 1), padding=(1, 0), algo=algo)
        self.branch2_0 = BasicConv2d(1536, 384, 1, algo=algo)
        self.branch2_1 = BasicConv2d(384, 448, (3, 1), padding=(1, 0), algo=algo)
        self.branch2_2 = BasicConv2d(448, 512, (1, 3), padding=(0, 1), algo=algo)
        self.branch2_3a = BasicConv2d(512, 256, (1, 3), padding=(0, 1), algo=algo)
        self.branch2_3b = BasicConv2d(512, 256, (3, 1), padding=(1, 0), algo=algo)
        self.branch3 = _seq(algo, "avg", (1536, 256, 1))

    def forward(self, x):
        x0 = self.branch0(x)
        x1 = self.branch1_0(x)
        x1 = torch.cat([self.branch1_1a(x1), self.branch1_1b(x1)], 1)
        x2 = self.branch2_2(self.branch2_1(self.branch2_0(x)))
        x2 = torch.cat([self.branch2_3a(x2), self.branch2_3b(x2)], 1)
        return torch.cat([x0, x1, x2, self.branch3(x)], 1)


# Figure 9 of the paper: stem, 4 x Inception-A, Reduction-A, 7 x Inception-B, Reduction-B, 3 x Inception-C
INCEPTION_V4 = [("conv", (3, 32, 3, 2)), ("conv", (32, 32, 3)), ("conv", (32, 64, 3, 1, 1)),
                ("Mixed_3a", 1), ("Mixed_4a", 1), ("Mixed_5a", 1),
                ("Inception_A", 4), ("Reduction_A", 1), ("Inception_B", 7), ("Reduction_B", 1),
                ("Inception_C", 3)]


class InceptionV4(nn.Module):
    def __init__(self, num_classes=1000, in_channels=3, dropout=0.0, algo="auto"):
        super().__init__()
        layers = []
        for kind, arg in INCEPTION_V4:
            if kind == "conv":
                layers.append(BasicConv2d(*((in_channels,) + arg[1:] if not layers else arg), algo=algo))
            elif kind == "Mixed_3a":
                layers.append(Mixed3a(algo))
            elif kind == "Mixed_5a":
                layers.append(Mixed5a(algo))
            elif kind == "Inception_C":
                layers += [InceptionV4C(algo) for _ in range(arg)]
            else:
                layers += [_branches(V4_BLOCKS[kind], algo) for _ in range(arg)]
        self.features = nn.Sequential(*layers)
        self.global_pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout)
        self.last_linear = nn.Linear(1536, num_classes)

    def forward(self, x):
        x = torch.flatten(self.global_pool(self.features(x)), 1)
        return self.last_linear(self.dropout(x))


@register_model
def inception_v4(num_classes=1000, **config):
    """Inception-v4 (timm's names), 299x299 input."""
    return InceptionV4(num_classes, **config)


# ---------------------------------------------------------------- Inception-ResNet-v2 (timm / Cadene names)

class _ResidualInception(nn.Module):
    """relu(x + scale * conv2d(cat(branches(x)))): Inception-ResNet's residual blocks
    (Block35 / Block17 / Block8). ``conv2d`` is a biased 1x1 fastcnn Conv2d back to
    the input width."""

    def __init__(self, table, width, scale, relu=True, algo="auto"):
        super().__init__()
        self.scale = scale
        for name, spec in table.items():
            self.add_module(name, BasicConv2d(*spec, algo=algo) if isinstance(spec, tuple) else _seq(algo, *spec))
        self.order = tuple(table)
        cat = sum((spec if isinstance(spec, tuple) else spec[-1])[1] for spec in table.values())
        self.conv2d = Conv2d(cat, width, kernel_size=1, stride=1, algo=algo)
        self.relu = nn.ReLU(inplace=False) if relu else None

    def forward(self, x):
        out = self.conv2d(torch.cat([getattr(self, name)(x) for name in self.order], 1))
        out = out * self.scale + x
        return self.relu(out) if self.relu is not None else out


IRV2_RESIDUAL = {  # (branches, width)
    "Block35": ({"branch0": (320, 32, 1),
                 "branch1": [(320, 32, 1), (32, 32, 3, 1, 1)],
                 "branch2": [(320, 32, 1), (32, 48, 3, 1, 1), (48, 64, 3, 1, 1)]}, 320),
    "Block17": ({"branch0": (1088, 192, 1),
                 "branch1": [(1088, 128, 1), _1x7(128, 160), _7x1(160, 192)]}, 1088),
    "Block8": ({"branch0": (2080, 192, 1),
                "branch1": [(2080, 192, 1), (192, 224, (1, 3), 1, (0, 1)), (224, 256, (3, 1), 1, (1, 0))]}, 2080),
}
IRV2_MIXED = {
    "mixed_5b": {"branch0": (192, 96, 1),
                 "branch1": [(192, 48, 1), (48, 64, 5, 1, 2)],
                 "branch2": [(192, 64, 1), (64, 96, 3, 1, 1), (96, 96, 3, 1, 1)],
                 "branch3": ["avg", (192, 64, 1)]},
    "mixed_6a": {"branch0": (320, 384, 3, 2),
                 "branch1": [(320, 256, 1), (256, 256, 3, 1, 1), (256, 384, 3, 2)],
                 "branch2": "max"},
    "mixed_7a": {"branch0": [(1088, 256, 1), (256, 384, 3, 2)],
                 "branch1": [(1088, 256, 1), (256, 288, 3, 2)],
                 "branch2": [(1088, 256, 1), (256, 288, 3, 1, 1), (288, 320, 3, 2)],
                 "branch3": "max"},
}
# Figure 18 of the paper with timm's attribute names:
# (name, kind, argument): conv tuple, "max" pool, a mixed block, or (residual block, count, scale)
INCEPTION_RESNET_V2 = [
    ("conv2d_1a", "conv", (3, 32, 3, 2)), ("conv2d_2a", "conv", (32, 32, 3)),
    ("conv2d_2b", "conv", (32, 64, 3, 1, 1)), ("maxpool_3a", "max", None),
    ("conv2d_3b", "conv", (64, 80, 1)), ("conv2d_4a", "conv", (80, 192, 3)), ("maxpool_5a", "max", None),
    ("mixed_5b", "mixed", None), ("repeat", "residual", ("Block35", 10, 0.17)),
    ("mixed_6a", "mixed", None), ("repeat_1", "residual", ("Block17", 20, 0.10)),
    ("mixed_7a", "mixed", None), ("repeat_2", "residual", ("Block8", 9, 0.20)),
    ("block8", "last", ("Block8", 1, 1.0)), ("conv2d_7b", "conv", (2080, 1536, 1)),
]


class InceptionResnetV2(nn.Module):
    def __init__(self, num_classes=1000, in_channels=3, dropout=0.0, algo="auto"):
        super().__init__()
        self.stages = []
        for name, kind, arg in INCEPTION_RESNET_V2:
            if kind == "conv":
                module = BasicConv2d(*((in_channels,) + arg[1:] if name == "conv2d_1a" else arg), algo=algo)
            elif kind == "max":
                module = nn.MaxPool2d(3, stride=2)
            elif kind == "mixed":
                module = _branches(IRV2_MIXED[name], algo)
            else:
                block, count, scale = arg
                table, width = IRV2_RESIDUAL[block]
                blocks = [_ResidualInception(table, width, scale, relu=kind != "last", algo=algo)
                          for _ in range(count)]
                module = blocks[0] if kind == "last" else nn.Sequential(*blocks)
            setattr(self, name, module)
            self.stages.append(name)
        self.global_pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout)
        self.classif = nn.Linear(1536, num_classes)

    def forward(self, x):
        for name in self.stages:
            x = getattr(self, name)(x)
        x = torch.flatten(self.global_pool(x), 1)
        return self.classif(self.dropout(x))


@register_model
def inception_resnet_v2(num_classes=1000, **config):
    """Inception-ResNet-v2 (timm's names), 299x299 input."""
    return InceptionResnetV2(num_classes, **config)
