"""Every distinct convolution layer of the benchmark networks, as
(name, C, H, W, K, R, S, stride, padding, groups, dilation) at batch 1; the batch is set by
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
    dilation: int = 1

    def out_hw(self):
        """(P, Q), the output's height and width."""
        return tuple((size + 2 * self.padding - self.dilation * (kernel - 1) - 1) // self.stride + 1
                     for size, kernel in ((self.h, self.r), (self.w, self.s)))

    def flops(self, batch: int) -> int:
        """2 * multiply-adds of the forward pass."""
        p, q = self.out_hw()
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


def _dw(name, c, size, k, stride):
    return ConvLayer(name, c, size, size, c, k, k, stride, k // 2, groups=c)


# The depthwise convolutions of MobileNetV2 and EfficientNet-B0 at 224x224 (expanded
# width, input size, kernel, stride), one per distinct shape.
MOBILENETV2_DW = [
    _dw("mobilenet_v2.dw32_112", 32, 112, 3, 1), _dw("mobilenet_v2.dw96_112_s2", 96, 112, 3, 2),
    _dw("mobilenet_v2.dw144_56", 144, 56, 3, 1), _dw("mobilenet_v2.dw144_56_s2", 144, 56, 3, 2),
    _dw("mobilenet_v2.dw192_28", 192, 28, 3, 1), _dw("mobilenet_v2.dw192_28_s2", 192, 28, 3, 2),
    _dw("mobilenet_v2.dw384_14", 384, 14, 3, 1), _dw("mobilenet_v2.dw576_14", 576, 14, 3, 1),
    _dw("mobilenet_v2.dw576_14_s2", 576, 14, 3, 2), _dw("mobilenet_v2.dw960_7", 960, 7, 3, 1),
]
EFFICIENTNET_B0_DW = [
    _dw("efficientnet_b0.dw32_112", 32, 112, 3, 1), _dw("efficientnet_b0.dw96_112_s2", 96, 112, 3, 2),
    _dw("efficientnet_b0.dw144_56", 144, 56, 3, 1), _dw("efficientnet_b0.dw144_56_k5s2", 144, 56, 5, 2),
    _dw("efficientnet_b0.dw240_28_k5", 240, 28, 5, 1), _dw("efficientnet_b0.dw240_28_s2", 240, 28, 3, 2),
    _dw("efficientnet_b0.dw480_14", 480, 14, 3, 1), _dw("efficientnet_b0.dw480_14_k5", 480, 14, 5, 1),
    _dw("efficientnet_b0.dw672_14_k5", 672, 14, 5, 1), _dw("efficientnet_b0.dw672_14_k5s2", 672, 14, 5, 2),
    _dw("efficientnet_b0.dw1152_7_k5", 1152, 7, 5, 1), _dw("efficientnet_b0.dw1152_7", 1152, 7, 3, 1),
]
DEPTHWISE = MOBILENETV2_DW + EFFICIENTNET_B0_DW

# Local response normalization after AlexNet's conv1/conv2 (size 5, alpha 1e-4, beta
# 0.75, k 2) and GoogLeNet's stem (size 5, k 1): (name, C, H, W, size, alpha, beta, k).
LRN_LAYERS = [
    ("alexnet.lrn1", 96, 55, 55, 5, 1e-4, 0.75, 2.0),
    ("alexnet.lrn2", 256, 27, 27, 5, 1e-4, 0.75, 2.0),
    ("googlenet.lrn1", 64, 56, 56, 5, 1e-4, 0.75, 1.0),
    ("googlenet.lrn2", 192, 56, 56, 5, 1e-4, 0.75, 1.0),
]

# Bias + activation after a Linear (what fastcnn.ops.bias_act fuses into one pass), as
# (name, per-image input shape with the features last, activation): the MLP's first
# Linear of ViT-B/16 and ViT-L/16 at 224x224 (197 tokens, 4x hidden, GELU) and of
# ConvNeXt-T's block per stage (channels_last pixels, 4C hidden, GELU).
BIAS_ACT_LAYERS = [
    ("vit_b_16.mlp.fc1", (197, 3072), "gelu"),
    ("vit_l_16.mlp.fc1", (197, 4096), "gelu"),
    ("convnext_tiny.stage1.pwconv1", (56, 56, 384), "gelu"),
    ("convnext_tiny.stage2.pwconv1", (28, 28, 768), "gelu"),
    ("convnext_tiny.stage3.pwconv1", (14, 14, 1536), "gelu"),
    ("convnext_tiny.stage4.pwconv1", (7, 7, 3072), "gelu"),
]

# LayerNorm over the last dim, as (name, per-image input shape): ViT-B/16's and
# ViT-L/16's pre-norms (197 tokens) and ConvNeXt-T's per-stage channels_last norm.
LAYER_NORM_LAYERS = [
    ("vit_b_16.ln", (197, 768)),
    ("vit_l_16.ln", (197, 1024)),
    ("convnext_tiny.stage1.norm", (56, 56, 96)),
    ("convnext_tiny.stage2.norm", (28, 28, 192)),
    ("convnext_tiny.stage3.norm", (14, 14, 384)),
    ("convnext_tiny.stage4.norm", (7, 7, 768)),
]
