"""Direct grouped convolution for groups with few output channels (K/groups < 16:
ResNeXt's 4-8 per group, ShuffleNet, depthwise with 1-2).

A tensor-core GEMM tile would be mostly padding for such groups, so these kernels
use fp32 FMAs (no tl.dot) and do only real multiply-adds. The layers are
memory-bound: every kernel keeps its tiles' channel axis innermost so that loads of
NHWC data are coalesced, and reads each input element from DRAM about once (the
re-reads of neighbouring taps and of the channels of one group hit the cache).

Notation: x (N, C, H, W), w (K, CG, R, S), y (N, K, P, Q); CG = C / groups input
channels and KG = K / groups output channels per group; output channel k reads input
channels (k // KG) * CG + c for c < CG. Pixel and channel indices are int32 (checked
on the host against ``_common.MAX_INDEX_COUNT``); everything multiplied by a stride
is int64 first.

Implements the family interface documented in ``conv2d.py``.
"""
import torch
import triton
import triton.language as tl

from fastcnn.triton_kernels import _common
from fastcnn.triton_kernels._common import apply_activation, autotune_configs

# weight_grad splits its reduction over pixels into slabs of a multiple of
# SPLIT_PIXELS pixels, enough of them for about TARGET_PROGRAMS programs (a few
# waves on an H100). A module attribute so tests can force many small splits.
SPLIT_PIXELS = 512
TARGET_PROGRAMS = 1024


# ----------------------------------------------------------------------------- forward

# The taps are unrolled, and ptxas hoists their loads: with 32 tile elements per
# thread a 5x5 depthwise tile spills (`fastcnn compile-check`, sm_90: 250-470 bytes
# of stack with Triton 3.6, up to 7.5 KB with 3.9, in every such configuration). The
# last four configurations hold 8-16 elements per thread, so every benchmarked
# depthwise and ResNeXt layer has a spill-free choice for the autotuner.
_FWD_CONFIGS = [
    triton.Config({"BLOCK_M": 64, "BLOCK_K": 64}, num_warps=4),
    triton.Config({"BLOCK_M": 128, "BLOCK_K": 32}, num_warps=4),
    triton.Config({"BLOCK_M": 128, "BLOCK_K": 64}, num_warps=8),
    triton.Config({"BLOCK_M": 32, "BLOCK_K": 128}, num_warps=4),
    triton.Config({"BLOCK_M": 256, "BLOCK_K": 16}, num_warps=4),
    triton.Config({"BLOCK_M": 64, "BLOCK_K": 32}, num_warps=2),
    triton.Config({"BLOCK_M": 64, "BLOCK_K": 32}, num_warps=4),
    triton.Config({"BLOCK_M": 32, "BLOCK_K": 64}, num_warps=4),
    triton.Config({"BLOCK_M": 64, "BLOCK_K": 64}, num_warps=8),
    triton.Config({"BLOCK_M": 32, "BLOCK_K": 32}, num_warps=4),
]


