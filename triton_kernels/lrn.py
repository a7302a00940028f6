"""Local response normalization (LRN): Triton kernels and PyTorch references.

Semantics (``torch.nn.functional.local_response_norm``, extended with Caffe's
WITHIN_CHANNEL mode)::

    across channels:  scale[n,c,h,w] = k + alpha/size   * sum_{j in win(c)}       x[n,j,h,w]^2
    within channel:   scale[n,c,h,w] = k + alpha/size^2 * sum_{(i,j) in win(h,w)} x[n,c,i,j]^2
    y = x * scale^(-beta)

The window of index c is [c - size//2, c + (size-1)//2] (PyTorch pads size//2 in
front and (size-1)//2 behind, so even sizes are asymmetric); out-of-range entries
count as zero but alpha is still divided by the full window (size or size^2), as
PyTorch's average pooling with zero padding does. For odd sizes the within-channel
mode is exactly Caffe's.

Backward: with t = dy * y / scale,

    dx = dy * scale^(-beta) - (2 * alpha' * beta) * x * sum_{m : p in win(m)} t[m]

(alpha' = alpha/size or alpha/size^2), a sum over the *mirrored* window
[p - (size-1)//2, p + size//2].

Kernel design
-------------
Every (N, C, H, W) tensor is addressed through its own strides, so NCHW,
channels_last, sliced and stride-0 expanded tensors need no copies. A program owns a
tile of BLOCK_P pixels (global rows of N*H*W, decoded to (n, h, w)) x BLOCK_C
channels. The window sum is accumulated in fp32 registers (fp64 for fp64) from
``size`` shifted loads of the tile (``size``^2 for within-channel); the neighbours'
loads hit L1/L2, so each tensor is read from DRAM about once: one pass over memory.
The forward writes y and, when a gradient will be needed, the fp32 scale; the
backward is one pass too, reading dy, x and the saved y and scale (the mirrored
window sum of dy * y / scale needs no recomputed window sums). Channels of a tile
that straddle BLOCK_C boundaries just load their halo, so any C works and a
program never holds more than a BLOCK_C-channel window. On the GPU the tile shape
is autotuned per (C, H*W, channel stride, size, mode): long along pixels for NCHW,
wide along channels for channels_last.
"""
import torch
import torch.nn.functional as F
import triton
import triton.language as tl

from fastcnn.triton_kernels._common import autotune_configs, empty_nchw, memory_format_of
from fastcnn.triton_kernels.reference import compute_dtype


# ----------------------------------------------------------------------------- references

