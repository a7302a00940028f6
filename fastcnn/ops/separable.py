"""fastcnn.ops.separable_conv2d: depthwise k x k convolution -> bias -> activation ->
pointwise 1x1 convolution -> bias (+ residual) -> activation, as one custom op
``fastcnn::separable_conv2d``.

Backends (``algo``, see fastcnn.ops): "triton" is the fused kernel
(triton_kernels/separable.py), which never writes the depthwise output to memory;
"cuda" is csrc/depthwise.cu's kernel with bias and activation in its epilogue,
then cuDNN's 1x1 convolution; "cudnn" is the unfused pair of F.conv2d calls (what
PyTorch does today);
"reference" the same math in fp32 (fp64 for fp64), cuDNN off.

The backward saves only the inputs (plus the output when act2 can be differentiated
from it), not the depthwise output, and recomputes that with the existing
``fastcnn::conv2d`` op; all four convolution gradients go through
``fastcnn::conv2d_input_grad`` / ``conv2d_weight_grad`` (1x1, then groups=C), so
every backend's gradients come from the conv2d kernels.
"""
from typing import List, Optional

import torch
from torch import Tensor

from fastcnn.ops import _cuda_depthwise
from fastcnn.ops._checks import autocast, check_autograd_mode, check_tensor
from fastcnn.ops._dispatch import OpDispatcher, cudnn_reasons, triton_reasons
from fastcnn.ops.conv2d import (_no_cudnn, activation_mask, conv2d_input_grad_op, conv2d_op,
                                conv2d_weight_grad_op, normalize_conv_args)
from fastcnn.triton_kernels import reference
from fastcnn.triton_kernels import separable as kernels
from fastcnn.triton_kernels._common import ACTIVATIONS, empty_nchw, memory_format_of

OP = "fastcnn.separable_conv2d"

forward_dispatch = OpDispatcher(OP)

_ONE, _ZERO = [1, 1], [0, 0]


# ----------------------------------------------------------------------------- backends

def _triton_reasons(x, wd, bd, wp, bp, residual, stride, padding, dilation, *rest):
    shapes = kernels.separable_reasons(x, wd, bd, wp, bp, residual)
    # The int32 index limit (output pixels, channels), once the weights' shapes are
    # the kernel's. The backward runs the conv2d ops, whose dispatchers check their own.
    index = [] if shapes else kernels.separable_index_reasons(x, wd, wp, stride, padding, dilation)
    return triton_reasons(x) + shapes + index


def _pointwise(z, wp, bp, residual, act2):
    """act2(conv1x1(z, wp) + bp + residual) through cuDNN: the unfused second half."""
    y = torch.nn.functional.conv2d(z, wp, bp)
    if residual is not None:
        y = y + residual
    return reference.ACTIVATION_FNS[act2](y)


def _cudnn_forward(x, wd, bd, wp, bp, residual, stride, padding, dilation, act1, act2):
    z = torch.nn.functional.conv2d(x, wd, bd, stride, padding, dilation, x.shape[1])
    return _pointwise(reference.ACTIVATION_FNS[act1](z), wp, bp, residual, act2)


# "cuda": the depthwise half (bias and act1 in its epilogue) is csrc/depthwise.cu;
# the pointwise half is cuDNN's, as fastcnn._C has no GEMM of its own.
def _cuda_forward(x, wd, bd, wp, bp, residual, stride, padding, dilation, act1, act2):
    z = _cuda_depthwise.forward(x, wd, bd, None, stride, padding, dilation, x.shape[1], act1)
    return _pointwise(z, wp, bp, residual, act2)


def _cuda_reasons(x, wd, bd, wp, bp, residual, stride, padding, dilation, act1, act2):
    return _cuda_depthwise.forward_reasons(x, wd, bd, None, stride, padding, dilation, x.shape[1], act1)


forward_dispatch.register("triton", kernels.separable_conv2d_forward, _triton_reasons)
forward_dispatch.register("cuda", _cuda_forward, _cuda_reasons)
forward_dispatch.register("cudnn", _cudnn_forward, cudnn_reasons)
forward_dispatch.register("reference", _no_cudnn(kernels.separable_conv2d_reference))


