"""fastcnn.ops.local_response_norm: local response normalization with the semantics
of torch.nn.functional.local_response_norm (plus Caffe's WITHIN_CHANNEL mode), as
torch.library custom ops.

    fastcnn::local_response_norm           (y, scale); scale (fp32, fp64 for fp64)
                                           only when save_scale, else an empty (0,)
    fastcnn::local_response_norm_backward  dL/dx from dy, x, y and the saved scale

See fastcnn/triton_kernels/lrn.py for the formulas and the kernel design.
"""
import numbers
from typing import Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from fastcnn.ops import _cuda_lrn
from fastcnn.ops._checks import check_autograd_mode, check_tensor
from fastcnn.ops._dispatch import OpDispatcher, autograd_inside_op, cudnn_reasons, triton_reasons
from fastcnn.triton_kernels import lrn as lrn_kernels
from fastcnn.triton_kernels._common import empty_nchw, memory_format_of
from fastcnn.triton_kernels.reference import compute_dtype

OP = "fastcnn.local_response_norm"

forward_dispatch = OpDispatcher(OP)
backward_dispatch = OpDispatcher("fastcnn.local_response_norm_backward")


# ----------------------------------------------------------------------------- backends

def _empty_scale(x):
    return x.new_empty((0,), dtype=compute_dtype(x.dtype))


def _triton_forward(x, size, alpha, beta, k, within, save_scale):
    return lrn_kernels.lrn_forward(x, size, alpha, beta, k, within, save_scale)


def _triton_backward(dy, x, y, scale, size, alpha, beta, k, within):
    return lrn_kernels.lrn_backward(dy, x, y, scale, size, alpha, beta, k, within)


def _aten_reasons(x, size, alpha, beta, k, within, *rest):
    if within:
        return ["the within-channel mode has no ATen op"]
    return cudnn_reasons(x)


def _aten_backward_reasons(dy, x, y, scale, size, alpha, beta, k, within):
    reasons = _aten_reasons(x, size, alpha, beta, k, within)
    if x.is_cuda and torch.are_deterministic_algorithms_enabled():
        # F.local_response_norm's backward goes through avg_pool3d_backward, which
        # raises under torch.use_deterministic_algorithms(True) on CUDA
        reasons.append("ATen's LRN backward has no deterministic CUDA kernel")
    return reasons


def _aten_forward(x, size, alpha, beta, k, within, save_scale):
    y = F.local_response_norm(x, size, alpha, beta, k)
    scale = lrn_kernels.lrn_scale_reference(x, size, alpha, k) if save_scale else _empty_scale(x)
    return y, scale


def _aten_backward(dy, x, y, scale, size, alpha, beta, k, within):
    # What PyTorch does today: F.local_response_norm is a composite of ATen ops, so
    # its backward recomputes the forward under autograd.
    with autograd_inside_op():
        xx = x.detach().requires_grad_()
        return torch.autograd.grad(F.local_response_norm(xx, size, alpha, beta, k), xx, dy)[0]


def _reference_forward(x, size, alpha, beta, k, within, save_scale):
    y, scale = lrn_kernels.lrn_forward_reference(x, size, alpha, beta, k, within)
    return y, (scale if save_scale else _empty_scale(x))


def _reference_backward(dy, x, y, scale, size, alpha, beta, k, within):
    return lrn_kernels.lrn_backward_reference(dy, x, size, alpha, beta, k, within)


forward_dispatch.register("triton", _triton_forward, triton_reasons)
forward_dispatch.register("cuda", _cuda_lrn.lrn_forward, _cuda_lrn.lrn_reasons)
forward_dispatch.register("cudnn", _aten_forward, _aten_reasons)
forward_dispatch.register("reference", _reference_forward)
backward_dispatch.register("triton", _triton_backward, triton_reasons)
backward_dispatch.register("cuda", _cuda_lrn.lrn_backward, _cuda_lrn.lrn_reasons)
backward_dispatch.register("cudnn", _aten_backward, _aten_backward_reasons)
backward_dispatch.register("reference", _reference_backward)


# ----------------------------------------------------------------------------- custom ops

def _like_input(t, x, dtype=None):
    """Every backend returns the layout (and dtype) the fake kernel promises."""
    return t.to(dtype or x.dtype).contiguous(memory_format=memory_format_of(x))


