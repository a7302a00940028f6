"""The "cuda" backend of fastcnn.ops.conv2d for depthwise convolutions: torch-facing
wrappers of fastcnn._C.depthwise_conv2d_* (csrc/depthwise.cu). They check the call,
allocate outputs with torch (in the layout the conv2d fake kernels promise) and pass
data_ptr(), the geometry, element strides and the current stream; the kernels take
any strides, so nothing is copied.

Supported (``depthwise_reasons`` says why not otherwise): groups == input channels,
channel multiplier 1 or 2, square 3x3 / 5x5 / 7x7 kernels, stride 1 or 2 (both
directions equal), any padding and dilation; the forward's epilogue adds bias and
residual and applies any of the ACTIVATIONS (so folded conv -> BatchNorm -> ReLU
blocks and the separable op's depthwise half run here); fp32 / fp16 / bf16 / fp64
CUDA tensors with fastcnn._C built for the GPU.
"""
import torch

from fastcnn import _ext
from fastcnn.triton_kernels._common import ACTIVATIONS, conv_memory_format, empty_nchw, memory_format_of
from fastcnn.triton_kernels.conv2d import conv_output_shape

KERNEL_SIZES = (3, 5, 7)
STRIDES = (1, 2)
MULTIPLIERS = (1, 2)
CUDA_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)


def geometry_reasons(c, k, weight_shape, stride, groups) -> list:
    reasons = []
    if groups != c or weight_shape[1] != 1:
        reasons.append(f"not a depthwise convolution (groups={groups}, {c} input channels)")
    elif k not in tuple(m * c for m in MULTIPLIERS):
        reasons.append(f"channel multiplier {k}/{c} is not 1 or 2")
    kh, kw = weight_shape[2:]
    if kh != kw or kh not in KERNEL_SIZES:
        reasons.append(f"kernel {kh}x{kw} is not 3x3, 5x5 or 7x7")
    if stride[0] != stride[1] or stride[0] not in STRIDES:
        reasons.append(f"stride {tuple(stride)} is not 1 or 2")
    return reasons


def _device_reasons(t) -> list:
    reasons = []
    if _ext.load() is None:
        reasons.append(f"the CUDA backend is unavailable: {_ext.unavailable_reason()}")
    if t.device.type != "cuda":
        reasons.append(f"the CUDA kernels take CUDA tensors, got {t.device.type}")
    if t.dtype not in CUDA_DTYPES:
        reasons.append(f"dtype {t.dtype} is not supported by the CUDA kernels")
    return reasons


def forward_reasons(x, w, bias, residual, stride, padding, dilation, groups, activation) -> list:
    reasons = _device_reasons(x) + geometry_reasons(x.shape[1], w.shape[0], w.shape, stride, groups)
    if activation not in ACTIVATIONS:
        reasons.append(f"the CUDA depthwise epilogue has no activation {activation!r}")
    return reasons


def input_grad_reasons(dy, w, input_shape, stride, padding, dilation, groups) -> list:
    return _device_reasons(dy) + geometry_reasons(input_shape[1], w.shape[0], w.shape, stride, groups)


def weight_grad_reasons(dy, x, weight_shape, stride, padding, dilation, groups) -> list:
    return _device_reasons(dy) + geometry_reasons(x.shape[1], weight_shape[0], weight_shape, stride, groups)


def _geometry(input_shape, weight_shape, out_shape, stride, padding, dilation):
    n, c, h, w = input_shape
    k, _, kh, kw = weight_shape
    return [n, c, h, w, k // c, kh, kw, stride[0], stride[1], padding[0], padding[1],
            dilation[0], dilation[1], out_shape[2], out_shape[3]]


def forward(x, w, bias, residual, stride, padding, dilation, groups, activation):
    """act(depthwise_conv2d(x, w) + bias + residual), one kernel."""
    mod = _ext._require_module("fastcnn.conv2d")
    w = w.to(x.dtype)
    shape = conv_output_shape(x.shape, w.shape, stride, padding, dilation)
    y = empty_nchw(x, shape, conv_memory_format(x, w))
    if y.numel() == 0:
        return y
    geom = _geometry(x.shape, w.shape, shape, stride, padding, dilation)
    b = None if bias is None else bias.to(x.dtype)
    bias_ptr, bias_stride = (0, 0) if b is None else (b.data_ptr(), b.stride(0))
    r = None if residual is None else residual.to(x.dtype)
    res_ptr, res_stride = (0, []) if r is None else (r.data_ptr(), list(r.stride()))
    with torch.cuda.device(x.device):
        mod.depthwise_conv2d_forward(geom, x.data_ptr(), list(x.stride()), w.data_ptr(), list(w.stride()),
                                     bias_ptr, bias_stride, res_ptr, res_stride, ACTIVATIONS[activation],
                                     y.data_ptr(), list(y.stride()), _ext._dtype_code(mod, x.dtype),
                                     torch.cuda.current_stream(x.device).cuda_stream)
    return y


def input_grad(dy, w, input_shape, stride, padding, dilation, groups):
    mod = _ext._require_module("fastcnn.conv2d_input_grad")
    w = w.to(dy.dtype)
    dx = empty_nchw(dy, input_shape, memory_format_of(dy))
    if dx.numel() == 0:
        return dx
    geom = _geometry(input_shape, w.shape, dy.shape, stride, padding, dilation)
    with torch.cuda.device(dy.device):
        mod.depthwise_conv2d_input_grad(geom, dy.data_ptr(), list(dy.stride()), w.data_ptr(), list(w.stride()),
                                        dx.data_ptr(), list(dx.stride()), _ext._dtype_code(mod, dy.dtype),
                                        torch.cuda.current_stream(dy.device).cuda_stream)
    return dx


def weight_grad(dy, x, weight_shape, stride, padding, dilation, groups):
    mod = _ext._require_module("fastcnn.conv2d_weight_grad")
    x = x.to(dy.dtype)
    dw = torch.empty(weight_shape, dtype=dy.dtype, device=dy.device)
    if dw.numel() == 0:
        return dw
    geom = _geometry(x.shape, weight_shape, dy.shape, stride, padding, dilation)
    with torch.cuda.device(dy.device):
        mod.depthwise_conv2d_weight_grad(geom, dy.data_ptr(), list(dy.stride()), x.data_ptr(), list(x.stride()),
                                         dw.data_ptr(), list(dw.stride()), _ext._dtype_code(mod, dy.dtype),
                                         torch.cuda.current_stream(dy.device).cuda_stream)
    return dw
