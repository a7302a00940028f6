"""fastcnn.ops.conv_bn_act: convolution -> BatchNorm -> (+ residual) -> activation.

Inference (``training=False``): BatchNorm is folded into the convolution's weight and
bias, and bias + residual + activation run in the convolution's epilogue: one kernel
(a ``fastcnn::conv2d`` call, so every conv2d backend with an epilogue takes it: the
Triton kernels, and the CUDA depthwise and Winograd kernels).

Training: ``fastcnn::conv_bn_act_train`` reduces the batch statistics in the
convolution's epilogue, then one elementwise pass normalizes, adds the residual and
applies the activation. Its backward is ``fastcnn::bn_act_backward`` (one reduction
and one elementwise pass) followed by the convolution's own gradient ops. Running
statistics are updated exactly as nn.BatchNorm2d does. Backends: "triton" (statistics
in the convolution's epilogue), "cuda" (fastcnn._C's convolution, ATen's BatchNorm),
"cudnn" (F.conv2d + ATen's BatchNorm), "reference".
"""
from typing import List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from fastcnn.ops._checks import autocast, check_autograd_mode, check_tensor
from fastcnn.ops._dispatch import OpDispatcher, cudnn_reasons, triton_reasons
from fastcnn.ops.conv2d import (_no_cudnn, apply_conv, conv_backward, cuda_forward, cuda_forward_reasons,
                                normalize_conv_args, triton_forward_reasons)
from fastcnn.triton_kernels import reference
from fastcnn.triton_kernels._common import ACTIVATIONS, conv_memory_format, empty_nchw, memory_format_of
from fastcnn.triton_kernels.conv2d import conv_output_shape

OP = "fastcnn.conv_bn_act"

train_dispatch = OpDispatcher("fastcnn.conv_bn_act_train")
bn_backward_dispatch = OpDispatcher("fastcnn.bn_act_backward")


# ----------------------------------------------------------------------------- backends

def _triton_train(x, w, bias, gamma, beta, residual, stride, padding, dilation, groups, eps, activation):
    from fastcnn.triton_kernels.batchnorm import bn_act_forward
    from fastcnn.triton_kernels.conv2d import conv2d_forward
    y, (mean, var) = conv2d_forward(x, w, bias, None, stride, padding, dilation, groups, "none", stats=True)
    out = bn_act_forward(y, mean, torch.rsqrt(var + eps), gamma, beta, residual, activation)
    return out, y, mean, var


def _aten_bn_act(y, gamma, beta, residual, eps, activation):
    """(out, y, mean, var) from the convolution's output y, BatchNorm by ATen."""
    z, mean, invstd = torch.ops.aten.native_batch_norm(y, gamma, beta, None, None, True, 0.0, eps)
    if residual is not None:
        z = z + residual
    return reference.ACTIVATION_FNS[activation](z), y, mean, invstd.pow(-2) - eps


def _cudnn_train(x, w, bias, gamma, beta, residual, stride, padding, dilation, groups, eps, activation):
    y = F.conv2d(x, w, bias, stride, padding, dilation, groups)
    return _aten_bn_act(y, gamma, beta, residual, eps, activation)


# "cuda": the convolution is fastcnn._C's (conv2d's cuda backend: depthwise or
# Winograd), the BatchNorm ATen's, as in "cudnn"; so is the backward's BatchNorm half.
def _cuda_train(x, w, bias, gamma, beta, residual, stride, padding, dilation, groups, eps, activation):
    y = cuda_forward(x, w, bias, None, stride, padding, dilation, groups, "none")
    return _aten_bn_act(y, gamma, beta, residual, eps, activation)


def _cuda_train_reasons(x, w, bias, gamma, beta, residual, stride, padding, dilation, groups, *rest):
    return cuda_forward_reasons(x, w, bias, None, stride, padding, dilation, groups, "none")


def _reference_train(x, w, bias, gamma, beta, residual, stride, padding, dilation, groups, eps, activation):
    y = reference.conv2d_forward(x, w, bias, None, stride, padding, dilation, groups)
    mean, var = reference.batch_stats(y)
    out = reference.bn_act_forward(y, mean, torch.rsqrt(var + eps), gamma, beta, residual, activation)
    return out, y, mean, var


def _triton_train_reasons(x, w, bias, gamma, beta, residual, stride, padding, dilation, *rest):
    # The convolution (with its statistics epilogue) is the Triton forward kernel's:
    # its reasons, int32 index limit included. (The BatchNorm kernels index in int64.)
    return triton_forward_reasons(x, w, bias, None, stride, padding, dilation)


def _triton_bn_backward(*args):
    from fastcnn.triton_kernels.batchnorm import bn_act_backward
    return bn_act_backward(*args)


