"""fastcnn.ops.attention: fused (FlashAttention-style) scaled dot-product attention
with the semantics of torch.nn.functional.scaled_dot_product_attention for
(batch, heads, seq, head_dim) inputs, as torch.library custom ops.

    fastcnn::attention           (out, lse): lse (B, H, Lq), fp32 (fp64 for fp64),
                                 the log-sum-exp of each query's scores, saved for
                                 the backward; an empty (0,) when save_lse is False
    fastcnn::attention_backward  (dq, dk, dv) from dout, q, k, v, out and lse

Backends (``algo``, see fastcnn.ops):
- "triton": triton_kernels/attention.py (online softmax, the Lq x Lk matrix never
  exists; dropout from an in-kernel Philox stream keyed by ``seed``).
- "cudnn": PyTorch's SDPA (flash / memory-efficient / cuDNN, as PyTorch picks);
  its backward recomputes the forward under autograd. It cannot replay a seeded
  dropout mask or promise determinism, so it refuses those calls.
- "reference": plain PyTorch math (materializes the scores).

Dropout is replayed from ``seed`` (a 0-d int64 tensor on the inputs' device, None
without dropout) by every backend that takes it (the keep mask of a (seed, p, shape)
is the one ``dropout_keep_mask`` gives), so a forward and a backward that auto sends
to different backends still agree. The seed is a tensor, not an int, so that drawing
it is a traced op, not a host sync: torch.compile(fullgraph=True) keeps one graph.
"""
import math
import warnings
from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from fastcnn.ops._checks import autocast, check_autograd_mode, check_tensor
from fastcnn.ops._dispatch import OpDispatcher, autograd_inside_op, cudnn_reasons, triton_reasons
from fastcnn.triton_kernels import attention as attn_kernels
from fastcnn.triton_kernels._common import interpret_mode
from fastcnn.triton_kernels.reference import compute_dtype

OP = "fastcnn.attention"

forward_dispatch = OpDispatcher(OP)
backward_dispatch = OpDispatcher("fastcnn.attention_backward")


def _empty_lse(q):
    return q.new_empty((0,), dtype=compute_dtype(q.dtype))


def keep_mask(seed, dropout_p, q, k):
    """The dropout keep mask (B, H, Lq, Lk) of ``seed`` (a 0-d tensor or an int): the
    Triton kernels' own Philox stream wherever Triton runs (GPU or interpreter), else
    a torch generator (plain CPU, where only "reference" runs, so forward and backward
    still agree)."""
    b, h, lq, lk = q.shape[0], q.shape[1], q.shape[2], k.shape[2]
    if q.is_cuda or interpret_mode():
        return attn_kernels.dropout_keep_mask(seed, dropout_p, b, h, lq, lk, q.device)
    gen = torch.Generator().manual_seed(int(seed))
    return (torch.rand((b, h, lq, lk), generator=gen) >= dropout_p).to(q.device)


def _broadcast_apply(t, fn):
    """fn(t) computed on t's distinct elements only: dims of stride 0 are cut to size 1
    before fn and expanded back after, so an expanded mask stays a stride-0 view
    (``.to(dtype)`` of it would write all B*H*Lq*Lk elements)."""
    base = t[tuple(slice(0, 1) if st == 0 else slice(None) for st in t.stride())]
    return fn(base).expand(t.shape)


# ----------------------------------------------------------------------------- backends

def _triton_reasons(q, k, v, mask, causal, scale, dropout_p, *rest):
    return triton_reasons(q) + attn_kernels.attention_reasons(q, k, v, mask, causal, dropout_p)


def _triton_forward(q, k, v, mask, causal, scale, dropout_p, seed, save_lse):
    out, lse = attn_kernels.attention_forward(q, k, v, mask, causal, scale, dropout_p, seed)
    return out, (lse if save_lse else _empty_lse(q))


def _triton_backward_reasons(do, q, k, v, out, lse, mask, causal, scale, dropout_p, seed, deterministic):
    return _triton_reasons(q, k, v, mask, causal, scale, dropout_p)


def _triton_backward(do, q, k, v, out, lse, mask, causal, scale, dropout_p, seed, deterministic):
    if lse.numel() != q.shape[0] * q.shape[1] * q.shape[2]:  # the forward did not keep it
        out, lse = attn_kernels.attention_forward(q, k, v, mask, causal, scale, dropout_p, seed)
    return attn_kernels.attention_backward(do, q, k, v, out, lse, mask, causal, scale, dropout_p, seed,
                                           deterministic)


