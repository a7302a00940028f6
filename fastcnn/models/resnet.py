"""ResNet family: ResNet-18/34/50/101/152 (He et al. 2015), Wide ResNet-50-2/101-2
(Zagoruyko & Komodakis 2016, torchvision's ImageNet variant), ResNeXt-50 32x4d,
ResNeXt-101 32x8d/64x4d (Xie et al. 2016), SE-ResNet-50 and SE-ResNeXt-50 32x4d
(Hu et al. 2017), and the pre-activation CIFAR networks: PreAct ResNet-164/1001
(He et al. 2016, "Identity Mappings") and WRN-28-10 (32x32 inputs).

Every network is one row of ``CONFIGS`` (block kind, depths, groups, width per
group, SE) fed to one builder.

torchvision compatibility: ``resnet18/34/50/101/152``, ``wide_resnet50_2``,
``wide_resnet101_2``, ``resnext50_32x4d``, ``resnext101_32x8d`` and
``resnext101_64x4d`` have torchvision's parameter names and shapes (``conv1``,
``bn1``, ``layer1.0.conv1`` ... ``layer1.0.downsample.0/1``, ``fc``): a torchvision
state_dict loads with ``load_state_dict(strict=True)`` and gives the same outputs.
``seresnet50`` / ``seresnext50_32x4d`` use the same names plus timm's
``layerX.Y.se.fc1/fc2``. The CIFAR pre-activation networks have their own names.

Blocks keep torchvision's separate ``convN``/``bnN`` submodules but their forward
runs each conv -> BN [-> + residual] -> ReLU as one fused fastcnn op
(``fastcnn.ops.conv_bn_act``)."""
import torch
import torch.nn.functional as F
from torch import nn

from fastcnn.models._layers import FusedSequential, SqueezeExcitation, fused
from fastcnn.models._registry import register_model
from fastcnn.nn import Conv2d


