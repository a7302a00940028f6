"""Front of the Triton convolution kernels: output allocation, layout, and the
choice between the two kernel families.

- ``conv2d_igemm``: implicit GEMM on tensor cores (tl.dot). Tiles never straddle a
  group, so it is efficient when each group has enough channels to fill a tile.
- ``conv2d_grouped``: direct convolution with fp32 FMAs for groups of few output
  channels (ResNeXt's 4-8, depthwise's 1), where a GEMM tile would be mostly padding.

Both compute on NHWC data: inputs are made channels_last once here, and the kernels
take strides for every tensor, so outputs can be written in either layout.

Family interface (each module implements it):
    forward(x, w, bias, residual, y, stride, padding, dilation, groups, act, stats)
        writes act(conv(x, w) + bias + residual) into y; returns None, or when
        ``stats`` is true (act must be 0) the per-tile partial statistics of y
        (psum [T, K] fp32, pm2 [T, K] fp32, count [T] fp32): for each tile t of
        output pixels, the per-channel sum and sum of squared deviations from the
        tile's own mean, and how many pixels the tile held.
    input_grad(dy, w, dx, stride, padding, dilation, groups)   writes dx
    weight_grad(dy, x, stride, padding, dilation, groups, weight_shape)
        returns dw as a contiguous fp32 tensor of weight_shape

Both families index pixels and channels with int32; the ``*_index_reasons`` below
say, per direction, which count of a call exceeds ``_common.MAX_INDEX_COUNT`` (the
dispatchers add them to the Triton backend's reasons), and the families' launchers
raise ValueError on the same counts.
"""
import math

import torch
import triton

from fastcnn.triton_kernels import _common, conv2d_grouped, conv2d_igemm
from fastcnn.triton_kernels._common import ACTIVATIONS, conv_memory_format, empty_nchw, memory_format_of

# Below this many output channels per group, a GEMM tile's N side would be mostly
# padding and the direct FMA kernel wins. (Few *input* channels per group, as in a
# first layer with C=3, are handled inside igemm by flattening the (r, s, c)
# reduction, so they need no special family.)
GROUPED_DIRECT_MAX_CHANNELS = 16

FAMILIES = {"igemm": conv2d_igemm, "grouped": conv2d_grouped}


def output_size(in_size, kernel, stride, padding, dilation):
    return (in_size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


def conv_output_shape(input_shape, weight_shape, stride, padding, dilation):
    n, _, h, w = input_shape
    k, _, r, s = weight_shape
    return (n, k,
            output_size(h, r, stride[0], padding[0], dilation[0]),
            output_size(w, s, stride[1], padding[1], dilation[1]))


def forward_index_reasons(input_shape, weight_shape, stride, padding, dilation) -> list:
    """Why the forward kernels cannot index this call in int32: the output pixels
    they flatten, and the weight elements (which bound every channel index)."""
    n, _, p, q = conv_output_shape(input_shape, weight_shape, stride, padding, dilation)
    return _common.index_limit_reasons({_common.OUTPUT_PIXELS: n * p * q,
                                        _common.WEIGHT_ELEMENTS: math.prod(weight_shape)})


def input_grad_index_reasons(input_shape, weight_shape, stride) -> list:
    """The same for the input gradient, whose output is the input: both families
    flatten the input pixels of one stride phase (all of them at stride 1)."""
    n, _, h, w = input_shape
    phase_pixels = n * triton.cdiv(h, stride[0]) * triton.cdiv(w, stride[1])
    return _common.index_limit_reasons({_common.PHASE_PIXELS: phase_pixels,
                                        _common.WEIGHT_ELEMENTS: math.prod(weight_shape)})


def weight_grad_index_reasons(grad_output_shape, weight_shape) -> list:
    """The same for the weight gradient, which reads dy and x: it reduces over dy's
    flattened output pixels, and reads x by (n, h, w) separately, each within its
    own dimension, so x's pixel count is no limit of its own."""
    n, _, p, q = grad_output_shape
    return _common.index_limit_reasons({_common.OUTPUT_PIXELS: n * p * q,
                                        _common.WEIGHT_ELEMENTS: math.prod(weight_shape)})


def choose_family(weight_shape, groups, family=None):
    if family is not None:
        return FAMILIES[family]
    if weight_shape[0] // groups < GROUPED_DIRECT_MAX_CHANNELS:
        return conv2d_grouped
    return conv2d_igemm


def _nhwc(t):
    return t.contiguous(memory_format=torch.channels_last)


def combine_tile_stats(psum, pm2, count):
    """Per-channel (mean, biased variance) from per-tile partial statistics, by
    Chan's parallel formula: stable where sum(y^2) - sum(y)^2 / n is not."""
    total = count.sum()
    tile_mean = psum / count[:, None]
    mean = psum.sum(0) / total
    m2 = pm2.sum(0) + (count[:, None] * (tile_mean - mean) ** 2).sum(0)
    return mean, m2 / total


def conv2d_forward(x, w, bias, residual, stride, padding, dilation, groups,
                   activation="none", stats=False, family=None):
    """act(conv2d(x, w) + bias + residual). With ``stats``, also returns the batch
    (mean, biased variance) of the output per channel, both fp32."""
    assert not (stats and activation != "none"), "statistics are of the pre-activation output"
    y = empty_nchw(x, conv_output_shape(x.shape, w.shape, stride, padding, dilation), conv_memory_format(x, w))
    if y.numel() == 0:
        if stats:
            nan = x.new_full((w.shape[0],), float("nan"), dtype=torch.float32)
            return y, (nan, nan.clone())
        return y
    if residual is not None:
        residual = _nhwc(residual)
    part = choose_family(w.shape, groups, family).forward(
        _nhwc(x), _nhwc(w), bias, residual, y, stride, padding, dilation, groups,
        ACTIVATIONS[activation], stats)
    return (y, combine_tile_stats(*part)) if stats else y


def conv2d_input_grad(dy, w, input_shape, stride, padding, dilation, groups, family=None):
    dx = empty_nchw(dy, input_shape, memory_format_of(dy))
    if dx.numel() == 0:
        return dx
    if dy.numel() == 0:
        return dx.zero_()
    choose_family(w.shape, groups, family).input_grad(_nhwc(dy), _nhwc(w), dx, stride, padding, dilation, groups)
    return dx


def conv2d_weight_grad(dy, x, weight_shape, stride, padding, dilation, groups, family=None):
    if dy.numel() == 0:
        return x.new_zeros(weight_shape)
    dw = choose_family(weight_shape, groups, family).weight_grad(
        _nhwc(dy), _nhwc(x), stride, padding, dilation, groups, weight_shape)
    return dw.to(x.dtype)
