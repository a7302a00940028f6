"""ShuffleNet v1 (Zhang et al. 2017) and ShuffleNet v2 (Ma et al. 2018).

``shufflenet_v2_x0_5/x1_0/x1_5/x2_0`` have torchvision's parameter names and shapes
(``conv1.0``, ``stage2.0.branch1.0``, ``stage2.0.branch2.3``, ..., ``conv5.0``,
``fc``): a torchvision state_dict loads strictly and gives the same outputs.
ShuffleNet v1 is not in torchvision; it follows the layout of Megvii's reference code
(``features.i.branch_main_1`` / ``branch_main_2``), stage widths from the paper's
Table 1, scaled by ``width_mult`` (the paper's "s").

All Conv2d -> BatchNorm2d [-> ReLU] runs (grouped and depthwise included) are fused
fastcnn ops."""
import torch
import torch.nn.functional as F
from torch import nn

from fastcnn.models._layers import FusedSequential, channel_shuffle
from fastcnn.models._registry import register_model
from fastcnn.nn import Conv2d


# ---- ShuffleNet v2 ---------------------------------------------------------------------

class InvertedResidualV2(nn.Module):
    """ShuffleNet v2 unit: channel split (stride 1) or two strided branches, concat,
    channel shuffle with 2 groups."""
    _fastcnn_fused = True

    def __init__(self, inp, oup, stride, algo="auto"):
        super().__init__()
        self.stride = stride
        bf = oup // 2
        if stride > 1:
            self.branch1 = FusedSequential(
                Conv2d(inp, inp, 3, stride, 1, groups=inp, bias=False, algo=algo), nn.BatchNorm2d(inp),
                Conv2d(inp, bf, 1, bias=False, algo=algo), nn.BatchNorm2d(bf), nn.ReLU(inplace=True))
        else:
            self.branch1 = FusedSequential()
        self.branch2 = FusedSequential(
            Conv2d(inp if stride > 1 else bf, bf, 1, bias=False, algo=algo), nn.BatchNorm2d(bf), nn.ReLU(inplace=True),
            Conv2d(bf, bf, 3, stride, 1, groups=bf, bias=False, algo=algo), nn.BatchNorm2d(bf),
            Conv2d(bf, bf, 1, bias=False, algo=algo), nn.BatchNorm2d(bf), nn.ReLU(inplace=True))

    def forward(self, x):
        if self.stride == 1:
            x1, x2 = x.chunk(2, dim=1)
            out = torch.cat((x1, self.branch2(x2)), dim=1)
        else:
            out = torch.cat((self.branch1(x), self.branch2(x)), dim=1)
        return channel_shuffle(out, 2)


class ShuffleNetV2(nn.Module):
    _fastcnn_fused = True

    def __init__(self, stages_repeats, stages_out_channels, num_classes=1000, algo="auto"):
        super().__init__()
        c = stages_out_channels[0]
        self.conv1 = FusedSequential(Conv2d(3, c, 3, 2, 1, bias=False, algo=algo), nn.BatchNorm2d(c),
                                     nn.ReLU(inplace=True))
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        for i, (repeats, out) in enumerate(zip(stages_repeats, stages_out_channels[1:4])):
            units = [InvertedResidualV2(c, out, 2, algo=algo)]
            units += [InvertedResidualV2(out, out, 1, algo=algo) for _ in range(repeats - 1)]
            setattr(self, f"stage{i + 2}", nn.Sequential(*units))
            c = out
        last = stages_out_channels[-1]
        self.conv5 = FusedSequential(Conv2d(c, last, 1, bias=False, algo=algo), nn.BatchNorm2d(last),
                                     nn.ReLU(inplace=True))
        self.fc = nn.Linear(last, num_classes)

    def forward(self, x):
        x = self.maxpool(self.conv1(x))
        x = self.conv5(self.stage4(self.stage3(self.stage2(x))))
        return self.fc(x.mean([2, 3]))


V2_CONFIGS = {
    # name: (stage repeats, stage output channels) - the paper's Table 5
    "shufflenet_v2_x0_5": ((4, 8, 4), (24, 48, 96, 192, 1024)),
    "shufflenet_v2_x1_0": ((4, 8, 4), (24, 116, 232, 464, 1024)),
    "shufflenet_v2_x1_5": ((4, 8, 4), (24, 176, 352, 704, 1024)),
    "shufflenet_v2_x2_0": ((4, 8, 4), (24, 244, 488, 976, 2048)),
}


# ---- ShuffleNet v1 ---------------------------------------------------------------------