@triton.autotune(
    configs=autotune_configs(_FWD_CONFIGS, triton.Config({"BLOCK_M": 32, "BLOCK_K": 16}, num_warps=4)),
    key=["M", "K", "CG", "KG", "R", "S"],
)
@triton.jit
def _forward_kernel(
    x_ptr,     # (N, C, H, W) input
    w_ptr,     # (K, CG, R, S) weight
    b_ptr,     # (K,) bias (unused unless HAS_BIAS)
    res_ptr,   # (N, K, P, Q) residual (unused unless HAS_RES)
    y_ptr,     # (N, K, P, Q) output
    psum_ptr,  # (T, K) per-tile channel sums of y (unused unless STATS)
    pm2_ptr,   # (T, K) per-tile sums of squared deviations from the tile mean
    M, K, H, W, P, Q, CG, KG,
    stride_xn, stride_xc, stride_xh, stride_xw,
    stride_wk, stride_wc, stride_wr, stride_ws,
    stride_b,
    stride_rn, stride_rk, stride_rp, stride_rq,
    stride_yn, stride_yk, stride_yp, stride_yq,
    stride_st, stride_sk,
    conv_sh, conv_sw, pad_h, pad_w, dil_h, dil_w,
    R: tl.constexpr, S: tl.constexpr,
    HAS_BIAS: tl.constexpr, HAS_RES: tl.constexpr, ACT: tl.constexpr, STATS: tl.constexpr,
    ACC: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr,
):
    """One [BLOCK_M output pixels x BLOCK_K output channels] tile of y; the tile's
    channels may span many groups."""
    pid_m = tl.program_id(0)
    pid_k = tl.program_id(1)
    m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    k = pid_k * BLOCK_K + tl.arange(0, BLOCK_K)
    mask_m = m < M
    mask_k = k < K
    q = m % Q
    n = (m // Q) // P
    p = (m // Q) % P

    x_img = n.to(tl.int64) * stride_xn
    # Input channel of (k, c=0). Neighbouring k of one group share it, so their
    # loads hit the same address and the cache serves all but the first.
    x_chan = ((k // KG) * CG).to(tl.int64) * stride_xc
    w_chan = k.to(tl.int64) * stride_wk
    acc = tl.zeros([BLOCK_M, BLOCK_K], dtype=ACC)
    for r in tl.static_range(R):
        ih = p * conv_sh - pad_h + r * dil_h
        for s in tl.static_range(S):
            iw = q * conv_sw - pad_w + s * dil_w
            # Padding taps are masked loads: no memory traffic.
            valid = mask_m & (ih >= 0) & (ih < H) & (iw >= 0) & (iw < W)
            x_tap = x_img + ih.to(tl.int64) * stride_xh + iw.to(tl.int64) * stride_xw
            w_tap = w_chan + r * stride_wr + s * stride_ws
            x_mask = valid[:, None] & mask_k[None, :]
            for c in range(CG):
                xv = tl.load(x_ptr + (x_tap[:, None] + (x_chan + c * stride_xc)[None, :]), mask=x_mask, other=0.0)
                wv = tl.load(w_ptr + (w_tap + c * stride_wc), mask=mask_k, other=0.0)
                acc += xv.to(ACC) * wv.to(ACC)[None, :]

    if HAS_BIAS:
        acc += tl.load(b_ptr + k.to(tl.int64) * stride_b, mask=mask_k, other=0.0).to(ACC)[None, :]
    mask = mask_m[:, None] & mask_k[None, :]
    n64, p64, q64, k64 = n.to(tl.int64), p.to(tl.int64), q.to(tl.int64), k.to(tl.int64)
    if HAS_RES:
        res_off = (n64 * stride_rn + p64 * stride_rp + q64 * stride_rq)[:, None] + (k64 * stride_rk)[None, :]
        acc += tl.load(res_ptr + res_off, mask=mask, other=0.0).to(ACC)
    acc = apply_activation(acc, ACT)
    y_off = (n64 * stride_yn + p64 * stride_yp + q64 * stride_yq)[:, None] + (k64 * stride_yk)[None, :]
    tl.store(y_ptr + y_off, acc.to(y_ptr.dtype.element_ty), mask=mask)

    if STATS:
        # Sum and M2 about the tile's own mean (Chan's method, combined on the host):
        # numerically stable where sum(y^2) - sum(y)^2 / n is not.
        rows = tl.minimum(M - pid_m * BLOCK_M, BLOCK_M)
        tile_sum = tl.sum(tl.where(mask_m[:, None], acc, 0.0), axis=0)
        dev = tl.where(mask_m[:, None], acc - (tile_sum / rows)[None, :], 0.0)
        st_off = pid_m.to(tl.int64) * stride_st + k64 * stride_sk
        tl.store(psum_ptr + st_off, tile_sum, mask=mask_k)
        tl.store(pm2_ptr + st_off, tl.sum(dev * dev, axis=0), mask=mask_k)


# ----------------------------------------------------------------------------- input gradient

_DGRAD_CONFIGS = [
    triton.Config({"BLOCK_M": 64, "BLOCK_C": 64}, num_warps=4),
    triton.Config({"BLOCK_M": 128, "BLOCK_C": 32}, num_warps=4),
    triton.Config({"BLOCK_M": 128, "BLOCK_C": 64}, num_warps=8),
    triton.Config({"BLOCK_M": 32, "BLOCK_C": 128}, num_warps=4),
    triton.Config({"BLOCK_M": 256, "BLOCK_C": 16}, num_warps=4),
    # 8-16 elements per thread: see _FWD_CONFIGS
    triton.Config({"BLOCK_M": 64, "BLOCK_C": 32}, num_warps=4),
    triton.Config({"BLOCK_M": 32, "BLOCK_C": 64}, num_warps=4),
    triton.Config({"BLOCK_M": 64, "BLOCK_C": 64}, num_warps=8),
    triton.Config({"BLOCK_M": 32, "BLOCK_C": 32}, num_warps=4),
]


@triton.autotune(
    configs=autotune_configs(_DGRAD_CONFIGS, triton.Config({"BLOCK_M": 32, "BLOCK_C": 16}, num_warps=4)),
    key=["N", "C", "H", "W", "CG", "KG", "R", "S"],
)
@triton.jit
def _input_grad_kernel(
    dy_ptr,  # (N, K, P, Q) output gradient
    w_ptr,   # (K, CG, R, S) weight
    dx_ptr,  # (N, C, H, W) input gradient (written)
    N, C, H, W, P, Q, CG, KG,
    stride_dyn, stride_dyk, stride_dyp, stride_dyq,
    stride_wk, stride_wc, stride_wr, stride_ws,
    stride_dxn, stride_dxc, stride_dxh, stride_dxw,
    conv_sh, conv_sw, pad_h, pad_w, dil_h, dil_w,
    R: tl.constexpr, S: tl.constexpr,
    ACC: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_C: tl.constexpr,
):
    """One [BLOCK_M input pixels x BLOCK_C input channels] tile of dx:
    dx[n, c, h, w] = sum over the KG channels k of c's group and the taps (r, s) with
    h = p * conv_sh - pad_h + r * dil_h (likewise w) of dy[n, k, p, q] * w[k, c % CG, r, s].

    Program axis 2 picks a stride phase (h % conv_sh, w % conv_sw) and the tile holds
    pixels of that phase only. Whether a tap lands on an output pixel depends only on
    the phase, so the taps that do not are skipped for the whole tile instead of
    being computed and masked: with stride 2, three of four taps of a pixel."""
    pid_m = tl.program_id(0)
    pid_c = tl.program_id(1)
    phase = tl.program_id(2)
    ph = phase // conv_sw
    pw = phase % conv_sw
    # Rows and columns of this phase (possibly 0 when H < conv_sh).
    h_rows = (H - ph + conv_sh - 1) // conv_sh
    w_cols = (W - pw + conv_sw - 1) // conv_sw
    m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    c = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
    mask_m = m < N * h_rows * w_cols
    mask_c = c < C
    # Decode with divisors of at least 1; an empty phase has every row masked.
    j = m % tl.maximum(w_cols, 1)
    i = (m // tl.maximum(w_cols, 1)) % tl.maximum(h_rows, 1)
    n = (m // tl.maximum(w_cols, 1)) // tl.maximum(h_rows, 1)

    dy_img = n.to(tl.int64) * stride_dyn
    # First output channel of c's group; neighbouring c of one group share it.
    k0 = ((c // CG) * KG).to(tl.int64)
    dy_chan = k0 * stride_dyk
    w_chan = k0 * stride_wk + (c % CG).to(tl.int64) * stride_wc
    acc = tl.zeros([BLOCK_M, BLOCK_C], dtype=ACC)
    for r in tl.static_range(R):
        # h + pad_h - r * dil_h = i * conv_sh + off_h must be a multiple of conv_sh.
        off_h = ph + pad_h - r * dil_h
        if off_h % conv_sh == 0:
            p = i + off_h // conv_sh
            for s in tl.static_range(S):
                off_w = pw + pad_w - s * dil_w
                if off_w % conv_sw == 0:
                    q = j + off_w // conv_sw
                    valid = mask_m & (p >= 0) & (p < P) & (q >= 0) & (q < Q)
                    dy_tap = dy_img + p.to(tl.int64) * stride_dyp + q.to(tl.int64) * stride_dyq
                    w_tap = w_chan + r * stride_wr + s * stride_ws
                    dy_mask = valid[:, None] & mask_c[None, :]
                    for kk in range(KG):
                        dyv = tl.load(dy_ptr + (dy_tap[:, None] + (dy_chan + kk * stride_dyk)[None, :]),
                                      mask=dy_mask, other=0.0)
                        wv = tl.load(w_ptr + (w_tap + kk * stride_wk), mask=mask_c, other=0.0)
                        acc += dyv.to(ACC) * wv.to(ACC)[None, :]

    h = ph + i * conv_sh
    w = pw + j * conv_sw
    dx_off = (n.to(tl.int64) * stride_dxn + h.to(tl.int64) * stride_dxh + w.to(tl.int64) * stride_dxw)[:, None] \
        + (c.to(tl.int64) * stride_dxc)[None, :]
    tl.store(dx_ptr + dx_off, acc.to(dx_ptr.dtype.element_ty), mask=mask_m[:, None] & mask_c[None, :])


# ----------------------------------------------------------------------------- weight gradient

_WGRAD_CONFIGS = [
    triton.Config({"BLOCK_M": 64, "BLOCK_KC": 64}, num_warps=4),
    triton.Config({"BLOCK_M": 128, "BLOCK_KC": 32}, num_warps=4),
    triton.Config({"BLOCK_M": 128, "BLOCK_KC": 64}, num_warps=8),
    triton.Config({"BLOCK_M": 32, "BLOCK_KC": 128}, num_warps=4),
    triton.Config({"BLOCK_M": 256, "BLOCK_KC": 16}, num_warps=4),
]


@triton.autotune(
    configs=autotune_configs(_WGRAD_CONFIGS, triton.Config({"BLOCK_M": 32, "BLOCK_KC": 16}, num_warps=4)),
    key=["M", "KC", "CG", "KG", "CHUNK"],
)
@triton.jit
def _weight_grad_kernel(
    dy_ptr,    # (N, K, P, Q) output gradient
    x_ptr,     # (N, C, H, W) input
    part_ptr,  # (SPLIT, K * CG, R * S) partial dw, one slab per pixel split (written)
    M, KC, H, W, P, Q, CG, KG, S, CHUNK,
    stride_dyn, stride_dyk, stride_dyp, stride_dyq,
    stride_xn, stride_xc, stride_xh, stride_xw,
    stride_ps, stride_pkc, stride_ptap,
    conv_sh, conv_sw, pad_h, pad_w, dil_h, dil_w,
    ACC: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_KC: tl.constexpr,
):
    """dw[k, c, r, s] = sum over pixels of dy[n, k, p, q] * x[n, (k // KG) * CG + c, ih, iw]
    for BLOCK_KC weights (k, c), flattened as kc = k * CG + c, one tap (program axis
    1) and the CHUNK pixels of one split (program axis 2). Flattening (k, c) makes
    every column a real weight for any CG and KG, and reads each dy tile once per
    tap: the CG columns of one k share its address."""
    pid_kc = tl.program_id(0)
    tap = tl.program_id(1)
    split = tl.program_id(2)
    r = tap // S
    s = tap % S
    kc = pid_kc * BLOCK_KC + tl.arange(0, BLOCK_KC)
    mask_kc = kc < KC
    k = kc // CG
    dy_chan = k.to(tl.int64) * stride_dyk
    x_chan = ((k // KG) * CG + kc % CG).to(tl.int64) * stride_xc

    start = split * CHUNK
    end = start + tl.minimum(CHUNK, M - start)  # start + CHUNK may pass 2^31 in the last split
    # Elementwise accumulation; one cross-row reduction after the loop.
    acc = tl.zeros([BLOCK_M, BLOCK_KC], dtype=ACC)
    for m0 in range(start, end, BLOCK_M):
        m = m0 + tl.arange(0, BLOCK_M)
        mask_m = m < end
        q = m % Q
        n64 = ((m // Q) // P).to(tl.int64)
        p = (m // Q) % P
        ih = p * conv_sh - pad_h + r * dil_h
        iw = q * conv_sw - pad_w + s * dil_w
        valid = mask_m & (ih >= 0) & (ih < H) & (iw >= 0) & (iw < W)
        dy_row = n64 * stride_dyn + p.to(tl.int64) * stride_dyp + q.to(tl.int64) * stride_dyq
        x_row = n64 * stride_xn + ih.to(tl.int64) * stride_xh + iw.to(tl.int64) * stride_xw
        dyv = tl.load(dy_ptr + (dy_row[:, None] + dy_chan[None, :]), mask=mask_m[:, None] & mask_kc[None, :],
                      other=0.0)
        xv = tl.load(x_ptr + (x_row[:, None] + x_chan[None, :]), mask=valid[:, None] & mask_kc[None, :], other=0.0)
        acc += dyv.to(ACC) * xv.to(ACC)

    part_off = split.to(tl.int64) * stride_ps + kc.to(tl.int64) * stride_pkc + tap * stride_ptap
    tl.store(part_ptr + part_off, tl.sum(acc, axis=0), mask=mask_kc)


# ----------------------------------------------------------------------------- launchers

def _acc_dtype(dtype):
    """(torch, triton) accumulator dtypes: fp32, or fp64 for fp64 inputs (gradcheck)."""
    return (torch.float64, tl.float64) if dtype == torch.float64 else (torch.float32, tl.float32)


def forward(x, w, bias, residual, y, stride, padding, dilation, groups, act, stats):
    n, _, h, wd = x.shape
    k, cg, r, s = w.shape
    p, q = y.shape[2:]
    m = n * p * q
    _common.check_index_limit("conv2d_grouped.forward",
                              {_common.OUTPUT_PIXELS: m, _common.WEIGHT_ELEMENTS: w.numel()})
    acc_torch, acc_tl = _acc_dtype(x.dtype)
    psum = pm2 = y  # placeholders for pointers the kernel does not use
    if stats:
        # The tile count depends on the BLOCK_M the autotuner picks, so the buffers
        # hold the most tiles any configuration makes and are cut after the launch.
        min_block_m = min(cfg.kwargs["BLOCK_M"] for cfg in _forward_kernel.configs)
        psum = torch.empty(triton.cdiv(m, min_block_m), k, device=y.device, dtype=acc_torch)
        pm2 = torch.empty_like(psum)
    b_stride = bias.stride(0) if bias is not None else 0
    res_strides = residual.stride() if residual is not None else (0, 0, 0, 0)

    def grid(meta):
        return triton.cdiv(m, meta["BLOCK_M"]), triton.cdiv(k, meta["BLOCK_K"])

    _forward_kernel[grid](
        x, w, bias if bias is not None else y, residual if residual is not None else y, y, psum, pm2,
        m, k, h, wd, p, q, cg, k // groups,
        *x.stride(), *w.stride(), b_stride, *res_strides, *y.stride(), *psum.stride()[:2],
        stride[0], stride[1], padding[0], padding[1], dilation[0], dilation[1],
        R=r, S=s, HAS_BIAS=bias is not None, HAS_RES=residual is not None, ACT=act, STATS=stats, ACC=acc_tl,
    )
    if not stats:
        return None
    block_m = _forward_kernel.best_config.kwargs["BLOCK_M"]
    tiles = triton.cdiv(m, block_m)
    count = (m - block_m * torch.arange(tiles, device=y.device)).clamp(max=block_m).to(acc_torch)
    return psum[:tiles], pm2[:tiles], count


def input_grad(dy, w, dx, stride, padding, dilation, groups):
    n, c, h, wd = dx.shape
    k, cg, r, s = w.shape
    p, q = dy.shape[2:]
    # Pixels of the largest stride phase: (0, 0) has the most rows and columns.
    phase_pixels = n * triton.cdiv(h, stride[0]) * triton.cdiv(wd, stride[1])
    _common.check_index_limit("conv2d_grouped.input_grad",
                              {_common.PHASE_PIXELS: phase_pixels, _common.WEIGHT_ELEMENTS: w.numel()})

    def grid(meta):
        return triton.cdiv(phase_pixels, meta["BLOCK_M"]), triton.cdiv(c, meta["BLOCK_C"]), stride[0] * stride[1]

    _input_grad_kernel[grid](
        dy, w, dx,
        n, c, h, wd, p, q, cg, k // groups,
        *dy.stride(), *w.stride(), *dx.stride(),
        stride[0], stride[1], padding[0], padding[1], dilation[0], dilation[1],
        R=r, S=s, ACC=_acc_dtype(dx.dtype)[1],
    )


def _split_chunk(m, programs_per_split):
    """Pixels per split of the weight gradient's reduction: a multiple of
    SPLIT_PIXELS, small enough for about TARGET_PROGRAMS programs in all."""
    splits = max(1, min(TARGET_PROGRAMS // programs_per_split, triton.cdiv(m, SPLIT_PIXELS)))
    return triton.cdiv(triton.cdiv(m, splits), SPLIT_PIXELS) * SPLIT_PIXELS


def weight_grad(dy, x, stride, padding, dilation, groups, weight_shape):
    n, _, h, wd = x.shape
    k, cg, r, s = weight_shape
    p, q = dy.shape[2:]
    m = n * p * q
    _common.check_index_limit("conv2d_grouped.weight_grad",
                              {_common.OUTPUT_PIXELS: m, _common.WEIGHT_ELEMENTS: k * cg * r * s})
    kc = k * cg
    acc_torch, acc_tl = _acc_dtype(x.dtype)
    chunk = _split_chunk(m, triton.cdiv(kc, 64) * r * s)
    splits = triton.cdiv(m, chunk)
    # Every (split, kc, tap) is written by exactly one program: no zero-fill, no atomics.
    part = torch.empty(splits, kc, r * s, device=x.device, dtype=acc_torch)

    def grid(meta):
        return triton.cdiv(kc, meta["BLOCK_KC"]), r * s, splits

    _weight_grad_kernel[grid](
        dy, x, part,
        m, kc, h, wd, p, q, cg, k // groups, s, chunk,
        *dy.stride(), *x.stride(), *part.stride(),
        stride[0], stride[1], padding[0], padding[1], dilation[0], dilation[1],
        ACC=acc_tl,
    )
    return part.sum(0).view(weight_shape)
