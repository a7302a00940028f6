"""Implicit-GEMM 2-D convolution on tensor cores (``tl.dot``), the ``igemm`` family of
conv2d.py (whose docstring defines the interface).

No im2col buffer is built: each program gathers its GEMM operand tiles straight from
the NHWC activations with masked loads, so padding, stride and dilation cost nothing
but index arithmetic. Per group g (Cg = C/groups, Kg = K/groups channels):

    forward      M = N*P*Q output pixels  x  Kg output channels,  reduce R*S*Cg
    input_grad   M = N*H*W input pixels   x  Cg input channels,   reduce R*S*Kg
    weight_grad  M = Kg output channels   x  R*S*Cg weights,      reduce N*P*Q

Reduction order over (r, s, c). With many channels per group, the loop visits each
tap (r, s) and then channel blocks of BLOCK_K, so a tile's rows share one spatial
offset and its channels are contiguous in NHWC. With few (``_flat_reduction``: a
first layer's C=3, a grouped conv's 4-16), a per-tap block would be mostly padding,
so the (r, s, c) index is flattened and decoded per element instead.

input_grad takes the pixels of one stride phase per program, so it loops only over
the taps that reach them (no work masked away at stride > 1). weight_grad splits
its N*P*Q reduction (split-K) into partial slices that torch sums in a fixed order.

Accumulation is fp32 (fp64 for fp64 inputs, which only the interpreter sees, for
gradcheck); the epilogue works on the accumulator before the one cast to the output
dtype. Pixel and channel indices are int32 (host-checked below
``_common.MAX_INDEX_COUNT``, which leaves a tile's margin below 2^31); every offset
is widened to int64 before it meets a stride, since tensors may exceed 2^31 elements.
"""
import math

import torch
import triton
import triton.language as tl

from fastcnn.triton_kernels import _common
from fastcnn.triton_kernels._common import apply_activation, autotune_configs, dot_precision

# Channels per group up to which the (r, s, c) reduction is flattened: GPU tiles
# have BLOCK_K 32-64, so a block of one tap's channels would be at least half padding.
FLAT_MAX_CHANNELS = 16

# weight_grad split-K: aim for this many programs per SM, each reducing at least
# MIN_SPLIT_PIXELS output pixels; chunks are multiples of SPLIT_ALIGN (a multiple of
# every BLOCK_K) so each split's loads stay aligned.
SPLIT_WAVES = 2
MIN_SPLIT_PIXELS = 256
SPLIT_ALIGN = 128
NOMINAL_SMS = 132  # an H100's, for the interpreter, so it picks the GPU's splits


def _config(bm, bn, bk, warps, stages):
    return triton.Config({"BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_K": bk}, num_warps=warps, num_stages=stages)


# H100 tiles: large square tiles for big layers, narrow N for the 16-64 channel
# groups of early and grouped layers. BLOCK_K 64 suits 16-bit inputs, 32 fp32 (TF32
# tiles take twice the bytes); the autotuner picks per dtype, and 3-5 stages fit in
# 228 KB of shared memory.
_GPU_CONFIGS = [
    _config(128, 128, 64, 8, 3),
    _config(128, 128, 32, 8, 4),
    _config(128, 64, 64, 4, 4),
    _config(64, 128, 64, 4, 4),
    _config(128, 64, 32, 4, 4),
    _config(64, 64, 64, 4, 4),
    _config(64, 64, 32, 4, 5),
    _config(128, 32, 64, 4, 4),
    _config(64, 32, 64, 4, 4),
]
_CONFIGS = autotune_configs(_GPU_CONFIGS, _config(32, 32, 16, 4, 1))


def _flat_reduction(channels_per_group):
    return channels_per_group <= FLAT_MAX_CHANNELS


def _accumulator(dtype):
    """(tl, torch) accumulator dtype: fp32, or fp64 for fp64 inputs."""
    return (tl.float64, torch.float64) if dtype == torch.float64 else (tl.float32, torch.float32)


# ----------------------------------------------------------------------------- forward

