"""Every distinct convolution layer of the benchmark networks, as
(name, C, H, W, K, R, S, stride, padding, groups) at batch 1; the batch is set by
the caller. Shapes are those of the torchvision models at 224x224 (AlexNet's
original two-tower grouping for conv2/4/5 is listed as in the paper)."""
from dataclasses import dataclass


@dataclass(frozen=True)
class ConvLayer:
    name: str
    c: int
    h: int
    w: int
    k: int
    r: int
    s: int
    stride: int = 1
    padding: int = 0
    groups: int = 1

    def flops(self, batch: int) -> int:
        """2 * multiply-adds of the forward pass."""
        p = (self.h + 2 * self.padding - self.r) // self.stride + 1
        q = (self.w + 2 * self.padding - self.s) // self.stride + 1
        return 2 * batch * self.k * p * q * (self.c // self.groups) * self.r * self.s


def _L(*a, **k):
    return ConvLayer(*a, **k)


ALEXNET = [
    _L("alexnet.conv1", 3, 227, 227, 96, 11, 11, 4, 0),
    _L("alexnet.conv2", 96, 27, 27, 256, 5, 5, 1, 2, groups=2),
    _L("alexnet.conv3", 256, 13, 13, 384, 3, 3, 1, 1),
    _L("alexnet.conv4", 384, 13, 13, 384, 3, 3, 1, 1, groups=2),
    _L("alexnet.conv5", 384, 13, 13, 256, 3, 3, 1, 1, groups=2),
]

VGG16 = [
    _L("vgg16.conv1_1", 3, 224, 224, 64, 3, 3, 1, 1),
    _L("vgg16.conv1_2", 64, 224, 224, 64, 3, 3, 1, 1),
    _L("vgg16.conv2_1", 64, 112, 112, 128, 3, 3, 1, 1),
    _L("vgg16.conv2_2", 128, 112, 112, 128, 3, 3, 1, 1),
    _L("vgg16.conv3_1", 128, 56, 56, 256, 3, 3, 1, 1),
    _L("vgg16.conv3_2", 256, 56, 56, 256, 3, 3, 1, 1),
    _L("vgg16.conv4_1", 256, 28, 28, 512, 3, 3, 1, 1),
    _L("vgg16.conv4_2", 512, 28, 28, 512, 3, 3, 1, 1),
    _L("vgg16.conv5_1", 512, 14, 14, 512, 3, 3, 1, 1),
]


def _bottleneck_layers(prefix, widths, groups=1):
    """Distinct convs of a ResNet-50-style network: stem, then per stage the 1x1
    reduce, the 3x3 (strided in the first block of stages 2-4), the 1x1 expand and
    the strided 1x1 downsample. ``widths``: the 3x3 conv's width per stage."""
    layers = [_L(f"{prefix}.conv1", 3, 224, 224, 64, 7, 7, 2, 3)]
    in_ch, size = 64, 56
    for stage, width in enumerate(widths, start=1):
        out_ch = 256 * 2 ** (stage - 1)
        stride = 1 if stage == 1 else 2
        p = f"{prefix}.layer{stage}"
        layers += [
            _L(f"{p}.0.conv1", in_ch, size, size, width, 1, 1),
            _L(f"{p}.0.conv2", width, size, size, width, 3, 3, stride, 1, groups),
            _L(f"{p}.0.conv3", width, size // stride, size // stride, out_ch, 1, 1),
            _L(f"{p}.0.downsample", in_ch, size, size, out_ch, 1, 1, stride),
        ]
        size //= stride
        layers += [
            _L(f"{p}.1.conv1", out_ch, size, size, width, 1, 1),
        ]
        if stride != 1:  # later blocks' 3x3 runs at the reduced size, unstrided
            layers.append(_L(f"{p}.1.conv2", width, size, size, width, 3, 3, 1, 1, groups))
        in_ch = out_ch
    return layers


RESNET50 = _bottleneck_layers("resnet50", [64, 128, 256, 512])
RESNEXT50 = _bottleneck_layers("resnext50_32x4d", [128, 256, 512, 1024], groups=32)

NETWORKS = {"alexnet": ALEXNET, "vgg16": VGG16, "resnet50": RESNET50, "resnext50_32x4d": RESNEXT50}


def all_layers(networks=None):
    return [layer for n in (networks or NETWORKS) for layer in NETWORKS[n]]
