"""Training-mode BatchNorm + residual + activation: the kernels that follow the
convolution in ``fastcnn::conv_bn_act_train`` and its backward, plus a plain
statistics pass for a y that did not come from our convolution's epilogue.

    channel_stats(y)                      per-channel (mean, biased var) of y
    bn_act_forward(y, mean, invstd, gamma, beta, residual, act)
        out = act((y - mean) * invstd * gamma + beta + residual)
    bn_act_backward(grad_out, y, mean, invstd, gamma, beta, residual, act)
        dz = grad_out * act'(z)      (z recomputed from y; never stored)
        dbeta = sum(dz), dgamma = sum(dz * yhat)
        dy = gamma * invstd * (dz - (dbeta + yhat * dgamma) / count),  dres = dz

Kernel design
-------------
Every (N, C, H, W) tensor is seen as a matrix of rows (pixels (n, h, w)) by C
channels, addressed through its own strides: element (n, p = h * W + w, c) lives at
``n*sN + h*sH + w*sW + c*sC``. That covers NCHW, channels_last, sliced tensors and
stride-0 expanded gradients with no copies. When a tensor's H and W collapse into
one pixel stride (``sH == W * sW``; true for both dense layouts) the launcher
passes ``FLAT`` and the kernel uses ``p * sW`` with no division by W.

Tiles are [BLOCK_P pixels x BLOCK_C channels]. Which pixels a tile holds depends
on the layout of y (``TILING``, see ``_rows``):

- NCHW (pixel stride 1; TILING 1): a tile stays inside one image, so pixels p are
  a plain arange that the compiler sees contiguous; loads coalesce along W.
- channels_last (channel stride 1): rows are global, r in [0, N*H*W), so a tile
  may span images; channels are the contiguous axis (Triton specialises the
  stride 1 and vectorises along C). When every tensor is dense in its rows
  (TILING 2) the row offset is r * sW; otherwise (TILING 0, e.g. a sliced
  batch) r is decoded into (n, p).

The two reductions (statistics; sum(dz), sum(dz*yhat)) give every program a
*chunk* of CHUNK rows (one segment of a global row range or of one image), which it
walks BLOCK_P rows at a time with [BLOCK_P, BLOCK_C] accumulators, reduced once at
the end. The chunk size is chosen by the launcher, not by the autotuner, so the
number of partial results [T, C] is known before launch; partials are then
combined with torch in a fixed order: deterministic, no atomics.

Statistics use Welford's update per accumulator lane and Chan's formula across
lanes (in the kernel) and across chunks (``combine_tile_stats`` from conv2d.py),
so a large mean does not cancel the variance away.

All offsets are 64-bit. Compute is fp32 (fp64 for fp64 tensors); outputs are
rounded once when stored.
"""
import torch
import triton
import triton.language as tl

from fastcnn.triton_kernels._common import (
    ACTIVATIONS,
    activation_grad,
    apply_activation,
    autotune_configs,
    empty_nchw,
    interpret_mode,
    memory_format_of,
)
from fastcnn.triton_kernels.reference import compute_dtype


# ----------------------------------------------------------------------------- index helpers

@triton.jit
def _rows(n_img, start, end, HW, BLOCK_P: tl.constexpr, TILING: tl.constexpr):
    """The BLOCK_P rows from ``start`` (exclusive bound ``end``) as (n, p, mask), n
    the image and p the pixel within it, int64:
    TILING 1 (per image): start/end are pixels of image n_img; n is a scalar.
    TILING 0 (global rows): start/end are rows of N*H*W; n, p decoded per row.
    TILING 2 (flat global rows, every tensor has sN == H*W*sW): n = 0 and p is the
    global row, so the offset is row * sW with no division."""
    idx = start + tl.arange(0, BLOCK_P).to(tl.int64)  # start: int64 (or int32 < HW)
    mask = idx < end
    if TILING == 1:
        n = n_img.to(tl.int64)
        p = idx
    elif TILING == 2:
        n = tl.full((), 0, tl.int64)
        p = idx
    else:
        n = idx // HW
        p = idx - n * HW
    return n, p, mask


