"""LayerNorm over the last dimension, with an optional fused residual add: Triton
kernels and PyTorch references.

Semantics (``torch.nn.functional.layer_norm`` over the trailing N elements, after
an optional residual add as the pre-norm ViT block does it)::

    h    = x + residual            (rounded to x's dtype, returned as ``sum``)
    xhat = (h - mean(h)) * rstd,   rstd = 1 / sqrt(var(h) + eps)   (biased var)
    y    = xhat * weight + bias

Backward, with g = dy * weight (dy without a weight)::

    dh      = rstd * (g - mean(g) - xhat * mean(g * xhat)) + d(sum)
    dweight = sum_rows(dy * xhat),  dbias = sum_rows(dy)
    dx = dresidual = dh

Kernel design
-------------
The input is seen as (B, L, N) rows addressed through their own strides (row r is
(b, l) = divmod(r, L)), so (batch, tokens, features) views such as a sliced or
transposed token axis need no copy; outputs are contiguous (M, N), M = B * L.
A program owns BLOCK_M rows. When N fits one BLOCK_N = next_power_of_2(N) tile
(N <= MAX_BLOCK_N, ``SINGLE``), a row lives in registers: one read of x (and of the
residual), two-pass statistics in fp32 (fp64 for fp64) on the registers, one write
of y (and of the sum). Beyond that the kernel loops over BLOCK_N-column chunks and
re-reads the row three times (sum, squared deviations, normalize).

The backward gives each program a chunk of rows (the launcher picks the chunk, so
the number of programs P is known before launch). dx is written per row; dweight
and dbias are summed per program into (P, N) partial buffers (in registers in the
single-tile case; by read-modify-write of the program's own buffer row otherwise),
then summed by torch in a fixed order: deterministic, no atomics.

All offsets are 64-bit. Outputs are rounded once when stored.
"""
import functools

import torch
import triton
import triton.language as tl

from fastcnn.triton_kernels._common import interpret_mode
from fastcnn.triton_kernels.reference import compute_dtype

# Widest row held in registers; longer rows are processed in chunks of CHUNK_N.
MAX_BLOCK_N = 8192
CHUNK_N = 4096


# ----------------------------------------------------------------------------- references

def layer_norm_reference(x, weight=None, bias=None, eps=1e-5, residual=None):
    """(y, sum, mean, rstd) over the last dim of x, computed in fp32 (fp64 for fp64).
    sum = x + residual in x's dtype (None without a residual); mean, rstd: x.shape[:-1]."""
    h = x if residual is None else x + residual
    ct = compute_dtype(x.dtype)
    hf = h.to(ct)
    var, mean = torch.var_mean(hf, dim=-1, unbiased=False)
    rstd = torch.rsqrt(var + eps)
    y = (hf - mean[..., None]) * rstd[..., None]
    if weight is not None:
        y = y * weight.to(ct)
    if bias is not None:
        y = y + bias.to(ct)
    return y.to(x.dtype), (None if residual is None else h), mean, rstd


def layer_norm_backward_reference(dy, h, weight, mean, rstd, dsum=None):
    """(dh, dweight, dbias) in fp32 (fp64 for fp64); h is the normalized input (x or
    x + residual) and dsum the gradient of the returned sum (added to dh)."""
    ct = mean.dtype
    dyf = dy.to(ct)
    xhat = (h.to(ct) - mean[..., None]) * rstd[..., None]
    g = dyf if weight is None else dyf * weight.to(ct)
    c1 = (g * xhat).mean(-1, keepdim=True)
    c2 = g.mean(-1, keepdim=True)
    dh = (g - c2 - xhat * c1) * rstd[..., None]
    if dsum is not None:
        dh = dh + dsum.to(ct)
    rows = tuple(range(dy.dim() - 1))
    return dh, (dyf * xhat).sum(rows), dyf.sum(rows)


# ----------------------------------------------------------------------------- kernels

@triton.jit
def _row_offsets(rows, L, sB, sL):
    """[BLOCK_M, 1] int64 offsets of rows r = b * L + l of a (B, L, N) tensor."""
    b = rows // L
    return (b * sB + (rows - b * L) * sL)[:, None]


@triton.jit
def _load_h(x_ptr, res_ptr, sum_ptr, x_off, r_off, o_off, mask, HAS_RES: tl.constexpr, STORE_SUM: tl.constexpr):
    """The tile of h = x (+ residual, rounded to the sum's dtype as torch's add
    rounds it, and stored when STORE_SUM), in its storage dtype."""
    h = tl.load(x_ptr + x_off, mask=mask, other=0.0)
    if HAS_RES:
        h = h + tl.load(res_ptr + r_off, mask=mask, other=0.0)
        if STORE_SUM:
            tl.store(sum_ptr + o_off, h.to(sum_ptr.dtype.element_ty), mask=mask)
    return h


