"""Scaled dot-product attention (FlashAttention-2 style): Triton kernels and PyTorch
references.

Semantics (``torch.nn.functional.scaled_dot_product_attention``)::

    s   = q @ k^T * scale + mask          (scale defaults to 1/sqrt(D))
    s[i, j] = -inf where causal and j > i  (top-left aligned, as SDPA's is_causal)
    lse = logsumexp(s, -1)
    p   = softmax(s, -1) * keep / (1 - dropout_p)
    o   = p @ v

q is (B, H, Lq, D), k and v (B, H, Lk, D); ``mask`` is an additive float mask already
expanded to (B, H, Lq, Lk) (stride 0 along broadcast dims). A row whose scores are all
-inf has o = 0, lse = -inf and zero gradients, never NaN.

Kernel design (FlashAttention-2)
--------------------------------
Nothing Lq x Lk is ever stored. The forward gives each program BLOCK_M queries of one
(batch, head) and streams BLOCK_N keys at a time through an online softmax (running
max m, running sum l, accumulator rescaled by exp2(m_old - m_new)), accumulating in
fp32 (fp64 for fp64) with tl.dot on tensor cores; it stores o and lse = m + log(l).
Causal programs stop at their last query's key (the skipped blocks are fully hidden)
and mask the diagonal block; the additive mask is read tile by tile through its
strides, so a mask broadcast with stride 0 costs no copy. The backward recomputes p
from q, k and lse: a preprocess kernel computes delta = rowsum(do * o), a kernel per
BLOCK_N keys loops over the queries for dk and dv, and dq is either added with fp32
atomics from that kernel (fast, order dependent) or computed by a separate kernel per
BLOCK_M queries looping over the keys (bitwise reproducible). Dropout draws philox
numbers from (seed, flat index of (b, h, i, j)) in every kernel, so the backward and
dropout_keep_mask see exactly the forward's mask without storing it. Any head dim up
to 256 (BLOCK_D = next power of two, masked) and any sequence lengths (masked; keys
out of range score -inf). Batch and head offsets are int64; offsets inside one
(batch, head) slice are int32 (attention_reasons checks they fit), which keeps the
pointer tiles small in registers.
"""
import math

import torch
import triton
import triton.language as tl

from fastcnn.triton_kernels._common import autotune_configs, matmul_dot_precision
from fastcnn.triton_kernels.reference import compute_dtype

# ----------------------------------------------------------------------------- references


def default_scale(head_dim: int, scale=None) -> float:
    return 1.0 / math.sqrt(head_dim) if scale is None else float(scale)


def causal_mask(lq: int, lk: int, device=None) -> torch.Tensor:
    """SDPA's is_causal mask: key j visible to query i iff j <= i (top-left aligned)."""
    return torch.ones(lq, lk, dtype=torch.bool, device=device).tril(diagonal=0)


def attention_reference(q, k, v, mask=None, causal=False, scale=None, dropout_p=0.0, dropout_mask=None):
    """(o, lse) in plain PyTorch, computed in fp32 (fp64 for fp64); o in q's dtype,
    lse (B, H, Lq) in fp32 (fp64). Differentiable (also with respect to ``mask``).
    ``dropout_mask`` is the boolean keep-mask (B, H, Lq, Lk) used when dropout_p > 0."""
    ct = compute_dtype(q.dtype)
    qf, kf, vf = q.to(ct), k.to(ct), v.to(ct)
    s = (qf @ kf.transpose(-2, -1)) * default_scale(q.shape[-1], scale)
    if mask is not None:
        s = s + mask.to(ct)
    if causal:
        s = s.masked_fill(~causal_mask(q.shape[-2], k.shape[-2], q.device), float("-inf"))
    # Softmax is shift invariant, so the (detached) row max only guards exp; a row of
    # -inf shifts by 0 and sums to 0: p = 0, lse = -inf, gradients 0 instead of NaN.
    m = s.detach().amax(dim=-1, keepdim=True) if s.shape[-1] else s.new_zeros(s.shape[:-1] + (1,))
    m = torch.where(torch.isinf(m), torch.zeros_like(m), m)
    e = torch.exp(s - m)
    denom = e.sum(dim=-1, keepdim=True)
    lse = (m + torch.log(denom)).squeeze(-1)
    p = e / torch.where(denom == 0, torch.ones_like(denom), denom)
    if dropout_p > 0.0:
        keep_scale = 0.0 if dropout_p >= 1.0 else 1.0 / (1.0 - dropout_p)
        p = p * dropout_mask.to(ct) * keep_scale
    o = p @ vf
    return o.to(q.dtype), lse


def attention_backward_reference(do, q, k, v, mask=None, causal=False, scale=None, dropout_p=0.0,
                                 dropout_mask=None):
    """(dq, dk, dv) in the inputs' dtypes, by autograd through attention_reference."""
    with torch.enable_grad():
        qr, kr, vr = (t.detach().requires_grad_(True) for t in (q, k, v))
        o, _ = attention_reference(qr, kr, vr, mask.detach() if mask is not None else None, causal, scale,
                                   dropout_p, dropout_mask)
        dq, dk, dv = torch.autograd.grad(o, (qr, kr, vr), do.to(o.dtype), allow_unused=True)
    return tuple(g if g is not None else torch.zeros_like(t) for g, t in zip((dq, dk, dv), (q, k, v)))


