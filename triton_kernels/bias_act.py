"""Bias + activation over the last dimension (the epilogue of a Linear layer computed
by cuBLAS without its bias): Triton kernels and PyTorch references.

    y  = act(x + bias)                      x (..., N), bias (N,) or None
    dx = dy * act'(x + bias)                (recomputed from x and bias: nothing saved)
    dbias = sum_rows(dx)

Activations: ``ACTIVATIONS`` of _common.py (none, relu, relu6, silu, exact-erf gelu)
plus ``gelu_tanh``, the tanh approximation (``F.gelu(approximate="tanh")``).

Kernel design
-------------
x is seen as (B, L, N) rows addressed through their own strides (as in
layernorm.py); y and dx are contiguous (M, N). The forward is one elementwise pass
over [BLOCK_M, BLOCK_N] tiles. The backward gives each program a chunk of rows (the
launcher picks it) and a column tile: it writes dx and sums it over its rows in
registers into a (P, N) partial buffer, which torch sums in a fixed order:
deterministic, no atomics. Compute is fp32 (fp64 for fp64); outputs are rounded
once when stored; offsets are 64-bit.
"""
import torch
import torch.nn.functional as F
import triton
import triton.language as tl

from fastcnn.triton_kernels import reference
from fastcnn.triton_kernels._common import ACTIVATIONS, activation_grad, apply_activation, interpret_mode
from fastcnn.triton_kernels.layernorm import as_rows, reduction_programs

# _common's activation codes plus the tanh-approximated GELU, handled here.
BIAS_ACTIVATIONS = dict(ACTIVATIONS, gelu_tanh=5)

_SQRT_2_OVER_PI = 0.7978845608028654
_GELU_TANH_C = 0.044715
# The same constants for the kernels (globals read inside @triton.jit must be constexpr).
_K0 = tl.constexpr(_SQRT_2_OVER_PI)
_K1 = tl.constexpr(_GELU_TANH_C)


# ----------------------------------------------------------------------------- references

def _torch_activation(z, activation):
    if activation == "gelu_tanh":
        return F.gelu(z, approximate="tanh")
    return reference.ACTIVATION_FNS[activation](z)


def bias_act_reference(x, bias=None, activation="gelu"):
    """act(x + bias) computed in fp32 (fp64 for fp64), returned in x's dtype."""
    z = x.to(reference.compute_dtype(x.dtype))
    if bias is not None:
        z = z + bias.to(z.dtype)
    return _torch_activation(z, activation).to(x.dtype)


def activation_grad_reference(z, activation):
    """d act(z) / dz, elementwise (z in the compute dtype): the conv epilogue's
    activations from reference.activation_grad, plus gelu_tanh."""
    if activation != "gelu_tanh":
        return reference.activation_grad(z, activation)
    t = torch.tanh(_SQRT_2_OVER_PI * (z + _GELU_TANH_C * z ** 3))
    return 0.5 * (1 + t) + 0.5 * z * (1 - t * t) * _SQRT_2_OVER_PI * (1 + 3 * _GELU_TANH_C * z * z)


def bias_act_backward_reference(dy, x, bias=None, activation="gelu"):
    """(dx, dbias) in the compute dtype; dbias is None without a bias."""
    ct = reference.compute_dtype(x.dtype)
    z = x.to(ct)
    if bias is not None:
        z = z + bias.to(ct)
    dx = dy.to(ct) * activation_grad_reference(z, activation)
    return dx, (dx.sum(tuple(range(dx.dim() - 1))) if bias is not None else None)


# ----------------------------------------------------------------------------- kernels

@triton.jit
def _up(v, FP64: tl.constexpr):
    """v in the compute dtype: fp64 for fp64 tensors, else fp32."""
    if FP64:
        return v.to(tl.float64)
    else:
        return v.to(tl.float32)