@triton.jit
def _store_affine(xhat, w_ptr, b_ptr, y_ptr, cols, cmask, o_off, mask, HAS_W: tl.constexpr, HAS_B: tl.constexpr):
    """y = xhat * weight + bias on one tile, stored in y's dtype."""
    if HAS_W:
        xhat = xhat * tl.load(w_ptr + cols, mask=cmask, other=0.0).to(xhat.dtype)[None, :]
    if HAS_B:
        xhat = xhat + tl.load(b_ptr + cols, mask=cmask, other=0.0).to(xhat.dtype)[None, :]
    tl.store(y_ptr + o_off, xhat.to(y_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _layer_norm_fwd_kernel(
    x_ptr,     # (B, L, N) any strides
    res_ptr,   # (B, L, N) any strides, x's dtype; x_ptr when HAS_RES is false
    w_ptr,     # (N,) contiguous, any float dtype; x_ptr when HAS_W is false
    b_ptr,     # (N,) contiguous, any float dtype; x_ptr when HAS_B is false
    y_ptr,     # (M, N) contiguous, x's dtype
    sum_ptr,   # (M, N) contiguous, x's dtype: x + residual; y_ptr when HAS_RES is false
    mean_ptr,  # (M,) stats dtype (fp32, fp64 for fp64)
    rstd_ptr,  # (M,) stats dtype
    M, N, L, eps,
    x_sB, x_sL, x_sN,
    r_sB, r_sL, r_sN,
    HAS_RES: tl.constexpr, HAS_W: tl.constexpr, HAS_B: tl.constexpr,
    SINGLE: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):
    ct = mean_ptr.dtype.element_ty
    rows = tl.program_id(0).to(tl.int64) * BLOCK_M + tl.arange(0, BLOCK_M).to(tl.int64)
    rmask = rows < M
    x_row = _row_offsets(rows, L, x_sB, x_sL)
    r_row = _row_offsets(rows, L, r_sB, r_sL)
    o_row = (rows * N)[:, None]
    if SINGLE:
        cols = tl.arange(0, BLOCK_N).to(tl.int64)
        cmask = cols < N
        mask = rmask[:, None] & cmask[None, :]
        h = _load_h(x_ptr, res_ptr, sum_ptr, x_row + (cols * x_sN)[None, :], r_row + (cols * r_sN)[None, :],
                    o_row + cols[None, :], mask, HAS_RES, True).to(ct)
        mean = tl.sum(h, axis=1) / N
        d = tl.where(mask, h - mean[:, None], 0.0)
        rstd = 1.0 / tl.sqrt(tl.sum(d * d, axis=1) / N + eps)
        _store_affine(d * rstd[:, None], w_ptr, b_ptr, y_ptr, cols, cmask, o_row + cols[None, :], mask, HAS_W, HAS_B)
    else:
        # Row longer than a register tile: three passes over BLOCK_N-column chunks
        # (the sum is written in the first; later passes recompute it from x and
        # residual rather than read back what other threads wrote).
        acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=ct)
        for c0 in range(0, N, BLOCK_N):
            cols = c0 + tl.arange(0, BLOCK_N).to(tl.int64)
            mask = rmask[:, None] & (cols < N)[None, :]
            acc += _load_h(x_ptr, res_ptr, sum_ptr, x_row + (cols * x_sN)[None, :], r_row + (cols * r_sN)[None, :],
                           o_row + cols[None, :], mask, HAS_RES, True).to(ct)
        mean = tl.sum(acc, axis=1) / N
        acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=ct)
        for c0 in range(0, N, BLOCK_N):
            cols = c0 + tl.arange(0, BLOCK_N).to(tl.int64)
            mask = rmask[:, None] & (cols < N)[None, :]
            h = _load_h(x_ptr, res_ptr, sum_ptr, x_row + (cols * x_sN)[None, :], r_row + (cols * r_sN)[None, :],
                        o_row + cols[None, :], mask, HAS_RES, False).to(ct)
            d = tl.where(mask, h - mean[:, None], 0.0)
            acc += d * d
        rstd = 1.0 / tl.sqrt(tl.sum(acc, axis=1) / N + eps)
        for c0 in range(0, N, BLOCK_N):
            cols = c0 + tl.arange(0, BLOCK_N).to(tl.int64)
            cmask = cols < N
            mask = rmask[:, None] & cmask[None, :]
            h = _load_h(x_ptr, res_ptr, sum_ptr, x_row + (cols * x_sN)[None, :], r_row + (cols * r_sN)[None, :],
                        o_row + cols[None, :], mask, HAS_RES, False).to(ct)
            _store_affine((h - mean[:, None]) * rstd[:, None], w_ptr, b_ptr, y_ptr, cols, cmask,
                          o_row + cols[None, :], mask, HAS_W, HAS_B)
    tl.store(mean_ptr + rows, mean, mask=rmask)
    tl.store(rstd_ptr + rows, rstd, mask=rmask)


