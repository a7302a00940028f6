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
"""
import math

import torch

# ----------------------------------------------------------------------------- references


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype of the computation and of lse: fp64 for fp64, else fp32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


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


def flops(B, H, Lq, Lk, D, causal, backward=False):
    """FLOPs of the two matmuls (q k^T and p v: 2 * 2 * B*H*Lq*Lk*D), about halved by a
    causal mask; the backward does 2.5x the forward's (five matmuls instead of two)."""
    f = 4.0 * B * H * Lq * Lk * D
    if causal:
        f /= 2.0
    return f * 2.5 if backward else f


MAX_HEAD_DIM = 256


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
    if mask is not None and mask.dtype not in (q.dtype, torch.float32):
        reasons.append(f"mask dtype {mask.dtype} (the kernels take an additive mask in q's dtype or float32)")
    if not 0.0 <= dropout_p < 1.0:
        reasons.append(f"dropout_p {dropout_p} outside [0, 1)")
    return reasons