def flops(B, H, Lq, Lk, D, causal, pass_="fwd"):
    """FLOPs of one call, FlashAttention's convention (benchmarks/benchmark_flash_attention.py
    of Dao-AILab/flash-attention): the forward's two matmuls, q k^T and p v, are
    2 * 2 * B*H*Lq*Lk*D, halved by a causal mask; the backward's five (s = q k^T
    recomputed, dp = do v^T, dv = p^T do, dq = ds k, dk = ds^T q) are 2.5x that, so
    ``pass_`` "fwd", "bwd", "fwd+bwd" is 1x, 2.5x, 3.5x. Softmax and dropout are not counted."""
    f = 4.0 * B * H * Lq * Lk * D / (2.0 if causal else 1.0)
    return f * {"fwd": 1.0, "bwd": 2.5, "fwd+bwd": 3.5}[pass_]


def traffic_bytes(B, H, Lq, Lk, D, elem_bytes, acc_bytes, pass_="fwd"):
    """DRAM bytes one call must move: each tensor the kernels read or write, once
    (elem_bytes: q's dtype; acc_bytes: lse and delta, fp32 or fp64). The forward reads
    q, k, v and writes o and lse; the backward's delta kernel reads o, do and writes
    delta, its dk/dv kernel reads q, k, v, do, lse, delta and writes dk, dv and dq.
    Re-reads that L2 does not absorb (the K/V tiles of each query block) come on top."""
    q, kv = Lq * D, Lk * D
    fwd = elem_bytes * (2 * q + 2 * kv) + acc_bytes * Lq              # q, k, v, o; lse
    bwd = elem_bytes * (4 * q + 4 * kv) + acc_bytes * 3 * Lq          # q, o, do, dq, k, v, dk, dv; lse, delta x2
    return B * H * {"fwd": fwd, "bwd": bwd, "fwd+bwd": fwd + bwd}[pass_]


MAX_HEAD_DIM = 256


def mask_dtypes(dtype: torch.dtype) -> tuple:
    """The additive-mask dtypes the kernels read for inputs of ``dtype``."""
    return (dtype, torch.float32)


def attention_reasons(q, k, v, mask, causal, dropout_p):
    """Why the Triton kernels cannot take this call (device and dtype are the op
    layer's checks); empty when they can."""
    reasons = []
    d = q.shape[-1]
    if k.shape[-1] != d or v.shape[-1] != d:
        reasons.append(f"head dims differ (q {d}, k {k.shape[-1]}, v {v.shape[-1]}); the kernels need one D")
    if d > MAX_HEAD_DIM:
        reasons.append(f"head_dim {d} > {MAX_HEAD_DIM}")
    if d == 0:
        reasons.append("head_dim 0")
    if mask is not None and mask.dtype not in mask_dtypes(q.dtype):
        reasons.append(f"mask dtype {mask.dtype} (the kernels take an additive mask in q's dtype or float32)")
    if not 0.0 <= dropout_p < 1.0:
        reasons.append(f"dropout_p {dropout_p} outside [0, 1)")
    # The kernels index inside one (batch, head) slice with int32 offsets.
    slices = [("q", q, 2, 3), ("k", k, 2, 3), ("v", v, 2, 3)] + ([("mask", mask, 2, 3)] if mask is not None else [])
    for name, t, a, b in slices:
        span = sum((t.shape[d] - 1) * abs(t.stride(d)) for d in (a, b) if t.shape[d] > 0)
        if span >= 2**31:
            reasons.append(f"{name}: offsets inside one (batch, head) slice exceed int32")
    # One grid axis holds (tile, slice) (_tile_and_slice); CUDA allows 2^31 - 1 blocks
    # there. 16 rows is the smallest tile.
    B, H, Lq, Lk = q.shape[0], q.shape[1], q.shape[2], k.shape[2]
    if triton.cdiv(max(Lq, Lk), 16) * B * H >= 2**31:
        reasons.append(f"{B * H} (batch, head) slices of {max(Lq, Lk)} rows need more than 2^31 - 1 programs")
    return reasons


# ----------------------------------------------------------------------------- kernels
#
# Scores are kept in log2 units (s * log2(e)) so the softmax uses exp2; the factors
# log2(e), ln(2) and 1/(1 - dropout_p) travel as runtime floats, which the interpreter
# keeps in float64 (a constexpr float would be rounded to fp32 and spoil fp64 tests).

LOG2E = 1.4426950408889634
LN2 = 0.6931471805599453


# fp32 inputs with an exact ("ieee") tl.dot, PyTorch's default, multiply on FMAs:
# the tensor-core tiles spill thousands of bytes there (`fastcnn compile-check`,
# sm_90, head_dim 64-128: 6-30 KB of stack), these small tiles do not.
_FMA_TILES = [(32, 32, 8, 2), (32, 32, 4, 2), (32, 16, 4, 2), (16, 32, 4, 2), (32, 16, 2, 2), (16, 16, 2, 2)]