@triton.jit
def _xhat_g(dy_ptr, h_ptr, w_ptr, dy_off, h_off, cols, cmask, mask, mean, rstd, HAS_W: tl.constexpr):
    """(dy, xhat, g = dy * weight) on one tile in the compute dtype; zero off the mask."""
    ct = mean.dtype
    dy = tl.load(dy_ptr + dy_off, mask=mask, other=0.0).to(ct)
    h = tl.load(h_ptr + h_off, mask=mask, other=0.0).to(ct)
    xhat = tl.where(mask, (h - mean[:, None]) * rstd[:, None], 0.0)
    g = dy
    if HAS_W:
        g = dy * tl.load(w_ptr + cols, mask=cmask, other=0.0).to(ct)[None, :]
    return dy, xhat, g


@triton.jit
def _layer_norm_bwd_kernel(
    dy_ptr,    # (B, L, N) any strides (stride 0 allowed): grad of y
    h_ptr,     # (B, L, N) any strides: the normalized input (x, or the saved x + residual)
    ds_ptr,    # (B, L, N) any strides (stride 0 allowed): grad of the sum; dy_ptr when HAS_DSUM is false
    w_ptr,     # (N,) contiguous, any float dtype; dy_ptr when HAS_W is false
    mean_ptr,  # (M,) stats dtype
    rstd_ptr,  # (M,) stats dtype
    dx_ptr,    # (M, N) contiguous, h's dtype
    pdw_ptr,   # (P, N) stats dtype: per-program sum of dy * xhat (zeroed unless SINGLE); unused unless WANT_DW
    pdb_ptr,   # (P, N) stats dtype: per-program sum of dy (zeroed unless SINGLE); unused unless WANT_DB
    M, N, L, ROWS_PER_PROG,
    dy_sB, dy_sL, dy_sN,
    h_sB, h_sL, h_sN,
    ds_sB, ds_sL, ds_sN,
    HAS_W: tl.constexpr, HAS_DSUM: tl.constexpr, WANT_DW: tl.constexpr, WANT_DB: tl.constexpr,
    SINGLE: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):
    ct = mean_ptr.dtype.element_ty
    pid = tl.program_id(0).to(tl.int64)
    start = pid * ROWS_PER_PROG
    end = tl.minimum(start + ROWS_PER_PROG, M)
    if SINGLE:
        cols = tl.arange(0, BLOCK_N).to(tl.int64)
        cmask = cols < N
        acc_dw = tl.zeros([BLOCK_M, BLOCK_N], dtype=ct)
        acc_db = tl.zeros([BLOCK_M, BLOCK_N], dtype=ct)
        for r0 in range(start, end, BLOCK_M):
            rows = r0 + tl.arange(0, BLOCK_M).to(tl.int64)
            rmask = rows < end
            mask = rmask[:, None] & cmask[None, :]
            mean = tl.load(mean_ptr + rows, mask=rmask, other=0.0)
            rstd = tl.load(rstd_ptr + rows, mask=rmask, other=0.0)
            dy, xhat, g = _xhat_g(dy_ptr, h_ptr, w_ptr, _row_offsets(rows, L, dy_sB, dy_sL) + (cols * dy_sN)[None, :],
                                  _row_offsets(rows, L, h_sB, h_sL) + (cols * h_sN)[None, :],
                                  cols, cmask, mask, mean, rstd, HAS_W)
            c1 = tl.sum(g * xhat, axis=1) / N
            c2 = tl.sum(g, axis=1) / N
            dx = (g - c2[:, None] - xhat * c1[:, None]) * rstd[:, None]
            if HAS_DSUM:
                ds_off = _row_offsets(rows, L, ds_sB, ds_sL) + (cols * ds_sN)[None, :]
                dx += tl.load(ds_ptr + ds_off, mask=mask, other=0.0).to(ct)
            tl.store(dx_ptr + (rows * N)[:, None] + cols[None, :], dx.to(dx_ptr.dtype.element_ty), mask=mask)
            acc_dw += dy * xhat
            acc_db += dy
        if WANT_DW:
            tl.store(pdw_ptr + pid * N + cols, tl.sum(acc_dw, axis=0), mask=cmask)
        if WANT_DB:
            tl.store(pdb_ptr + pid * N + cols, tl.sum(acc_db, axis=0), mask=cmask)
    else:
        for r0 in range(start, end, BLOCK_M):
            rows = r0 + tl.arange(0, BLOCK_M).to(tl.int64)
            rmask = rows < end
            mean = tl.load(mean_ptr + rows, mask=rmask, other=0.0)
            rstd = tl.load(rstd_ptr + rows, mask=rmask, other=0.0)
            dy_row = _row_offsets(rows, L, dy_sB, dy_sL)
            h_row = _row_offsets(rows, L, h_sB, h_sL)
            acc1 = tl.zeros([BLOCK_M, BLOCK_N], dtype=ct)
            acc2 = tl.zeros([BLOCK_M, BLOCK_N], dtype=ct)
            for c0 in range(0, N, BLOCK_N):
                cols = c0 + tl.arange(0, BLOCK_N).to(tl.int64)
                cmask = cols < N
                mask = rmask[:, None] & cmask[None, :]
                dy, xhat, g = _xhat_g(dy_ptr, h_ptr, w_ptr, dy_row + (cols * dy_sN)[None, :],
                                      h_row + (cols * h_sN)[None, :], cols, cmask, mask, mean, rstd, HAS_W)
                acc1 += g * xhat
                acc2 += g
            c1 = tl.sum(acc1, axis=1) / N
            c2 = tl.sum(acc2, axis=1) / N
            for c0 in range(0, N, BLOCK_N):
                cols = c0 + tl.arange(0, BLOCK_N).to(tl.int64)
                cmask = cols < N
                mask = rmask[:, None] & cmask[None, :]
                dy, xhat, g = _xhat_g(dy_ptr, h_ptr, w_ptr, dy_row + (cols * dy_sN)[None, :],
                                      h_row + (cols * h_sN)[None, :], cols, cmask, mask, mean, rstd, HAS_W)
                dx = (g - c2[:, None] - xhat * c1[:, None]) * rstd[:, None]
                if HAS_DSUM:
                    ds_off = _row_offsets(rows, L, ds_sB, ds_sL) + (cols * ds_sN)[None, :]
                    dx += tl.load(ds_ptr + ds_off, mask=mask, other=0.0).to(ct)
                tl.store(dx_ptr + (rows * N)[:, None] + cols[None, :], dx.to(dx_ptr.dtype.element_ty), mask=mask)
                # This program's own partial row: read-modify-write, no other program touches it.
                if WANT_DW:
                    p = pdw_ptr + pid * N + cols
                    tl.store(p, tl.load(p, mask=cmask, other=0.0) + tl.sum(dy * xhat, axis=0), mask=cmask)
                if WANT_DB:
                    p = pdb_ptr + pid * N + cols
                    tl.store(p, tl.load(p, mask=cmask, other=0.0) + tl.sum(dy, axis=0), mask=cmask)
            # The next row tile re-reads the partial rows: make the stores of every
            # thread of the program visible first.
            tl.debug_barrier()