def _cudnn_bn_backward(grad_out, y, mean, invstd, gamma, beta, residual, activation):
    # ATen's own path: the activation's gradient, then native_batch_norm_backward.
    shape = (1, -1, 1, 1)
    z = (y - mean.view(shape)) * (invstd * gamma).view(shape) + beta.view(shape)
    dz = grad_out * reference.activation_grad(z if residual is None else z + residual, activation)
    dy, dgamma, dbeta = torch.ops.aten.native_batch_norm_backward(
        dz, y, gamma, None, None, mean, invstd, True, 0.0, [True, True, True])
    return dy, dgamma, dbeta, (dz if residual is not None else None)


train_dispatch.register("triton", _triton_train, _triton_train_reasons)
train_dispatch.register("cuda", _cuda_train, _cuda_train_reasons)
train_dispatch.register("cudnn", _cudnn_train, cudnn_reasons)
train_dispatch.register("reference", _no_cudnn(_reference_train))
bn_backward_dispatch.register("triton", _triton_bn_backward, triton_reasons)
bn_backward_dispatch.register("cuda", _cudnn_bn_backward, cudnn_reasons)
bn_backward_dispatch.register("cudnn", _cudnn_bn_backward, cudnn_reasons)
bn_backward_dispatch.register("reference", reference.bn_act_backward)


# ----------------------------------------------------------------------------- custom ops

@torch.library.custom_op("fastcnn::conv_bn_act_train", mutates_args=())
def conv_bn_act_train_op(input: Tensor, weight: Tensor, bias: Optional[Tensor], bn_weight: Tensor,
                         bn_bias: Tensor, residual: Optional[Tensor], stride: List[int], padding: List[int],
                         dilation: List[int], groups: int, eps: float, activation: str,
                         algo: str) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    """Returns (out, y, mean, var): the block's output, the convolution's output y
    (saved for the backward) and y's per-channel batch mean and biased variance, in
    fp32 (fp64 for fp64 input: gradcheck's precision)."""
    out, y, mean, var = train_dispatch(algo, input, weight, bias, bn_weight, bn_bias, residual,
                                       stride, padding, dilation, groups, eps, activation)
    layout, sdt = conv_memory_format(input, weight), reference.compute_dtype(input.dtype)
    return (out.contiguous(memory_format=layout), y.contiguous(memory_format=layout),
            mean.to(sdt).contiguous(), var.to(sdt).contiguous())


@conv_bn_act_train_op.register_fake
def _(input, weight, bias, bn_weight, bn_bias, residual, stride, padding, dilation, groups, eps, activation, algo):
    shape = conv_output_shape(input.shape, weight.shape, stride, padding, dilation)
    layout = conv_memory_format(input, weight)
    stats = input.new_empty(shape[1], dtype=reference.compute_dtype(input.dtype))
    return empty_nchw(input, shape, layout), empty_nchw(input, shape, layout), stats, stats.clone()


@torch.library.custom_op("fastcnn::bn_act_backward", mutates_args=())
def bn_act_backward_op(grad_out: Tensor, y: Tensor, mean: Tensor, invstd: Tensor, bn_weight: Tensor,
                       bn_bias: Tensor, residual: Optional[Tensor], activation: str,
                       algo: str) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    """(dy, dgamma, dbeta, dresidual); dresidual is empty when there is no residual."""
    dy, dgamma, dbeta, dres = bn_backward_dispatch(algo, grad_out, y, mean, invstd, bn_weight, bn_bias,
                                                   residual, activation)
    layout = memory_format_of(y)
    dres = y.new_empty(0) if dres is None else dres.contiguous(memory_format=layout)
    return dy.contiguous(memory_format=layout), dgamma.contiguous(), dbeta.contiguous(), dres


@bn_act_backward_op.register_fake
def _(grad_out, y, mean, invstd, bn_weight, bn_bias, residual, activation, algo):
    layout = memory_format_of(y)
    dres = y.new_empty(0) if residual is None else empty_nchw(y, y.shape, layout)
    return empty_nchw(y, y.shape, layout), bn_weight.new_empty(bn_weight.shape), \
        bn_bias.new_empty(bn_bias.shape), dres


def _setup_train(ctx, inputs, output):
    input, weight, bias, gamma, beta, residual, stride, padding, dilation, groups, eps, activation, algo = inputs
    out, y, mean, var = output
    ctx.mark_non_differentiable(y, mean, var)
    ctx.conv_params = (stride, padding, dilation, groups, algo)
    ctx.eps, ctx.activation, ctx.algo = eps, activation, algo
    ctx.save_for_backward(input, weight, gamma, beta, residual, y, mean, var)