def _sdpa_mask(q, k, mask, causal):
    """SDPA takes attn_mask or is_causal, not both: fold causal into the mask
    (top-left aligned, as SDPA's is_causal)."""
    if not (causal and mask is not None):
        return mask, causal
    hidden = ~attn_kernels.causal_mask(q.shape[2], k.shape[2], q.device)
    return _broadcast_apply(mask, lambda m: m.masked_fill(hidden, float("-inf"))), False


def _sdpa(q, k, v, mask, causal, scale):
    mask, causal = _sdpa_mask(q, k, mask, causal)
    if mask is not None:  # SDPA wants q's dtype
        mask = _broadcast_apply(mask, lambda m: m.to(q.dtype))
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal, scale=scale)


def _cudnn_reasons(q, k, v, mask, causal, scale, dropout_p, *rest):
    reasons = cudnn_reasons(q)
    if dropout_p > 0:
        reasons.append("SDPA cannot replay a seeded dropout mask in the backward")
    return reasons


def _cudnn_backward_reasons(do, q, k, v, out, lse, mask, causal, scale, dropout_p, seed, deterministic):
    reasons = _cudnn_reasons(q, k, v, mask, causal, scale, dropout_p)
    if deterministic:
        reasons.append("SDPA's backward does not promise determinism")
    return reasons


def _cudnn_forward(q, k, v, mask, causal, scale, dropout_p, seed, save_lse):
    out = _sdpa(q, k, v, mask, causal, scale)
    # SDPA's public API does not return the log-sum-exp; a Triton backward needs it,
    # so compute it (one more Q K^T) only when the backward will run.
    lse = _lse_chunked(q, k, mask, causal, scale) if save_lse else _empty_lse(q)
    return out, lse


def _cudnn_backward(do, q, k, v, out, lse, mask, causal, scale, dropout_p, seed, deterministic):
    with autograd_inside_op():
        leaves = [t.detach().requires_grad_() for t in (q, k, v)]
        return torch.autograd.grad(_sdpa(*leaves, mask, causal, scale), leaves, do)