# ----------------------------------------------------------------------------- launchers

def as_rows(t: torch.Tensor, n: int) -> torch.Tensor:
    """A 3-d (B, L, N) view of t (..., N) (a copy only when the leading dims do not
    collapse into two, or the trailing ones into one)."""
    t = t.reshape(*t.shape[:-1], n) if t.dim() else t.reshape(1)
    if t.dim() == 1:
        return t.view(1, 1, n)
    if t.dim() == 2:
        return t.unsqueeze(0)
    return t.flatten(0, -3) if t.dim() > 3 else t


def _tiles(n, block_n=None):
    """(SINGLE, BLOCK_M, BLOCK_N, num_warps) for rows of n elements; ``block_n``
    forces the column tile (tests use it to run the chunked path on small rows)."""
    block_n = block_n or min(triton.next_power_of_2(n), MAX_BLOCK_N)
    single = block_n >= n
    if not single and block_n == MAX_BLOCK_N:
        block_n = CHUNK_N
    if interpret_mode():
        block_m = 2  # several row tiles per program in the tests' tiny shapes
    else:
        block_m = max(1, min(16, 4096 // block_n))
    num_warps = min(max(block_m * block_n // 512, 1), 8)
    return single, block_m, block_n, num_warps


def layer_norm_forward(x, weight=None, bias=None, eps=1e-5, residual=None, block_n=None):
    """(y, sum, mean, rstd) over the last dim of x (..., N), any strides. y and sum:
    x's shape and dtype, contiguous (sum: empty (0,) without a residual, which must
    have x's shape and dtype); mean, rstd: x.shape[:-1] in fp32 (fp64 for fp64).
    weight and bias: (N,), any float dtype."""
    n = x.shape[-1]
    sdt = compute_dtype(x.dtype)
    y = torch.empty(x.shape, dtype=x.dtype, device=x.device)
    s = torch.empty_like(y) if residual is not None else x.new_empty((0,))
    mean = torch.empty(x.shape[:-1], dtype=sdt, device=x.device)
    rstd = torch.empty_like(mean)
    if x.numel() == 0:
        return y, s, mean, rstd
    x3 = as_rows(x, n)
    r3 = as_rows(residual, n) if residual is not None else x3
    w = weight.reshape(n).contiguous() if weight is not None else x3
    b = bias.reshape(n).contiguous() if bias is not None else x3
    single, block_m, block_n, warps = _tiles(n, block_n)
    rows = x3.shape[0] * x3.shape[1]
    _layer_norm_fwd_kernel[(triton.cdiv(rows, block_m),)](
        x3, r3, w, b, y, s if residual is not None else y, mean, rstd,
        rows, n, x3.shape[1], eps, *x3.stride(), *r3.stride(),
        HAS_RES=residual is not None, HAS_W=weight is not None, HAS_B=bias is not None,
        SINGLE=single, BLOCK_M=block_m, BLOCK_N=block_n, num_warps=warps)
    return y, s, mean, rstd


@functools.lru_cache(maxsize=None)
def _sm_count(index):
    return torch.cuda.get_device_properties(index).multi_processor_count


def reduction_programs(rows, block_m, device, column_tiles=1):
    """(P, rows per program) for a backward whose programs each sum a chunk of whole
    row tiles: about 4 programs per SM on the GPU (a few under the interpreter, so
    the tests see several programs with several row tiles each)."""
    tiles = triton.cdiv(rows, block_m)
    cap = 4 * _sm_count(device.index if device.index is not None else torch.cuda.current_device()) \
        if device.type == "cuda" else 3
    cap = max(1, cap // column_tiles)  # column tiles multiply the programs
    per_prog = triton.cdiv(tiles, min(tiles, cap)) * block_m
    return triton.cdiv(rows, per_prog), per_prog


def layer_norm_backward(dy, h, weight, mean, rstd, dsum=None, weight_grad=True, bias_grad=True, block_n=None):
    """(dh, dweight, dbias): dh in h's dtype and shape (contiguous), plus dsum when
    given; dweight and dbias (N,) in mean's dtype (fp32, fp64 for fp64), each an
    empty (0,) when not wanted (no weight or not ``weight_grad``; not ``bias_grad``).
    h is what was normalized (x, or x + residual); mean, rstd from the forward."""
    n = h.shape[-1]
    sdt = mean.dtype
    dx = torch.empty(h.shape, dtype=h.dtype, device=h.device)
    want_dw = weight is not None and weight_grad
    rows = h.numel() // n if n else 0
    single, block_m, block_n, warps = _tiles(n, block_n)
    programs, per_prog = reduction_programs(rows, block_m, h.device) if rows else (0, 1)
    alloc = torch.empty if single else torch.zeros
    pdw = alloc((programs, n), dtype=sdt, device=h.device) if want_dw else mean.new_empty((0,))
    pdb = alloc((programs, n), dtype=sdt, device=h.device) if bias_grad else mean.new_empty((0,))
    if rows:
        dy3, h3 = as_rows(dy, n), as_rows(h, n)
        ds3 = as_rows(dsum, n) if dsum is not None else dy3
        w = weight.reshape(n).contiguous() if weight is not None else dy3
        _layer_norm_bwd_kernel[(programs,)](
            dy3, h3, ds3, w, mean, rstd, dx, pdw if want_dw else mean, pdb if bias_grad else mean,
            rows, n, h3.shape[1], per_prog, *dy3.stride(), *h3.stride(), *ds3.stride(),
            HAS_W=weight is not None, HAS_DSUM=dsum is not None, WANT_DW=want_dw, WANT_DB=bias_grad,
            SINGLE=single, BLOCK_M=block_m, BLOCK_N=block_n, num_warps=warps)
    dw = pdw.sum(0) if want_dw else mean.new_empty((0,))
    db = pdb.sum(0) if bias_grad else mean.new_empty((0,))
    return dx, dw, db
