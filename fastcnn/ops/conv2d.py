"""fastcnn.ops.conv2d: 2-D convolution with the semantics of
torch.nn.functional.conv2d, as torch.library custom ops.

    fastcnn::conv2d              act(conv(x, w) + bias + residual), activation in
                                 none/relu/relu6 when a gradient is needed
    fastcnn::conv2d_input_grad   dL/dx
    fastcnn::conv2d_weight_grad  dL/dw

The two gradient ops are bilinear in their tensor arguments, so their own backward
is written with the same three ops: double backward works too.
"""
from typing import List, Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from fastcnn.ops._checks import autocast, check_autograd_mode, check_tensor, pair
from fastcnn.ops._dispatch import OpDispatcher, cudnn_reasons, triton_reasons
from fastcnn.triton_kernels import conv2d as conv_kernels
from fastcnn.triton_kernels import reference
from fastcnn.triton_kernels._common import ACTIVATIONS, conv_memory_format, empty_nchw, memory_format_of
from fastcnn.triton_kernels.conv2d import conv_output_shape

OP = "fastcnn.conv2d"
# Activations whose derivative can be read off the output; the others (silu, gelu)
# are applied outside the op when a gradient is needed.
OUTPUT_DIFFERENTIABLE = ("none", "relu", "relu6")

forward_dispatch = OpDispatcher("fastcnn.conv2d")
input_grad_dispatch = OpDispatcher("fastcnn.conv2d_input_grad")
weight_grad_dispatch = OpDispatcher("fastcnn.conv2d_weight_grad")


# ----------------------------------------------------------------------------- checks