@triton.jit
def _offsets(n, p, c, sN, sC, sH, sW, W, FLAT: tl.constexpr):
    """[BLOCK_P, BLOCK_C] int64 element offsets of pixels (n, p) x channels c for a
    tensor with strides (sN, sC, sH, sW); with FLAT, sW is the pixel stride."""
    if FLAT:
        row = n * sN + p * sW
    else:
        h = p // W
        w = p - h * W
        row = n * sN + h * sH + w * sW
    return row[:, None] + (c * sC)[None, :]


@triton.jit
def _chunk(pid_t, HW, ROWS, CHUNK, TILES_PER_SEG, TILING: tl.constexpr):
    """(image, first row, end row) of reduction program pid_t's chunk of rows: within
    one image for the NCHW tiling, over all N*H*W rows otherwise."""
    if TILING == 1:
        n_img = pid_t // TILES_PER_SEG
        start = (pid_t % TILES_PER_SEG).to(tl.int64) * CHUNK
        end = tl.minimum(start + CHUNK, HW)
    else:
        n_img = pid_t * 0
        start = pid_t.to(tl.int64) * CHUNK
        end = tl.minimum(start + CHUNK, ROWS)
    return n_img, start, end


@triton.jit
def _load_channel(ptr, c, cmask):
    """A [1, BLOCK_C] tile of a contiguous per-channel (C,) vector."""
    return tl.load(ptr + c, mask=cmask, other=0.0)[None, :]


# ----------------------------------------------------------------------------- configs

def _elementwise_configs():
    gpu = [
        # channels_last: wide along C (the contiguous axis)
        triton.Config({"BLOCK_P": 32, "BLOCK_C": 64}, num_warps=4),
        triton.Config({"BLOCK_P": 64, "BLOCK_C": 64}, num_warps=8),
        triton.Config({"BLOCK_P": 16, "BLOCK_C": 128}, num_warps=4),
        triton.Config({"BLOCK_P": 32, "BLOCK_C": 128}, num_warps=8),
        # NCHW: long along pixels (the contiguous axis), few channels
        triton.Config({"BLOCK_P": 128, "BLOCK_C": 16}, num_warps=4),
        triton.Config({"BLOCK_P": 256, "BLOCK_C": 8}, num_warps=4),
        triton.Config({"BLOCK_P": 256, "BLOCK_C": 16}, num_warps=8),
        triton.Config({"BLOCK_P": 512, "BLOCK_C": 4}, num_warps=4),
    ]
    return autotune_configs(gpu, triton.Config({"BLOCK_P": 16, "BLOCK_C": 16}, num_warps=1))


def _reduce_configs():
    # BLOCK_P must divide the launcher's chunk (a multiple of _MIN_CHUNK).
    gpu = [
        triton.Config({"BLOCK_P": 16, "BLOCK_C": 64}, num_warps=4),
        triton.Config({"BLOCK_P": 32, "BLOCK_C": 64}, num_warps=4),
        triton.Config({"BLOCK_P": 16, "BLOCK_C": 128}, num_warps=4),
        triton.Config({"BLOCK_P": 32, "BLOCK_C": 128}, num_warps=8),
        triton.Config({"BLOCK_P": 128, "BLOCK_C": 16}, num_warps=4),
        triton.Config({"BLOCK_P": 256, "BLOCK_C": 8}, num_warps=4),
        triton.Config({"BLOCK_P": 128, "BLOCK_C": 32}, num_warps=8),
    ]
    return autotune_configs(gpu, triton.Config({"BLOCK_P": 16, "BLOCK_C": 16}, num_warps=1))


_KEY = ["C", "HW", "ROWS", "TILING", "FLAT"]


# ----------------------------------------------------------------------------- kernels