@triton.jit
def _gelu_tanh_parts(z):
    """(s, s * (1 - s)) with s = sigmoid(2u) = (1 + tanh(u)) / 2, u = K0 (z + K1 z^3):
    gelu_tanh(z) = z s and its derivative s + 2 z s (1 - s) du/dz. Both come from
    e = exp(-2|u|) <= 1, so neither 1 + tanh nor 1 - tanh^2 cancels where tanh
    saturates (which cost fp32 gradients 2.4x PyTorch's error), and nothing overflows."""
    u = _K0 * (z + _K1 * z * z * z)
    e = tl.exp(-2.0 * tl.abs(u))
    r = 1.0 / (1.0 + e)
    return tl.where(u >= 0, r, e * r), e * r * r


@triton.jit
def _act(z, ACT: tl.constexpr):
    if ACT == 5:
        s, _ = _gelu_tanh_parts(z)
        return z * s
    return apply_activation(z, ACT)


@triton.jit
def _act_grad(z, ACT: tl.constexpr):
    if ACT == 5:
        s, ds = _gelu_tanh_parts(z)
        # ds underflows to 0 before z^2 overflows: keep 0 * inf out of the sum
        slope = tl.where(ds > 0, 2.0 * z * ds * _K0 * (1.0 + 3.0 * _K1 * z * z), 0.0)
        return s + slope
    return activation_grad(z, ACT).to(z.dtype)


@triton.jit
def _tile(rows, cols, M, N, L, sB, sL, sN):
    """(offsets, mask) of a [BLOCK_M, BLOCK_N] tile of a (B, L, N) tensor."""
    b = rows // L
    off = (b * sB + (rows - b * L) * sL)[:, None] + (cols * sN)[None, :]
    return off, (rows < M)[:, None] & (cols < N)[None, :]