def _lse_chunked(q, k, mask, causal, scale, budget=1 << 26):
    """The scores' log-sum-exp, a block of (images, query rows) at a time so that no
    score block holds more than ``budget`` elements (256 MiB in fp32) whatever the
    batch (ViT-B/16 at batch 256: 3072 rows of 197 keys per query). ``mask`` is
    already expanded to (B, H, Lq, Lk)."""
    b, h, lq = q.shape[:3]
    lk = k.shape[2]
    lse = torch.empty(q.shape[:3], dtype=compute_dtype(q.dtype), device=q.device)
    rows = max(1, min(lq, budget // max(h * lk, 1)))
    images = max(1, min(b, budget // max(h * lk * rows, 1)))
    kt = k.to(lse.dtype).transpose(-1, -2)
    for i in range(0, b, images):
        for start in range(0, lq, rows):
            stop = min(start + rows, lq)
            s = torch.matmul(q[i:i + images, :, start:stop].to(lse.dtype), kt[i:i + images]) * scale
            if mask is not None:
                s = s + mask[i:i + images, :, start:stop].to(lse.dtype)
            if causal:
                row = torch.arange(start, stop, device=q.device)[:, None]
                s = s.masked_fill(torch.arange(lk, device=q.device) > row, float("-inf"))
            lse[i:i + images, :, start:stop] = torch.logsumexp(s, dim=-1)
    return lse


def _dropout_mask(seed, dropout_p, q, k):
    return keep_mask(seed, dropout_p, q, k) if dropout_p > 0 else None


def _reference_forward(q, k, v, mask, causal, scale, dropout_p, seed, save_lse):
    out, lse = attn_kernels.attention_reference(q, k, v, mask, causal, scale, dropout_p,
                                                _dropout_mask(seed, dropout_p, q, k))
    return out, (lse if save_lse else _empty_lse(q))


def _reference_backward(do, q, k, v, out, lse, mask, causal, scale, dropout_p, seed, deterministic):
    with autograd_inside_op():  # the reference backward is autograd through the reference
        return attn_kernels.attention_backward_reference(do, q, k, v, mask, causal, scale, dropout_p,
                                                     _dropout_mask(seed, dropout_p, q, k))


forward_dispatch.register("triton", _triton_forward, _triton_reasons)
forward_dispatch.register("cudnn", _cudnn_forward, _cudnn_reasons)
forward_dispatch.register("reference", _reference_forward)
backward_dispatch.register("triton", _triton_backward, _triton_backward_reasons)
backward_dispatch.register("cudnn", _cudnn_backward, _cudnn_backward_reasons)
backward_dispatch.register("reference", _reference_backward)


# ----------------------------------------------------------------------------- custom ops

def _out_shape(q, v):
    return (*q.shape[:3], v.shape[3])


@torch.library.custom_op("fastcnn::attention", mutates_args=())
def attention_op(q: Tensor, k: Tensor, v: Tensor, mask: Optional[Tensor], causal: bool, scale: float,
                 dropout_p: float, seed: Optional[Tensor], deterministic: bool, save_lse: bool,
                 algo: str) -> Tuple[Tensor, Tensor]:
    # deterministic is for the backward (setup_context keeps it); the forward is
    # deterministic anyway.
    if dropout_p > 0 and seed is None:
        raise ValueError(f"{OP}: dropout_p > 0 needs a seed (a 0-d int64 tensor)")
    out, lse = forward_dispatch(algo, q, k, v, mask, causal, scale, dropout_p, seed, save_lse)
    lse = lse.to(compute_dtype(q.dtype)).contiguous() if save_lse else _empty_lse(q)
    return out.to(q.dtype).contiguous(), lse


@attention_op.register_fake
def _(q, k, v, mask, causal, scale, dropout_p, seed, deterministic, save_lse, algo):
    lse = q.new_empty(q.shape[:3], dtype=compute_dtype(q.dtype)) if save_lse else _empty_lse(q)
    return q.new_empty(_out_shape(q, v)), lse


@torch.library.custom_op("fastcnn::attention_backward", mutates_args=())
def attention_backward_op(grad_out: Tensor, q: Tensor, k: Tensor, v: Tensor, out: Tensor, lse: Tensor,
                          mask: Optional[Tensor], causal: bool, scale: float, dropout_p: float,
                          seed: Optional[Tensor],
                          deterministic: bool, algo: str) -> Tuple[Tensor, Tensor, Tensor]:
    grads = backward_dispatch(algo, grad_out, q, k, v, out, lse, mask, causal, scale, dropout_p, seed,
                              deterministic)
    return tuple(g.to(t.dtype).contiguous() for g, t in zip(grads, (q, k, v)))


@attention_backward_op.register_fake
def _(grad_out, q, k, v, out, lse, mask, causal, scale, dropout_p, seed, deterministic, algo):
    return q.new_empty(q.shape), k.new_empty(k.shape), v.new_empty(v.shape)


def _setup(ctx, inputs, output):
    q, k, v, mask, causal, scale, dropout_p, seed, deterministic, save_lse, algo = inputs
    out, lse = output
    ctx.params = (causal, scale, dropout_p, deterministic, algo)
    ctx.mark_non_differentiable(lse)
    ctx.save_for_backward(q, k, v, mask, out, lse, seed)  # the seed: the backward replays the forward's mask


def _backward(ctx, grad_out, grad_lse):
    # lse is auxiliary (non-differentiable); the mask's gradient is not computed here
    # (the public wrapper sends masks that require grad to the differentiable reference).
    q, k, v, mask, out, lse, seed = ctx.saved_tensors
    causal, scale, dropout_p, deterministic, algo = ctx.params
    none = (None,) * 8
    if grad_out is None or not any(ctx.needs_input_grad[:3]):
        return (None, None, None) + none
    dq, dk, dv = attention_backward_op(grad_out, q, k, v, out, lse, mask, causal, scale, dropout_p, seed,
                                       deterministic, algo)
    return (dq, dk, dv) + none


attention_op.register_autograd(_backward, setup_context=_setup)


# ----------------------------------------------------------------------------- public API

def _additive_mask(attn_mask, q, k):
    """SDPA's attn_mask as an additive float mask expanded to (B, H, Lq, Lk), in a
    dtype the kernels take: a bool mask's True means "takes part" (False becomes
    -inf). Broadcast dims stay stride 0, converted or not (_broadcast_apply)."""
    if attn_mask.dtype != torch.bool:
        check_tensor(OP, "attn_mask", attn_mask)
    shape = (q.shape[0], q.shape[1], q.shape[2], k.shape[2])
    try:
        mask = attn_mask.expand(shape)
    except RuntimeError:
        raise ValueError(f"{OP}: argument 'attn_mask' of shape {tuple(attn_mask.shape)} does not broadcast "
                         f"to (batch, heads, Lq, Lk) = {shape}") from None
    if mask.dtype == torch.bool:
        return _broadcast_apply(mask, lambda m: torch.zeros(m.shape, dtype=q.dtype, device=q.device).masked_fill(
            ~m, float("-inf")))
    if mask.dtype not in attn_kernels.mask_dtypes(q.dtype):
        return _broadcast_apply(mask, lambda m: m.to(compute_dtype(q.dtype)))
    return mask


def _dropout_seed(seed, dropout_p, q):
    """None without dropout, else the seed as a 0-d int64 tensor on q's device. The
    default one is drawn there from torch's generator for that device: seeded by
    torch.manual_seed, traced by torch.compile (no host int, no graph break), and
    fresh at every replay of a CUDA graph (graph-safe Philox offsets, "Note [CUDA
    Graph-safe RNG states]" in ATen's CUDAGeneratorImpl.h)."""
    if dropout_p == 0:
        return None
    if seed is None:
        return torch.randint(0, 2 ** 62, (), dtype=torch.int64, device=q.device)
    return attn_kernels.as_seed(seed, q.device)


def check_attention_args(q, k, v, attn_mask, dropout_p):
    for name, t in (("query", q), ("key", k), ("value", v)):
        check_tensor(OP, name, t, dim=4, dtype=None if t is q else q.dtype, device=None if t is q else q.device)
    if k.shape[:2] != q.shape[:2] or v.shape[:3] != k.shape[:3]:
        raise ValueError(f"{OP}: query {tuple(q.shape)}, key {tuple(k.shape)} and value {tuple(v.shape)} must "
                         f"share (batch, heads); key and value the sequence length")
    if k.shape[3] != q.shape[3]:
        raise ValueError(f"{OP}: argument 'key' must have query's head_dim {q.shape[3]}, got {k.shape[3]}")
    if attn_mask is not None:
        if not isinstance(attn_mask, Tensor):
            raise TypeError(f"{OP}: argument 'attn_mask' must be a Tensor or None, got {type(attn_mask).__name__}")
        if attn_mask.device != q.device:
            raise ValueError(f"{OP}: argument 'attn_mask' is on {attn_mask.device}, expected {q.device}")
    if not 0.0 <= dropout_p < 1.0:
        raise ValueError(f"{OP}: argument 'dropout_p' must be in [0, 1), got {dropout_p!r}")


def attention(query, key, value, *, causal=False, scale=None, attn_mask=None, dropout_p=0.0, seed=None,
              deterministic=False, algo="auto"):
    """F.scaled_dot_product_attention(query, key, value, attn_mask, dropout_p,
    is_causal=causal, scale=scale) for (batch, heads, seq, head_dim) tensors, on
    fastcnn's kernels (``algo``: see fastcnn.ops).

    ``attn_mask``: bool (True = takes part) or additive float, broadcastable to
    (batch, heads, Lq, Lk); with ``causal`` too, both apply. ``causal`` is SDPA's
    top-left aligned lower triangle. ``dropout_p`` drops attention weights with a
    mask drawn from ``seed`` (an int or a 0-d integer tensor; by default one drawn on
    the inputs' device from torch's generator, so ``torch.manual_seed`` makes runs
    repeatable). ``deterministic`` (or ``torch.use_deterministic_algorithms(True)``)
    makes the backward bitwise reproducible. A float mask that requires grad runs the
    differentiable reference (which materializes the scores), with the same seeded
    dropout mask."""
    check_autograd_mode(OP, query, key, value, attn_mask)
    query, key, value = autocast(query, key, value)  # first: the checks see what the kernels get
    check_attention_args(query, key, value, attn_mask, dropout_p)
    scale = 1.0 / math.sqrt(query.shape[-1]) if scale is None else float(scale)
    mask = None if attn_mask is None else _additive_mask(attn_mask, query, key)
    seed = _dropout_seed(seed, dropout_p, query)
    if mask is not None and mask.requires_grad:
        warnings.warn(f"{OP}: attn_mask requires grad; using the differentiable reference", stacklevel=2)
        out, _ = attn_kernels.attention_reference(query, key, value, mask, causal, scale, dropout_p,
                                                  _dropout_mask(seed, dropout_p, query, key))
        return out
    save_lse = torch.is_grad_enabled() and any(t.requires_grad for t in (query, key, value))
    deterministic = bool(deterministic) or torch.are_deterministic_algorithms_enabled()
    out, _ = attention_op(query, key, value, mask, bool(causal), scale, float(dropout_p), seed,
                          deterministic, save_lse, algo)
    return out
