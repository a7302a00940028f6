"""NASNet-A mobile (Zoph et al. 2018, "Learning Transferable Architectures for
Scalable Image Recognition"): NASNet-A (4 @ 1056), N=4 cells per stage and 1056
penultimate filters, 5.3M parameters.

The cells are the paper's NASNet-A normal and reduction cells (Fig. 4) with two
stem cells, laid out and named as in Cadene's ``pretrainedmodels`` port
(``conv0``, ``cell_stem_0``, ``cell_stem_1``, ``cell_0`` ... ``cell_15``,
``reduction_cell_0/1``, ``last_linear``). Padding is symmetric PyTorch padding
rather than TensorFlow's "SAME" shifts, so TF-ported weights are not bit-compatible;
torchvision has no NASNet.

Each separable branch is ReLU -> depthwise -> pointwise-BN-ReLU -> depthwise ->
pointwise-BN, the pointwise conv -> BN (-> ReLU) pairs being fused fastcnn ops;
every ReLU -> 1x1 conv -> BN adapter runs its conv -> BN as one fused op."""
import torch
import torch.nn.functional as F
from torch import nn

from fastcnn.models._layers import FusedSequential, fused
from fastcnn.models._registry import register_model
from fastcnn.nn import Conv2d

BN_EPS = 1e-3


def _bn(c):
    return nn.BatchNorm2d(c, eps=BN_EPS, momentum=0.1)


def _avg(stride=1):
    return nn.AvgPool2d(3, stride, 1, count_include_pad=False)


def _max(stride=1):
    return nn.MaxPool2d(3, stride, 1)


class SeparableConv2d(nn.Module):
    """Depthwise kxk + pointwise 1x1 (run by BranchSeparables, with its BNs)."""
    _fastcnn_fused = True

    def __init__(self, cin, cout, k, stride, padding, algo="auto"):
        super().__init__()
        self.depthwise_conv2d = Conv2d(cin, cin, k, stride, padding, groups=cin, bias=False, algo=algo)
        self.pointwise_conv2d = Conv2d(cin, cout, 1, bias=False, algo=algo)


