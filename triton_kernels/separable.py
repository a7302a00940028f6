"""Fused depthwise-separable convolution (MobileNet's depthwise k x k -> 1x1 pair):

    z = act1(dwconv(x, wd, stride, padding, dilation) + bd)      (N, C, P, Q), never stored
    y = act2(conv1x1(z, wp) + bp + residual)                     (N, K, P, Q)

The unfused pair writes z to memory and reads it back: for MobileNet-sized layers
that round trip is most of the layer's DRAM traffic. Here each program owns a tile
of BLOCK_P output pixels x BLOCK_K output channels and loops over the C input
channels in chunks of BLOCK_C: it computes the depthwise tile z[BLOCK_P, BLOCK_C]
from x with direct FMAs (kh*kw taps, masked borders), adds bd, applies act1, rounds
it to x's dtype (exactly what the unfused pair would store, so low-precision results
match it), and feeds it straight into ``tl.dot`` with the wp[BLOCK_C, BLOCK_K] tile
(fp32 accumulation, TF32 for fp32 inputs when cuDNN's flag allows it). Programs with
the same pixel tile and other K tiles recompute the depthwise tile: that costs
kh*kw FMAs per element against BLOCK_K multiply-adds of the GEMM, and their x loads
hit L2 (K tiles vary fastest in the program order for that reason).

Channel multiplier 1 only: the depthwise weight is (C, 1, kh, kw) and the pointwise
weight (K, C, 1, 1); ``separable_reasons`` says why for anything else.

x is made channels_last once (the depthwise loads then read contiguous channels);
y is written through its strides in x's original layout. Pixel and channel indices
are int32 (``separable_index_reasons``, checked on the host against
``_common.MAX_INDEX_COUNT``); every offset is widened to int64 before it meets a stride.
"""
import torch
import torch.nn.functional as F
import triton
import triton.language as tl

from fastcnn.triton_kernels import _common
from fastcnn.triton_kernels._common import (ACTIVATIONS, apply_activation, autotune_configs, dot_precision,
                                            empty_nchw, memory_format_of)
from fastcnn.triton_kernels.conv2d import conv_output_shape
from fastcnn.triton_kernels.reference import ACTIVATION_FNS, compute_dtype

# The pointwise weight's K*C elements bound both channel indices (c < C, k < K).
POINTWISE_WEIGHT_ELEMENTS = "pointwise weight elements (K*C)"


def _config(bp, bc, bk, warps, stages):
    return triton.Config({"BLOCK_P": bp, "BLOCK_C": bc, "BLOCK_K": bk}, num_warps=warps, num_stages=stages)


# H100: the depthwise tile (BLOCK_P x BLOCK_C fp32) and the accumulator (BLOCK_P x
# BLOCK_K fp32) both live in registers; BLOCK_K up to 256 so that MobileNet's
# K <= 256 layers compute each depthwise tile once.
_GPU_CONFIGS = [
    _config(128, 32, 128, 8, 2),
    _config(128, 64, 128, 8, 2),
    _config(64, 32, 128, 4, 2),
    _config(64, 64, 64, 4, 3),
    _config(128, 32, 64, 4, 3),
    _config(64, 32, 256, 8, 2),
    _config(128, 32, 256, 8, 2),
    _config(32, 32, 64, 4, 3),
]


@triton.autotune(configs=autotune_configs(_GPU_CONFIGS, _config(16, 16, 16, 4, 1)),
                 key=["M", "C", "K", "R", "S"])
