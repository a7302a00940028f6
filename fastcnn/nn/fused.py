"""Fused convolution -> BatchNorm -> (+ residual) -> activation modules, and the
``unfused()`` switch under which fused blocks call their submodules one by one."""
import contextlib

import torch

from fastcnn import ops
from fastcnn.nn.conv import Conv2d
from fastcnn.ops.conv2d import resolve_padding
from fastcnn.triton_kernels.conv2d import conv_output_shape
from fastcnn.triton_kernels.reference import ACTIVATION_FNS


_unfused = False


@contextlib.contextmanager
def unfused():
    """Within this block, fused blocks (the zoo's, DepthwiseSeparableConv2d) call their
    conv, BN and activation modules one by one: the same math, but every submodule's
    forward hooks fire (``fastcnn.models.summary`` counts layers with them)."""
    global _unfused
    previous, _unfused = _unfused, True
    try:
        yield
    finally:
        _unfused = previous


def is_unfused() -> bool:
    return _unfused


def bn_call_args(bn: torch.nn.BatchNorm2d):
    """(training, momentum, running_mean, running_var) exactly as
    torch.nn.BatchNorm2d.forward passes them to F.batch_norm, including its
    num_batches_tracked bookkeeping (momentum=None: cumulative average)."""
    factor = 0.0 if bn.momentum is None else bn.momentum
    if bn.training and bn.track_running_stats and bn.num_batches_tracked is not None:
        bn.num_batches_tracked.add_(1)
        factor = 1.0 / float(bn.num_batches_tracked) if bn.momentum is None else bn.momentum
    training = bn.training or (bn.running_mean is None and bn.running_var is None)
    use_running = not bn.training or bn.track_running_stats
    return (training, factor,
            bn.running_mean if use_running else None, bn.running_var if use_running else None)


def conv_act_forward(conv: Conv2d, x, activation):
    """act(conv(x) + bias) through fastcnn.ops.conv2d: the activation in the
    convolution's epilogue."""
    return conv._conv_forward(x, conv.weight, conv.bias, activation)


def conv_bn_act_forward(conv: Conv2d, bn: torch.nn.BatchNorm2d, x, residual, activation):
    """act(bn(conv(x)) + residual) through fastcnn.ops.conv_bn_act."""
    x, padding = conv.padded_input(x)
    training, momentum, running_mean, running_var = bn_call_args(bn)
    return ops.conv_bn_act(x, conv.weight, conv.bias, bn.weight, bn.bias, running_mean, running_var,
                           training=training, momentum=momentum, eps=bn.eps, stride=conv.stride,
                           padding=padding, dilation=conv.dilation, groups=conv.groups,
                           activation=activation, residual=residual, algo=conv.algo)


class ConvBNAct(torch.nn.Module):
    """Conv2d -> BatchNorm2d -> (+ residual) -> activation, as one fused op.

    Submodules ``conv`` (fastcnn.nn.Conv2d, no bias by default) and ``bn``
    (torch.nn.BatchNorm2d) keep the state_dict keys of the unfused pair.
    ``padding=None`` gives "same"-size output for odd kernels at stride 1."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=None, dilation=1,
                 groups=1, bias=False, activation="relu", eps=1e-5, momentum=0.1, algo="auto",
                 device=None, dtype=None):
        super().__init__()
        if padding is None:
            k = (kernel_size,) * 2 if isinstance(kernel_size, int) else kernel_size
            d = (dilation,) * 2 if isinstance(dilation, int) else dilation
            padding = tuple((ki - 1) // 2 * di for ki, di in zip(k, d))
        self.conv = Conv2d(in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias,
                           algo=algo, device=device, dtype=dtype)
        self.bn = torch.nn.BatchNorm2d(out_channels, eps, momentum, device=device, dtype=dtype)
        self.activation = activation

    def forward(self, x, residual=None):
        return conv_bn_act_forward(self.conv, self.bn, x, residual, self.activation)

    def extra_repr(self):
        return f"activation={self.activation!r}"


class ConvBNReLU(ConvBNAct):
    """ConvBNAct with ReLU."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("activation", "relu")
        super().__init__(*args, **kwargs)


class FusedConv2dBN(Conv2d):
    """What ``fastcnn.nn.convert`` puts in a Conv2d's place when it fuses it with
    the BatchNorm2d (and activation) that follow it. It keeps the Conv2d's own
    parameters and a reference, not a submodule, to the BatchNorm2d, which stays
    registered where it was: the model's state_dict keys do not change."""

    def fuse(self, bn: torch.nn.BatchNorm2d, activation: str):
        object.__setattr__(self, "_bn", bn)  # not registered: bn keeps its own place
        self.activation = activation
        return self

    def forward(self, x, residual=None):
        if residual is not None and residual.shape != self.output_shape(x):
            # convert() saw "+ residual" in the graph but not the shapes: a broadcast add stays unfused
            y = conv_bn_act_forward(self, self._bn, x, None, "none")
            return ACTIVATION_FNS[self.activation](y + residual)
        return conv_bn_act_forward(self, self._bn, x, residual, self.activation)

    def output_shape(self, x):
        x, padding = self.padded_input(x)
        padding, extra = resolve_padding(f"fastcnn.nn.{type(self).__name__}", self.weight.shape, self.stride, padding,
                                         self.dilation)
        n, c, h, w = x.shape
        return torch.Size(conv_output_shape((n, c, h + extra[0], w + extra[1]), self.weight.shape, self.stride,
                                            padding, self.dilation))

    def extra_repr(self):
        return super().extra_repr() + ", fused with the BatchNorm2d after it"  # (and the activation shown)
