"""fastcnn.ops.layer_norm: torch.nn.functional.layer_norm with an optional fused
residual add (the pre-norm ViT block's ``h = x + attn(...); LN(h)``), as
torch.library custom ops.

    fastcnn::layer_norm           (y, sum, mean, rstd) of LN(x [+ residual]) over the
                                  trailing ``norm_dims`` dims; sum = x + residual
                                  (an empty (0,) without a residual); mean, rstd:
                                  x.shape[:-norm_dims] in fp32 (fp64 for fp64)
    fastcnn::layer_norm_backward  (dh, dweight, dbias) from dy, d(sum), the
                                  normalized h, weight and the saved mean, rstd

See fastcnn/triton_kernels/layernorm.py for the formulas and the kernel design.

Dtypes: weight and bias have the input's dtype or float32 (fp32 parameters with a
half-precision input, as PyTorch's CUDA kernel allows); the output has the input's
dtype. A residual of another dtype is promoted with the input (x + residual's
dtype). Autocast: PyTorch runs layer_norm in fp32 under autocast; these ops cast
nothing and run in the input's dtype with fp32 statistics (the same statistics,
one rounding of the output to the input's dtype, half the memory traffic).
"""
import math
import numbers
from typing import Optional, Tuple

import torch
from torch import Tensor

from fastcnn.ops._checks import check_autograd_mode, check_tensor
from fastcnn.ops._dispatch import OpDispatcher, cudnn_reasons, triton_reasons
from fastcnn.triton_kernels import layernorm as ln_kernels
from fastcnn.triton_kernels.reference import compute_dtype

OP = "fastcnn.layer_norm"

forward_dispatch = OpDispatcher(OP)
backward_dispatch = OpDispatcher("fastcnn.layer_norm_backward")


# ----------------------------------------------------------------------------- backends
# Every backend sees x, residual, h, dy, d(sum) as (..., N): the op flattens the
# normalized dims first. weight and bias are (N,).

def _triton_forward(x, residual, weight, bias, eps):
    return ln_kernels.layer_norm_forward(x, weight, bias, eps, residual)


def _triton_backward(dy, dsum, h, weight, mean, rstd, weight_grad, bias_grad):
    return ln_kernels.layer_norm_backward(dy, h, weight, mean, rstd, dsum, weight_grad, bias_grad)


def _empty(x):
    return x.new_empty((0,))


def _aten_forward(x, residual, weight, bias, eps):
    # What PyTorch does today: the add, then ATen's layer norm (its mean/rstd have
    # the statistics dtype, as ours; weight/bias in the input's dtype).
    h = x if residual is None else x + residual
    cast = (lambda t: t if t is None else t.to(x.dtype))
    y, mean, rstd = torch.native_layer_norm(h, h.shape[-1:], cast(weight), cast(bias), eps)
    sdt = compute_dtype(x.dtype)
    return y, (_empty(x) if residual is None else h), mean.reshape(x.shape[:-1]).to(sdt), \
        rstd.reshape(x.shape[:-1]).to(sdt)


def _aten_backward(dy, dsum, h, weight, mean, rstd, weight_grad, bias_grad):
    want_dw = weight is not None and weight_grad
    w = weight.to(h.dtype) if weight is not None else None
    # native_layer_norm_backward needs the bias tensor to return its gradient: sum dy here.
    dx, dw, _ = torch.ops.aten.native_layer_norm_backward(
        dy, h, h.shape[-1:], mean.unsqueeze(-1), rstd.unsqueeze(-1), w, None, [True, want_dw, False])
    if dsum is not None:
        dx = dx + dsum
    sdt = mean.dtype
    rows = tuple(range(dy.dim() - 1))
    db = dy.to(sdt).sum(rows) if bias_grad else mean.new_empty((0,))
    return dx, (dw.to(sdt) if want_dw else mean.new_empty((0,))), db


def _reference_forward(x, residual, weight, bias, eps):
    y, h, mean, rstd = ln_kernels.layer_norm_reference(x, weight, bias, eps, residual)
    return y, (_empty(x) if h is None else h), mean, rstd


def _reference_backward(dy, dsum, h, weight, mean, rstd, weight_grad, bias_grad):
    dx, dw, db = ln_kernels.layer_norm_backward_reference(dy, h, weight, mean, rstd, dsum)
    empty = mean.new_empty((0,))
    return dx, (dw if weight is not None and weight_grad else empty), (db if bias_grad else empty)


def _triton_forward_reasons(x, residual, weight, bias, eps):
    return triton_reasons(x)


def _triton_backward_reasons(dy, dsum, h, *rest):
    return triton_reasons(h)


