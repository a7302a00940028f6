"""The "cuda" backend of fastcnn.ops.local_response_norm: torch-facing wrappers of
fastcnn._C.lrn_forward / lrn_backward (csrc/lrn.cu). They check tensors, allocate
outputs with torch and pass data_ptr(), sizes, strides (in elements) and the current
stream; the kernels take any strides, so no tensor is copied."""
import torch

from fastcnn import _ext
from fastcnn.triton_kernels._common import empty_nchw, memory_format_of
from fastcnn.triton_kernels.reference import compute_dtype

OP = "fastcnn.local_response_norm"
CUDA_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)


def lrn_reasons(*args) -> list:
    """Why the CUDA kernels cannot take this call (first tensor argument decides)."""
    x = next(a for a in args if isinstance(a, torch.Tensor))
    reasons = []
    if _ext.load() is None:
        reasons.append(f"the CUDA backend is unavailable: {_ext.unavailable_reason()}")
    if x.device.type != "cuda":
        reasons.append(f"the CUDA kernels take CUDA tensors, got {x.device.type}")
    if x.dtype not in CUDA_DTYPES:
        reasons.append(f"dtype {x.dtype} is not supported by the CUDA kernels")
    return reasons


def _check(name, t, like):
    if t.device != like.device:
        raise ValueError(f"{OP}: argument '{name}' is on {t.device}, expected {like.device}")
    if tuple(t.shape) != tuple(like.shape):
        raise ValueError(f"{OP}: argument '{name}' has shape {tuple(t.shape)}, expected {tuple(like.shape)}")


def lrn_forward(x, size, alpha, beta, k, within, save_scale):
    """(y, scale) as triton_kernels.lrn.lrn_forward returns them, computed by fastcnn._C."""
    mod = _ext._require_module(OP)
    fmt = memory_format_of(x)
    y = empty_nchw(x, x.shape, fmt)
    sdt = compute_dtype(x.dtype)
    scale = empty_nchw(x, x.shape, fmt, dtype=sdt) if save_scale else x.new_empty((0,), dtype=sdt)
    if x.numel() == 0:
        return y, scale
    n, c, h, w = x.shape
    with torch.cuda.device(x.device):
        stream = torch.cuda.current_stream(x.device).cuda_stream
        mod.lrn_forward(n, c, h, w, size, float(alpha), float(beta), float(k), bool(within),
                        x.data_ptr(), list(x.stride()), y.data_ptr(), list(y.stride()),
                        scale.data_ptr() if save_scale else 0,
                        list(scale.stride()) if save_scale else [0, 0, 0, 0],
                        _ext._dtype_code(mod, x.dtype), stream)
    return y, scale


def lrn_backward(dy, x, y, scale, size, alpha, beta, k, within):
    """dL/dx in x's layout, computed by fastcnn._C from dy, x, y and the fp32 scale."""
    mod = _ext._require_module(OP)
    for name, t in (("grad_output", dy), ("output", y), ("scale", scale)):
        _check(name, t, x)
    dy, y = dy.to(x.dtype), y.to(x.dtype)
    scale = scale.to(compute_dtype(x.dtype))
    dx = empty_nchw(x, x.shape, memory_format_of(x))
    if x.numel() == 0:
        return dx
    n, c, h, w = x.shape
    with torch.cuda.device(x.device):
        stream = torch.cuda.current_stream(x.device).cuda_stream
        mod.lrn_backward(n, c, h, w, size, float(alpha), float(beta), float(k), bool(within),
                         dy.data_ptr(), list(dy.stride()), x.data_ptr(), list(x.stride()),
                         y.data_ptr(), list(y.stride()), scale.data_ptr(), list(scale.stride()),
                         dx.data_ptr(), list(dx.stride()), _ext._dtype_code(mod, x.dtype), stream)
    return dx