# ----------------------------------------------------------------------------- custom op

@torch.library.custom_op("fastcnn::separable_conv2d", mutates_args=())
def separable_conv2d_op(input: Tensor, depthwise_weight: Tensor, depthwise_bias: Optional[Tensor],
                        pointwise_weight: Tensor, pointwise_bias: Optional[Tensor], residual: Optional[Tensor],
                        stride: List[int], padding: List[int], dilation: List[int], activation: str,
                        pointwise_activation: str, algo: str) -> Tensor:
    out = forward_dispatch(algo, input, depthwise_weight, depthwise_bias, pointwise_weight, pointwise_bias,
                           residual, stride, padding, dilation, activation, pointwise_activation)
    return out.contiguous(memory_format=memory_format_of(input))


@separable_conv2d_op.register_fake
def _(input, depthwise_weight, depthwise_bias, pointwise_weight, pointwise_bias, residual, stride, padding,
      dilation, activation, pointwise_activation, algo):
    shape = kernels.separable_output_shape(input.shape, depthwise_weight.shape, pointwise_weight.shape,
                                           stride, padding, dilation)
    return empty_nchw(input, shape, memory_format_of(input))


def _setup(ctx, inputs, output):
    x, wd, bd, wp, bp, residual, stride, padding, dilation, act1, act2, algo = inputs
    ctx.params = (stride, padding, dilation, act1, act2, algo)
    ctx.has = (bd is not None, bp is not None, residual is not None)
    # The output is saved only when act2's derivative can be read off it; otherwise
    # the backward recomputes the pre-activation. The depthwise output is never saved.
    keep_out = act2 in ("relu", "relu6")
    ctx.save_for_backward(x, wd, bd, wp, bp, residual, output if keep_out else None)


def _act_grad(pre, activation, like):
    """act'(pre) in the gradient's dtype (computed in fp32+)."""
    return reference.activation_grad(pre.to(reference.compute_dtype(pre.dtype)), activation).to(like.dtype)


def _backward(ctx, grad):
    x, wd, bd, wp, bp, residual, out = ctx.saved_tensors
    stride, padding, dilation, act1, act2, algo = ctx.params
    # The "cuda" backend's pointwise half is cuDNN's (fastcnn._C has no 1x1 kernel):
    # so are its gradients, rather than a fallback warning from conv2d's dispatchers.
    pw_algo = "cudnn" if algo == "cuda" else algo
    need = ctx.needs_input_grad
    c = x.shape[1]
    # Recompute the depthwise pre-activation u and z = act1(u), stored in x's dtype
    # as the forward rounded it.
    u = conv2d_op(x, wd, bd, None, stride, padding, dilation, c, "none", algo)
    z = reference.ACTIVATION_FNS[act1](u)

    if act2 in ("relu", "relu6"):
        g2 = grad * activation_mask(out, act2)
    elif act2 == "none":
        g2 = grad
    else:
        v = conv2d_op(z, wp, bp, residual, _ONE, _ZERO, _ONE, 1, "none", pw_algo)
        g2 = grad * _act_grad(v, act2, grad)

    dwp = dbp = dres = dx = dwd = dbd = None
    if need[3]:
        dwp = conv2d_weight_grad_op(g2, z, list(wp.shape), _ONE, _ZERO, _ONE, 1, pw_algo)
    if need[4]:
        dbp = g2.sum((0, 2, 3))
    if need[5]:
        dres = g2
    if need[0] or need[1] or need[2]:
        dz = conv2d_input_grad_op(g2, wp, list(z.shape), _ONE, _ZERO, _ONE, 1, pw_algo)
        g1 = dz if act1 == "none" else dz * _act_grad(u, act1, dz)
        if need[0]:
            dx = conv2d_input_grad_op(g1, wd, list(x.shape), stride, padding, dilation, c, algo)
        if need[1]:
            dwd = conv2d_weight_grad_op(g1, x, list(wd.shape), stride, padding, dilation, c, algo)
        if need[2]:
            dbd = g1.sum((0, 2, 3))
    return dx, dwd, dbd, dwp, dbp, dres, None, None, None, None, None, None


separable_conv2d_op.register_autograd(_backward, setup_context=_setup)