class ShuffleUnitV1(nn.Module):
    """1x1 group conv-BN-ReLU, channel shuffle, 3x3 depthwise conv-BN (strided),
    1x1 group conv-BN; stride 1: + input, ReLU (fused into the last conv); stride 2:
    concat with a 3x3/2 average pool of the input, ReLU."""
    _fastcnn_fused = True

    def __init__(self, inp, oup, groups, stride, first_group=False, algo="auto"):
        super().__init__()
        self.stride, self.groups = stride, groups
        mid = oup // 4
        outputs = oup - inp if stride == 2 else oup
        self.first_groups = 1 if first_group else groups
        self.branch_main_1 = FusedSequential(
            Conv2d(inp, mid, 1, groups=self.first_groups, bias=False, algo=algo), nn.BatchNorm2d(mid),
            nn.ReLU(inplace=True))
        self.branch_main_2 = FusedSequential(
            Conv2d(mid, mid, 3, stride, 1, groups=mid, bias=False, algo=algo), nn.BatchNorm2d(mid),
            Conv2d(mid, outputs, 1, groups=groups, bias=False, algo=algo), nn.BatchNorm2d(outputs),
            nn.ReLU(inplace=True))
        self.pool = nn.AvgPool2d(3, 2, 1) if stride == 2 else None

    def forward(self, x):
        h = self.branch_main_1(x)
        if self.first_groups > 1:
            h = channel_shuffle(h, self.first_groups)
        if self.stride == 1:  # relu(bn(conv(h)) + x): one fused op
            return self.branch_main_2(h, residual=x)
        # relu(cat(a, b)) == cat(relu(a), relu(b))
        return torch.cat((F.relu(self.pool(x)), self.branch_main_2(h)), 1)


class ShuffleNetV1(nn.Module):
    _fastcnn_fused = True

    def __init__(self, groups=3, width_mult=1.0, num_classes=1000, stage_repeats=(4, 8, 4), stage_channels=None,
                 stem_channels=None, algo="auto"):
        super().__init__()
        # Megvii's stem widths: 12 at 0.5x, 24 at 1x/1.5x, 48 at 2x
        stem = stem_channels or (12 if width_mult == 0.5 else 24 if width_mult <= 1.5 else 48)
        channels = stage_channels or [int(c * width_mult) for c in V1_STAGE_CHANNELS[groups]]
        self.conv1 = FusedSequential(Conv2d(3, stem, 3, 2, 1, bias=False, algo=algo), nn.BatchNorm2d(stem),
                                     nn.ReLU(inplace=True))
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        units, c = [], stem
        for i, (repeats, out) in enumerate(zip(stage_repeats, channels)):
            for j in range(repeats):
                units.append(ShuffleUnitV1(c, out, groups, 2 if j == 0 else 1, first_group=(i == 0 and j == 0),
                                           algo=algo))
                c = out
        self.features = nn.Sequential(*units)
        self.fc = nn.Linear(c, num_classes, bias=False)  # as in Megvii's reference code

    def forward(self, x):
        x = self.features(self.maxpool(self.conv1(x)))
        return self.fc(x.mean([2, 3]))


# output channels of stages 2-4 for each group count g at width 1x (the paper's Table 1)
V1_STAGE_CHANNELS = {1: (144, 288, 576), 2: (200, 400, 800), 3: (240, 480, 960), 4: (272, 544, 1088),
                     8: (384, 768, 1536)}

V1_CONFIGS = {
    # name: (groups, width multiplier s)
    "shufflenet_v1_g3": (3, 1.0),
    "shufflenet_v1_g8": (8, 1.0),
    "shufflenet_v1_x0_5_g3": (3, 0.5),
    "shufflenet_v1_x1_5_g3": (3, 1.5),
    "shufflenet_v1_x2_0_g3": (3, 2.0),
}


def _register(name, build, doc):
    def fn(num_classes=1000, **config):
        return build(num_classes=num_classes, **config)
    fn.__name__ = fn.__qualname__ = name
    fn.__doc__ = doc
    register_model(fn)
    globals()[name] = fn


for _name, (_rep, _ch) in V2_CONFIGS.items():
    _register(_name, lambda num_classes, _r=_rep, _c=_ch, **cfg: ShuffleNetV2(
        cfg.pop("stages_repeats", _r), cfg.pop("stages_out_channels", _c), num_classes, **cfg),
        f"ShuffleNet v2 with stage repeats {_rep} and channels {_ch}; config keys: stages_repeats, "
        "stages_out_channels, algo.")
for _name, (_g, _s) in V1_CONFIGS.items():
    _register(_name, lambda num_classes, _g=_g, _s=_s, **cfg: ShuffleNetV1(
        cfg.pop("groups", _g), cfg.pop("width_mult", _s), num_classes, **cfg),
        f"ShuffleNet v1 {_s}x with g={_g}; config keys: groups, width_mult, stage_repeats, stage_channels, "
        "stem_channels, algo.")
