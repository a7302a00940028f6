"""fastcnn.ops.depthwise_conv2d: depthwise convolution (groups == input channels,
weight (C * multiplier, 1, kh, kw)) on the fastcnn::conv2d custom ops, so autograd,
double backward, torch.compile and opcheck come from there.

Backends (``algo``, see fastcnn.ops): "triton" is the grouped direct family
(triton_kernels/conv2d_grouped.py); "cuda" is csrc/depthwise.cu, which takes
channel multipliers 1 and 2, square 3/5/7 kernels and stride 1 or 2 (any padding
and dilation) and says why for anything else; "cudnn" and "reference" as for
conv2d.
"""
from torch import Tensor

from fastcnn.ops._checks import autocast, check_autograd_mode, check_tensor
from fastcnn.ops.conv2d import conv2d_op, normalize_conv_args

OP = "fastcnn.depthwise_conv2d"


def depthwise_conv2d(input, weight, bias=None, stride=1, padding=0, dilation=1, *, algo="auto"):
    """F.conv2d(input, weight, bias, stride, padding, dilation, groups=C) for an input
    with C channels and a weight of shape (C * multiplier, 1, kh, kw); stride,
    padding and dilation as in F.conv2d ('same'/'valid' included); unbatched
    (C, H, W) input too."""
    unbatched = isinstance(input, Tensor) and input.dim() == 3
    if unbatched:
        input = input.unsqueeze(0)
    check_tensor(OP, "input", input, dim=4)
    check_tensor(OP, "weight", weight, dim=4)
    check_autograd_mode(OP, input, weight, bias)
    input, weight, bias = autocast(input, weight, bias)
    c = input.shape[1]
    k = weight.shape[0]
    if c < 1 or weight.shape[1] != 1 or k < 1 or k % c:
        raise ValueError(f"{OP}: argument 'weight' must have shape (C * multiplier, 1, kh, kw) for an input "
                         f"with C={c} channels, got {tuple(weight.shape)}")
    input, stride, padding, dilation = normalize_conv_args(OP, input, weight, bias, stride, padding, dilation, c)
    out = conv2d_op(input, weight, bias, None, stride, padding, dilation, c, "none", algo)
    return out.squeeze(0) if unbatched else out