_FORWARD_TILES = [
    (128, 64, 4, 3), (128, 64, 8, 3), (128, 128, 8, 3), (128, 32, 4, 4),
    (64, 64, 4, 3), (64, 32, 4, 4), (64, 128, 4, 2), (128, 64, 8, 2),
    # with an additive mask only BLOCK_N = 32 and 8 warps compile without
    # spills (ptxas for sm_90a, D = 64 and 128)
    (128, 32, 8, 2),
]
# dk/dv programs own BLOCK_N keys and loop over BLOCK_M queries (the dq kernel the
# other way round); FA2 favours a small inner block and a large outer one.
_BACKWARD_TILES = [
    (32, 64, 4, 3), (32, 128, 8, 3), (64, 64, 4, 3), (64, 128, 8, 3),
    (64, 64, 8, 2), (128, 64, 8, 2), (32, 32, 4, 4), (32, 64, 8, 3),
]
assert not set(_FMA_TILES) & set(_FORWARD_TILES + _BACKWARD_TILES), "a tensor-core tile is also an FMA tile"

# Not PREC: each TileClasses autotuner sees one precision per input dtype, and
# Triton adds the arguments' dtypes to the key itself.
_KEY = ["Lq", "Lk", "D", "CAUSAL", "HAS_MASK", "DROPOUT"]


def uses_fma_tiles(dtype: torch.dtype, prec: str) -> bool:
    """Whether a call multiplies on FMAs (fp32 with an exact dot) rather than tensor cores."""
    return dtype == torch.float32 and prec == "ieee"


class TileClasses:
    """One kernel autotuned twice: over the tensor-core tiles and over the FMA tiles.
    The launcher picks the class (``for_call``), so each autotuner tunes only tiles
    that suit the call, and FASTCNN_AUTOTUNE=0 keeps the first tile *of the right
    class*. An early_config_prune could not do that: it runs after that cut, and
    Triton 3.6's autotuner times even a single pruned configuration, once per shape."""

    def __init__(self, fn, mma_tiles, key=_KEY, **autotune_kwargs):
        self.fn = fn
        self.mma, self.fma = (triton.autotune(configs=_configs(tiles), key=key, **autotune_kwargs)(fn)
                              for tiles in (mma_tiles, _FMA_TILES))

    def for_call(self, dtype: torch.dtype, prec: str):
        return self.fma if uses_fma_tiles(dtype, prec) else self.mma


def _configs(tiles):
    gpu = [triton.Config({"BLOCK_M": bm, "BLOCK_N": bn}, num_warps=w, num_stages=st) for bm, bn, w, st in tiles]
    return autotune_configs(gpu, triton.Config({"BLOCK_M": 16, "BLOCK_N": 16}, num_warps=1))


def _autotuned(mma_tiles, **autotune_kwargs):
    """Decorator: a @triton.jit kernel -> its TileClasses."""
    return lambda fn: TileClasses(fn, mma_tiles, **autotune_kwargs)


@triton.jit
def _scores(s, i, j, msk_base, msk_sQ, msk_sK, Lq, Lk, qk_scale, mask_scale,
            HAS_MASK: tl.constexpr, CAUSAL: tl.constexpr, ACC: tl.constexpr):
    """Scores in log2 units from the raw q.k products ``s`` of a tile whose query
    index is ``i`` and key index ``j`` (broadcastable 2-d, either orientation), plus the
    mask tile read through its strides. -inf for keys out of range or hidden by the
    causal mask."""
    s = s * qk_scale
    valid = j < Lk
    if HAS_MASK:
        s += tl.load(msk_base + i * msk_sQ + j * msk_sK, mask=(i < Lq) & valid, other=0.0).to(ACC) * mask_scale
    if CAUSAL:
        valid = valid & (j <= i)
    return tl.where(valid, s, float("-inf"))


@triton.jit
def _dropout_keep(seed_ptr, dropout_p, bh, i, j, Lq, Lk):
    """Keep-mask of a tile (i, j broadcastable 2-d): philox number of the flat index
    ((b*H + h)*Lq + i)*Lk + j >= dropout_p. The seed is read from device memory, so
    a seed drawn on the device (torch.compile, CUDA graphs) never visits the host."""
    offset = (bh * Lq + i.to(tl.int64)) * Lk + j.to(tl.int64)
    return tl.rand(tl.load(seed_ptr), offset) >= dropout_p


