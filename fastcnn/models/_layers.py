"""Small building blocks shared by the zoo's families: fused Conv-BN-activation
sequences with torchvision's key layout, squeeze-and-excitation, make_divisible,
stochastic depth, channel shuffle, LayerNorm over channels, AlexNet's LRN.

Every module here that owns a ``fastcnn.nn.Conv2d`` followed by a BatchNorm2d calls
the fused op ``fastcnn.ops.conv_bn_act`` itself (through
``fastcnn.nn.fused.conv_bn_act_forward``) and carries ``_fastcnn_fused = True``, so
``fastcnn.nn.convert`` leaves it alone: converting a zoo model changes nothing.

Fused ops take the submodules' tensors without calling the submodules, so forward
hooks on them never fire. Inside ``with unfused():`` every zoo block calls its conv
and BN modules (and its activation modules, where it has them) one by one instead,
the same math: that is how ``fastcnn.models.summary`` sees each layer."""

import torch
from torch import nn

from fastcnn.nn import Conv2d, LayerNorm, LocalResponseNorm
from fastcnn.nn.fused import conv_act_forward, conv_bn_act_forward, is_unfused
from fastcnn.triton_kernels.reference import ACTIVATION_FNS

# activation name (as fastcnn.ops.conv_bn_act takes it) -> torch module
ACT_MODULES = {"relu": nn.ReLU, "relu6": nn.ReLU6, "silu": nn.SiLU, "gelu": nn.GELU}
_ACT_NAMES = {nn.ReLU: "relu", nn.ReLU6: "relu6", nn.SiLU: "silu"}


def act_name(module):
    """The fused-op activation name of a torch activation module, or None."""
    if type(module) is nn.GELU:
        return "gelu" if module.approximate == "none" else None
    return _ACT_NAMES.get(type(module))


