"""FractalNet (Larsson, Maire & Shakhnarovich 2017) for 32x32 inputs (CIFAR).

A fractal block with C columns expands f_1(z) = conv(z),
f_{C+1}(z) = join(f_C(f_C(z)), conv(z)); it is built here in its "columns" layout:
column c (c = 0..C-1) is a chain of 2**c conv -> BN -> ReLU (-> dropout) layers
(each one fused fastcnn ConvBNAct), and wherever several columns end at the same
depth their outputs are joined by an element-wise mean, which then feeds all of them.
B blocks each end with a 2x2 max-pool; a Linear layer classifies the 1x1 result.

Drop-path regularisation in training mode: local (each join input dropped with
probability ``drop_path_local``, at least one kept) and, for a ``global_ratio``
fraction of mini-batches, global (one column chosen for the whole network).

The default, ``fractalnet20`` (B=5, C=3, widths 64-128-256-512-512, dropout
0/0.1/0.2/0.3/0.4 per block: 20 convolution layers deep), has 33,724,618 parameters
for 10 classes, the count of the pytorchcv/imgclsmob ``fractalnet_cifar10`` port.
The paper's Table 1 gives 38.6M for its 20-layer network, which its own description
of the architecture does not reproduce. Other depths: ``num_columns=4`` (40 layers) etc.;
no published parameter count is matched for those, so none is registered."""
import random

import torch
from torch import nn

from fastcnn.models._registry import register_model
from fastcnn.nn import ConvBNAct

# name: (columns C, per-block widths, per-block dropout)
CONFIGS = {
    "fractalnet20": (3, (64, 128, 256, 512, 512), (0.0, 0.1, 0.2, 0.3, 0.4)),
}


class FractalBlock(nn.Module):
    def __init__(self, in_channels, out_channels, num_columns, dropout=0.0, drop_path_local=0.15, algo="auto"):
        super().__init__()
        self.num_columns = num_columns
        self.depth = 2 ** (num_columns - 1)
        self.drop_path_local = drop_path_local
        self.columns = nn.ModuleList()
        for c in range(num_columns):
            layers = nn.ModuleList()
            for i in range(2 ** c):
                layers.append(ConvBNAct(in_channels if i == 0 else out_channels, out_channels, 3, padding=1,
                                        algo=algo))
            self.columns.append(layers)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def join(self, outs, cols, global_col):
        if len(outs) == 1:
            return outs[0]
        if self.training and global_col is not None:
            return outs[cols.index(global_col)] if global_col in cols else torch.stack(outs).mean(0)
        if self.training and self.drop_path_local > 0:
            keep = [random.random() >= self.drop_path_local for _ in outs]
            if not any(keep):
                keep[random.randrange(len(outs))] = True
            outs = [o for o, k in zip(outs, keep) if k]
        return torch.stack(outs).mean(0)

    def forward(self, x, global_col=None):
        cur = [x] * self.num_columns
        for t in range(1, self.depth + 1):
            cols = [c for c in range(self.num_columns) if t % (self.depth // 2 ** c) == 0]
            outs = []
            for c in cols:
                layer = self.columns[c][t // (self.depth // 2 ** c) - 1]
                outs.append(self.dropout(layer(cur[c])))
            joined = self.join(outs, cols, global_col)
            for c in cols:
                cur[c] = joined
        return cur[0]


class FractalNet(nn.Module):
    def __init__(self, num_columns=3, channels=(64, 128, 256, 512, 512), dropout=(0.0, 0.1, 0.2, 0.3, 0.4),
                 num_classes=10, in_channels=3, drop_path_local=0.15, global_ratio=0.5, algo="auto"):
        super().__init__()
        self.num_columns = num_columns
        self.global_ratio = global_ratio
        self.blocks = nn.ModuleList()
        for width, p in zip(channels, dropout):
            self.blocks.append(FractalBlock(in_channels, width, num_columns, p, drop_path_local, algo))
            in_channels = width
        self.pool = nn.MaxPool2d(2, 2)
        self.classifier = nn.Linear(in_channels, num_classes)

    def forward(self, x):
        global_col = None
        if self.training and random.random() < self.global_ratio:
            global_col = random.randrange(self.num_columns)
        for block in self.blocks:
            x = self.pool(block(x, global_col))
        x = torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1)
        return self.classifier(x)


def _builder(name):
    columns, widths, drops = CONFIGS[name]

    def build(num_classes=1000, **config):
        config.setdefault("num_columns", columns)
        config.setdefault("channels", widths)
        config.setdefault("dropout", drops)
        return FractalNet(num_classes=num_classes, **config)
    build.__name__ = name
    build.__doc__ = f"FractalNet, {columns} columns, widths {widths}, 32x32 input."
    return register_model(build, name=name)


fractalnet20 = _builder("fractalnet20")