@triton.jit
def _tile_and_slice(n_tiles):
    """(tile, b*H + h) of this program. Both share grid axis 0, tiles fastest so that
    a slice's K and V stay in L2 while its tiles run: CUDA caps grid axes 1 and 2 at
    65535 blocks, and B*H passes that (ViT-B at batch 8192; window attention)."""
    pid = tl.program_id(0)
    return pid % n_tiles, (pid // n_tiles).to(tl.int64)


@_autotuned(_FORWARD_TILES)
@triton.jit
def _attention_forward_kernel(
    q_ptr,    # (B, H, Lq, D)
    k_ptr,    # (B, H, Lk, D)
    v_ptr,    # (B, H, Lk, D)
    msk_ptr,  # (B, H, Lq, Lk) additive mask, stride 0 on broadcast dims (unused without HAS_MASK)
    o_ptr,    # (B, H, Lq, D)
    lse_ptr,  # (B, H, Lq) natural-log logsumexp of the scores
    q_sB, q_sH, q_sL, q_sD,
    k_sB, k_sH, k_sL, k_sD,
    v_sB, v_sH, v_sL, v_sD,
    msk_sB, msk_sH, msk_sQ, msk_sK,
    o_sB, o_sH, o_sL, o_sD,
    lse_sB, lse_sH, lse_sL,
    H, Lq, Lk, D,
    qk_scale, mask_scale, ln2, dropout_p, keep_scale, seed_ptr,
    HAS_MASK: tl.constexpr, CAUSAL: tl.constexpr, DROPOUT: tl.constexpr,
    ACC: tl.constexpr, PREC: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
):
    # Offsets inside one (b, h) slice are int32 (attention_reasons rejects slices past
    # 2^31 elements); the batch and head offsets are int64. Narrow offsets keep the
    # pointer tiles cheap in registers.
    pid_m, bh = _tile_and_slice(tl.cdiv(Lq, BLOCK_M))
    b = bh // H
    h = bh % H
    start_m = pid_m * BLOCK_M
    offs_m = start_m + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    m_ok = offs_m < Lq
    d_ok = offs_d < D
    q = tl.load(q_ptr + b * q_sB + h * q_sH + offs_m[:, None] * q_sL + offs_d[None, :] * q_sD,
                mask=m_ok[:, None] & d_ok[None, :], other=0.0)
    # Loop-invariant int32 offset tiles; each step only moves the scalar base pointer
    # (loop-carried 64-bit pointer tiles would cost twice the registers and spill).
    k_base = k_ptr + b * k_sB + h * k_sH
    v_base = v_ptr + b * v_sB + h * v_sH
    kT_off = offs_d[:, None] * k_sD + offs_n[None, :] * k_sL  # [BLOCK_D, BLOCK_N]
    v_off = offs_n[:, None] * v_sL + offs_d[None, :] * v_sD   # [BLOCK_N, BLOCK_D]
    msk_base = msk_ptr + b * msk_sB + h * msk_sH

    m_i = tl.full([BLOCK_M], float("-inf"), ACC)  # running max (log2 units)
    l_i = tl.zeros([BLOCK_M], ACC)                # running sum of exp2(s - m_i), before dropout
    acc = tl.zeros([BLOCK_M, BLOCK_D], ACC)
    # Causal: keys past this block's last query are hidden for every row, skip them.
    hi = tl.minimum(Lk, start_m + BLOCK_M) if CAUSAL else Lk
    for start_n in range(0, hi, BLOCK_N):
        cols = start_n + offs_n
        n_ok = cols < Lk
        kT = tl.load(k_base + start_n * k_sL + kT_off, mask=d_ok[:, None] & n_ok[None, :], other=0.0)
        s = tl.dot(q, kT, input_precision=PREC, out_dtype=ACC)
        s = _scores(s, offs_m[:, None], cols[None, :], msk_base, msk_sQ, msk_sK, Lq, Lk, qk_scale, mask_scale,
                    HAS_MASK, CAUSAL, ACC)
        m_new = tl.maximum(m_i, tl.max(s, axis=1))
        # A row with no visible key yet has m = -inf: shift by 0 so exp2 gives 0, not NaN.
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
        alpha = tl.exp2(m_i - m_safe)
        p = tl.exp2(s - m_safe[:, None])
        l_i = l_i * alpha + tl.sum(p, axis=1)
        if DROPOUT:
            p = tl.where(_dropout_keep(seed_ptr, dropout_p, bh, offs_m[:, None], cols[None, :], Lq, Lk), p, 0.0)
        v = tl.load(v_base + start_n * v_sL + v_off, mask=n_ok[:, None] & d_ok[None, :], other=0.0)
        acc = tl.dot(p.to(v.dtype), v, acc * alpha[:, None], input_precision=PREC, out_dtype=ACC)
        m_i = m_new

    empty = l_i == 0.0  # fully masked row (or no keys): o = 0, lse = -inf
    o = acc * (keep_scale / tl.where(empty, 1.0, l_i))[:, None]
    lse = tl.where(empty, float("-inf"), (m_i + tl.log2(tl.where(empty, 1.0, l_i))) * ln2)
    tl.store(o_ptr + b * o_sB + h * o_sH + offs_m[:, None] * o_sL + offs_d[None, :] * o_sD,
             o.to(o_ptr.dtype.element_ty), mask=m_ok[:, None] & d_ok[None, :])
    tl.store(lse_ptr + b * lse_sB + h * lse_sH + offs_m * lse_sL, lse, mask=m_ok)


def _block_d(d: int) -> int:
    return max(16, triton.next_power_of_2(d))  # tl.dot needs every dim >= 16


def _acc_types(dtype):
    return (tl.float64, torch.float64) if dtype == torch.float64 else (tl.float32, torch.float32)


def _mask_args(mask, q):
    """(pointer, 4 strides) for the kernel; q and zero strides when there is no mask."""
    if mask is None:
        return q, (0, 0, 0, 0)
    return mask, mask.stride()


def _dropout_factor(dropout_p):
    return 0.0 if dropout_p >= 1.0 else 1.0 / (1.0 - dropout_p)


def as_seed(seed, device) -> torch.Tensor:
    """The dropout seed as the kernels read it: a 0-d int64 tensor on ``device`` (an
    int or a tensor; a tensor already there is passed through, no copy)."""
    if isinstance(seed, torch.Tensor):
        return seed.to(device=device, dtype=torch.int64).reshape(())
    return torch.tensor(int(seed), dtype=torch.int64, device=device)


def _seed_arg(seed, dropout_p, q):
    """The kernels' seed pointer; without dropout it is never read, so q stands in."""
    return as_seed(seed, q.device) if dropout_p > 0.0 else q


def attention_forward(q, k, v, mask=None, causal=False, scale=None, dropout_p=0.0, seed=0):
    """(o, lse): o (B, H, Lq, D) contiguous in q's dtype, lse (B, H, Lq) contiguous fp32
    (fp64 for fp64), for q, k, v and an expanded additive mask of any strides."""
    B, H, Lq, D = q.shape
    Lk = k.shape[2]
    acc_tl, acc_torch = _acc_types(q.dtype)
    o = torch.empty((B, H, Lq, v.shape[3]), dtype=q.dtype, device=q.device)
    lse = torch.empty((B, H, Lq), dtype=acc_torch, device=q.device)
    if B * H * Lq == 0:
        return o, lse
    if Lk == 0:
        return o.zero_(), lse.fill_(float("-inf"))
    msk, msk_strides = _mask_args(mask, q)
    prec = matmul_dot_precision(q.dtype)

    def grid(meta):
        return (triton.cdiv(Lq, meta["BLOCK_M"]) * B * H,)

    _attention_forward_kernel.for_call(q.dtype, prec)[grid](
        q, k, v, msk, o, lse,
        *q.stride(), *k.stride(), *v.stride(), *msk_strides, *o.stride(), *lse.stride(),
        H, Lq, Lk, D,
        default_scale(D, scale) * LOG2E, LOG2E, LN2, float(dropout_p), _dropout_factor(dropout_p),
        _seed_arg(seed, dropout_p, q),
        HAS_MASK=mask is not None, CAUSAL=bool(causal), DROPOUT=dropout_p > 0.0,
        ACC=acc_tl, PREC=prec, BLOCK_D=_block_d(D))
    return o, lse


# ----------------------------------------------------------------------------- backward
#
# FA2: with p = softmax(s) (dropout keep-mask z / (1 - p_drop) applied after), dp = do v^T,
#   dv = (p z)^T do,  ds = p * (dp z - delta),  delta = rowsum(do * o),
#   dq = scale * ds k,  dk = scale * ds^T q.
# p is recomputed from q, k and the saved lse; nothing Lq x Lk is stored.

@triton.jit
def _attention_delta_kernel(
    o_ptr,      # (B, H, Lq, D)
    do_ptr,     # (B, H, Lq, D), any strides (stride 0 for expanded gradients)
    delta_ptr,  # (B*H, Lq) contiguous: rowsum(do * o)
    o_sB, o_sH, o_sL, o_sD,
    do_sB, do_sH, do_sL, do_sD,
    H, Lq, D,
    ACC: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_D: tl.constexpr,
):
    pid_m, bh = _tile_and_slice(tl.cdiv(Lq, BLOCK_M))
    b = bh // H
    h = bh % H
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    rows = offs_m.to(tl.int64)
    cols = offs_d.to(tl.int64)
    ok = (offs_m < Lq)[:, None] & (offs_d < D)[None, :]
    o = tl.load(o_ptr + b * o_sB + h * o_sH + rows[:, None] * o_sL + cols[None, :] * o_sD, mask=ok, other=0.0)
    do = tl.load(do_ptr + b * do_sB + h * do_sH + rows[:, None] * do_sL + cols[None, :] * do_sD, mask=ok,
                 other=0.0)
    delta = tl.sum(o.to(ACC) * do.to(ACC), axis=1)
    tl.store(delta_ptr + bh * Lq + rows, delta, mask=offs_m < Lq)


@_autotuned(_BACKWARD_TILES, key=_KEY + ["DETERMINISTIC"], reset_to_zero=["dq_ptr"])
@triton.jit
def _attention_dkdv_kernel(
    q_ptr,      # (B, H, Lq, D)
    k_ptr,      # (B, H, Lk, D)
    v_ptr,      # (B, H, Lk, D)
    msk_ptr,    # (B, H, Lq, Lk) additive mask, stride 0 on broadcast dims (unused without HAS_MASK)
    do_ptr,     # (B, H, Lq, D)
    lse_ptr,    # (B, H, Lq) from the forward
    delta_ptr,  # (B*H, Lq) contiguous, from _attention_delta_kernel
    dq_ptr,     # (B, H, Lq, D) contiguous fp32 (fp64) accumulator, atomically added to (unused if DETERMINISTIC)
    dk_ptr,     # (B, H, Lk, D) contiguous
    dv_ptr,     # (B, H, Lk, D) contiguous
    q_sB, q_sH, q_sL, q_sD,
    k_sB, k_sH, k_sL, k_sD,
    v_sB, v_sH, v_sL, v_sD,
    msk_sB, msk_sH, msk_sQ, msk_sK,
    do_sB, do_sH, do_sL, do_sD,
    lse_sB, lse_sH, lse_sL,
    H, Lq, Lk, D,
    scale, qk_scale, mask_scale, dropout_p, keep_scale, seed_ptr,
    HAS_MASK: tl.constexpr, CAUSAL: tl.constexpr, DROPOUT: tl.constexpr, DETERMINISTIC: tl.constexpr,
    ACC: tl.constexpr, PREC: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
):
    # Tiles are transposed (keys x queries), as in the Triton FA2 tutorial, so that
    # dv += p^T do and dk += ds^T q need no transposes of the big tiles.
    pid_n, bh = _tile_and_slice(tl.cdiv(Lk, BLOCK_N))
    b = bh // H
    h = bh % H
    start_n = pid_n * BLOCK_N
    offs_n = start_n + tl.arange(0, BLOCK_N)
    offs_m = tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    n_ok = offs_n < Lk
    d_ok = offs_d < D
    kv_ok = n_ok[:, None] & d_ok[None, :]
    k = tl.load(k_ptr + b * k_sB + h * k_sH + offs_n[:, None] * k_sL + offs_d[None, :] * k_sD, mask=kv_ok, other=0.0)
    v = tl.load(v_ptr + b * v_sB + h * v_sH + offs_n[:, None] * v_sL + offs_d[None, :] * v_sD, mask=kv_ok, other=0.0)
    # Causal: queries before this block's first key see none of it.
    lo = (start_n // BLOCK_M) * BLOCK_M if CAUSAL else 0
    q_base = q_ptr + b * q_sB + h * q_sH
    do_base = do_ptr + b * do_sB + h * do_sH
    qT_off = offs_d[:, None] * q_sD + offs_m[None, :] * q_sL     # [BLOCK_D, BLOCK_M]
    do_off = offs_m[:, None] * do_sL + offs_d[None, :] * do_sD   # [BLOCK_M, BLOCK_D]
    lse_base = lse_ptr + b * lse_sB + h * lse_sH
    msk_base = msk_ptr + b * msk_sB + h * msk_sH
    dq_base = dq_ptr + bh * Lq * D

    # Query columns past Lq load q = do = 0 (and lse = delta = 0): their p is 1 but
    # dp, ds and do are 0, so they add nothing to dk, dv, and their dq is masked out.
    dk = tl.zeros([BLOCK_N, BLOCK_D], ACC)
    dv = tl.zeros([BLOCK_N, BLOCK_D], ACC)
    for start_m in range(lo, Lq, BLOCK_M):
        rows = start_m + offs_m
        m_ok = rows < Lq
        qT = tl.load(q_base + start_m * q_sL + qT_off, mask=d_ok[:, None] & m_ok[None, :], other=0.0)
        do = tl.load(do_base + start_m * do_sL + do_off, mask=m_ok[:, None] & d_ok[None, :], other=0.0)
        lse2 = tl.load(lse_base + rows * lse_sL, mask=m_ok, other=0.0) * mask_scale
        delta = tl.load(delta_ptr + bh * Lq + rows, mask=m_ok, other=0.0)
        sT = tl.dot(k, qT, input_precision=PREC, out_dtype=ACC)
        sT = _scores(sT, rows[None, :], offs_n[:, None], msk_base, msk_sQ, msk_sK, Lq, Lk, qk_scale, mask_scale,
                     HAS_MASK, CAUSAL, ACC)
        # Rows with lse = -inf have only -inf scores: shift by 0 so p = 0, not NaN.
        pT = tl.exp2(sT - tl.where(lse2 == float("-inf"), 0.0, lse2)[None, :])
        dpT = tl.dot(v, tl.trans(do), input_precision=PREC, out_dtype=ACC)
        if DROPOUT:
            keep = _dropout_keep(seed_ptr, dropout_p, bh, rows[None, :], offs_n[:, None], Lq, Lk)
            dpT = tl.where(keep, dpT * keep_scale, 0.0)
            pT_drop = tl.where(keep, pT * keep_scale, 0.0)
        else:
            pT_drop = pT
        dv = tl.dot(pT_drop.to(do.dtype), do, dv, input_precision=PREC, out_dtype=ACC)
        dsT = (pT * (dpT - delta[None, :])).to(qT.dtype)
        dk = tl.dot(dsT, tl.trans(qT), dk, input_precision=PREC, out_dtype=ACC)
        if not DETERMINISTIC:
            dq = tl.dot(tl.trans(dsT), k, input_precision=PREC, out_dtype=ACC) * scale
            tl.atomic_add(dq_base + rows[:, None] * D + offs_d[None, :], dq, mask=m_ok[:, None] & d_ok[None, :])
    out = bh * Lk * D + offs_n[:, None] * D + offs_d[None, :]
    tl.store(dk_ptr + out, (dk * scale).to(dk_ptr.dtype.element_ty), mask=kv_ok)
    tl.store(dv_ptr + out, dv.to(dv_ptr.dtype.element_ty), mask=kv_ok)


@_autotuned(_BACKWARD_TILES)
@triton.jit
def _attention_dq_kernel(
    q_ptr,      # (B, H, Lq, D)
    k_ptr,      # (B, H, Lk, D)
    v_ptr,      # (B, H, Lk, D)
    msk_ptr,    # (B, H, Lq, Lk) additive mask, stride 0 on broadcast dims (unused without HAS_MASK)
    do_ptr,     # (B, H, Lq, D)
    lse_ptr,    # (B, H, Lq) from the forward
    delta_ptr,  # (B*H, Lq) contiguous, from _attention_delta_kernel
    dq_ptr,     # (B, H, Lq, D) contiguous
    q_sB, q_sH, q_sL, q_sD,
    k_sB, k_sH, k_sL, k_sD,
    v_sB, v_sH, v_sL, v_sD,
    msk_sB, msk_sH, msk_sQ, msk_sK,
    do_sB, do_sH, do_sL, do_sD,
    lse_sB, lse_sH, lse_sL,
    H, Lq, Lk, D,
    scale, qk_scale, mask_scale, dropout_p, keep_scale, seed_ptr,
    HAS_MASK: tl.constexpr, CAUSAL: tl.constexpr, DROPOUT: tl.constexpr,
    ACC: tl.constexpr, PREC: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
):
    pid_m, bh = _tile_and_slice(tl.cdiv(Lq, BLOCK_M))
    b = bh // H
    h = bh % H
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    m_ok = offs_m < Lq
    d_ok = offs_d < D
    qd_ok = m_ok[:, None] & d_ok[None, :]
    q = tl.load(q_ptr + b * q_sB + h * q_sH + offs_m[:, None] * q_sL + offs_d[None, :] * q_sD, mask=qd_ok, other=0.0)
    do = tl.load(do_ptr + b * do_sB + h * do_sH + offs_m[:, None] * do_sL + offs_d[None, :] * do_sD, mask=qd_ok,
                 other=0.0)
    lse2 = tl.load(lse_ptr + b * lse_sB + h * lse_sH + offs_m * lse_sL, mask=m_ok, other=0.0) * mask_scale
    lse2 = tl.where(lse2 == float("-inf"), 0.0, lse2)  # fully masked rows: p = 0, not NaN
    delta = tl.load(delta_ptr + bh * Lq + offs_m, mask=m_ok, other=0.0)
    k_base = k_ptr + b * k_sB + h * k_sH
    v_base = v_ptr + b * v_sB + h * v_sH
    kT_off = offs_d[:, None] * k_sD + offs_n[None, :] * k_sL  # [BLOCK_D, BLOCK_N]
    vT_off = offs_d[:, None] * v_sD + offs_n[None, :] * v_sL  # [BLOCK_D, BLOCK_N]
    msk_base = msk_ptr + b * msk_sB + h * msk_sH

    dq = tl.zeros([BLOCK_M, BLOCK_D], ACC)
    hi = tl.minimum(Lk, (pid_m + 1) * BLOCK_M) if CAUSAL else Lk
    for start_n in range(0, hi, BLOCK_N):
        cols = start_n + offs_n
        dn_ok = d_ok[:, None] & (cols < Lk)[None, :]
        kT = tl.load(k_base + start_n * k_sL + kT_off, mask=dn_ok, other=0.0)
        vT = tl.load(v_base + start_n * v_sL + vT_off, mask=dn_ok, other=0.0)
        s = tl.dot(q, kT, input_precision=PREC, out_dtype=ACC)
        s = _scores(s, offs_m[:, None], cols[None, :], msk_base, msk_sQ, msk_sK, Lq, Lk, qk_scale, mask_scale,
                    HAS_MASK, CAUSAL, ACC)
        p = tl.exp2(s - lse2[:, None])
        dp = tl.dot(do, vT, input_precision=PREC, out_dtype=ACC)
        if DROPOUT:
            keep = _dropout_keep(seed_ptr, dropout_p, bh, offs_m[:, None], cols[None, :], Lq, Lk)
            dp = tl.where(keep, dp * keep_scale, 0.0)
        ds = (p * (dp - delta[:, None])).to(kT.dtype)
        dq = tl.dot(ds, tl.trans(kT), dq, input_precision=PREC, out_dtype=ACC)
    tl.store(dq_ptr + bh * Lq * D + offs_m[:, None] * D + offs_d[None, :], (dq * scale).to(dq_ptr.dtype.element_ty),
             mask=qd_ok)


def attention_backward(do, q, k, v, o, lse, mask=None, causal=False, scale=None, dropout_p=0.0, seed=0,
                       deterministic=False):
    """(dq, dk, dv), contiguous in the inputs' dtype, from the forward's o and lse (the
    same mask, causal, scale, dropout_p and seed). deterministic=False adds dq up with
    fp32 atomics from the dk/dv kernel (fast, order dependent); True runs a separate dq
    kernel (bitwise reproducible). No gradient for the mask."""
    B, H, Lq, D = q.shape
    Lk = k.shape[2]
    acc_tl, acc_torch = _acc_types(q.dtype)
    dq = torch.zeros(q.shape, dtype=q.dtype, device=q.device)
    dk = torch.zeros(k.shape, dtype=k.dtype, device=k.device)
    dv = torch.zeros(v.shape, dtype=v.dtype, device=v.device)
    if B * H == 0 or Lq == 0 or Lk == 0:
        return dq, dk, dv  # no query or no key: every gradient is 0
    block_d = _block_d(D)
    delta = torch.empty((B * H, Lq), dtype=acc_torch, device=q.device)
    block_m_delta = 16 if Lq <= 16 else 64
    _attention_delta_kernel[(triton.cdiv(Lq, block_m_delta) * B * H,)](
        o, do, delta, *o.stride(), *do.stride(), H, Lq, D,
        ACC=acc_tl, BLOCK_M=block_m_delta, BLOCK_D=block_d)

    msk, msk_strides = _mask_args(mask, q)
    prec = matmul_dot_precision(q.dtype)
    flags = dict(HAS_MASK=mask is not None, CAUSAL=bool(causal), DROPOUT=dropout_p > 0.0,
                 ACC=acc_tl, PREC=prec, BLOCK_D=block_d)
    sm_scale = default_scale(D, scale)
    floats = (sm_scale, sm_scale * LOG2E, LOG2E, float(dropout_p), _dropout_factor(dropout_p),
              _seed_arg(seed, dropout_p, q))
    strides = (*q.stride(), *k.stride(), *v.stride(), *msk_strides, *do.stride(), *lse.stride())
    dq_acc = dq if deterministic or q.dtype == acc_torch else torch.zeros(q.shape, dtype=acc_torch, device=q.device)

    _attention_dkdv_kernel.for_call(q.dtype, prec)[lambda meta: (triton.cdiv(Lk, meta["BLOCK_N"]) * B * H,)](
        q, k, v, msk, do, lse, delta, dq_acc, dk, dv, *strides, H, Lq, Lk, D, *floats,
        DETERMINISTIC=bool(deterministic), **flags)
    if deterministic:
        _attention_dq_kernel.for_call(q.dtype, prec)[lambda meta: (triton.cdiv(Lq, meta["BLOCK_M"]) * B * H,)](
            q, k, v, msk, do, lse, delta, dq, *strides, H, Lq, Lk, D, *floats, **flags)
    elif dq_acc is not dq:
        dq.copy_(dq_acc)
    return dq, dk, dv


# ----------------------------------------------------------------------------- dropout mask

@triton.jit
def _dropout_keep_kernel(
    keep_ptr,  # (B*H*Lq, Lk) contiguous bool (as int8)
    R, Lk, dropout_p, seed_ptr,  # seed_ptr: 0-d int64
    BLOCK_R: tl.constexpr, BLOCK_N: tl.constexpr,
):
    pid_n, pid_r = _tile_and_slice(tl.cdiv(Lk, BLOCK_N))  # one grid axis, as the attention kernels
    offs_r = pid_r * BLOCK_R + tl.arange(0, BLOCK_R)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    # Row r = (b*H + h)*Lq + i, so bh = 0 and Lq = R reproduce the attention kernels' offsets.
    keep = _dropout_keep(seed_ptr, dropout_p, 0, offs_r[:, None], offs_n[None, :], R, Lk)
    out = offs_r.to(tl.int64)[:, None] * Lk + offs_n[None, :]
    tl.store(keep_ptr + out, keep.to(tl.int8), mask=(offs_r < R)[:, None] & (offs_n < Lk)[None, :])


def dropout_keep_mask(seed, dropout_p, B, H, Lq, Lk, device):
    """The boolean keep-mask (B, H, Lq, Lk) that the attention kernels apply for
    (seed, dropout_p): philox tl.rand(seed, ((b*H + h)*Lq + i)*Lk + j) >= dropout_p."""
    keep = torch.empty((B, H, Lq, Lk), dtype=torch.int8, device=device)
    R = B * H * Lq
    if keep.numel():
        _dropout_keep_kernel[(triton.cdiv(R, 16) * triton.cdiv(Lk, 64),)](
            keep, R, Lk, float(dropout_p), as_seed(seed, device), BLOCK_R=16, BLOCK_N=64)
    return keep.bool()
