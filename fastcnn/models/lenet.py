"""LeNet-5 (LeCun et al. 1998), in its usual modern reading: 32x32 input,
C1 6@5x5, S2 2x2 average pool, C3 16@5x5 (fully connected to S2's 6 maps, not the
paper's partial connection table), S4 2x2 average pool, C5 120@5x5, F6 84, output 10
(a Linear layer in place of the Euclidean RBF units), tanh activations:
61,706 parameters for 10 classes.

The fully connected layers are fastcnn.nn.Linear; with an activation that
fastcnn.ops.bias_act has (relu) it is fused into the Linear and an Identity keeps the
module indices, so ``fastcnn.nn.convert`` finds nothing to change."""
import torch
from torch import nn

from fastcnn.models._layers import FusedSequential
from fastcnn.models._registry import register_model
from fastcnn.nn import Conv2d, Linear

# (out_channels, kernel, pool after) for the convolutions, then the hidden FC widths
CONV_CFG = [(6, 5, True), (16, 5, True), (120, 5, False)]
FC_CFG = [84]

ACTIVATIONS = {"tanh": nn.Tanh, "relu": nn.ReLU, "sigmoid": nn.Sigmoid}
FUSABLE = ("relu",)  # the ones fastcnn.nn.Linear(activation=...) applies


class LeNet5(nn.Module):
    def __init__(self, num_classes=10, in_channels=1, activation="tanh", pool="avg", algo="auto",
                 conv_cfg=CONV_CFG, fc_cfg=FC_CFG):
        super().__init__()
        act = ACTIVATIONS[activation]
        layers = []
        for out, k, pool_after in conv_cfg:
            layers += [Conv2d(in_channels, out, k, algo=algo), act()]
            if pool_after:
                layers.append(nn.AvgPool2d(2) if pool == "avg" else nn.MaxPool2d(2))
            in_channels = out
        self.features = FusedSequential(*layers)  # conv -> ReLU: one op (Tanh/Sigmoid stay apart)
        fcs = []
        for width in fc_cfg:
            if activation in FUSABLE:
                fcs += [Linear(in_channels, width, activation=activation, algo=algo), nn.Identity()]
            else:
                fcs += [Linear(in_channels, width, algo=algo), act()]
            in_channels = width
        fcs.append(Linear(in_channels, num_classes, algo=algo))
        self.classifier = nn.Sequential(*fcs)

    def forward(self, x):
        return self.classifier(torch.flatten(self.features(x), 1))


@register_model
def lenet5(num_classes=1000, **config):
    """LeNet-5 on 1x32x32 input (use num_classes=10 for the paper's digits)."""
    return LeNet5(num_classes, **config)