def _backward_train(ctx, grad_out, _gy, _gmean, _gvar):
    input, weight, gamma, beta, residual, y, mean, var = ctx.saved_tensors
    # create_graph=True: the graph of this backward would miss every path through the
    # batch statistics (y, mean, var are saved non-differentiable), so a gradient
    # penalty would come out wrong without an error. Refuse it instead.
    if torch.is_grad_enabled() and any(t is not None and t.requires_grad
                                       for t in (grad_out, input, weight, gamma, beta, residual)):
        raise NotImplementedError(f"{OP}: double backward (create_graph=True) in training mode is not supported; "
                                  "use training=False, or conv2d followed by F.batch_norm")
    dy, dgamma, dbeta, dres = bn_act_backward_op(grad_out, y, mean, torch.rsqrt(var + ctx.eps), gamma, beta,
                                                 residual, ctx.activation, ctx.algo)
    need = ctx.needs_input_grad
    dx, dw = conv_backward(dy, input, weight, need[0], need[1], *ctx.conv_params)
    dbias = dy.sum((0, 2, 3)) if need[2] else None
    return (dx, dw, dbias, dgamma if need[3] else None, dbeta if need[4] else None,
            dres if need[5] else None) + (None,) * 7


conv_bn_act_train_op.register_autograd(_backward_train, setup_context=_setup_train)


# ----------------------------------------------------------------------------- public API

def fold_bn(weight, bias, bn_weight, bn_bias, running_mean, running_var, eps):
    """(w', b') with conv(x, w', b') == batch_norm(conv(x, w, b)) in inference mode."""
    ct = reference.compute_dtype(weight.dtype)
    scale = torch.rsqrt(running_var.to(ct) + eps)
    if bn_weight is not None:
        scale = scale * bn_weight.to(ct)
    shift = -running_mean.to(ct) * scale
    if bias is not None:
        shift = shift + bias.to(ct) * scale
    if bn_bias is not None:
        shift = shift + bn_bias.to(ct)
    return (weight * scale.to(weight.dtype).view(-1, 1, 1, 1)), shift.to(weight.dtype)


def conv_bn_act(input, weight, bias, bn_weight, bn_bias, running_mean, running_var, *, training,
                momentum=0.1, eps=1e-5, stride=1, padding=0, dilation=1, groups=1, activation="relu",
                residual=None, algo="auto"):
    """act(batch_norm(conv2d(input, weight, bias)) + residual).

    The BatchNorm arguments follow torch.nn.functional.batch_norm: with
    ``training=True`` the batch statistics normalize, and ``running_mean`` /
    ``running_var`` (if given) are updated in place with ``momentum``; with
    ``training=False`` the running statistics normalize (folded into the weights).
    ``activation``: none, relu, relu6, silu or gelu."""
    check_autograd_mode(OP, input, weight, bias, bn_weight, bn_bias, residual)
    input, weight, bias, residual = autocast(input, weight, bias, residual)
    input, stride, padding, dilation = normalize_conv_args(OP, input, weight, bias, stride, padding, dilation, groups)
    if activation not in ACTIVATIONS:
        raise ValueError(f"{OP}: argument 'activation' must be one of {tuple(ACTIVATIONS)}, got {activation!r}")
    k = weight.shape[0]
    for name, t in (("bn_weight", bn_weight), ("bn_bias", bn_bias),
                    ("running_mean", running_mean), ("running_var", running_var)):
        if t is not None:
            check_tensor(OP, name, t, dim=1, device=input.device)
            if t.shape[0] != k:
                raise ValueError(f"{OP}: argument '{name}' has {t.shape[0]} elements, expected {k}")
    shape = conv_output_shape(input.shape, weight.shape, stride, padding, dilation)
    if residual is not None:
        check_tensor(OP, "residual", residual, dim=4, dtype=input.dtype, device=input.device)
        if tuple(residual.shape) != tuple(shape):
            raise ValueError(f"{OP}: argument 'residual' has shape {tuple(residual.shape)}, expected {shape}")
    if momentum is None:
        raise ValueError(f"{OP}: argument 'momentum' must be a number, got {momentum!r} (momentum=None, the "
                         "cumulative average, is the modules' (ConvBNAct), as in nn.BatchNorm2d)")
    if not training:
        if running_mean is None or running_var is None:
            raise ValueError(f"{OP}: training=False needs 'running_mean' and 'running_var'")
        w, b = fold_bn(weight, bias, bn_weight, bn_bias, running_mean, running_var, eps)
        return apply_conv(input, w, b, residual, stride, padding, dilation, groups, activation, algo)

    count = shape[0] * shape[2] * shape[3]
    if count == 1:
        raise ValueError(f"{OP}: training needs more than 1 value per channel, got output shape {shape}")
    gamma = bn_weight if bn_weight is not None else input.new_ones(k)
    beta = bn_bias if bn_bias is not None else input.new_zeros(k)
    out, _, mean, var = conv_bn_act_train_op(input, weight, bias, gamma, beta, residual, stride, padding,
                                             dilation, groups, float(eps), activation, algo)
    if running_mean is not None and running_var is not None and count > 1:  # an empty batch has no statistics
        with torch.no_grad():
            running_mean.lerp_(mean.to(running_mean.dtype), momentum)
            running_var.lerp_((var * (count / (count - 1))).to(running_var.dtype), momentum)
    return out