# ----------------------------------------------------------------------------- public API

def separable_conv2d(input, depthwise_weight, pointwise_weight, depthwise_bias=None, pointwise_bias=None,
                     stride=1, padding=0, dilation=1, *, activation="none", pointwise_activation="none",
                     residual=None, algo="auto"):
    """pointwise_activation(conv2d(activation(conv2d(input, depthwise_weight,
    depthwise_bias, stride, padding, dilation, groups=C)), pointwise_weight,
    pointwise_bias) + residual) without storing the depthwise output.

    ``depthwise_weight``: (C, 1, kh, kw) (channel multiplier 1); ``pointwise_weight``:
    (K, C, 1, 1); biases (C,) and (K,); ``residual``: (N, K, P, Q). stride, padding
    ('same'/'valid' too) and dilation apply to the depthwise convolution as in
    F.conv2d. Activations: none, relu, relu6, silu, gelu. Unbatched (C, H, W) input
    too."""
    unbatched = isinstance(input, Tensor) and input.dim() == 3
    if unbatched:
        input = input.unsqueeze(0)
        if isinstance(residual, Tensor) and residual.dim() == 3:
            residual = residual.unsqueeze(0)
    check_tensor(OP, "input", input, dim=4)
    check_tensor(OP, "depthwise_weight", depthwise_weight, dim=4)
    check_tensor(OP, "pointwise_weight", pointwise_weight, dim=4)
    check_autograd_mode(OP, input, depthwise_weight, pointwise_weight, depthwise_bias, pointwise_bias, residual)
    input, depthwise_weight, pointwise_weight, depthwise_bias, pointwise_bias, residual = autocast(
        input, depthwise_weight, pointwise_weight, depthwise_bias, pointwise_bias, residual)
    c = input.shape[1]
    if c < 1 or depthwise_weight.shape[:2] != (c, 1):
        raise ValueError(f"{OP}: argument 'depthwise_weight' must have shape (C, 1, kh, kw) for an input with "
                         f"C={c} channels (channel multiplier 1), got {tuple(depthwise_weight.shape)}")
    check_tensor(OP, "pointwise_weight", pointwise_weight, dtype=input.dtype, device=input.device)
    if pointwise_weight.shape[1:] != (c, 1, 1) or pointwise_weight.shape[0] < 1:
        raise ValueError(f"{OP}: argument 'pointwise_weight' must have shape (K, C={c}, 1, 1), "
                         f"got {tuple(pointwise_weight.shape)}")
    k = pointwise_weight.shape[0]
    if pointwise_bias is not None:
        check_tensor(OP, "pointwise_bias", pointwise_bias, dim=1, dtype=input.dtype, device=input.device)
        if pointwise_bias.shape[0] != k:
            raise ValueError(f"{OP}: argument 'pointwise_bias' has {pointwise_bias.shape[0]} elements, expected {k}")
    for name, act in (("activation", activation), ("pointwise_activation", pointwise_activation)):
        if act not in ACTIVATIONS:
            raise ValueError(f"{OP}: argument '{name}' must be one of {tuple(ACTIVATIONS)}, got {act!r}")
    try:
        input, stride, padding, dilation = normalize_conv_args(OP, input, depthwise_weight, depthwise_bias,
                                                               stride, padding, dilation, c)
    except (ValueError, TypeError) as e:  # its messages say 'weight'/'bias': name ours
        msg = str(e).replace("'weight'", "'depthwise_weight'").replace("'bias'", "'depthwise_bias'")
        raise type(e)(msg) from None
    shape = kernels.separable_output_shape(input.shape, depthwise_weight.shape, pointwise_weight.shape,
                                           stride, padding, dilation)
    if residual is not None:
        check_tensor(OP, "residual", residual, dim=4, dtype=input.dtype, device=input.device)
        if tuple(residual.shape) != tuple(shape):
            raise ValueError(f"{OP}: argument 'residual' has shape {tuple(residual.shape)}, expected {shape}")
    out = separable_conv2d_op(input, depthwise_weight, depthwise_bias, pointwise_weight, pointwise_bias, residual,
                              stride, padding, dilation, activation, pointwise_activation, algo)
    return out.squeeze(0) if unbatched else out
