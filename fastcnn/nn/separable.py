"""fastcnn.nn.DepthwiseSeparableConv2d: MobileNet v1's depthwise-separable layer
(depthwise k x k conv -> BN -> act, pointwise 1x1 conv -> BN -> act) on the fused
op ``fastcnn.ops.separable.separable_conv2d``."""
from torch import nn

from fastcnn.nn.conv import Conv2d
from fastcnn.nn.fused import conv_bn_act_forward, is_unfused
from fastcnn.ops.conv_bn_act import fold_bn
from fastcnn.ops.separable import separable_conv2d
from fastcnn.triton_kernels._common import ACTIVATIONS

_ACT_MODULES = {"relu": lambda: nn.ReLU(inplace=True), "relu6": lambda: nn.ReLU6(inplace=True),
                "silu": lambda: nn.SiLU(inplace=True), "gelu": nn.GELU}


class SeparableStage(nn.Sequential):
    """One half of a DepthwiseSeparableConv2d: conv [-> BatchNorm2d] [-> activation].
    Its parent runs it (fused); marked so that fastcnn.nn.convert leaves it alone."""
    _fastcnn_fused = True


def _half(conv, out_channels, norm, activation, eps, momentum):
    layers = [conv] + ([nn.BatchNorm2d(out_channels, eps=eps, momentum=momentum)] if norm else [])
    if activation != "none":
        layers.append(_ACT_MODULES[activation]())
    return SeparableStage(*layers)


def _uses_batch_stats(bn):
    """Whether this BatchNorm2d normalizes with batch statistics (as F.batch_norm
    decides in nn.BatchNorm2d.forward)."""
    return bn.training or bn.running_mean is None or bn.running_var is None


def folded_weights(depthwise, bn_dw, pointwise, bn_pw):
    """(wd, bd, wp, bp): both convolutions' weights and biases with their BNs'
    running statistics folded in (a BN of None folds nothing)."""
    out = []
    for conv, bn in ((depthwise, bn_dw), (pointwise, bn_pw)):
        if bn is None:
            out += [conv.weight, conv.bias]
        else:
            out += fold_bn(conv.weight, conv.bias, bn.weight, bn.bias, bn.running_mean, bn.running_var, bn.eps)
    return tuple(out)


def separable_forward(depthwise, bn_dw, pointwise, bn_pw, x, residual, activation, pointwise_activation):
    """act2(bn_pw(pointwise(act1(bn_dw(depthwise(x))))) + residual) on existing modules
    (BNs may be None): one fused ``separable_conv2d`` when no BN needs batch
    statistics, else two fused conv-BN-act ops (see DepthwiseSeparableConv2d)."""
    bns = [bn for bn in (bn_dw, bn_pw) if bn is not None]
    if any(_uses_batch_stats(bn) for bn in bns):
        z = conv_bn_act_forward(depthwise, bn_dw, x, None, activation)
        return conv_bn_act_forward(pointwise, bn_pw, z, residual, pointwise_activation)
    wd, bd, wp, bp = folded_weights(depthwise, bn_dw, pointwise, bn_pw)
    x, padding = depthwise.padded_input(x)
    return separable_conv2d(x, wd, wp, bd, bp, depthwise.stride, padding, depthwise.dilation,
                            activation=activation, pointwise_activation=pointwise_activation,
                            residual=residual, algo=depthwise.algo)


class DepthwiseSeparableConv2d(nn.Sequential):
    """Depthwise ``kernel_size`` conv (groups=in_channels) [-> BatchNorm2d] ->
    ``activation``, then 1x1 conv to ``out_channels`` [-> BatchNorm2d] ->
    ``pointwise_activation`` (+ ``residual`` before it, when forward gets one).

    Layout: ``self[0]`` and ``self[1]`` are Sequentials (conv, bn, activation)
    laid out like torchvision's Conv2dNormActivation, so the state_dict keys are
    ``0.0.weight, 0.1.{weight,bias,running_mean,...}, 1.0.weight, 1.1.*`` (plus
    ``0.0.bias``/``1.0.bias`` with bias=True; no ``*.1.*`` with norm=False):
    MobileNet v1's layers keep their keys. ``padding=None``: (k-1)//2 * dilation.

    forward: whenever BatchNorm normalizes with running statistics (eval mode) or
    there is none (norm=False), both BNs are folded into the convolutions and the
    whole layer is one ``separable_conv2d`` call that never stores the depthwise
    output. In training mode the pointwise convolution's input must be normalized
    with the depthwise output's batch statistics, which exist only once the whole
    depthwise output has been computed, so a single pass cannot do it: then the
    two halves run as two fused conv-BN-act ops (``fastcnn.ops.conv_bn_act``).
    """
    _fastcnn_fused = True  # fastcnn.nn.convert: fused already, do not re-trace

    def __init__(self, in_channels, out_channels, kernel_size=3, stride=1, padding=None, dilation=1, bias=False,
                 norm=True, activation="relu", pointwise_activation="relu", algo="auto", eps=1e-5, momentum=0.1,
                 device=None, dtype=None):
        for name, act in (("activation", activation), ("pointwise_activation", pointwise_activation)):
            if act not in ACTIVATIONS:
                raise ValueError(f"fastcnn.nn.DepthwiseSeparableConv2d: argument '{name}' must be one of "
                                 f"{tuple(ACTIVATIONS)}, got {act!r}")
        if padding is None:
            k = (kernel_size,) * 2 if isinstance(kernel_size, int) else tuple(kernel_size)
            d = (dilation,) * 2 if isinstance(dilation, int) else tuple(dilation)
            padding = tuple((ki - 1) // 2 * di for ki, di in zip(k, d))
        kw = dict(algo=algo, device=device, dtype=dtype)
        depthwise = Conv2d(in_channels, in_channels, kernel_size, stride, padding, dilation, in_channels, bias, **kw)
        pointwise = Conv2d(in_channels, out_channels, 1, bias=bias, **kw)
        super().__init__(_half(depthwise, in_channels, norm, activation, eps, momentum),
                         _half(pointwise, out_channels, norm, pointwise_activation, eps, momentum))
        if device is not None or dtype is not None:
            self.to(device=device, dtype=dtype)
        self.norm, self.activation, self.pointwise_activation = norm, activation, pointwise_activation
        self.out_channels = out_channels

    @property
    def depthwise(self) -> Conv2d:
        return self[0][0]

    @property
    def pointwise(self) -> Conv2d:
        return self[1][0]

    def _bns(self):
        return (self[0][1], self[1][1]) if self.norm else (None, None)

    def folded_weights(self):
        """(wd, bd, wp, bp): the convolutions' weights and biases with the BNs'
        running statistics folded in (the raw ones with norm=False)."""
        return folded_weights(self.depthwise, self._bns()[0], self.pointwise, self._bns()[1])

    def forward(self, x, residual=None):
        if is_unfused():  # the same math, one child at a time
            x = self[0](x)
            mods = list(self[1])
            last_act = self.pointwise_activation != "none"
            for m in mods[:-1] if last_act else mods:
                x = m(x)
            if residual is not None:
                x = x + residual
            return mods[-1](x) if last_act else x
        return separable_forward(self.depthwise, self._bns()[0], self.pointwise, self._bns()[1], x, residual,
                                 self.activation, self.pointwise_activation)

    def extra_repr(self):
        return (f"norm={self.norm}, activation={self.activation!r}, "
                f"pointwise_activation={self.pointwise_activation!r}")