@torch.library.custom_op("fastcnn::local_response_norm", mutates_args=())
def local_response_norm_op(input: Tensor, size: int, alpha: float, beta: float, k: float,
                           within_channel: bool, save_scale: bool, algo: str) -> Tuple[Tensor, Tensor]:
    y, scale = forward_dispatch(algo, input, size, alpha, beta, k, within_channel, save_scale)
    sdt = compute_dtype(input.dtype)
    scale = _like_input(scale, input, sdt) if save_scale else _empty_scale(input)
    return _like_input(y, input), scale


@local_response_norm_op.register_fake
def _(input, size, alpha, beta, k, within_channel, save_scale, algo):
    fmt = memory_format_of(input)
    sdt = compute_dtype(input.dtype)
    scale = empty_nchw(input, input.shape, fmt, dtype=sdt) if save_scale else _empty_scale(input)
    return empty_nchw(input, input.shape, fmt), scale


@torch.library.custom_op("fastcnn::local_response_norm_backward", mutates_args=())
def local_response_norm_backward_op(grad_output: Tensor, input: Tensor, output: Tensor, scale: Tensor,
                                    size: int, alpha: float, beta: float, k: float,
                                    within_channel: bool, algo: str) -> Tensor:
    dx = backward_dispatch(algo, grad_output, input, output, scale, size, alpha, beta, k, within_channel)
    return _like_input(dx, input)


@local_response_norm_backward_op.register_fake
def _(grad_output, input, output, scale, size, alpha, beta, k, within_channel, algo):
    return empty_nchw(input, input.shape, memory_format_of(input))


def _setup(ctx, inputs, output):
    x, size, alpha, beta, k, within, save_scale, algo = inputs
    y, scale = output
    ctx.params = (size, alpha, beta, k, within, algo)
    ctx.mark_non_differentiable(scale)
    ctx.save_for_backward(x, y, scale)


def _backward(ctx, grad_y, grad_scale):
    # scale is an auxiliary output: its gradient (never used by the public API) is ignored.
    x, y, scale = ctx.saved_tensors
    size, alpha, beta, k, within, algo = ctx.params
    if grad_y is None or not ctx.needs_input_grad[0]:
        return None, None, None, None, None, None, None, None
    if scale.numel() != x.numel():  # the forward ran with save_scale=False: recompute
        y, scale = local_response_norm_op(x.detach(), size, alpha, beta, k, within, True, algo)
    dx = local_response_norm_backward_op(grad_y, x, y, scale, size, alpha, beta, k, within, algo)
    return dx, None, None, None, None, None, None, None


local_response_norm_op.register_autograd(_backward, setup_context=_setup)


# ----------------------------------------------------------------------------- public API

def _number(name, value):
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{OP}: argument '{name}' must be a real number, got {value!r}")
    return float(value)


def check_lrn_args(input, size, alpha, beta, k, within_channel):
    if within_channel is True and isinstance(input, torch.Tensor) and input.dim() != 4:
        raise ValueError(f"{OP}: argument 'input' must be 4-dimensional (N, C, H, W) with "
                         f"within_channel=True, got shape {tuple(input.shape)}")
    check_tensor(OP, "input", input, dim=(3, 4))
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"{OP}: argument 'size' must be a positive int, got {size!r}")
    alpha, beta, k = _number("alpha", alpha), _number("beta", beta), _number("k", k)
    if not isinstance(within_channel, bool):
        raise TypeError(f"{OP}: argument 'within_channel' must be a bool, got {within_channel!r}")
    return alpha, beta, k


def local_response_norm(input, size, alpha=1e-4, beta=0.75, k=1.0, *, within_channel=False, algo="auto"):
    """torch.nn.functional.local_response_norm on fastcnn's kernels, for (N, C, H, W)
    or (N, C, L) inputs (``algo``: see fastcnn.ops).

    ``within_channel=True``: normalize over a size x size spatial neighbourhood of
    each channel instead (Caffe's WITHIN_CHANNEL; alpha is divided by size^2)."""
    check_autograd_mode(OP, input)
    alpha, beta, k = check_lrn_args(input, size, alpha, beta, k, within_channel)
    three_d = input.dim() == 3
    if three_d:
        input = input.unsqueeze(-1)
    save_scale = torch.is_grad_enabled() and input.requires_grad
    out, _ = local_response_norm_op(input, size, alpha, beta, k, within_channel, save_scale, algo)
    return out.squeeze(-1) if three_d else out