@triton.autotune(configs=_CONFIGS, key=["M", "KG", "CG", "R", "S"])
@triton.jit
def _forward_kernel(
    x_ptr,     # (N, C, H, W) input
    w_ptr,     # (K, Cg, R, S) weight
    bias_ptr,  # (K,) bias; any pointer when not HAS_BIAS
    res_ptr,   # (N, K, P, Q) residual; any pointer when not HAS_RES
    y_ptr,     # (N, K, P, Q) output
    psum_ptr,  # (T, K) per-tile sums of y when STATS, T >= cdiv(M, BLOCK_M); else any pointer
    pm2_ptr,   # (T, K) per-tile sums of squared deviations from the tile mean, strides of psum
    M, H, W, P, Q, CG, KG, R, S,
    conv_sh, conv_sw, pad_h, pad_w, dil_h, dil_w,
    sx_n, sx_c, sx_h, sx_w,
    sw_k, sw_c, sw_r, sw_s,
    sr_n, sr_k, sr_h, sr_w,
    sy_n, sy_k, sy_h, sy_w,
    ss_t, ss_k,
    HAS_BIAS: tl.constexpr, HAS_RES: tl.constexpr, ACT: tl.constexpr, STATS: tl.constexpr,
    FLAT: tl.constexpr, ACC: tl.constexpr, PREC: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):
    # N tiles vary fastest, so programs running together share their x tile in L2.
    pid = tl.program_id(0)
    g = tl.program_id(1)
    n_tiles_n = tl.cdiv(KG, BLOCK_N)
    pid_m = pid // n_tiles_n
    pid_n = pid % n_tiles_n

    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)  # output pixel (n, p, q)
    mask_m = offs_m < M
    q = offs_m % Q
    p = (offs_m // Q) % P
    n = offs_m // (P * Q)
    h0 = p * conv_sh - pad_h
    w0 = q * conv_sw - pad_w
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)  # output channel within the group
    mask_n = offs_n < KG
    k64 = (g * KG + offs_n).to(tl.int64)

    x_img = x_ptr + n.to(tl.int64) * sx_n + (g * CG).to(tl.int64) * sx_c  # [BLOCK_M]
    w_out = w_ptr + k64 * sw_k  # [BLOCK_N]
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=ACC)
    if FLAT:
        RSC = R * S * CG
        for k0 in range(0, RSC, BLOCK_K):
            offs_k = k0 + tl.arange(0, BLOCK_K)  # flattened (r, s, c)
            mask_k = offs_k < RSC
            c = offs_k % CG
            s = (offs_k // CG) % S
            r = offs_k // (CG * S)
            h = h0[:, None] + r[None, :] * dil_h
            w = w0[:, None] + s[None, :] * dil_w
            a_mask = mask_m[:, None] & mask_k[None, :] & (h >= 0) & (h < H) & (w >= 0) & (w < W)
            a = tl.load(x_img[:, None] + h.to(tl.int64) * sx_h + w.to(tl.int64) * sx_w
                        + c.to(tl.int64)[None, :] * sx_c, mask=a_mask, other=0.0)
            w_off = c.to(tl.int64) * sw_c + r.to(tl.int64) * sw_r + s.to(tl.int64) * sw_s
            b = tl.load(w_out[None, :] + w_off[:, None], mask=mask_k[:, None] & mask_n[None, :], other=0.0)
            acc = tl.dot(a, b, acc, input_precision=PREC, out_dtype=ACC)
    else:
        # One flat loop over (tap, channel block) so the compiler pipelines across taps.
        n_cblocks = tl.cdiv(CG, BLOCK_K)
        for it in range(0, R * S * n_cblocks):
            rs = it // n_cblocks
            r = rs // S
            s = rs % S
            h = h0 + r * dil_h
            w = w0 + s * dil_w
            row_ok = mask_m & (h >= 0) & (h < H) & (w >= 0) & (w < W)
            offs_c = (it % n_cblocks) * BLOCK_K + tl.arange(0, BLOCK_K)
            mask_c = offs_c < CG
            x_row = x_img + h.to(tl.int64) * sx_h + w.to(tl.int64) * sx_w
            a = tl.load(x_row[:, None] + offs_c.to(tl.int64)[None, :] * sx_c,
                        mask=row_ok[:, None] & mask_c[None, :], other=0.0)
            w_tap = w_out + (r.to(tl.int64) * sw_r + s.to(tl.int64) * sw_s)
            b = tl.load(w_tap[None, :] + offs_c.to(tl.int64)[:, None] * sw_c,
                        mask=mask_c[:, None] & mask_n[None, :], other=0.0)
            acc = tl.dot(a, b, acc, input_precision=PREC, out_dtype=ACC)

    mask = mask_m[:, None] & mask_n[None, :]
    pix_r = n.to(tl.int64) * sr_n + p.to(tl.int64) * sr_h + q.to(tl.int64) * sr_w
    pix_y = n.to(tl.int64) * sy_n + p.to(tl.int64) * sy_h + q.to(tl.int64) * sy_w
    if HAS_BIAS:
        acc += tl.load(bias_ptr + k64, mask=mask_n, other=0.0).to(ACC)[None, :]
    if HAS_RES:
        acc += tl.load(res_ptr + pix_r[:, None] + k64[None, :] * sr_k, mask=mask, other=0.0).to(ACC)
    if STATS:
        # Per-tile sum and M2 around the tile's own mean (combined by Chan's formula
        # on the host): no atomics, and no cancellation of sum(y^2) - sum(y)^2 / n.
        rows = tl.minimum(M - pid_m * BLOCK_M, BLOCK_M)
        tile_sum = tl.sum(tl.where(mask, acc, 0.0), axis=0)
        dev = tl.where(mask, acc - (tile_sum / rows)[None, :], 0.0)
        stat_off = pid_m.to(tl.int64) * ss_t + k64 * ss_k
        tl.store(psum_ptr + stat_off, tile_sum, mask=mask_n)
        tl.store(pm2_ptr + stat_off, tl.sum(dev * dev, axis=0), mask=mask_n)
    out = apply_activation(acc, ACT)
    tl.store(y_ptr + pix_y[:, None] + k64[None, :] * sy_k, out.to(y_ptr.dtype.element_ty), mask=mask)


def forward(x, w, bias, residual, y, stride, padding, dilation, groups, act, stats):
    n, _, h, wd = x.shape
    k, cg, r, s = w.shape
    p, q = y.shape[2:]
    kg, m = k // groups, n * p * q
    _common.check_index_limit("conv2d_igemm.forward",
                              {_common.OUTPUT_PIXELS: m, _common.WEIGHT_ELEMENTS: w.numel()})
    acc_tl, acc_torch = _accumulator(x.dtype)
    if stats:
        # Rows for the smallest BLOCK_M the autotuner may pick; sliced once it has.
        tiles_max = triton.cdiv(m, min(c.kwargs["BLOCK_M"] for c in _forward_kernel.configs))
        psum = torch.empty((tiles_max, k), device=y.device, dtype=acc_torch)
        pm2 = torch.empty_like(psum)
    else:
        psum = pm2 = y[0, 0]  # unused
    res = residual if residual is not None else y

    def grid(meta):
        return triton.cdiv(m, meta["BLOCK_M"]) * triton.cdiv(kg, meta["BLOCK_N"]), groups

    _forward_kernel[grid](
        x, w, bias if bias is not None else y, res, y, psum, pm2,
        m, h, wd, p, q, cg, kg, r, s, *stride, *padding, *dilation,
        *x.stride(), *w.stride(), *res.stride(), *y.stride(), *psum.stride(),
        HAS_BIAS=bias is not None, HAS_RES=residual is not None, ACT=act, STATS=stats,
        FLAT=_flat_reduction(cg), ACC=acc_tl, PREC=dot_precision(x.dtype))
    if not stats:
        return None
    block_m = _forward_kernel.best_config.kwargs["BLOCK_M"]
    tiles = triton.cdiv(m, block_m)
    count = torch.full((tiles,), block_m, device=y.device, dtype=acc_torch)
    count[-1] = m - (tiles - 1) * block_m
    return psum[:tiles], pm2[:tiles], count


# ----------------------------------------------------------------------------- input grad

@triton.jit
def _phase_taps(base, size, period, g, inv):
    """The taps t in [0, size) with t*dil = base (mod stride), where g = gcd(dil,
    stride), period = stride/g and inv is the inverse of dil/g modulo period: none
    unless g divides base, else first, first + period, ... Returns (first, count)."""
    first = (base // g) * inv % period
    count = tl.where(base % g == 0, (size - first + period - 1) // period, 0)
    return first, count


@triton.autotune(configs=_CONFIGS, key=["M", "CG", "KG", "R", "S"])
@triton.jit
def _input_grad_kernel(
    dy_ptr,  # (N, K, P, Q) output gradient
    w_ptr,   # (K, Cg, R, S) weight
    dx_ptr,  # (N, C, H, W) input gradient, written
    M, H, W, P, Q, CG, KG, R, S,
    HQ, WQ,  # rows and columns of one stride phase: cdiv(H, conv_sh), cdiv(W, conv_sw)
    conv_sh, conv_sw, pad_h, pad_w, dil_h, dil_w,
    per_h, per_w, gcd_h, gcd_w, inv_h, inv_w,  # tap progressions, see _phase_taps
    sd_n, sd_k, sd_h, sd_w,
    sw_k, sw_c, sw_r, sw_s,
    sx_n, sx_c, sx_h, sx_w,
    ACC: tl.constexpr, PREC: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):
    # Stride-phase decomposition: input pixel (h, w) receives tap r only when
    # h + pad - r*dil is a multiple of the stride. All pixels of one phase
    # (h mod stride, w mod stride) receive the same taps, so each program takes
    # pixels of a single phase and loops over that phase's taps only: no work is
    # masked away, whatever the stride.
    pid = tl.program_id(0)
    g = tl.program_id(1)
    phase = tl.program_id(2)
    ph = phase // conv_sw
    pw = phase % conv_sw
    n_tiles_n = tl.cdiv(CG, BLOCK_N)
    pid_m = pid // n_tiles_n
    pid_n = pid % n_tiles_n

    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)  # (n, i, j): pixel (ph + i*sh, pw + j*sw)
    i = (offs_m // WQ) % HQ
    j = offs_m % WQ
    n = offs_m // (HQ * WQ)
    h = ph + i * conv_sh
    w = pw + j * conv_sw
    mask_m = (offs_m < M) & (h < H) & (w < W)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)  # input channel within the group
    mask_n = offs_n < CG
    c64 = (g * CG + offs_n).to(tl.int64)

    r0, n_r = _phase_taps(ph + pad_h, R, per_h, gcd_h, inv_h)
    s0, n_s = _phase_taps(pw + pad_w, S, per_w, gcd_w, inv_w)
    dy_img = dy_ptr + n.to(tl.int64) * sd_n  # [BLOCK_M]
    w_in = w_ptr + offs_n.to(tl.int64) * sw_c  # [BLOCK_N]
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=ACC)
    n_kblocks = tl.cdiv(KG, BLOCK_K)
    for it in range(0, n_r * n_s * n_kblocks):
        tap = it // n_kblocks
        r = r0 + (tap // n_s) * per_h
        s = s0 + (tap % n_s) * per_w
        # Exact divisions: r was chosen so that the numerator is a multiple of the stride.
        p = i + (ph + pad_h - r * dil_h) // conv_sh
        q = j + (pw + pad_w - s * dil_w) // conv_sw
        row_ok = mask_m & (p >= 0) & (p < P) & (q >= 0) & (q < Q)
        offs_k = (it % n_kblocks) * BLOCK_K + tl.arange(0, BLOCK_K)  # output channel within the group
        mask_k = offs_k < KG
        k64 = (g * KG + offs_k).to(tl.int64)
        dy_row = dy_img + p.to(tl.int64) * sd_h + q.to(tl.int64) * sd_w
        a = tl.load(dy_row[:, None] + k64[None, :] * sd_k, mask=row_ok[:, None] & mask_k[None, :], other=0.0)
        w_tap = w_in + (r.to(tl.int64) * sw_r + s.to(tl.int64) * sw_s)
        b = tl.load(w_tap[None, :] + k64[:, None] * sw_k, mask=mask_k[:, None] & mask_n[None, :], other=0.0)
        acc = tl.dot(a, b, acc, input_precision=PREC, out_dtype=ACC)

    pix = n.to(tl.int64) * sx_n + h.to(tl.int64) * sx_h + w.to(tl.int64) * sx_w
    tl.store(dx_ptr + pix[:, None] + c64[None, :] * sx_c, acc.to(dx_ptr.dtype.element_ty),
             mask=mask_m[:, None] & mask_n[None, :])


def _tap_progression(stride, dilation):
    """(period, gcd, inverse) describing which taps reach a stride phase (_phase_taps)."""
    g = math.gcd(stride, dilation)
    period = stride // g
    return period, g, pow(dilation // g, -1, period) if period > 1 else 0


def input_grad(dy, w, dx, stride, padding, dilation, groups):
    n, _, p, q = dy.shape
    k, cg, r, s = w.shape
    h, wd = dx.shape[2:]
    hq, wq = triton.cdiv(h, stride[0]), triton.cdiv(wd, stride[1])
    m = n * hq * wq
    _common.check_index_limit("conv2d_igemm.input_grad",
                              {_common.PHASE_PIXELS: m, _common.WEIGHT_ELEMENTS: w.numel()})
    (per_h, gcd_h, inv_h), (per_w, gcd_w, inv_w) = (_tap_progression(*a) for a in zip(stride, dilation))
    acc_tl, _ = _accumulator(dy.dtype)

    def grid(meta):
        return triton.cdiv(m, meta["BLOCK_M"]) * triton.cdiv(cg, meta["BLOCK_N"]), groups, stride[0] * stride[1]

    _input_grad_kernel[grid](
        dy, w, dx, m, h, wd, p, q, cg, k // groups, r, s, hq, wq,
        *stride, *padding, *dilation, per_h, per_w, gcd_h, gcd_w, inv_h, inv_w,
        *dy.stride(), *w.stride(), *dx.stride(),
        ACC=acc_tl, PREC=dot_precision(dy.dtype))


# ----------------------------------------------------------------------------- weight grad

@triton.autotune(configs=_CONFIGS, key=["KG", "CG", "R", "S", "CHUNK"])
@triton.jit
def _weight_grad_kernel(
    dy_ptr,  # (N, K, P, Q) output gradient
    x_ptr,   # (N, C, H, W) input
    dw_ptr,  # (SPLIT, K, Cg, R, S) partial weight gradients, one slice per split
    NPQ, H, W, P, Q, CG, KG, R, S,
    CHUNK,  # output pixels reduced by one split
    conv_sh, conv_sw, pad_h, pad_w, dil_h, dil_w,
    sd_n, sd_k, sd_h, sd_w,
    sx_n, sx_c, sx_h, sx_w,
    sp_split, sp_k, sp_c, sp_r, sp_s,
    FLAT: tl.constexpr, ACC: tl.constexpr, PREC: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):
    pid = tl.program_id(0)
    g = tl.program_id(1)
    split = tl.program_id(2)
    if FLAT:
        n_tiles_n = tl.cdiv(R * S * CG, BLOCK_N)
    else:
        n_tiles_n = R * S * tl.cdiv(CG, BLOCK_N)
    pid_m = pid // n_tiles_n
    pid_n = pid % n_tiles_n

    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)  # output channel within the group
    mask_m = offs_m < KG
    k64 = (g * KG + offs_m).to(tl.int64)
    # Columns: the flattened (r, s, c) in FLAT mode, else channel block of one tap.
    if FLAT:
        offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
        mask_n = offs_n < R * S * CG
        c = offs_n % CG
        s = (offs_n // CG) % S
        r = offs_n // (CG * S)
    else:
        n_cblocks = tl.cdiv(CG, BLOCK_N)
        rs = pid_n // n_cblocks
        r = rs // S
        s = rs % S
        c = (pid_n % n_cblocks) * BLOCK_N + tl.arange(0, BLOCK_N)
        mask_n = c < CG
    x_chan = x_ptr + (g * CG + c).to(tl.int64) * sx_c  # [BLOCK_N]

    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=ACC)
    start = split * CHUNK
    end = start + tl.minimum(CHUNK, NPQ - start)  # start + CHUNK may pass 2^31 in the last split
    for k0 in range(start, end, BLOCK_K):
        offs_k = k0 + tl.arange(0, BLOCK_K)  # output pixel (n, p, q)
        mask_k = offs_k < end
        q = offs_k % Q
        p = (offs_k // Q) % P
        n64 = (offs_k // (P * Q)).to(tl.int64)
        dy_pix = n64 * sd_n + p.to(tl.int64) * sd_h + q.to(tl.int64) * sd_w
        a = tl.load(dy_ptr + k64[:, None] * sd_k + dy_pix[None, :],
                    mask=mask_m[:, None] & mask_k[None, :], other=0.0)
        if FLAT:
            h = (p * conv_sh - pad_h)[:, None] + (r * dil_h)[None, :]
            w = (q * conv_sw - pad_w)[:, None] + (s * dil_w)[None, :]
            b_mask = mask_k[:, None] & mask_n[None, :] & (h >= 0) & (h < H) & (w >= 0) & (w < W)
            x_off = (n64 * sx_n)[:, None] + h.to(tl.int64) * sx_h + w.to(tl.int64) * sx_w
        else:
            h = p * conv_sh - pad_h + r * dil_h
            w = q * conv_sw - pad_w + s * dil_w
            row_ok = mask_k & (h >= 0) & (h < H) & (w >= 0) & (w < W)
            b_mask = row_ok[:, None] & mask_n[None, :]
            x_off = (n64 * sx_n + h.to(tl.int64) * sx_h + w.to(tl.int64) * sx_w)[:, None]
        b = tl.load(x_chan[None, :] + x_off, mask=b_mask, other=0.0)
        acc = tl.dot(a, b, acc, input_precision=PREC, out_dtype=ACC)

    col = c.to(tl.int64) * sp_c + r.to(tl.int64) * sp_r + s.to(tl.int64) * sp_s
    out = dw_ptr + split.to(tl.int64) * sp_split + k64[:, None] * sp_k + col[None, :]
    tl.store(out, acc, mask=mask_m[:, None] & mask_n[None, :])


def _weight_grad_split(npq, out_tiles, device):
    """Splits of the N*P*Q reduction: enough programs for SPLIT_WAVES per SM (output
    tiles counted at 64x64), each reducing at least MIN_SPLIT_PIXELS pixels."""
    sms = torch.cuda.get_device_properties(device).multi_processor_count if device.type == "cuda" else NOMINAL_SMS
    split = max(1, min(triton.cdiv(SPLIT_WAVES * sms, out_tiles), npq // MIN_SPLIT_PIXELS))
    chunk = triton.cdiv(triton.cdiv(npq, split), SPLIT_ALIGN) * SPLIT_ALIGN
    return triton.cdiv(npq, chunk), chunk


def _weight_grad_col_tiles(r, s, cg, flat, block_n):
    """Column tiles of dw's GEMM: over the flattened (r, s, c), or per tap."""
    return triton.cdiv(r * s * cg, block_n) if flat else r * s * triton.cdiv(cg, block_n)


def weight_grad(dy, x, stride, padding, dilation, groups, weight_shape):
    n, _, h, wd = x.shape
    p, q = dy.shape[2:]
    k, cg, r, s = weight_shape
    kg, npq = k // groups, n * p * q
    _common.check_index_limit("conv2d_igemm.weight_grad",
                              {_common.OUTPUT_PIXELS: npq, _common.WEIGHT_ELEMENTS: math.prod(weight_shape)})
    flat = _flat_reduction(cg)
    out_tiles = triton.cdiv(kg, 64) * _weight_grad_col_tiles(r, s, cg, flat, 64) * groups
    split, chunk = _weight_grad_split(npq, out_tiles, x.device)
    acc_tl, acc_torch = _accumulator(x.dtype)
    # Every element of every split's slice is written (a split with no pixels writes
    # zeros), and the slices are summed in a fixed order: deterministic, no atomics.
    part = torch.empty((split, *weight_shape), device=x.device, dtype=acc_torch)

    def grid(meta):
        cols = _weight_grad_col_tiles(r, s, cg, flat, meta["BLOCK_N"])
        return triton.cdiv(kg, meta["BLOCK_M"]) * cols, groups, split

    _weight_grad_kernel[grid](
        dy, x, part, npq, h, wd, p, q, cg, kg, r, s, chunk,
        *stride, *padding, *dilation, *dy.stride(), *x.stride(), *part.stride(),
        FLAT=flat, ACC=acc_tl, PREC=dot_precision(x.dtype))
    return part[0] if split == 1 else part.sum(0)