def _aten_backward_reasons(dy, dsum, h, *rest):
    return cudnn_reasons(h)


forward_dispatch.register("triton", _triton_forward, _triton_forward_reasons)
forward_dispatch.register("cudnn", _aten_forward, cudnn_reasons)
forward_dispatch.register("reference", _reference_forward)
backward_dispatch.register("triton", _triton_backward, _triton_backward_reasons)
backward_dispatch.register("cudnn", _aten_backward, _aten_backward_reasons)
backward_dispatch.register("reference", _reference_backward)


# ----------------------------------------------------------------------------- custom ops

def _rows_shape(x, norm_dims):
    """(leading shape, N): the op normalizes over the trailing norm_dims dims."""
    lead = x.shape[:x.dim() - norm_dims]
    return lead, math.prod(x.shape[x.dim() - norm_dims:])


@torch.library.custom_op("fastcnn::layer_norm", mutates_args=())
def layer_norm_op(input: Tensor, residual: Optional[Tensor], weight: Optional[Tensor], bias: Optional[Tensor],
                  norm_dims: int, eps: float, algo: str) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    lead, n = _rows_shape(input, norm_dims)
    x = input.reshape(*lead, n)
    res = residual.reshape(*lead, n) if residual is not None else None
    w = weight.reshape(n) if weight is not None else None
    b = bias.reshape(n) if bias is not None else None
    y, s, mean, rstd = forward_dispatch(algo, x, res, w, b, eps)
    sdt = compute_dtype(input.dtype)
    # Every backend returns the layout and dtypes the fake kernel promises.
    y = _unviewed(y.to(input.dtype), input.shape)
    s = _unviewed(s.to(input.dtype), input.shape) if residual is not None else _empty(input)
    return y, s, _unviewed(mean.to(sdt), lead), _unviewed(rstd.to(sdt), lead)


def _unviewed(t, shape):
    """t reshaped to shape (contiguous), as a tensor of its own: a reshape of the
    kernels' (rows, N) result would be a view, and autograd refuses in-place ops on
    a custom op's output that is a view (``y = ln(x); y.add_(1)``, an in-place
    dropout), which nn.LayerNorm allows."""
    t = t.reshape(shape).contiguous()
    if t._base is None:
        return t
    return t.new_empty(0).set_(t.untyped_storage(), t.storage_offset(), t.shape, t.stride())


@layer_norm_op.register_fake
def _(input, residual, weight, bias, norm_dims, eps, algo):
    lead, _ = _rows_shape(input, norm_dims)
    sdt = compute_dtype(input.dtype)
    s = input.new_empty(input.shape) if residual is not None else _empty(input)
    return input.new_empty(input.shape), s, input.new_empty(lead, dtype=sdt), input.new_empty(lead, dtype=sdt)


@torch.library.custom_op("fastcnn::layer_norm_backward", mutates_args=())
def layer_norm_backward_op(grad_output: Tensor, grad_sum: Optional[Tensor], h: Tensor, weight: Optional[Tensor],
                           mean: Tensor, rstd: Tensor, norm_dims: int, weight_grad: bool, bias_grad: bool,
                           algo: str) -> Tuple[Tensor, Tensor, Tensor]:
    """(dh, dweight, dbias): dh in h's dtype and shape (d(sum) added); dweight in
    weight's dtype and shape (an empty (0,) without a weight or without
    weight_grad); dbias in the normalized shape in the statistics dtype (the
    schema has no bias: autograd casts it to the bias's dtype), an empty (0,)
    without bias_grad."""
    lead, n = _rows_shape(h, norm_dims)
    dy = grad_output.reshape(*lead, n)
    ds = grad_sum.reshape(*lead, n) if grad_sum is not None else None
    w = weight.reshape(n) if weight is not None else None
    dx, dw, db = backward_dispatch(algo, dy, ds, h.reshape(*lead, n), w, mean, rstd, weight_grad, bias_grad)
    norm_shape = h.shape[h.dim() - norm_dims:]
    dx = dx.to(h.dtype).reshape(h.shape).contiguous()
    dw = dw.to(weight.dtype).reshape(norm_shape) if weight is not None and weight_grad else _empty(h)
    db = db.to(mean.dtype).reshape(norm_shape) if bias_grad else _empty(h)
    return dx, dw, db


@layer_norm_backward_op.register_fake
def _(grad_output, grad_sum, h, weight, mean, rstd, norm_dims, weight_grad, bias_grad, algo):
    norm_shape = h.shape[h.dim() - norm_dims:]
    dw = h.new_empty(norm_shape, dtype=weight.dtype) if weight is not None and weight_grad else _empty(h)
    db = h.new_empty(norm_shape, dtype=mean.dtype) if bias_grad else _empty(h)
    return h.new_empty(h.shape), dw, db