@triton.autotune(configs=_reduce_configs(), key=_KEY)
@triton.jit
def _stats_kernel(
    y_ptr,      # (N, C, H, W) any strides, any float dtype
    shift_ptr,  # (C,) contiguous, compute dtype: y[0, :, 0, 0], subtracted before accumulating
    psum_ptr,   # [T, C] compute dtype: per-chunk sum of (y - shift)
    pm2_ptr,    # [T, C] compute dtype: per-chunk sum of squared deviations from the chunk mean
    C, HW, W, ROWS, CHUNK, TILES_PER_SEG,
    y_sN, y_sC, y_sH, y_sW,
    TILING: tl.constexpr, FLAT: tl.constexpr,
    BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr,
):
    pid_t = tl.program_id(0)
    pid_c = tl.program_id(1)
    ct = psum_ptr.dtype.element_ty
    n_img, start, end = _chunk(pid_t, HW, ROWS, CHUNK, TILES_PER_SEG, TILING)
    c = pid_c.to(tl.int64) * BLOCK_C + tl.arange(0, BLOCK_C).to(tl.int64)
    cmask = c < C
    # Shifting by a value of the data keeps the accumulators O(std) even when
    # |mean| >> std, where a running fp32 mean would lose the low bits.
    shift = _load_channel(shift_ptr, c, cmask)

    # Welford per lane: lane (i, c) sees rows i, i + BLOCK_P, ... of the chunk.
    cnt = tl.zeros([BLOCK_P, 1], dtype=ct)
    mean = tl.zeros([BLOCK_P, BLOCK_C], dtype=ct)
    m2 = tl.zeros([BLOCK_P, BLOCK_C], dtype=ct)
    for s in range(start, end, BLOCK_P):
        n, p, pmask = _rows(n_img, s, end, HW, BLOCK_P, TILING)
        mask = pmask[:, None] & cmask[None, :]
        off = _offsets(n, p, c, y_sN, y_sC, y_sH, y_sW, W, FLAT)
        x = tl.load(y_ptr + off, mask=mask, other=0.0).to(ct) - shift
        rowf = pmask[:, None].to(ct)
        cnt += rowf
        rcp = rowf / tl.maximum(cnt, 1.0)          # 1/count on live rows, 0 on dead ones
        delta = x - mean
        mean += delta * rcp
        m2 += delta * (x - mean) * rowf
    # Chan across lanes: stable combination of the per-lane (count, mean, m2).
    total = tl.sum(cnt, axis=0)                    # [1]
    csum = tl.sum(cnt * mean, axis=0)              # [BLOCK_C]
    cmean = csum / total
    dev = mean - cmean[None, :]
    cm2 = tl.sum(m2, axis=0) + tl.sum(cnt * dev * dev, axis=0)
    out = pid_t.to(tl.int64) * C + c
    tl.store(psum_ptr + out, csum, mask=cmask)
    tl.store(pm2_ptr + out, cm2, mask=cmask)