@triton.jit
def _bias_act_fwd_kernel(
    x_ptr,  # (B, L, N) any strides
    b_ptr,  # (N,) contiguous; x_ptr when HAS_BIAS is false
    y_ptr,  # (M, N) contiguous, x's dtype
    M, N, L,
    x_sB, x_sL, x_sN,
    HAS_BIAS: tl.constexpr, ACT: tl.constexpr, FP64: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):
    rows = tl.program_id(0).to(tl.int64) * BLOCK_M + tl.arange(0, BLOCK_M).to(tl.int64)
    cols = tl.program_id(1).to(tl.int64) * BLOCK_N + tl.arange(0, BLOCK_N).to(tl.int64)
    off, mask = _tile(rows, cols, M, N, L, x_sB, x_sL, x_sN)
    z = _up(tl.load(x_ptr + off, mask=mask, other=0.0), FP64)
    if HAS_BIAS:
        z += _up(tl.load(b_ptr + cols, mask=cols < N, other=0.0), FP64)[None, :]
    y = _act(z, ACT)
    tl.store(y_ptr + (rows * N)[:, None] + cols[None, :], y.to(y_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _bias_act_bwd_kernel(
    dy_ptr,   # (B, L, N) any strides (stride 0 allowed)
    x_ptr,    # (B, L, N) any strides
    b_ptr,    # (N,) contiguous; x_ptr when HAS_BIAS is false
    dx_ptr,   # (M, N) contiguous, x's dtype
    pdb_ptr,  # (P, N) compute dtype: per-program sum of dx over its rows; unused unless WANT_DB
    M, N, L, ROWS_PER_PROG,
    dy_sB, dy_sL, dy_sN,
    x_sB, x_sL, x_sN,
    HAS_BIAS: tl.constexpr, WANT_DB: tl.constexpr, ACT: tl.constexpr, FP64: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):
    pid = tl.program_id(0).to(tl.int64)
    cols = tl.program_id(1).to(tl.int64) * BLOCK_N + tl.arange(0, BLOCK_N).to(tl.int64)
    start = pid * ROWS_PER_PROG
    end = tl.minimum(start + ROWS_PER_PROG, M)
    bias = _up(tl.zeros([1, BLOCK_N], dtype=tl.float32), FP64)
    if HAS_BIAS:
        bias = _up(tl.load(b_ptr + cols, mask=cols < N, other=0.0), FP64)[None, :]
    acc = _up(tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32), FP64)
    for r0 in range(start, end, BLOCK_M):
        rows = r0 + tl.arange(0, BLOCK_M).to(tl.int64)
        x_off, mask = _tile(rows, cols, end, N, L, x_sB, x_sL, x_sN)
        dy_off, _ = _tile(rows, cols, end, N, L, dy_sB, dy_sL, dy_sN)
        z = _up(tl.load(x_ptr + x_off, mask=mask, other=0.0), FP64) + bias
        dx = _up(tl.load(dy_ptr + dy_off, mask=mask, other=0.0), FP64) * _act_grad(z, ACT)
        dx = tl.where(mask, dx, 0.0)
        tl.store(dx_ptr + (rows * N)[:, None] + cols[None, :], dx.to(dx_ptr.dtype.element_ty), mask=mask)
        acc += dx
    if WANT_DB:
        tl.store(pdb_ptr + pid * N + cols, tl.sum(acc, axis=0), mask=cols < N)


# ----------------------------------------------------------------------------- launchers

def _tiles(n):
    """(BLOCK_M, BLOCK_N, num_warps): 2-d tiles of about 4096 elements on the GPU."""
    if interpret_mode():
        return 4, 16, 1  # several row and column tiles in the tests' tiny shapes
    block_n = min(triton.next_power_of_2(n), 1024)
    block_m = max(1, 4096 // block_n)
    return block_m, block_n, 8 if block_m * block_n >= 4096 else 4


def bias_act_forward(x, bias=None, activation="gelu"):
    """act(x + bias): x (..., N) any strides, bias (N,) any float dtype or None; the
    result has x's shape and dtype, contiguous."""
    n = x.shape[-1]
    y = torch.empty(x.shape, dtype=x.dtype, device=x.device)
    if x.numel() == 0:
        return y
    x3 = as_rows(x, n)
    rows = x3.shape[0] * x3.shape[1]
    block_m, block_n, warps = _tiles(n)
    grid = (triton.cdiv(rows, block_m), triton.cdiv(n, block_n))
    _bias_act_fwd_kernel[grid](
        x3, bias.contiguous() if bias is not None else x3, y, rows, n, x3.shape[1], *x3.stride(),
        HAS_BIAS=bias is not None, ACT=BIAS_ACTIVATIONS[activation], FP64=x.dtype == torch.float64,
        BLOCK_M=block_m, BLOCK_N=block_n, num_warps=warps)
    return y


def bias_act_backward(dy, x, bias=None, activation="gelu", bias_grad=True):
    """(dx, dbias): dx in x's dtype and shape (contiguous); dbias (N,) in fp32 (fp64
    for fp64), or an empty (0,) without a bias or without ``bias_grad``."""
    n = x.shape[-1]
    ct = reference.compute_dtype(x.dtype)
    dx = torch.empty(x.shape, dtype=x.dtype, device=x.device)
    want_db = bias is not None and bias_grad
    rows = x.numel() // n if n else 0
    block_m, block_n, warps = _tiles(n)
    programs, per_prog = reduction_programs(rows, block_m, x.device, triton.cdiv(n, block_n)) if rows else (0, 1)
    pdb = torch.empty((programs, n), dtype=ct, device=x.device) if want_db else x.new_empty((0,), dtype=ct)
    if rows:
        dy3, x3 = as_rows(dy, n), as_rows(x, n)
        _bias_act_bwd_kernel[(programs, triton.cdiv(n, block_n))](
            dy3, x3, bias.contiguous() if bias is not None else x3, dx, pdb if want_db else dx,
            rows, n, x3.shape[1], per_prog, *dy3.stride(), *x3.stride(),
            HAS_BIAS=bias is not None, WANT_DB=want_db, ACT=BIAS_ACTIVATIONS[activation], FP64=x.dtype == torch.float64,
            BLOCK_M=block_m, BLOCK_N=block_n, num_warps=warps)
    return dx, (pdb.sum(0) if want_db else x.new_empty((0,), dtype=ct))