def _setup(ctx, inputs, output):
    x, residual, weight, bias, norm_dims, eps, algo = inputs
    y, s, mean, rstd = output
    ctx.mark_non_differentiable(mean, rstd)
    ctx.has_res = residual is not None
    ctx.has_bias = bias is not None
    ctx.bias_dtype = bias.dtype if bias is not None else None
    ctx.params = (norm_dims, algo)
    ctx.save_for_backward(s if residual is not None else x, weight, mean, rstd)


def _backward(ctx, grad_y, grad_sum, grad_mean, grad_rstd):
    h, weight, mean, rstd = ctx.saved_tensors
    norm_dims, algo = ctx.params
    need_x, need_res, need_w, need_b = ctx.needs_input_grad[:4]
    if not ctx.has_res:
        grad_sum = None
    if grad_y is None:  # only the sum was used: its gradient passes straight through
        dx = grad_sum if grad_sum is not None else None
        dw = db = None
    else:
        dx, dw, db = layer_norm_backward_op(grad_y, grad_sum, h, weight, mean, rstd, norm_dims,
                                            need_w, need_b, algo)
        dw = dw if need_w else None
        db = db.to(ctx.bias_dtype) if need_b else None
    return (dx if need_x else None), (dx if need_res else None), dw, db, None, None, None


layer_norm_op.register_autograd(_backward, setup_context=_setup)


# ----------------------------------------------------------------------------- public API

def _normalized_shape(value):
    if isinstance(value, (int, torch.SymInt)) and not isinstance(value, bool):
        value = (value,)
    try:
        shape = tuple(value)
    except TypeError:
        shape = None
    if not shape or not all(isinstance(d, (int, torch.SymInt)) and not isinstance(d, bool) for d in shape):
        raise TypeError(f"{OP}: argument 'normalized_shape' must be an int or a non-empty sequence of ints, "
                        f"got {value!r}")
    if any(d < 1 for d in shape):
        raise ValueError(f"{OP}: argument 'normalized_shape' must have positive sizes, got {value!r}")
    return shape


def _check_param(name, t, input, shape):
    if t is None:
        return
    check_tensor(OP, name, t, device=input.device)
    if t.dtype not in (input.dtype, torch.float32):
        raise TypeError(f"{OP}: argument '{name}' has dtype {t.dtype}, expected {input.dtype} like 'input' "
                        f"or torch.float32")
    if tuple(t.shape) != shape:
        raise ValueError(f"{OP}: argument '{name}' must have shape normalized_shape={list(shape)}, "
                         f"got {tuple(t.shape)}")


def check_layer_norm_args(input, normalized_shape, weight, bias, eps, residual):
    check_tensor(OP, "input", input)
    shape = _normalized_shape(normalized_shape)
    if input.dim() < len(shape) or tuple(input.shape[input.dim() - len(shape):]) != shape:
        raise ValueError(f"{OP}: argument 'input' of shape {tuple(input.shape)} does not end with "
                         f"normalized_shape={list(shape)}")
    _check_param("weight", weight, input, shape)
    _check_param("bias", bias, input, shape)
    if residual is not None:
        check_tensor(OP, "residual", residual, device=input.device)
        if residual.shape != input.shape:
            raise ValueError(f"{OP}: argument 'residual' must have the input's shape {tuple(input.shape)}, "
                             f"got {tuple(residual.shape)}")
    if isinstance(eps, bool) or not isinstance(eps, numbers.Real) or not eps >= 0:
        raise ValueError(f"{OP}: argument 'eps' must be a non-negative real number, got {eps!r}")
    return shape


def layer_norm(input, normalized_shape, weight=None, bias=None, eps=1e-5, *, residual=None, algo="auto"):
    """torch.nn.functional.layer_norm on fastcnn's kernels (``algo``: see fastcnn.ops).

    With ``residual``: normalizes h = input + residual in one pass and returns
    ``(y, h)`` (h for the next residual connection of a pre-norm block); otherwise
    returns y. Statistics are fp32 (fp64 for fp64); see the module docstring for
    dtypes and autocast."""
    check_autograd_mode(OP, input, weight, bias, residual)
    shape = check_layer_norm_args(input, normalized_shape, weight, bias, eps, residual)
    if residual is not None and residual.dtype != input.dtype:
        dtype = torch.promote_types(input.dtype, residual.dtype)
        input, residual = input.to(dtype), residual.to(dtype)
    y, s, _, _ = layer_norm_op(input, residual, weight, bias, len(shape), float(eps), algo)
    return y if residual is None else (y, s)