@triton.jit
def _separable_forward_kernel(
    x_ptr,    # (N, C, H, W) input
    wd_ptr,   # (C, 1, R, S) depthwise weight
    bd_ptr,   # (C,) depthwise bias (unused unless HAS_BD)
    wp_ptr,   # (K, C, 1, 1) pointwise weight
    bp_ptr,   # (K,) pointwise bias (unused unless HAS_BP)
    res_ptr,  # (N, K, P, Q) residual (unused unless HAS_RES)
    y_ptr,    # (N, K, P, Q) output
    M, C, K, H, W, P, Q,
    sx_n, sx_c, sx_h, sx_w,
    swd_c, swd_r, swd_s,
    sbd,
    swp_k, swp_c,
    sbp,
    sr_n, sr_k, sr_p, sr_q,
    sy_n, sy_k, sy_p, sy_q,
    conv_sh, conv_sw, pad_h, pad_w, dil_h, dil_w,
    R: tl.constexpr, S: tl.constexpr,
    HAS_BD: tl.constexpr, HAS_BP: tl.constexpr, HAS_RES: tl.constexpr,
    ACT1: tl.constexpr, ACT2: tl.constexpr,
    ACC: tl.constexpr, PREC: tl.constexpr,
    BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_K: tl.constexpr,
):
    pid = tl.program_id(0)
    n_tiles_k = tl.cdiv(K, BLOCK_K)
    pid_p = pid // n_tiles_k
    pid_k = pid % n_tiles_k

    m = pid_p * BLOCK_P + tl.arange(0, BLOCK_P)  # output pixel (n, p, q)
    mask_m = m < M
    q = m % Q
    p = (m // Q) % P
    n = m // (P * Q)
    h0 = p * conv_sh - pad_h
    w0 = q * conv_sw - pad_w
    k = pid_k * BLOCK_K + tl.arange(0, BLOCK_K)
    mask_k = k < K
    k64 = k.to(tl.int64)
    x_img = n.to(tl.int64) * sx_n  # [BLOCK_P]

    acc = tl.zeros((BLOCK_P, BLOCK_K), dtype=ACC)
    for c0 in range(0, C, BLOCK_C):
        c = c0 + tl.arange(0, BLOCK_C)
        mask_c = c < C
        c64 = c.to(tl.int64)
        # Depthwise tile: masked channels load x = w = b = 0, so z = act1(0) = 0
        # there for every activation; their wp rows are 0 too.
        z = tl.zeros((BLOCK_P, BLOCK_C), dtype=ACC)
        for r in tl.static_range(R):
            ih = h0 + r * dil_h
            row_ok = mask_m & (ih >= 0) & (ih < H)
            for s in tl.static_range(S):
                iw = w0 + s * dil_w
                ok = row_ok & (iw >= 0) & (iw < W)  # padding taps: masked, no traffic
                x_pix = x_img + ih.to(tl.int64) * sx_h + iw.to(tl.int64) * sx_w
                xv = tl.load(x_ptr + (x_pix[:, None] + c64[None, :] * sx_c),
                             mask=ok[:, None] & mask_c[None, :], other=0.0)
                wv = tl.load(wd_ptr + (c64 * swd_c + r * swd_r + s * swd_s), mask=mask_c, other=0.0)
                z += xv.to(ACC) * wv.to(ACC)[None, :]
        if HAS_BD:
            z += tl.load(bd_ptr + c64 * sbd, mask=mask_c, other=0.0).to(ACC)[None, :]
        # Rounded to x's dtype, as the unfused pair stores z between its two convolutions.
        z = apply_activation(z, ACT1).to(x_ptr.dtype.element_ty)
        wp = tl.load(wp_ptr + (c64[:, None] * swp_c + k64[None, :] * swp_k),
                     mask=mask_c[:, None] & mask_k[None, :], other=0.0)
        acc = tl.dot(z, wp.to(x_ptr.dtype.element_ty), acc, input_precision=PREC, out_dtype=ACC)

    mask = mask_m[:, None] & mask_k[None, :]
    n64, p64, q64 = n.to(tl.int64), p.to(tl.int64), q.to(tl.int64)
    if HAS_BP:
        acc += tl.load(bp_ptr + k64 * sbp, mask=mask_k, other=0.0).to(ACC)[None, :]
    if HAS_RES:
        res_off = (n64 * sr_n + p64 * sr_p + q64 * sr_q)[:, None] + (k64 * sr_k)[None, :]
        acc += tl.load(res_ptr + res_off, mask=mask, other=0.0).to(ACC)
    out = apply_activation(acc, ACT2)
    y_off = (n64 * sy_n + p64 * sy_p + q64 * sy_q)[:, None] + (k64 * sy_k)[None, :]
    tl.store(y_ptr + y_off, out.to(y_ptr.dtype.element_ty), mask=mask)


# ----------------------------------------------------------------------------- host side

def separable_output_shape(x_shape, wd_shape, wp_shape, stride, padding, dilation):
    n, _, p, q = conv_output_shape(x_shape, wd_shape, stride, padding, dilation)
    return (n, wp_shape[0], p, q)


def separable_reasons(x, wd, bd, wp, bp, residual, *rest) -> list:
    """Why the fused kernel cannot take these arguments (besides device/dtype, which
    the op's dispatcher checks): empty list when it can."""
    reasons = []
    c = x.shape[1]
    if wd.dim() != 4 or wd.shape[0] != c or wd.shape[1] != 1:
        reasons.append(f"depthwise weight {tuple(wd.shape)} is not (C={c}, 1, kh, kw): channel multiplier "
                       "1 only")
    if wp.dim() != 4 or wp.shape[1] != c or tuple(wp.shape[2:]) != (1, 1):
        reasons.append(f"pointwise weight {tuple(wp.shape)} is not (K, C={c}, 1, 1)")
    dtypes = {t.dtype for t in (x, wd, bd, wp, bp, residual) if t is not None}
    if len(dtypes) > 1:
        reasons.append(f"mixed dtypes {sorted(map(str, dtypes))}")
    if x.dtype not in (torch.float16, torch.bfloat16, torch.float32, torch.float64):
        reasons.append(f"dtype {x.dtype} is not supported by the fused kernel")
    return reasons


def _index_counts(x_shape, wd_shape, wp_shape, stride, padding, dilation):
    n, k, p, q = separable_output_shape(x_shape, wd_shape, wp_shape, stride, padding, dilation)
    return {_common.OUTPUT_PIXELS: n * p * q, POINTWISE_WEIGHT_ELEMENTS: k * x_shape[1]}


def separable_index_reasons(x, wd, wp, stride, padding, dilation) -> list:
    """Why the fused kernel cannot index this call in int32 (its flattened output
    pixels, its channels): the op's dispatcher adds these to its Triton reasons."""
    return _common.index_limit_reasons(_index_counts(x.shape, wd.shape, wp.shape, stride, padding, dilation))


def separable_conv2d_forward(x, wd, bd, wp, bp, residual, stride, padding, dilation,
                             act1="none", act2="none"):
    """act2(conv1x1(act1(dwconv(x, wd) + bd), wp) + bp + residual) in one kernel,
    allocated in x's layout. stride/padding/dilation: pairs of ints."""
    reasons = separable_reasons(x, wd, bd, wp, bp, residual)
    assert not reasons, "separable_conv2d_forward: " + "; ".join(reasons)
    shape = separable_output_shape(x.shape, wd.shape, wp.shape, stride, padding, dilation)
    y = empty_nchw(x, shape, memory_format_of(x))
    if y.numel() == 0:
        return y
    n, c, h, w = x.shape
    k = wp.shape[0]
    _, _, p, q = shape
    m = n * p * q
    _common.check_index_limit("separable_conv2d",
                              _index_counts(x.shape, wd.shape, wp.shape, stride, padding, dilation))
    xc = x.contiguous(memory_format=torch.channels_last)
    wp2 = wp.reshape(k, c)  # a view for any contiguous-enough weight, else a copy
    res_strides = residual.stride() if residual is not None else (0, 0, 0, 0)
    acc = tl.float64 if x.dtype == torch.float64 else tl.float32

    def grid(meta):
        return (triton.cdiv(m, meta["BLOCK_P"]) * triton.cdiv(k, meta["BLOCK_K"]),)

    _separable_forward_kernel[grid](
        xc, wd, bd if bd is not None else wd, wp2, bp if bp is not None else wp2,
        residual if residual is not None else y, y,
        m, c, k, h, w, p, q,
        *xc.stride(), wd.stride(0), wd.stride(2), wd.stride(3),
        bd.stride(0) if bd is not None else 0,
        *wp2.stride(), bp.stride(0) if bp is not None else 0,
        *res_strides, *y.stride(),
        stride[0], stride[1], padding[0], padding[1], dilation[0], dilation[1],
        R=wd.shape[2], S=wd.shape[3],
        HAS_BD=bd is not None, HAS_BP=bp is not None, HAS_RES=residual is not None,
        ACT1=ACTIVATIONS[act1], ACT2=ACTIVATIONS[act2], ACC=acc, PREC=dot_precision(x.dtype),
    )
    return y


def separable_conv2d_reference(x, wd, bd, wp, bp, residual, stride, padding, dilation,
                               act1="none", act2="none"):
    """The same math with two F.conv2d calls, in fp32 (fp64 for fp64 inputs); the
    depthwise output is rounded to x's dtype between them, as the unfused pair
    stores it (a no-op in the fp64 test oracle)."""
    ct = compute_dtype(x.dtype)

    def cast(t):
        return None if t is None else t.to(ct)

    z = F.conv2d(x.to(ct), wd.to(ct), cast(bd), stride, padding, dilation, x.shape[1])
    z = ACTIVATION_FNS[act1](z).to(x.dtype).to(ct)
    y = F.conv2d(z, wp.to(ct), cast(bp))
    if residual is not None:
        y = y + residual.to(ct)
    return ACTIVATION_FNS[act2](y).to(x.dtype)