@triton.autotune(configs=_elementwise_configs(), key=_KEY + ["HAS_RES", "ACT"])
@triton.jit
def _bn_act_fwd_kernel(
    y_ptr,       # (N, C, H, W) any strides
    res_ptr,     # (N, C, H, W) any strides, or y_ptr when HAS_RES is false
    out_ptr,     # (N, C, H, W) any strides, y's dtype
    mean_ptr,    # (C,) contiguous, compute dtype
    invstd_ptr,  # (C,) contiguous, compute dtype
    gamma_ptr,   # (C,) contiguous, compute dtype
    beta_ptr,    # (C,) contiguous, compute dtype
    C, HW, W, ROWS,
    y_sN, y_sC, y_sH, y_sW,
    r_sN, r_sC, r_sH, r_sW,
    o_sN, o_sC, o_sH, o_sW,
    HAS_RES: tl.constexpr, ACT: tl.constexpr,
    TILING: tl.constexpr, FLAT: tl.constexpr,
    BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr,
):
    pid_r = tl.program_id(0)
    pid_c = tl.program_id(1)
    ct = mean_ptr.dtype.element_ty
    if TILING == 1:
        blocks = tl.cdiv(HW, BLOCK_P)
        n, p, pmask = _rows(pid_r // blocks, (pid_r % blocks) * BLOCK_P, HW, HW, BLOCK_P, TILING)
    else:
        n, p, pmask = _rows(0, pid_r.to(tl.int64) * BLOCK_P, ROWS, HW, BLOCK_P, TILING)
    c = pid_c.to(tl.int64) * BLOCK_C + tl.arange(0, BLOCK_C).to(tl.int64)
    cmask = c < C
    mask = pmask[:, None] & cmask[None, :]

    mean = _load_channel(mean_ptr, c, cmask)
    scale = _load_channel(invstd_ptr, c, cmask) * _load_channel(gamma_ptr, c, cmask)
    beta = _load_channel(beta_ptr, c, cmask)

    y = tl.load(y_ptr + _offsets(n, p, c, y_sN, y_sC, y_sH, y_sW, W, FLAT), mask=mask, other=0.0).to(ct)
    z = (y - mean) * scale + beta
    if HAS_RES:
        z += tl.load(res_ptr + _offsets(n, p, c, r_sN, r_sC, r_sH, r_sW, W, FLAT), mask=mask, other=0.0).to(ct)
    out = apply_activation(z, ACT)
    tl.store(out_ptr + _offsets(n, p, c, o_sN, o_sC, o_sH, o_sW, W, FLAT),
             out.to(out_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _recompute_dz(g_ptr, y_ptr, res_ptr, n, p, c, mask, mean, invstd, gamma, beta, W,
                  g_sN, g_sC, g_sH, g_sW, y_sN, y_sC, y_sH, y_sW, r_sN, r_sC, r_sH, r_sW,
                  HAS_RES: tl.constexpr, ACT: tl.constexpr, FLAT: tl.constexpr):
    """(dz, yhat) on one tile: z is rebuilt from y exactly as the forward built it."""
    ct = mean.dtype
    y = tl.load(y_ptr + _offsets(n, p, c, y_sN, y_sC, y_sH, y_sW, W, FLAT), mask=mask, other=0.0).to(ct)
    g = tl.load(g_ptr + _offsets(n, p, c, g_sN, g_sC, g_sH, g_sW, W, FLAT), mask=mask, other=0.0).to(ct)
    yhat = (y - mean) * invstd
    z = yhat * gamma + beta
    if HAS_RES:
        z += tl.load(res_ptr + _offsets(n, p, c, r_sN, r_sC, r_sH, r_sW, W, FLAT), mask=mask, other=0.0).to(ct)
    dz = g * activation_grad(z, ACT).to(ct)
    dz = tl.where(mask, dz, 0.0)
    return dz, yhat


@triton.autotune(configs=_reduce_configs(), key=_KEY + ["HAS_RES", "ACT"])
@triton.jit
def _bn_act_bwd_reduce_kernel(
    g_ptr,       # (N, C, H, W) any strides (stride 0 allowed): grad_out
    y_ptr,       # (N, C, H, W) any strides
    res_ptr,     # (N, C, H, W) any strides, or y_ptr when HAS_RES is false
    mean_ptr,    # (C,) contiguous, compute dtype
    invstd_ptr,  # (C,) contiguous, compute dtype
    gamma_ptr,   # (C,) contiguous, compute dtype
    beta_ptr,    # (C,) contiguous, compute dtype
    pdbeta_ptr,  # [T, C] compute dtype: per-chunk sum(dz)
    pdgamma_ptr,  # [T, C] compute dtype: per-chunk sum(dz * yhat)
    C, HW, W, ROWS, CHUNK, TILES_PER_SEG,
    g_sN, g_sC, g_sH, g_sW,
    y_sN, y_sC, y_sH, y_sW,
    r_sN, r_sC, r_sH, r_sW,
    HAS_RES: tl.constexpr, ACT: tl.constexpr,
    TILING: tl.constexpr, FLAT: tl.constexpr,
    BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr,
):
    pid_t = tl.program_id(0)
    pid_c = tl.program_id(1)
    ct = mean_ptr.dtype.element_ty
    n_img, start, end = _chunk(pid_t, HW, ROWS, CHUNK, TILES_PER_SEG, TILING)
    c = pid_c.to(tl.int64) * BLOCK_C + tl.arange(0, BLOCK_C).to(tl.int64)
    cmask = c < C
    mean = _load_channel(mean_ptr, c, cmask)
    invstd = _load_channel(invstd_ptr, c, cmask)
    gamma = _load_channel(gamma_ptr, c, cmask)
    beta = _load_channel(beta_ptr, c, cmask)

    acc_db = tl.zeros([BLOCK_P, BLOCK_C], dtype=ct)
    acc_dg = tl.zeros([BLOCK_P, BLOCK_C], dtype=ct)
    for s in range(start, end, BLOCK_P):
        n, p, pmask = _rows(n_img, s, end, HW, BLOCK_P, TILING)
        mask = pmask[:, None] & cmask[None, :]
        dz, yhat = _recompute_dz(g_ptr, y_ptr, res_ptr, n, p, c, mask, mean, invstd, gamma, beta, W,
                                 g_sN, g_sC, g_sH, g_sW, y_sN, y_sC, y_sH, y_sW, r_sN, r_sC, r_sH, r_sW,
                                 HAS_RES, ACT, FLAT)
        acc_db += dz
        acc_dg += dz * yhat
    out = pid_t.to(tl.int64) * C + c
    tl.store(pdbeta_ptr + out, tl.sum(acc_db, axis=0), mask=cmask)
    tl.store(pdgamma_ptr + out, tl.sum(acc_dg, axis=0), mask=cmask)


@triton.autotune(configs=_elementwise_configs(), key=_KEY + ["HAS_RES", "ACT"])
@triton.jit
def _bn_act_bwd_elementwise_kernel(
    g_ptr,       # (N, C, H, W) any strides (stride 0 allowed): grad_out
    y_ptr,       # (N, C, H, W) any strides
    res_ptr,     # (N, C, H, W) any strides, or y_ptr when HAS_RES is false
    dy_ptr,      # (N, C, H, W) any strides, y's dtype
    dres_ptr,    # (N, C, H, W) any strides, residual's dtype, or dy_ptr when HAS_RES is false
    mean_ptr,    # (C,) contiguous, compute dtype
    invstd_ptr,  # (C,) contiguous, compute dtype
    gamma_ptr,   # (C,) contiguous, compute dtype
    beta_ptr,    # (C,) contiguous, compute dtype
    mdb_ptr,     # (C,) contiguous, compute dtype: dbeta / count
    mdg_ptr,     # (C,) contiguous, compute dtype: dgamma / count
    C, HW, W, ROWS,
    g_sN, g_sC, g_sH, g_sW,
    y_sN, y_sC, y_sH, y_sW,
    r_sN, r_sC, r_sH, r_sW,
    d_sN, d_sC, d_sH, d_sW,
    e_sN, e_sC, e_sH, e_sW,
    HAS_RES: tl.constexpr, ACT: tl.constexpr,
    TILING: tl.constexpr, FLAT: tl.constexpr,
    BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr,
):
    pid_r = tl.program_id(0)
    pid_c = tl.program_id(1)
    if TILING == 1:
        blocks = tl.cdiv(HW, BLOCK_P)
        n, p, pmask = _rows(pid_r // blocks, (pid_r % blocks) * BLOCK_P, HW, HW, BLOCK_P, TILING)
    else:
        n, p, pmask = _rows(0, pid_r.to(tl.int64) * BLOCK_P, ROWS, HW, BLOCK_P, TILING)
    c = pid_c.to(tl.int64) * BLOCK_C + tl.arange(0, BLOCK_C).to(tl.int64)
    cmask = c < C
    mask = pmask[:, None] & cmask[None, :]
    mean = _load_channel(mean_ptr, c, cmask)
    invstd = _load_channel(invstd_ptr, c, cmask)
    gamma = _load_channel(gamma_ptr, c, cmask)
    beta = _load_channel(beta_ptr, c, cmask)
    mdb = _load_channel(mdb_ptr, c, cmask)
    mdg = _load_channel(mdg_ptr, c, cmask)

    dz, yhat = _recompute_dz(g_ptr, y_ptr, res_ptr, n, p, c, mask, mean, invstd, gamma, beta, W,
                             g_sN, g_sC, g_sH, g_sW, y_sN, y_sC, y_sH, y_sW, r_sN, r_sC, r_sH, r_sW,
                             HAS_RES, ACT, FLAT)
    dy = (gamma * invstd) * (dz - (mdb + yhat * mdg))
    tl.store(dy_ptr + _offsets(n, p, c, d_sN, d_sC, d_sH, d_sW, W, FLAT),
             dy.to(dy_ptr.dtype.element_ty), mask=mask)
    if HAS_RES:
        tl.store(dres_ptr + _offsets(n, p, c, e_sN, e_sC, e_sH, e_sW, W, FLAT),
                 dz.to(dres_ptr.dtype.element_ty), mask=mask)


# ----------------------------------------------------------------------------- launch helpers

def _pixel_strides(t):
    """(sN, sC, sH, sW, flat) of a 4-d tensor; when its H and W collapse into one
    pixel stride (flat), sW is that stride and sH = W * sW."""
    n_, c_, h, w = t.shape
    sn, sc, sh, sw = t.stride()
    if h == 1:
        return sn, sc, w * sw, sw, True
    if w == 1:
        return sn, sc, sh, sh, True
    return sn, sc, sh, sw, sh == w * sw


def _geometry(y, tensors):
    """Per-tensor strides (sN, sC, sH, sW) and the shared (FLAT, TILING) flags of a
    launch over y's shape (see _rows)."""
    n, c, h, w = y.shape
    strides = [_pixel_strides(t) for t in tensors]
    flat = all(s[4] for s in strides)
    if y.stride(1) != 1 and h * w > 1:
        tiling = 1  # y's pixels, not its channels, are the unit stride: tiles stay in one image
    elif flat and all(n == 1 or s[0] == h * w * s[3] for s in strides):
        tiling = 2
    else:
        tiling = 0
    return [s[:4] for s in strides], flat, tiling


def _elementwise_grid(n, hw, c, tiling):
    if tiling == 1:
        return lambda meta: (n * triton.cdiv(hw, meta["BLOCK_P"]), triton.cdiv(c, meta["BLOCK_C"]))
    return lambda meta: (triton.cdiv(n * hw, meta["BLOCK_P"]), triton.cdiv(c, meta["BLOCK_C"]))


# Rows per chunk of the reductions: a multiple of every BLOCK_P in _reduce_configs.
_MIN_CHUNK = 32 if interpret_mode() else 256
_MAX_CHUNK = 32 if interpret_mode() else 4096
_TARGET_PROGRAMS = 16 * 132  # several resident programs on each of an H100's SMs


def _chunking(n, hw, c, tiling):
    """(CHUNK, tiles per segment, number of tiles T, segment length) of the
    reductions. A segment is one image (TILING 1) or all N*H*W rows; it is cut into
    tiles of CHUNK rows: the largest power of two that still gives enough programs
    to fill the GPU."""
    seg_len, n_seg = (hw, n) if tiling == 1 else (n * hw, 1)
    chunk = _MAX_CHUNK
    cap = max(_MIN_CHUNK, triton.next_power_of_2(seg_len))
    chunk = min(chunk, cap)
    c_blocks = triton.cdiv(c, 64)
    while chunk > _MIN_CHUNK and n_seg * triton.cdiv(seg_len, chunk) * c_blocks < _TARGET_PROGRAMS:
        chunk //= 2
    tiles_per_seg = triton.cdiv(seg_len, chunk)
    return chunk, tiles_per_seg, n_seg * tiles_per_seg, seg_len


def _tile_counts(chunk, tiles_per_seg, n_seg, seg_len, device, dtype):
    j = torch.arange(tiles_per_seg, device=device, dtype=torch.int64)
    per_seg = torch.clamp(seg_len - j * chunk, max=chunk).to(dtype)
    return per_seg.repeat(n_seg)


def _channel_vec(t, ct):
    return t.to(ct).contiguous()


# ----------------------------------------------------------------------------- launchers

def channel_stats(y):
    """Per-channel (mean, biased variance) of an (N, C, H, W) tensor, in y's compute
    dtype (fp32 for fp16/bf16/fp32 inputs, fp64 for fp64). Empty y gives NaN like
    torch.var_mean. Deterministic: chunk partials combined by Chan's formula."""
    # Imported here so that the BN kernels do not depend on the convolution
    # families being importable.
    from fastcnn.triton_kernels.conv2d import combine_tile_stats

    n, c, h, w = y.shape
    ct = compute_dtype(y.dtype)
    if y.numel() == 0:
        nan = torch.full((c,), float("nan"), dtype=ct, device=y.device)
        return nan, nan.clone()
    hw = h * w
    (ys,), flat, tiling = _geometry(y, [y])
    chunk, tps, tiles, seg_len = _chunking(n, hw, c, tiling)
    shift = y[0, :, 0, 0].to(ct).contiguous()
    psum = torch.empty((tiles, c), dtype=ct, device=y.device)
    pm2 = torch.empty((tiles, c), dtype=ct, device=y.device)
    grid = lambda meta: (tiles, triton.cdiv(c, meta["BLOCK_C"]))  # noqa: E731
    _stats_kernel[grid](y, shift, psum, pm2, c, hw, w, n * hw, chunk, tps, *ys,
                        TILING=tiling, FLAT=flat)
    count = _tile_counts(chunk, tps, n if tiling == 1 else 1, seg_len, y.device, ct)
    mean, var = combine_tile_stats(psum, pm2, count)
    return shift + mean, var


def bn_act_forward(y, mean, invstd, gamma, beta, residual, activation):
    """act((y - mean) * invstd * gamma + beta + residual) per channel of (N, C, H, W)
    y; out has y's dtype and layout."""
    n, c, h, w = y.shape
    out = empty_nchw(y, y.shape, memory_format_of(y))
    if out.numel() == 0:
        return out
    ct = compute_dtype(y.dtype)
    has_res = residual is not None
    res = residual if has_res else y
    (ys, rs, os_), flat, tiling = _geometry(y, [y, res, out])
    _bn_act_fwd_kernel[_elementwise_grid(n, h * w, c, tiling)](
        y, res, out,
        _channel_vec(mean, ct), _channel_vec(invstd, ct), _channel_vec(gamma, ct), _channel_vec(beta, ct),
        c, h * w, w, n * h * w, *ys, *rs, *os_,
        HAS_RES=has_res, ACT=ACTIVATIONS[activation], TILING=tiling, FLAT=flat)
    return out


def bn_act_backward(grad_out, y, mean, invstd, gamma, beta, residual, activation):
    """Gradients (dy, dgamma, dbeta, dresidual or None) of bn_act_forward in training
    mode (mean and invstd are y's batch statistics): one reduction pass for
    sum(dz) and sum(dz * yhat), one elementwise pass for dy and dresidual."""
    n, c, h, w = y.shape
    hw = h * w
    ct = compute_dtype(y.dtype)
    has_res = residual is not None
    fmt = memory_format_of(y)
    dy = empty_nchw(y, y.shape, fmt)
    dres = empty_nchw(y, y.shape, fmt, dtype=residual.dtype) if has_res else None
    if y.numel() == 0:
        return dy, gamma.new_zeros(gamma.shape), beta.new_zeros(beta.shape), dres
    act = ACTIVATIONS[activation]
    res = residual if has_res else y
    mean_c, invstd_c = _channel_vec(mean, ct), _channel_vec(invstd, ct)
    gamma_c, beta_c = _channel_vec(gamma, ct), _channel_vec(beta, ct)
    (gs, ys, rs, ds, es), flat, tiling = _geometry(
        y, [grad_out, y, res, dy, dres if has_res else dy])

    chunk, tps, tiles, _ = _chunking(n, hw, c, tiling)
    pdbeta = torch.empty((tiles, c), dtype=ct, device=y.device)
    pdgamma = torch.empty((tiles, c), dtype=ct, device=y.device)
    grid = lambda meta: (tiles, triton.cdiv(c, meta["BLOCK_C"]))  # noqa: E731
    _bn_act_bwd_reduce_kernel[grid](
        grad_out, y, res, mean_c, invstd_c, gamma_c, beta_c, pdbeta, pdgamma,
        c, hw, w, n * hw, chunk, tps, *gs, *ys, *rs,
        HAS_RES=has_res, ACT=act, TILING=tiling, FLAT=flat)
    dbeta = pdbeta.sum(0)
    dgamma = pdgamma.sum(0)

    count = n * hw
    _bn_act_bwd_elementwise_kernel[_elementwise_grid(n, hw, c, tiling)](
        grad_out, y, res, dy, dres if has_res else dy,
        mean_c, invstd_c, gamma_c, beta_c, dbeta / count, dgamma / count,
        c, hw, w, count, *gs, *ys, *rs, *ds, *es,
        HAS_RES=has_res, ACT=act, TILING=tiling, FLAT=flat)
    return dy, dgamma.to(gamma.dtype), dbeta.to(beta.dtype), dres