def resolve_padding(op, weight_shape, stride, padding, dilation):
    """(padding, extra): F.conv2d's padding argument (an int, a pair, 'same' or
    'valid') as a symmetric pair, plus the one extra row / column (0 or 1 per
    dimension) that an even total 'same' padding puts at the bottom / right, as
    PyTorch does. stride and dilation are pairs."""
    if not isinstance(padding, str):
        return pair(op, "padding", padding, 0), [0, 0]
    if padding == "valid":
        return [0, 0], [0, 0]
    if padding != "same":
        raise ValueError(f"{op}: argument 'padding' must be 'same', 'valid', an int or a pair, got {padding!r}")
    if list(stride) != [1, 1]:
        raise ValueError(f"{op}: padding='same' is not supported for strided convolutions")
    total = [d * (s - 1) for d, s in zip(dilation, weight_shape[2:])]
    return [t // 2 for t in total], [t % 2 for t in total]


def normalize_conv_args(op, input, weight, bias, stride, padding, dilation, groups):
    """Check F.conv2d's arguments; return (input, stride, padding, dilation) with
    'same'/'valid' resolved to explicit symmetric padding. Odd total 'same' padding
    is made symmetric by padding the input by one on the bottom/right, as PyTorch
    does."""
    check_tensor(op, "input", input, dim=4)
    check_tensor(op, "weight", weight, dim=4, dtype=input.dtype, device=input.device)
    if bias is not None:
        check_tensor(op, "bias", bias, dim=1, dtype=input.dtype, device=input.device)
    if not isinstance(groups, int) or groups < 1:
        raise ValueError(f"{op}: argument 'groups' must be a positive int, got {groups!r}")
    k, c_per_group = weight.shape[:2]
    if k % groups:
        raise ValueError(f"{op}: argument 'groups'={groups} does not divide the {k} output channels of 'weight'")
    if input.shape[1] != c_per_group * groups:
        raise ValueError(f"{op}: argument 'input' has {input.shape[1]} channels, but 'weight' "
                         f"{tuple(weight.shape)} with groups={groups} expects {c_per_group * groups}")
    if bias is not None and bias.shape[0] != k:
        raise ValueError(f"{op}: argument 'bias' has {bias.shape[0]} elements, expected {k}")
    stride = pair(op, "stride", stride, 1)
    dilation = pair(op, "dilation", dilation, 1)
    padding, extra = resolve_padding(op, weight.shape, stride, padding, dilation)
    if any(extra):
        input = F.pad(input, [0, extra[1], 0, extra[0]])
    out = conv_output_shape(input.shape, weight.shape, stride, padding, dilation)
    if out[2] < 1 or out[3] < 1:
        raise ValueError(f"{op}: argument 'input' of spatial size {tuple(input.shape[2:])} is too small for "
                         f"kernel {tuple(weight.shape[2:])} with padding {padding} and dilation {dilation}")
    return input, stride, padding, dilation


# ----------------------------------------------------------------------------- backends

def _aten_forward(x, w, bias, residual, stride, padding, dilation, groups, activation):
    y = F.conv2d(x, w, bias, stride, padding, dilation, groups)
    if residual is not None:
        y = y + residual
    return reference.ACTIVATION_FNS[activation](y)


def _no_cudnn(fn):
    """``fn`` run with cuDNN off, so on CUDA the reference is ATen's own kernels."""
    def run(*args):
        with torch.backends.cudnn.flags(enabled=False):
            return fn(*args)
    return run


def _triton_forward(*args):
    from fastcnn.triton_kernels.conv2d import conv2d_forward
    return conv2d_forward(*args)


def _triton_input_grad(*args):
    from fastcnn.triton_kernels.conv2d import conv2d_input_grad
    return conv2d_input_grad(*args)


def _triton_weight_grad(*args):
    from fastcnn.triton_kernels.conv2d import conv2d_weight_grad
    return conv2d_weight_grad(*args)


# The Triton kernels index pixels and channels with int32: a call past
# _common.MAX_INDEX_COUNT goes to another backend (the counts that matter differ per
# direction, see triton_kernels/conv2d.py).
def triton_forward_reasons(x, w, bias, residual, stride, padding, dilation, *rest):
    return triton_reasons(x) + conv_kernels.forward_index_reasons(x.shape, w.shape, stride, padding, dilation)


def _triton_input_grad_reasons(dy, w, input_shape, stride, *rest):
    return triton_reasons(dy) + conv_kernels.input_grad_index_reasons(input_shape, w.shape, stride)


def _triton_weight_grad_reasons(dy, x, weight_shape, *rest):
    return triton_reasons(dy) + conv_kernels.weight_grad_index_reasons(dy.shape, weight_shape)


def _cudnn_input_grad(dy, w, input_shape, stride, padding, dilation, groups):
    return torch.ops.aten.convolution_backward(
        dy, dy.new_empty(input_shape), w, None, stride, padding, dilation, False, [0, 0], groups,
        [True, False, False])[0]


def _cudnn_weight_grad(dy, x, weight_shape, stride, padding, dilation, groups):
    return torch.ops.aten.convolution_backward(
        dy, x, x.new_empty(weight_shape), None, stride, padding, dilation, False, [0, 0], groups,
        [False, True, False])[1]


forward_dispatch.register("triton", _triton_forward, triton_forward_reasons)
forward_dispatch.register("cudnn", _aten_forward, cudnn_reasons)
forward_dispatch.register("reference", _no_cudnn(reference.conv2d_forward))
input_grad_dispatch.register("triton", _triton_input_grad, _triton_input_grad_reasons)
input_grad_dispatch.register("cudnn", _cudnn_input_grad, cudnn_reasons)
input_grad_dispatch.register("reference", _no_cudnn(reference.conv2d_input_grad))
weight_grad_dispatch.register("triton", _triton_weight_grad, _triton_weight_grad_reasons)
weight_grad_dispatch.register("cudnn", _cudnn_weight_grad, cudnn_reasons)
weight_grad_dispatch.register("reference", _no_cudnn(reference.conv2d_weight_grad))

# "cuda": fastcnn._C's kernels. A call goes to the depthwise kernels
# (csrc/depthwise.cu) when they take it, else to Winograd (csrc/winograd.cu: 3x3,
# stride 1, groups 1; no weight gradient); otherwise it is refused with the reasons
# of both, and the dispatcher falls back.
from fastcnn.ops import _cuda_depthwise, _cuda_winograd  # noqa: E402


def _first_taker(*kernels):
    """(run, reasons) of a backend made of (run, reasons) pairs tried in order."""
    def reasons(*args):
        out = []
        for _, why in kernels:
            r = why(*args)
            if not r:
                return []
            out += [x for x in r if x not in out]
        return out

    def run(*args):
        for fn, why in kernels:
            if not why(*args):
                return fn(*args)
        raise RuntimeError(f"{OP}: the CUDA backend cannot take this call: {'; '.join(reasons(*args))}")
    return run, reasons


_dw, _wino = _cuda_depthwise, _cuda_winograd
# Named: conv_bn_act's and separable_conv2d's cuda backends run their convolution here.
cuda_forward, cuda_forward_reasons = _first_taker((_dw.forward, _dw.forward_reasons),
                                                  (_wino.forward, _wino.forward_reasons))
forward_dispatch.register("cuda", cuda_forward, cuda_forward_reasons)
input_grad_dispatch.register("cuda", *_first_taker((_dw.input_grad, _dw.input_grad_reasons),
                                                   (_wino.input_grad, _wino.input_grad_reasons)))
weight_grad_dispatch.register("cuda", *_first_taker((_dw.weight_grad, _dw.weight_grad_reasons),
                                                    (_wino.weight_grad, _wino.weight_grad_reasons)))


def _in_layout(t, memory_format):
    """Every backend returns the layout the fake kernel promises."""
    return t.contiguous(memory_format=memory_format)


# ----------------------------------------------------------------------------- custom ops

@torch.library.custom_op("fastcnn::conv2d", mutates_args=())
def conv2d_op(input: Tensor, weight: Tensor, bias: Optional[Tensor], residual: Optional[Tensor],
              stride: List[int], padding: List[int], dilation: List[int], groups: int,
              activation: str, algo: str) -> Tensor:
    out = forward_dispatch(algo, input, weight, bias, residual, stride, padding, dilation, groups, activation)
    return _in_layout(out, conv_memory_format(input, weight))  # F.conv2d's choice


@conv2d_op.register_fake
def _(input, weight, bias, residual, stride, padding, dilation, groups, activation, algo):
    shape = conv_output_shape(input.shape, weight.shape, stride, padding, dilation)
    return empty_nchw(input, shape, conv_memory_format(input, weight))


@torch.library.custom_op("fastcnn::conv2d_input_grad", mutates_args=())
def conv2d_input_grad_op(grad_output: Tensor, weight: Tensor, input_size: List[int], stride: List[int],
                         padding: List[int], dilation: List[int], groups: int, algo: str) -> Tensor:
    dx = input_grad_dispatch(algo, grad_output, weight, input_size, stride, padding, dilation, groups)
    return _in_layout(dx, memory_format_of(grad_output))


@conv2d_input_grad_op.register_fake
def _(grad_output, weight, input_size, stride, padding, dilation, groups, algo):
    return empty_nchw(grad_output, input_size, memory_format_of(grad_output))


@torch.library.custom_op("fastcnn::conv2d_weight_grad", mutates_args=())
def conv2d_weight_grad_op(grad_output: Tensor, input: Tensor, weight_size: List[int], stride: List[int],
                          padding: List[int], dilation: List[int], groups: int, algo: str) -> Tensor:
    dw = weight_grad_dispatch(algo, grad_output, input, weight_size, stride, padding, dilation, groups)
    return dw.contiguous()


@conv2d_weight_grad_op.register_fake
def _(grad_output, input, weight_size, stride, padding, dilation, groups, algo):
    return grad_output.new_empty(weight_size)


# ----------------------------------------------------------------------------- autograd

def conv_backward(grad, input, weight, needs_input, needs_weight, stride, padding, dilation, groups, algo):
    """(dx, dw) of a plain convolution, each None when not needed."""
    dx = dw = None
    if needs_input:
        dx = conv2d_input_grad_op(grad, weight, list(input.shape), stride, padding, dilation, groups, algo)
    if needs_weight:
        dw = conv2d_weight_grad_op(grad, input, list(weight.shape), stride, padding, dilation, groups, algo)
    return dx, dw


def activation_mask(out, activation):
    """act'(z) read off out = act(z), for the activations in OUTPUT_DIFFERENTIABLE;
    true at NaN, as PyTorch's threshold / hardtanh backward."""
    if activation == "relu":
        return ~(out <= 0)
    if activation == "relu6":
        return ~((out <= 0) | (out >= 6))
    return None


def _setup_conv2d(ctx, inputs, output):
    input, weight, bias, residual, stride, padding, dilation, groups, activation, algo = inputs
    if activation not in OUTPUT_DIFFERENTIABLE:
        raise RuntimeError(f"{OP}: activation={activation!r} has no backward inside the op; "
                           "fastcnn.ops applies it outside when a gradient is needed")
    ctx.params = (stride, padding, dilation, groups, algo)
    ctx.activation = activation
    ctx.save_for_backward(input, weight, output if activation != "none" else None)


def _backward_conv2d(ctx, grad):
    input, weight, output = ctx.saved_tensors
    mask = activation_mask(output, ctx.activation)
    if mask is not None:
        grad = grad * mask
    need = ctx.needs_input_grad
    dx, dw = conv_backward(grad, input, weight, need[0], need[1], *ctx.params)
    dbias = grad.sum((0, 2, 3)) if need[2] else None
    dres = grad if need[3] else None
    return dx, dw, dbias, dres, None, None, None, None, None, None


conv2d_op.register_autograd(_backward_conv2d, setup_context=_setup_conv2d)


def _setup_input_grad(ctx, inputs, output):
    grad_output, weight, input_size, stride, padding, dilation, groups, algo = inputs
    ctx.params = (stride, padding, dilation, groups, algo)
    ctx.save_for_backward(grad_output, weight)


def _backward_input_grad(ctx, ggx):
    # dx = conv_transpose(g, w) is bilinear: d/dg = conv(ggx, w), d/dw = weight_grad(g, ggx).
    g, w = ctx.saved_tensors
    stride, padding, dilation, groups, algo = ctx.params
    dg = dw = None
    if ctx.needs_input_grad[0]:
        dg = conv2d_op(ggx, w, None, None, stride, padding, dilation, groups, "none", algo)
    if ctx.needs_input_grad[1]:
        dw = conv2d_weight_grad_op(g, ggx, list(w.shape), stride, padding, dilation, groups, algo)
    return dg, dw, None, None, None, None, None, None


conv2d_input_grad_op.register_autograd(_backward_input_grad, setup_context=_setup_input_grad)


def _setup_weight_grad(ctx, inputs, output):
    grad_output, input, weight_size, stride, padding, dilation, groups, algo = inputs
    ctx.params = (stride, padding, dilation, groups, algo)
    ctx.save_for_backward(grad_output, input)


def _backward_weight_grad(ctx, ggw):
    # dw = weight_grad(g, x) is bilinear: d/dg = conv(x, ggw), d/dx = input_grad(g, ggw).
    g, x = ctx.saved_tensors
    stride, padding, dilation, groups, algo = ctx.params
    dg = dx = None
    if ctx.needs_input_grad[0]:
        dg = conv2d_op(x, ggw, None, None, stride, padding, dilation, groups, "none", algo)
    if ctx.needs_input_grad[1]:
        dx = conv2d_input_grad_op(g, ggw, list(x.shape), stride, padding, dilation, groups, algo)
    return dg, dx, None, None, None, None, None, None


conv2d_weight_grad_op.register_autograd(_backward_weight_grad, setup_context=_setup_weight_grad)


# ----------------------------------------------------------------------------- public API

def grad_needed(*tensors) -> bool:
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


def apply_conv(input, weight, bias, residual, stride, padding, dilation, groups, activation, algo):
    """The fused op when its activation can be differentiated inside it, else the op
    without activation followed by the activation in PyTorch."""
    if activation in OUTPUT_DIFFERENTIABLE or not grad_needed(input, weight, bias, residual):
        return conv2d_op(input, weight, bias, residual, stride, padding, dilation, groups, activation, algo)
    out = conv2d_op(input, weight, bias, residual, stride, padding, dilation, groups, "none", algo)
    return reference.ACTIVATION_FNS[activation](out)


def conv2d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, *, activation="none",
           algo="auto"):
    """torch.nn.functional.conv2d on fastcnn's kernels (``algo``: see fastcnn.ops);
    ``activation`` (relu, relu6, silu, gelu) is applied in the convolution's epilogue
    after the bias."""
    if activation not in ACTIVATIONS:
        raise ValueError(f"{OP}: argument 'activation' must be one of {tuple(ACTIVATIONS)}, got {activation!r}")
    unbatched = isinstance(input, Tensor) and input.dim() == 3
    if unbatched:
        input = input.unsqueeze(0)
    check_autograd_mode(OP, input, weight, bias)
    input, weight, bias = autocast(input, weight, bias)
    input, stride, padding, dilation = normalize_conv_args(OP, input, weight, bias, stride, padding, dilation, groups)
    out = apply_conv(input, weight, bias, None, stride, padding, dilation, groups, activation, algo)
    return out.squeeze(0) if unbatched else out
