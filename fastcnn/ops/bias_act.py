"""fastcnn.ops.bias_act: act(input + bias) over the last dimension in one elementwise
pass (a Linear layer's epilogue after a bias-less cuBLAS matmul), as torch.library
custom ops.

    fastcnn::bias_act           act(x + bias), x's dtype and shape
    fastcnn::bias_act_backward  (dx, dbias) from dy, x and bias (act' recomputed);
                                dbias in fp32 (fp64 for fp64), an empty (0,) when
                                not wanted

Activations: "none", "relu", "relu6", "silu", "gelu" (exact erf) and "gelu_tanh"
(``F.gelu(approximate="tanh")``). See fastcnn/triton_kernels/bias_act.py.

Dtypes: bias has the input's dtype; under autocast a bias of another dtype is
cast to the input's (as autocast casts a linear layer's bias), and the input
itself is not cast (elementwise ops run in their input's dtype under autocast).
"""
from typing import Optional, Tuple

import torch
from torch import Tensor

from fastcnn.ops._checks import check_autograd_mode, check_tensor
from fastcnn.ops._dispatch import OpDispatcher, autograd_inside_op, cudnn_reasons, triton_reasons
from fastcnn.triton_kernels import bias_act as ba_kernels
from fastcnn.triton_kernels.reference import compute_dtype

OP = "fastcnn.bias_act"
ACTIVATION_NAMES = tuple(ba_kernels.BIAS_ACTIVATIONS)

forward_dispatch = OpDispatcher(OP)
backward_dispatch = OpDispatcher("fastcnn.bias_act_backward")


# ----------------------------------------------------------------------------- backends

def _empty(x):
    return x.new_empty((0,), dtype=compute_dtype(x.dtype))


def _triton_forward(x, bias, activation):
    return ba_kernels.bias_act_forward(x, bias, activation)


def _triton_backward(dy, x, bias, activation, bias_grad):
    return ba_kernels.bias_act_backward(dy, x, bias, activation, bias_grad)


def _aten_forward(x, bias, activation):
    # What PyTorch does today: the add, then the activation, in the input's dtype.
    return ba_kernels._torch_activation(x if bias is None else x + bias, activation)


def _aten_backward(dy, x, bias, activation, bias_grad):
    with autograd_inside_op():
        xx = x.detach().requires_grad_()
        (dx,) = torch.autograd.grad(_aten_forward(xx, bias, activation), xx, dy)
    db = dx.to(compute_dtype(x.dtype)).sum(tuple(range(x.dim() - 1)))
    return dx, (db if bias is not None and bias_grad else _empty(x))


def _reference_forward(x, bias, activation):
    return ba_kernels.bias_act_reference(x, bias, activation)


def _reference_backward(dy, x, bias, activation, bias_grad):
    dx, db = ba_kernels.bias_act_backward_reference(dy, x, bias, activation)
    return dx, (db if bias is not None and bias_grad else _empty(x))


def _backward_triton_reasons(dy, x, *rest):
    return triton_reasons(x)


def _backward_cudnn_reasons(dy, x, *rest):
    return cudnn_reasons(x)


forward_dispatch.register("triton", _triton_forward, triton_reasons)
forward_dispatch.register("cudnn", _aten_forward, cudnn_reasons)
forward_dispatch.register("reference", _reference_forward)
backward_dispatch.register("triton", _triton_backward, _backward_triton_reasons)
backward_dispatch.register("cudnn", _aten_backward, _backward_cudnn_reasons)
backward_dispatch.register("reference", _reference_backward)


# ----------------------------------------------------------------------------- custom ops

@torch.library.custom_op("fastcnn::bias_act", mutates_args=())
def bias_act_op(input: Tensor, bias: Optional[Tensor], activation: str, algo: str) -> Tensor:
    y = forward_dispatch(algo, input, bias, activation)
    return y.to(input.dtype).contiguous()  # the layout the fake kernel promises


@bias_act_op.register_fake
def _(input, bias, activation, algo):
    return input.new_empty(input.shape)


@torch.library.custom_op("fastcnn::bias_act_backward", mutates_args=())
def bias_act_backward_op(grad_output: Tensor, input: Tensor, bias: Optional[Tensor], activation: str,
                         bias_grad: bool, algo: str) -> Tuple[Tensor, Tensor]:
    dx, db = backward_dispatch(algo, grad_output, input, bias, activation, bias_grad)
    want_db = bias is not None and bias_grad
    return dx.to(input.dtype).contiguous(), (db.to(compute_dtype(input.dtype)) if want_db
                                             else _empty(input))


@bias_act_backward_op.register_fake
def _(grad_output, input, bias, activation, bias_grad, algo):
    ct = compute_dtype(input.dtype)
    want_db = bias is not None and bias_grad
    return input.new_empty(input.shape), input.new_empty((input.shape[-1] if want_db else 0,), dtype=ct)


def _setup(ctx, inputs, output):
    x, bias, activation, algo = inputs
    ctx.params = (activation, algo)
    ctx.bias_dtype = bias.dtype if bias is not None else None
    ctx.save_for_backward(x, bias)


def _backward(ctx, grad_y):
    x, bias = ctx.saved_tensors
    activation, algo = ctx.params
    need_x, need_b = ctx.needs_input_grad[:2]
    dx, db = bias_act_backward_op(grad_y, x, bias, activation, bool(need_b), algo)
    return (dx if need_x else None), (db.to(ctx.bias_dtype) if need_b else None), None, None


bias_act_op.register_autograd(_backward, setup_context=_setup)


# ----------------------------------------------------------------------------- public API

def check_bias_act_args(input, bias, activation):
    check_tensor(OP, "input", input)
    if input.dim() < 1:
        raise ValueError(f"{OP}: argument 'input' must have at least one dimension, got a scalar")
    if activation not in ACTIVATION_NAMES:
        raise ValueError(f"{OP}: argument 'activation' must be one of {ACTIVATION_NAMES}, got {activation!r}")
    if bias is None:
        return None
    check_tensor(OP, "bias", bias, device=input.device)
    if tuple(bias.shape) != (input.shape[-1],):
        raise ValueError(f"{OP}: argument 'bias' must have shape ({input.shape[-1]},) (input's last dim), "
                         f"got {tuple(bias.shape)}")
    if bias.dtype != input.dtype:
        if not torch.is_autocast_enabled(input.device.type):
            raise TypeError(f"{OP}: argument 'bias' has dtype {bias.dtype}, expected {input.dtype} like 'input'")
        bias = bias.to(input.dtype)
    return bias


def bias_act(input, bias=None, activation="gelu", *, algo="auto"):
    """act(input + bias) in one pass: input (..., N), bias (N,) or None, activation
    one of "none", "relu", "relu6", "silu", "gelu", "gelu_tanh" (``algo``: see
    fastcnn.ops). Computed in fp32 (fp64 for fp64), rounded once to input's dtype."""
    check_autograd_mode(OP, input, bias)
    bias = check_bias_act_args(input, bias, activation)
    return bias_act_op(input, bias, activation, algo)