def make_divisible(v, divisor=8, min_value=None):
    """Round ``v`` to the nearest multiple of ``divisor``, never going below 90% of
    ``v`` (the rule of the TF MobileNet/EfficientNet code, as torchvision has it)."""
    min_value = min_value or divisor
    new_v = max(min_value, int(v + divisor / 2) // divisor * divisor)
    if new_v < 0.9 * v:
        new_v += divisor
    return new_v


def fused(conv, bn, x, residual=None, activation="relu"):
    """act(bn(conv(x)) + residual) as one fastcnn op on existing submodules; under
    ``unfused()`` conv and bn are called as modules and the activation (a name) as a
    function."""
    if is_unfused():
        x = bn(conv(x))
        return ACTIVATION_FNS[activation](x if residual is None else x + residual)
    return conv_bn_act_forward(conv, bn, x, residual, activation)


def alexnet_lrn(algo="auto"):
    """AlexNet's response normalisation (Krizhevsky et al. 2012, Sec. 3.3), also used
    by VGG A-LRN and ZFNet: b = a / (k + alpha * sum(a^2 over n adjacent channels))^beta
    with k=2, n=5, alpha=1e-4, beta=0.75. torch.nn.LocalResponseNorm (and fastcnn's)
    divides its alpha by n, so the paper's alpha is passed as alpha * n. (Caffe also
    divides by n: bvlc_alexnet's alpha=1e-4, k=1 normalise less than the paper.)"""
    n, alpha = 5, 1e-4
    return LocalResponseNorm(n, alpha=alpha * n, beta=0.75, k=2.0, algo=algo)


class FusedSequential(nn.Sequential):
    """nn.Sequential whose Conv2d -> BatchNorm2d [-> ReLU/ReLU6/SiLU/GELU] runs, and
    Conv2d -> activation pairs (AlexNet, VGG, NiN: the activation in the convolution's
    epilogue), are executed as single fused ops; other modules run as they are. Same state_dict keys
    as the plain nn.Sequential (torchvision's layout for downsample branches,
    ShuffleNetV2 branches, ...). ``residual`` is added (before the activation) in the
    last run, which must then end the sequence. Under ``unfused()`` the children run
    one by one."""
    _fastcnn_fused = True  # fastcnn.nn.convert: this forward is fused already, do not re-trace

    def forward(self, x, residual=None):
        if is_unfused():  # the same math, one child at a time
            mods = list(self)
            last_act = residual is not None and act_name(mods[-1]) is not None
            for m in mods[:-1] if last_act else mods:
                x = m(x)
            if residual is not None:
                x = x + residual
            return mods[-1](x) if last_act else x
        mods = list(self)
        i, n = 0, len(mods)
        while i < n:
            m = mods[i]
            if isinstance(m, Conv2d) and i + 1 < n and act_name(mods[i + 1]) is not None:  # no BN between
                x = conv_act_forward(m, x, act_name(mods[i + 1]))
                i += 2
            elif isinstance(m, Conv2d) and i + 1 < n and type(mods[i + 1]) is nn.BatchNorm2d:
                act, j = "none", i + 2
                if j < n and act_name(mods[j]) is not None:
                    act, j = act_name(mods[j]), j + 1
                res = residual if j == n else None
                x = fused(m, mods[i + 1], x, res, act)
                if j == n:
                    residual = None
                i = j
            else:
                x = m(x)
                i += 1
        if residual is not None:
            raise ValueError("FusedSequential: a residual needs the sequence to end in Conv2d -> BatchNorm2d"
                             " [-> activation]")
        return x


class ConvNormAct(FusedSequential):
    """Conv2d -> BatchNorm2d [-> activation] as one fused op, laid out like
    torchvision's ``Conv2dNormActivation`` (keys ``0.weight``, ``1.weight``, ...).
    ``activation``: "relu", "relu6", "silu", "gelu" or "none" (no third module)."""

    def __init__(self, in_channels, out_channels, kernel_size=3, stride=1, padding=None, groups=1,
                 activation="relu", dilation=1, bias=False, eps=1e-5, momentum=0.1, algo="auto"):
        if padding is None:
            padding = (kernel_size - 1) // 2 * dilation
        layers = [Conv2d(in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias, algo=algo),
                  nn.BatchNorm2d(out_channels, eps=eps, momentum=momentum)]
        if activation != "none":
            layers.append(ACT_MODULES[activation](inplace=True) if activation != "gelu" else nn.GELU())
        super().__init__(*layers)
        self.out_channels = out_channels


class SqueezeExcitation(nn.Module):
    """x * sigmoid(fc2(act(fc1(avgpool(x))))) with 1x1 convolutions (with bias) named
    as torchvision's ``SqueezeExcitation`` and timm's ``SEModule`` (fc1, fc2)."""
    _fastcnn_fused = True

    def __init__(self, channels, squeeze_channels, activation="relu", algo="auto"):
        super().__init__()
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = Conv2d(channels, squeeze_channels, 1, algo=algo)
        self.fc2 = Conv2d(squeeze_channels, channels, 1, algo=algo)
        self.activation = ACT_MODULES[activation](inplace=True) if activation != "gelu" else nn.GELU()
        self.scale_activation = nn.Sigmoid()

    def forward(self, x):
        s = self.scale_activation(self.fc2(self.activation(self.fc1(self.avgpool(x)))))
        return x * s


def stochastic_depth(x, p, training, mode="row"):
    """torchvision.ops.stochastic_depth: drop whole residual branches (per sample for
    ``mode="row"``) with probability ``p`` and rescale the survivors."""
    if not training or p == 0.0:
        return x
    survival = 1.0 - p
    shape = [x.shape[0]] + [1] * (x.dim() - 1) if mode == "row" else [1] * x.dim()
    noise = torch.empty(shape, dtype=x.dtype, device=x.device).bernoulli_(survival)
    if survival > 0.0:
        noise.div_(survival)
    return x * noise


class StochasticDepth(nn.Module):
    def __init__(self, p, mode="row"):
        super().__init__()
        self.p, self.mode = p, mode

    def forward(self, x):
        return stochastic_depth(x, self.p, self.training, self.mode)

    def extra_repr(self):
        return f"p={self.p}, mode={self.mode}"


def channel_shuffle(x, groups):
    """ShuffleNet's channel shuffle: (n, g*c, h, w) -> transpose of the (g, c) split."""
    n, c, h, w = x.shape
    return x.view(n, groups, c // groups, h, w).transpose(1, 2).reshape(n, c, h, w)


class Permute(nn.Module):
    def __init__(self, dims):
        super().__init__()
        self.dims = list(dims)

    def forward(self, x):
        return x.permute(self.dims)


class LayerNorm2d(LayerNorm):
    """LayerNorm over the channels of an NCHW tensor (torchvision's LayerNorm2d), on
    fastcnn.ops.layer_norm: for a channels_last tensor the permuted view's rows are
    contiguous, so no copy is made."""

    def forward(self, x):
        return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)

