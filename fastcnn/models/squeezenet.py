"""SqueezeNet 1.0 (Iandola et al. 2016) and 1.1, torchvision's parameter names and
shapes (``features.N`` with Fire modules, ``classifier.1`` the final 1x1 conv)."""
import torch
from torch import nn

from fastcnn.models._layers import FusedSequential
from fastcnn.models._registry import register_model
from fastcnn.nn import Conv2d
from fastcnn.nn.fused import conv_act_forward, is_unfused

# The stem conv (out, kernel, stride), then "M" a 3x3/2 ceil-mode max-pool or a Fire
# module (squeeze, expand1x1, expand3x3); input channels follow from the previous entry.
CONFIGS = {
    "1_0": [(96, 7, 2), "M", (16, 64, 64), (16, 64, 64), (32, 128, 128), "M", (32, 128, 128),
            (48, 192, 192), (48, 192, 192), (64, 256, 256), "M", (64, 256, 256)],
    "1_1": [(64, 3, 2), "M", (16, 64, 64), (16, 64, 64), "M", (32, 128, 128), (32, 128, 128), "M",
            (48, 192, 192), (48, 192, 192), (64, 256, 256), (64, 256, 256)],
}


class Fire(nn.Module):
    """squeeze 1x1 -> ReLU, then expand 1x1 and 3x3 (each -> ReLU) concatenated; each
    conv -> ReLU is one op (the ReLU in the convolution's epilogue)."""
    _fastcnn_fused = True  # fastcnn.nn.convert: fused already

    def __init__(self, inplanes, squeeze_planes, expand1x1_planes, expand3x3_planes, algo="auto"):
        super().__init__()
        self.inplanes = inplanes
        self.squeeze = Conv2d(inplanes, squeeze_planes, kernel_size=1, algo=algo)
        self.squeeze_activation = nn.ReLU(inplace=True)
        self.expand1x1 = Conv2d(squeeze_planes, expand1x1_planes, kernel_size=1, algo=algo)
        self.expand1x1_activation = nn.ReLU(inplace=True)
        self.expand3x3 = Conv2d(squeeze_planes, expand3x3_planes, kernel_size=3, padding=1, algo=algo)
        self.expand3x3_activation = nn.ReLU(inplace=True)

    def forward(self, x):
        if is_unfused():  # module by module (fastcnn.models.summary)
            x = self.squeeze_activation(self.squeeze(x))
            return torch.cat([self.expand1x1_activation(self.expand1x1(x)),
                              self.expand3x3_activation(self.expand3x3(x))], 1)
        x = conv_act_forward(self.squeeze, x, "relu")
        return torch.cat([conv_act_forward(self.expand1x1, x, "relu"), conv_act_forward(self.expand3x3, x, "relu")], 1)


class SqueezeNet(nn.Module):
    def __init__(self, version="1_0", num_classes=1000, dropout=0.5, in_channels=3, algo="auto"):
        super().__init__()
        cfg = CONFIGS[version] if isinstance(version, str) else list(version)  # a name or a table
        out, k, s = cfg[0]
        layers = [Conv2d(in_channels, out, kernel_size=k, stride=s, algo=algo), nn.ReLU(inplace=True)]
        c = out
        for entry in cfg[1:]:
            if entry == "M":
                layers.append(nn.MaxPool2d(kernel_size=3, stride=2, ceil_mode=True))
            else:
                layers.append(Fire(c, *entry, algo=algo))
                c = entry[1] + entry[2]
        self.features = FusedSequential(*layers)  # conv -> ReLU: one op
        final_conv = Conv2d(c, num_classes, kernel_size=1, algo=algo)
        self.classifier = FusedSequential(nn.Dropout(p=dropout), final_conv, nn.ReLU(inplace=True),
                                          nn.AdaptiveAvgPool2d((1, 1)))
        for m in self.modules():  # torchvision's initialisation
            if isinstance(m, nn.Conv2d):
                if m is final_conv:
                    nn.init.normal_(m.weight, mean=0.0, std=0.01)
                else:
                    nn.init.kaiming_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.constant_(m.bias, 0)

    def forward(self, x):
        return torch.flatten(self.classifier(self.features(x)), 1)


@register_model
def squeezenet1_0(num_classes=1000, **config):
    """SqueezeNet 1.0 (torchvision's squeezenet1_0), 224x224 input."""
    return SqueezeNet("1_0", num_classes, **config)


@register_model
def squeezenet1_1(num_classes=1000, **config):
    """SqueezeNet 1.1 (torchvision's squeezenet1_1), 224x224 input."""
    return SqueezeNet("1_1", num_classes, **config)