class BranchSeparables(nn.Module):
    """ReLU, separable kxk (strided; to ``cout`` channels when ``stem``) - BN - ReLU,
    separable kxk - BN."""
    _fastcnn_fused = True

    def __init__(self, cin, cout, k, stride, stem=False, algo="auto"):
        super().__init__()
        mid = cout if stem else cin
        self.separable_1 = SeparableConv2d(cin, mid, k, stride, k // 2, algo=algo)
        self.bn_sep_1 = _bn(mid)
        self.separable_2 = SeparableConv2d(mid, cout, k, 1, k // 2, algo=algo)
        self.bn_sep_2 = _bn(cout)

    def forward(self, x):
        h = self.separable_1.depthwise_conv2d(F.relu(x))
        h = fused(self.separable_1.pointwise_conv2d, self.bn_sep_1, h, None, "relu")
        h = self.separable_2.depthwise_conv2d(h)
        return fused(self.separable_2.pointwise_conv2d, self.bn_sep_2, h, None, "none")


class ReluConvBN(nn.Module):
    """ReLU -> 1x1 conv -> BN (the cells' input adapters)."""
    _fastcnn_fused = True

    def __init__(self, cin, cout, algo="auto"):
        super().__init__()
        self.conv = Conv2d(cin, cout, 1, bias=False, algo=algo)
        self.bn = _bn(cout)

    def forward(self, x):
        return fused(self.conv, self.bn, F.relu(x), None, "none")


class FactorizedReduce(nn.Module):
    """ReLU, then two 1x1 convs on the even and the odd (shifted) pixels of a stride-2
    grid, concatenated, BN: halves the resolution of the previous-previous input."""
    _fastcnn_fused = True

    def __init__(self, cin, cout, algo="auto"):
        super().__init__()
        self.path_1 = FusedSequential()
        self.path_1.add_module("conv", Conv2d(cin, cout // 2, 1, bias=False, algo=algo))
        self.path_2 = FusedSequential()
        self.path_2.add_module("conv", Conv2d(cin, cout - cout // 2, 1, bias=False, algo=algo))
        self.final_path_bn = _bn(cout)

    def forward(self, x):
        x = F.relu(x)
        p1 = self.path_1.conv(x[:, :, ::2, ::2])
        p2 = self.path_2.conv(F.pad(x, (0, 1, 0, 1))[:, :, 1::2, 1::2])
        return self.final_path_bn(torch.cat((p1, p2), 1))


class CellStem0(nn.Module):
    def __init__(self, stem_filters, num_filters, algo="auto"):
        super().__init__()
        nf = num_filters
        self.conv_1x1 = ReluConvBN(stem_filters, nf, algo=algo)
        self.comb_iter_0_left = BranchSeparables(nf, nf, 5, 2, algo=algo)
        self.comb_iter_0_right = BranchSeparables(stem_filters, nf, 7, 2, stem=True, algo=algo)
        self.comb_iter_1_left = _max(2)
        self.comb_iter_1_right = BranchSeparables(stem_filters, nf, 7, 2, stem=True, algo=algo)
        self.comb_iter_2_left = _avg(2)
        self.comb_iter_2_right = BranchSeparables(stem_filters, nf, 5, 2, stem=True, algo=algo)
        self.comb_iter_3_right = _avg(1)
        self.comb_iter_4_left = BranchSeparables(nf, nf, 3, 1, algo=algo)
        self.comb_iter_4_right = _max(2)

    def forward(self, x):
        x1 = self.conv_1x1(x)
        c0 = self.comb_iter_0_left(x1) + self.comb_iter_0_right(x)
        c1 = self.comb_iter_1_left(x1) + self.comb_iter_1_right(x)
        c2 = self.comb_iter_2_left(x1) + self.comb_iter_2_right(x)
        c3 = self.comb_iter_3_right(c0) + c1
        c4 = self.comb_iter_4_left(c0) + self.comb_iter_4_right(x1)
        return torch.cat((c1, c2, c3, c4), 1)


class ReductionCell(nn.Module):
    """NASNet-A reduction cell (also the second stem cell, whose previous-previous
    input is reduced by a factorized reduction). Output: 4 * out_right channels at
    half the resolution."""

    def __init__(self, in_left, out_left, in_right, out_right, reduce_left=False, algo="auto"):
        super().__init__()
        c = out_right
        if reduce_left:
            self.reduce_prev = FactorizedReduce(in_left, out_left, algo=algo)
        else:
            self.conv_prev_1x1 = ReluConvBN(in_left, out_left, algo=algo)
        self.conv_1x1 = ReluConvBN(in_right, c, algo=algo)
        self.comb_iter_0_left = BranchSeparables(c, c, 5, 2, algo=algo)
        self.comb_iter_0_right = BranchSeparables(out_left, c, 7, 2, algo=algo)
        self.comb_iter_1_left = _max(2)
        self.comb_iter_1_right = BranchSeparables(out_left, c, 7, 2, algo=algo)
        self.comb_iter_2_left = _avg(2)
        self.comb_iter_2_right = BranchSeparables(out_left, c, 5, 2, algo=algo)
        self.comb_iter_3_right = _avg(1)
        self.comb_iter_4_left = BranchSeparables(c, c, 3, 1, algo=algo)
        self.comb_iter_4_right = _max(2)

    def forward(self, x, x_prev):
        left = self.reduce_prev(x_prev) if hasattr(self, "reduce_prev") else self.conv_prev_1x1(x_prev)
        right = self.conv_1x1(x)
        c0 = self.comb_iter_0_left(right) + self.comb_iter_0_right(left)
        c1 = self.comb_iter_1_left(right) + self.comb_iter_1_right(left)
        c2 = self.comb_iter_2_left(right) + self.comb_iter_2_right(left)
        c3 = self.comb_iter_3_right(c0) + c1
        c4 = self.comb_iter_4_left(c0) + self.comb_iter_4_right(right)
        return torch.cat((c1, c2, c3, c4), 1)


class NormalCell(nn.Module):
    """NASNet-A normal cell. ``first``: the previous-previous input has twice the
    resolution and goes through a factorized reduction to 2 * out_left channels.
    Output: channels(left) + 5 * out_right."""

    def __init__(self, in_left, out_left, in_right, out_right, first=False, algo="auto"):
        super().__init__()
        c = out_right
        if first:
            self.reduce_prev = FactorizedReduce(in_left, 2 * out_left, algo=algo)
            cl = 2 * out_left
        else:
            self.conv_prev_1x1 = ReluConvBN(in_left, out_left, algo=algo)
            cl = out_left
        self.conv_1x1 = ReluConvBN(in_right, c, algo=algo)
        self.comb_iter_0_left = BranchSeparables(c, c, 5, 1, algo=algo)
        self.comb_iter_0_right = BranchSeparables(cl, cl, 3, 1, algo=algo)
        self.comb_iter_1_left = BranchSeparables(cl, cl, 5, 1, algo=algo)
        self.comb_iter_1_right = BranchSeparables(cl, cl, 3, 1, algo=algo)
        self.comb_iter_2_left = _avg(1)
        self.comb_iter_3_left = _avg(1)
        self.comb_iter_3_right = _avg(1)
        self.comb_iter_4_left = BranchSeparables(c, c, 3, 1, algo=algo)

    def forward(self, x, x_prev):
        left = self.reduce_prev(x_prev) if hasattr(self, "reduce_prev") else self.conv_prev_1x1(x_prev)
        right = self.conv_1x1(x)
        c0 = self.comb_iter_0_left(right) + self.comb_iter_0_right(left)
        c1 = self.comb_iter_1_left(left) + self.comb_iter_1_right(left)
        c2 = self.comb_iter_2_left(right) + left
        c3 = self.comb_iter_3_left(left) + self.comb_iter_3_right(left)
        c4 = self.comb_iter_4_left(right) + right
        return torch.cat((left, c0, c1, c2, c3, c4), 1)


class NASNetA(nn.Module):
    """Stem (3x3/2 conv-BN, two reduction stem cells), three stages of
    ``cells_per_stage`` normal cells separated by reduction cells, ReLU, global
    average pool, dropout, linear. ``filters`` = penultimate_filters / 24."""
    _fastcnn_fused = True

    def __init__(self, num_classes=1000, penultimate_filters=1056, cells_per_stage=4, stem_filters=32,
                 filters_multiplier=2, dropout=0.5, algo="auto"):
        super().__init__()
        f = penultimate_filters // 24
        self.conv0 = FusedSequential()
        self.conv0.add_module("conv", Conv2d(3, stem_filters, 3, 2, 0, bias=False, algo=algo))
        self.conv0.add_module("bn", _bn(stem_filters))
        self.cell_stem_0 = CellStem0(stem_filters, f // filters_multiplier ** 2, algo=algo)
        nf1 = f // filters_multiplier
        # the second stem cell: left input = conv0's output (reduced), right = cell_stem_0
        self.cell_stem_1 = ReductionCell(stem_filters, nf1, 4 * (f // filters_multiplier ** 2), nf1,
                                         reduce_left=True, algo=algo)
        # cells are numbered as in the reference port: cell_0-3, reduction_cell_0,
        # cell_6-9, reduction_cell_1, cell_12-15 (for 4 cells per stage)
        cells, prev, cur = [], 4 * (f // filters_multiplier ** 2), 4 * nf1
        for stage, mult in enumerate((1, 2, 4)):
            if stage > 0:
                cell = ReductionCell(prev, mult * f, cur, mult * f, algo=algo)
                cells.append((f"reduction_cell_{stage - 1}", cell))
                prev, cur = cur, 4 * mult * f
            for j in range(cells_per_stage):
                first = j == 0
                out_left = mult * f // 2 if first else mult * f
                cell = NormalCell(prev, out_left, cur, mult * f, first=first, algo=algo)
                cells.append((f"cell_{stage * (cells_per_stage + 2) + j}", cell))
                prev, cur = cur, (2 * out_left if first else out_left) + 5 * mult * f
        self._order = [name for name, _ in cells]
        for name, cell in cells:
            self.add_module(name, cell)
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout)
        self.last_linear = nn.Linear(cur, num_classes)
        self.num_features = cur

    def forward(self, x):
        x_conv0 = self.conv0(x)
        x_stem_0 = self.cell_stem_0(x_conv0)
        prev, cur = x_stem_0, self.cell_stem_1(x_stem_0, x_conv0)
        for name in self._order:
            prev, cur = cur, getattr(self, name)(cur, prev)
        x = self.avg_pool(F.relu(cur)).flatten(1)
        return self.last_linear(self.dropout(x))


@register_model
def nasnet_a_mobile(num_classes=1000, **config):
    """NASNet-A (4 @ 1056) "mobile": config keys penultimate_filters, cells_per_stage,
    stem_filters, filters_multiplier, dropout, algo. Canonical input 224x224."""
    return NASNetA(num_classes=num_classes, **config)