def _downsample(inplanes, outplanes, stride, algo):
    return FusedSequential(Conv2d(inplanes, outplanes, 1, stride, bias=False, algo=algo), nn.BatchNorm2d(outplanes))


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN(-ReLU); the residual add is fused into the second."""
    expansion = 1
    _fastcnn_fused = True

    def __init__(self, inplanes, planes, stride=1, groups=1, base_width=64, se=False, algo="auto"):
        super().__init__()
        if groups != 1 or base_width != 64:
            raise ValueError("BasicBlock only supports groups=1 and base_width=64")
        self.conv1 = Conv2d(inplanes, planes, 3, stride, 1, bias=False, algo=algo)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = Conv2d(planes, planes, 3, 1, 1, bias=False, algo=algo)
        self.bn2 = nn.BatchNorm2d(planes)
        self.se = SqueezeExcitation(planes, planes // 16, algo=algo) if se else None
        self.downsample = (_downsample(inplanes, planes, stride, algo)
                           if stride != 1 or inplanes != planes else None)

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = fused(self.conv1, self.bn1, x, None, "relu")
        if self.se is None:
            return fused(self.conv2, self.bn2, out, identity, "relu")
        return F.relu(self.se(fused(self.conv2, self.bn2, out, None, "none")) + identity)


class Bottleneck(nn.Module):
    """1x1 -> 3x3 (grouped, strided) -> 1x1 conv-BN(-ReLU), torchvision's v1.5
    (stride on the 3x3); the residual add is fused into the last conv unless an SE
    module sits between them."""
    expansion = 4
    _fastcnn_fused = True

    def __init__(self, inplanes, planes, stride=1, groups=1, base_width=64, se=False, algo="auto"):
        super().__init__()
        width = int(planes * (base_width / 64.0)) * groups
        out = planes * self.expansion
        self.conv1 = Conv2d(inplanes, width, 1, bias=False, algo=algo)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = Conv2d(width, width, 3, stride, 1, groups=groups, bias=False, algo=algo)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = Conv2d(width, out, 1, bias=False, algo=algo)
        self.bn3 = nn.BatchNorm2d(out)
        self.se = SqueezeExcitation(out, out // 16, algo=algo) if se else None
        self.downsample = _downsample(inplanes, out, stride, algo) if stride != 1 or inplanes != out else None

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = fused(self.conv1, self.bn1, x, None, "relu")
        out = fused(self.conv2, self.bn2, out, None, "relu")
        if self.se is None:
            return fused(self.conv3, self.bn3, out, identity, "relu")
        return F.relu(self.se(fused(self.conv3, self.bn3, out, None, "none")) + identity)


class ResNet(nn.Module):
    """The ImageNet ResNet (torchvision's layout): 7x7/2 stem, max-pool, four stages
    of ``block`` (``widths`` planes, ``layers`` blocks), global average pool, fc."""
    _fastcnn_fused = True

    def __init__(self, block, layers, num_classes=1000, groups=1, width_per_group=64, se=False,
                 zero_init_residual=False, block_kwargs=None, widths=(64, 128, 256, 512), algo="auto"):
        super().__init__()
        self.inplanes = widths[0]
        self.conv1 = Conv2d(3, widths[0], 7, 2, 3, bias=False, algo=algo)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        for i, (planes, n) in enumerate(zip(widths, layers)):
            blocks = []
            for j in range(n):
                blocks.append(block(self.inplanes, planes, 2 if (i > 0 and j == 0) else 1, groups, width_per_group,
                                    se, algo=algo, **(block_kwargs or {})))
                self.inplanes = planes * block.expansion
            setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(self.inplanes, num_classes)
        for m in self.modules():
            if isinstance(m, Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if zero_init_residual:
            for m in self.modules():
                if isinstance(m, Bottleneck) or hasattr(m, "bn3"):
                    nn.init.zeros_(m.bn3.weight)
                elif isinstance(m, BasicBlock):
                    nn.init.zeros_(m.bn2.weight)

    def forward(self, x):
        x = self.maxpool(fused(self.conv1, self.bn1, x, None, "relu"))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


# ---- pre-activation networks for 32x32 inputs (CIFAR) --------------------------------

class PreActBasicBlock(nn.Module):
    """BN-ReLU-conv3x3 twice (WRN's block, optional dropout between the convs);
    the projection shortcut takes the pre-activated input. The middle
    conv -> BN -> ReLU is one fused op."""
    expansion = 1
    _fastcnn_fused = True

    def __init__(self, inplanes, planes, stride=1, dropout=0.0, algo="auto"):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(inplanes)
        self.conv1 = Conv2d(inplanes, planes, 3, stride, 1, bias=False, algo=algo)
        self.bn2 = nn.BatchNorm2d(planes)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else None
        self.conv2 = Conv2d(planes, planes, 3, 1, 1, bias=False, algo=algo)
        self.shortcut = (Conv2d(inplanes, planes, 1, stride, bias=False, algo=algo)
                         if stride != 1 or inplanes != planes else None)

    def forward(self, x):
        o = F.relu(self.bn1(x))
        shortcut = x if self.shortcut is None else self.shortcut(o)
        o = fused(self.conv1, self.bn2, o, None, "relu")
        if self.dropout is not None:
            o = self.dropout(o)
        return self.conv2(o) + shortcut


class PreActBottleneck(nn.Module):
    """BN-ReLU-conv1x1, BN-ReLU-conv3x3, BN-ReLU-conv1x1 (expansion 4)."""
    expansion = 4
    _fastcnn_fused = True

    def __init__(self, inplanes, planes, stride=1, dropout=0.0, algo="auto"):
        super().__init__()
        out = planes * 4
        self.bn1 = nn.BatchNorm2d(inplanes)
        self.conv1 = Conv2d(inplanes, planes, 1, bias=False, algo=algo)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = Conv2d(planes, planes, 3, stride, 1, bias=False, algo=algo)
        self.bn3 = nn.BatchNorm2d(planes)
        self.conv3 = Conv2d(planes, out, 1, bias=False, algo=algo)
        self.shortcut = Conv2d(inplanes, out, 1, stride, bias=False, algo=algo) if stride != 1 or inplanes != out else None

    def forward(self, x):
        o = F.relu(self.bn1(x))
        shortcut = x if self.shortcut is None else self.shortcut(o)
        o = fused(self.conv1, self.bn2, o, None, "relu")
        o = fused(self.conv2, self.bn3, o, None, "relu")
        return self.conv3(o) + shortcut


class PreActResNetCifar(nn.Module):
    """3x3 stem with 16 channels, three stages (strides 1, 2, 2) of pre-activation
    blocks, final BN-ReLU, global average pool, fc."""
    _fastcnn_fused = True

    def __init__(self, block, depth_per_stage, widths, num_classes=10, dropout=0.0, algo="auto"):
        super().__init__()
        self.conv1 = Conv2d(3, 16, 3, 1, 1, bias=False, algo=algo)
        inplanes, stages = 16, []
        for i, planes in enumerate(widths):
            blocks = []
            for j in range(depth_per_stage):
                blocks.append(block(inplanes, planes, 2 if (i > 0 and j == 0) else 1, dropout, algo=algo))
                inplanes = planes * block.expansion
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = stages
        self.bn = nn.BatchNorm2d(inplanes)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(inplanes, num_classes)
        for m in self.modules():
            if isinstance(m, Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x):
        x = self.layer3(self.layer2(self.layer1(self.conv1(x))))
        return self.fc(torch.flatten(self.avgpool(F.relu(self.bn(x))), 1))


# ---- configuration table ---------------------------------------------------------------

CONFIGS = {
    # name: (block, layers, groups, width_per_group, se)
    "resnet18": (BasicBlock, (2, 2, 2, 2), 1, 64, False),
    "resnet34": (BasicBlock, (3, 4, 6, 3), 1, 64, False),
    "resnet50": (Bottleneck, (3, 4, 6, 3), 1, 64, False),
    "resnet101": (Bottleneck, (3, 4, 23, 3), 1, 64, False),
    "resnet152": (Bottleneck, (3, 8, 36, 3), 1, 64, False),
    "wide_resnet50_2": (Bottleneck, (3, 4, 6, 3), 1, 128, False),
    "wide_resnet101_2": (Bottleneck, (3, 4, 23, 3), 1, 128, False),
    "resnext50_32x4d": (Bottleneck, (3, 4, 6, 3), 32, 4, False),
    "resnext101_32x8d": (Bottleneck, (3, 4, 23, 3), 32, 8, False),
    "resnext101_64x4d": (Bottleneck, (3, 4, 23, 3), 64, 4, False),
    "seresnet50": (Bottleneck, (3, 4, 6, 3), 1, 64, True),
    "seresnext50_32x4d": (Bottleneck, (3, 4, 6, 3), 32, 4, True),
}

CIFAR_CONFIGS = {
    # name: (block, blocks per stage, stage widths, default dropout)
    "preact_resnet164": (PreActBottleneck, 18, (16, 32, 64), 0.0),
    "preact_resnet1001": (PreActBottleneck, 111, (16, 32, 64), 0.0),
    "wide_resnet28_10": (PreActBasicBlock, 4, (160, 320, 640), 0.0),
}


def _resnet(name, num_classes=1000, algo="auto", **config):
    block, layers, groups, wpg, se = CONFIGS[name]
    layers = config.pop("layers", layers)
    groups = config.pop("groups", groups)
    wpg = config.pop("width_per_group", wpg)
    return ResNet(block, layers, num_classes, groups, wpg, se, algo=algo, **config)


def _cifar(name, num_classes=10, algo="auto", **config):
    block, n, widths, dropout = CIFAR_CONFIGS[name]
    return PreActResNetCifar(block, config.pop("depth_per_stage", n), config.pop("widths", widths), num_classes,
                             config.pop("dropout", dropout), algo=algo, **config)


def _register(name, builder, doc):
    def fn(num_classes=1000, **config):
        return builder(name, num_classes=num_classes, **config)
    fn.__name__ = fn.__qualname__ = name
    fn.__doc__ = doc
    register_model(fn)
    globals()[name] = fn


for _name in CONFIGS:
    _register(_name, _resnet, f"{_name} (config {CONFIGS[_name][1:]}); config keys: layers, groups, "
                              "width_per_group, widths, zero_init_residual, algo.")
for _name in CIFAR_CONFIGS:
    _register(_name, _cifar, f"{_name} for 32x32 inputs; config keys: depth_per_stage, widths, dropout, algo. "
                             "Pass num_classes=10 or 100 for CIFAR.")
