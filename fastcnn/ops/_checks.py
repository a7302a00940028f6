"""Argument checks shared by the ops. Every error names the op and the argument."""
import operator

import torch
from torch._C._functorch import TransformType, get_interpreter_stack
from torch.autograd import forward_ad

FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def check_tensor(op, name, t, dim=None, dtype=None, device=None):
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{op}: argument '{name}' must be a Tensor, got {type(t).__name__}")
    if dim is not None and t.dim() not in ((dim,) if isinstance(dim, int) else dim):
        raise ValueError(f"{op}: argument '{name}' must be {dim}-dimensional, got shape {tuple(t.shape)}")
    if t.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{op}: argument '{name}' must be a floating-point tensor "
                        f"(float16, bfloat16, float32, float64), got {t.dtype}")
    if dtype is not None and t.dtype != dtype:
        raise TypeError(f"{op}: argument '{name}' has dtype {t.dtype}, expected {dtype} like 'input'")
    if device is not None and t.device != device:
        raise ValueError(f"{op}: argument '{name}' is on {t.device}, expected {device} like 'input'")


def pair(op, name, value, minimum):
    """An int or a pair of ints, each >= minimum, as a list of two ints."""
    values = list(value) if isinstance(value, (tuple, list)) else [value]
    values = values * 2 if len(values) == 1 else values  # F.conv2d takes (1,) for (1, 1)
    try:  # operator.index: numpy and torch integers too, never floats
        if len(values) != 2 or any(isinstance(v, bool) for v in values):
            raise TypeError
        values = [operator.index(v) for v in values]
    except TypeError:
        raise ValueError(f"{op}: argument '{name}' must be an int or a pair of ints, got {value!r}") from None
    if any(v < minimum for v in values):
        raise ValueError(f"{op}: argument '{name}' must be >= {minimum}, got {value!r}")
    return values


def autocast(*tensors):
    """The tensors cast as autocast casts a convolution's arguments: to the autocast
    dtype when autocast is on for their device (custom ops are not on autocast's
    lists, so the wrappers do it). Non-floating, float64 (autocast leaves it alone)
    and None pass through."""
    first = tensors[0]
    if (not isinstance(first, torch.Tensor) or not torch.amp.is_autocast_available(first.device.type)  # meta
            or not torch.is_autocast_enabled(first.device.type)):
        return tensors
    dtype = torch.get_autocast_dtype(first.device.type)
    return tuple(t.to(dtype) if isinstance(t, torch.Tensor) and t.is_floating_point() and t.dtype != torch.float64
                 else t for t in tensors)


def check_autograd_mode(op, *tensors):
    """Refuse the autograd modes fastcnn's custom ops cannot serve, rather than let
    PyTorch give wrong numbers: forward-mode AD (a dual tensor, torch.func.jvp,
    jacfwd, hessian), for which a custom op without a JVP rule silently returns a
    zero tangent; and torch.func.grad / vjp / jacrev, which would fail with an error
    about autograd.Function internals that names neither fastcnn nor the op.
    torch.autograd.grad, double backward (conv2d and the convolutions built on it)
    and vmap work. Skipped while torch.compile traces (dynamo cannot trace the
    transform stack)."""
    if torch.compiler.is_compiling():
        return
    transforms = {interpreter.key() for interpreter in get_interpreter_stack() or ()}
    dual = forward_ad._current_level >= 0 and any(
        isinstance(t, torch.Tensor) and forward_ad.unpack_dual(t).tangent is not None for t in tensors)
    if dual or TransformType.Jvp in transforms:
        raise NotImplementedError(f"{op}: forward-mode AD (dual tensors, torch.func.jvp / jacfwd / hessian) "
                                  "is not supported: fastcnn's ops have no JVP rule")
    if TransformType.Grad in transforms:
        raise NotImplementedError(f"{op}: torch.func.grad / vjp / jacrev are not supported; use "
                                  "torch.autograd.grad (is_grads_batched=True batches vector-Jacobian products)")