def _window_sum(t, size, within, mirrored=False):
    """Zero-padded window sum of ``t`` (N, C, H, W) over the LRN window (or its
    mirror image, for the backward)."""
    lo, hi = (size // 2, (size - 1) // 2)
    if mirrored:
        lo, hi = hi, lo
    if within:
        padded = F.pad(t, (lo, hi, lo, hi))
        return F.avg_pool2d(padded, size, stride=1) * (size * size)
    n, c, h, w = t.shape
    padded = F.pad(t.reshape(n, 1, c, h, w), (0, 0, 0, 0, lo, hi))
    return (F.avg_pool3d(padded, (size, 1, 1), stride=1) * size).reshape(n, c, h, w)


def lrn_scale_reference(x, size, alpha, k, within=False):
    """scale = k + alpha' * window_sum(x^2) in fp32 (fp64 for fp64)."""
    xf = x.to(compute_dtype(x.dtype))
    area = size * size if within else size
    return _window_sum(xf * xf, size, within).mul_(alpha / area).add_(k)


def lrn_forward_reference(x, size, alpha, beta, k, within=False):
    """(y, scale) computed in fp32 (fp64 for fp64); y in x's dtype. For the
    across-channel mode this is F.local_response_norm's own formula."""
    scale = lrn_scale_reference(x, size, alpha, k, within)
    y = x.to(scale.dtype) * scale.pow(-beta)
    return y.to(x.dtype), scale


def lrn_backward_reference(dy, x, size, alpha, beta, k, within=False):
    """dL/dx from dy and x (scale recomputed), in fp32 (fp64 for fp64)."""
    scale = lrn_scale_reference(x, size, alpha, k, within)
    ct = scale.dtype
    xf, dyf = x.to(ct), dy.to(ct)
    area = size * size if within else size
    t = dyf * xf * scale.pow(-beta - 1)
    back = _window_sum(t, size, within, mirrored=True)
    dx = dyf * scale.pow(-beta) - (2.0 * alpha * beta / area) * xf * back
    return dx.to(x.dtype)


# ----------------------------------------------------------------------------- kernels

def _configs():
    gpu = [
        # NCHW: long along pixels (the contiguous axis)
        triton.Config({"BLOCK_P": 128, "BLOCK_C": 8}, num_warps=4),
        triton.Config({"BLOCK_P": 64, "BLOCK_C": 16}, num_warps=4),
        # channels_last: wide along channels (the contiguous axis)
        triton.Config({"BLOCK_P": 16, "BLOCK_C": 64}, num_warps=4),
        triton.Config({"BLOCK_P": 8, "BLOCK_C": 128}, num_warps=4),
    ]
    # Under the interpreter: BLOCK_C = 8, so the tests' C > 8 cross channel tiles.
    return autotune_configs(gpu, triton.Config({"BLOCK_P": 32, "BLOCK_C": 8}, num_warps=1))


_KEY = ["C", "HW", "x_sC", "SIZE", "WITHIN"]


@triton.jit
def _tile(R, C, HW, W, BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr):
    """This program's pixels (n, h, w) [BLOCK_P], channels c [BLOCK_C] and masks."""
    r = tl.program_id(0).to(tl.int64) * BLOCK_P + tl.arange(0, BLOCK_P).to(tl.int64)
    c = tl.program_id(1).to(tl.int64) * BLOCK_C + tl.arange(0, BLOCK_C).to(tl.int64)
    n = r // HW
    p = r - n * HW
    h = p // W
    w = p - h * W
    return n, h, w, c, r < R, c < C


@triton.jit
def _off(n, h, w, c, sN, sC, sH, sW):
    return (n * sN + h * sH + w * sW)[:, None] + (c * sC)[None, :]


@triton.autotune(configs=_configs(), key=_KEY)
@triton.jit
def _lrn_forward_kernel(
    x_ptr, y_ptr, s_ptr,
    R, C, H, W, HW,
    x_sN, x_sC, x_sH, x_sW,
    y_sN, y_sC, y_sH, y_sW,
    s_sN, s_sC, s_sH, s_sW,
    alpha_area, beta, k,
    SIZE: tl.constexpr, WITHIN: tl.constexpr, SAVE_SCALE: tl.constexpr,
    BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr,
):
    ct = s_ptr.dtype.element_ty
    n, h, w, c, rmask, cmask = _tile(R, C, HW, W, BLOCK_P, BLOCK_C)
    mask = rmask[:, None] & cmask[None, :]
    acc = tl.zeros([BLOCK_P, BLOCK_C], dtype=ct)
    if WITHIN:
        for dh in range(SIZE):
            hh = h + (dh - SIZE // 2)
            hok = rmask & (hh >= 0) & (hh < H)
            for dw in range(SIZE):
                ww = w + (dw - SIZE // 2)
                ok = (hok & (ww >= 0) & (ww < W))[:, None] & cmask[None, :]
                v = tl.load(x_ptr + _off(n, hh, ww, c, x_sN, x_sC, x_sH, x_sW), mask=ok, other=0.0).to(ct)
                acc += v * v
    else:
        for d in range(SIZE):
            cc = c + (d - SIZE // 2)
            ok = rmask[:, None] & ((cc >= 0) & (cc < C))[None, :]
            v = tl.load(x_ptr + _off(n, h, w, cc, x_sN, x_sC, x_sH, x_sW), mask=ok, other=0.0).to(ct)
            acc += v * v
    scale = k + alpha_area * acc
    x = tl.load(x_ptr + _off(n, h, w, c, x_sN, x_sC, x_sH, x_sW), mask=mask, other=0.0).to(ct)
    y = x * tl.exp2(-beta * tl.log2(scale))
    tl.store(y_ptr + _off(n, h, w, c, y_sN, y_sC, y_sH, y_sW), y.to(y_ptr.dtype.element_ty), mask=mask)
    if SAVE_SCALE:
        tl.store(s_ptr + _off(n, h, w, c, s_sN, s_sC, s_sH, s_sW), scale, mask=mask)


@triton.autotune(configs=_configs(), key=_KEY)
@triton.jit
def _lrn_backward_kernel(
    dy_ptr, x_ptr, y_ptr, s_ptr, dx_ptr,
    R, C, H, W, HW,
    dy_sN, dy_sC, dy_sH, dy_sW,
    x_sN, x_sC, x_sH, x_sW,
    y_sN, y_sC, y_sH, y_sW,
    s_sN, s_sC, s_sH, s_sW,
    dx_sN, dx_sC, dx_sH, dx_sW,
    coef, beta,
    SIZE: tl.constexpr, WITHIN: tl.constexpr,
    BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr,
):
    ct = s_ptr.dtype.element_ty
    n, h, w, c, rmask, cmask = _tile(R, C, HW, W, BLOCK_P, BLOCK_C)
    mask = rmask[:, None] & cmask[None, :]
    # acc = sum over the mirrored window of t = dy * y / scale
    acc = tl.zeros([BLOCK_P, BLOCK_C], dtype=ct)
    if WITHIN:
        for dh in range(SIZE):
            hh = h + (dh - (SIZE - 1) // 2)
            hok = rmask & (hh >= 0) & (hh < H)
            for dw in range(SIZE):
                ww = w + (dw - (SIZE - 1) // 2)
                ok = (hok & (ww >= 0) & (ww < W))[:, None] & cmask[None, :]
                g = tl.load(dy_ptr + _off(n, hh, ww, c, dy_sN, dy_sC, dy_sH, dy_sW), mask=ok, other=0.0).to(ct)
                v = tl.load(y_ptr + _off(n, hh, ww, c, y_sN, y_sC, y_sH, y_sW), mask=ok, other=0.0).to(ct)
                s = tl.load(s_ptr + _off(n, hh, ww, c, s_sN, s_sC, s_sH, s_sW), mask=ok, other=1.0)
                acc += g * v / s
    else:
        for d in range(SIZE):
            cc = c + (d - (SIZE - 1) // 2)
            ok = rmask[:, None] & ((cc >= 0) & (cc < C))[None, :]
            g = tl.load(dy_ptr + _off(n, h, w, cc, dy_sN, dy_sC, dy_sH, dy_sW), mask=ok, other=0.0).to(ct)
            v = tl.load(y_ptr + _off(n, h, w, cc, y_sN, y_sC, y_sH, y_sW), mask=ok, other=0.0).to(ct)
            s = tl.load(s_ptr + _off(n, h, w, cc, s_sN, s_sC, s_sH, s_sW), mask=ok, other=1.0)
            acc += g * v / s
    g = tl.load(dy_ptr + _off(n, h, w, c, dy_sN, dy_sC, dy_sH, dy_sW), mask=mask, other=0.0).to(ct)
    x = tl.load(x_ptr + _off(n, h, w, c, x_sN, x_sC, x_sH, x_sW), mask=mask, other=0.0).to(ct)
    s = tl.load(s_ptr + _off(n, h, w, c, s_sN, s_sC, s_sH, s_sW), mask=mask, other=1.0)
    dx = g * tl.exp2(-beta * tl.log2(s)) - coef * x * acc
    tl.store(dx_ptr + _off(n, h, w, c, dx_sN, dx_sC, dx_sH, dx_sW), dx.to(dx_ptr.dtype.element_ty), mask=mask)


# ----------------------------------------------------------------------------- launchers

def _area(size, within):
    return size * size if within else size


def _grid(R, C):
    return lambda meta: (triton.cdiv(R, meta["BLOCK_P"]), triton.cdiv(C, meta["BLOCK_C"]))


def lrn_forward(x, size, alpha, beta, k, within=False, save_scale=True):
    """(y, scale) for a 4-d x of any strides. y: x's dtype and layout; scale: fp32
    (fp64 for fp64) in x's layout, or an empty (0,) tensor when not ``save_scale``."""
    n, c, h, w = x.shape
    fmt = memory_format_of(x)
    y = empty_nchw(x, x.shape, fmt)
    sdt = compute_dtype(x.dtype)
    scale = empty_nchw(x, x.shape, fmt, dtype=sdt) if save_scale else x.new_empty((0,), dtype=sdt)
    if x.numel() == 0:
        return y, scale
    s_arg = scale if save_scale else torch.empty((1,), dtype=sdt, device=x.device)
    s_strides = scale.stride() if save_scale else (0, 0, 0, 0)
    R = n * h * w
    _lrn_forward_kernel[_grid(R, c)](
        x, y, s_arg, R, c, h, w, h * w,
        *x.stride(), *y.stride(), *s_strides,
        alpha / _area(size, within), beta, k,
        SIZE=size, WITHIN=bool(within), SAVE_SCALE=bool(save_scale))
    return y, scale


def lrn_backward(dy, x, y, scale, size, alpha, beta, k, within=False):
    """dL/dx in x's dtype and layout from dy, x, the forward's y and saved scale."""
    n, c, h, w = x.shape
    dx = empty_nchw(x, x.shape, memory_format_of(x))
    if x.numel() == 0:
        return dx
    R = n * h * w
    _lrn_backward_kernel[_grid(R, c)](
        dy, x, y, scale, dx, R, c, h, w, h * w,
        *dy.stride(), *x.stride(), *y.stride(), *scale.stride(), *dx.stride(),
        2.0 * alpha * beta / _area(size, within), beta,
        SIZE=size, WITHIN=bool(within))
    return dx
