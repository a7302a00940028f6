"""The FlashAttention-style Triton kernels (fastcnn.triton_kernels.attention) against a
float64 reference: forward (o, lse) and backward (dq, dk, dv) for odd sequence lengths,
every ViT head dim, causal (SDPA's top-left convention), additive masks with -inf and
fully masked rows, dropout, strided inputs, stride-0 gradients, the deterministic dq
path, empty inputs. Error criterion: the kernel's error against float64 is at most
twice that of PyTorch doing the same computation in the same dtype (plus a small floor),
and within the dtype's relative-norm bound."""
import pytest
import torch
import torch.nn.functional as F

from fastcnn.triton_kernels import attention as attn
from fastcnn.triton_kernels import reference
from helpers import DEVICE, DTYPES, ON_GPU, REL_TOL, assert_close, expanded_grad, rel_error

# Floor on the relative error, for dtypes whose PyTorch error can be ~0 on tiny cases.
FLOOR = {torch.float64: 1e-13, torch.float32: 1e-7, torch.float16: 1e-4, torch.bfloat16: 1e-3}


def make_qkv(B, H, Lq, Lk, D, dtype, layout="contiguous"):
    """q, k, v; 'blhd' gives the transposed views of (B, L, H, D) tensors that a ViT's
    qkv projection produces."""
    def one(L):
        if layout == "blhd":
            return torch.randn(B, L, H, D, device=DEVICE).to(dtype).transpose(1, 2)
        return torch.randn(B, H, L, D, device=DEVICE).to(dtype)
    return one(Lq), one(Lk), one(Lk)


def double(*ts):
    return [t.double() if t is not None else None for t in ts]


def pytorch_errors(q, k, v, do, ref, ref_grads, **kw):
    """Relative errors of PyTorch in q's dtype (attention_reference, and SDPA where it
    applies) against the float64 results: forward [o] and backward [dq, dk, dv]."""
    o, _ = attn.attention_reference(q, k, v, **kw)
    grads = attn.attention_backward_reference(do, q, k, v, **kw)
    fwd = [rel_error(o, ref)]
    bwd = [[rel_error(g, r)] for g, r in zip(grads, ref_grads)]
    if kw.get("dropout_p", 0.0) == 0.0:
        qs, ks, vs = (t.detach().clone().requires_grad_(True) for t in (q, k, v))
        so = F.scaled_dot_product_attention(qs, ks, vs, attn_mask=kw.get("mask"), is_causal=kw.get("causal", False),
                                            scale=kw.get("scale"))
        sgrads = torch.autograd.grad(so, (qs, ks, vs), do)
        if torch.isfinite(so).all():  # older SDPA versions give NaN on fully masked rows
            fwd.append(rel_error(so, ref))
            for b, g, r in zip(bwd, sgrads, ref_grads):
                b.append(rel_error(g, r))
    return max(fwd), [max(b) for b in bwd]


def assert_within_pytorch(out, ref, pytorch_err, dtype, what):
    """out's error against float64 <= 2x PyTorch's in the same dtype (+ floor), and the
    dtype's REL_TOL bound (x2 for gradients, which go through two roundings of p)."""
    if ref.norm() == 0:  # e.g. dq, dk with a single key: only rounding noise of O(1) terms
        assert out.abs().max().item() <= 10 * REL_TOL[dtype], f"{what}: not ~0"
        return
    assert_close(out, ref, dtype, factor=2.0, what=what)
    err = rel_error(out, ref)
    bound = 2.0 * pytorch_err + FLOOR[dtype]
    assert err <= bound, f"{what}: error {err:.3e} > 2 x PyTorch's {pytorch_err:.3e} + floor ({dtype})"


def check(q, k, v, do=None, mask=None, causal=False, scale=None, dropout_p=0.0, seed=0, dropout_mask=None,
          deterministic=False):
    """Kernel forward and backward against float64 and against PyTorch in q's dtype;
    ``dropout_mask`` is the keep-mask the reference uses for (seed, dropout_p)."""
    dtype = q.dtype
    kw = dict(mask=mask, causal=causal, scale=scale, dropout_p=dropout_p)
    o, lse = attn.attention_forward(q, k, v, seed=seed, **kw)
    B, H, Lq, D = q.shape
    assert o.shape == (B, H, Lq, D) and o.dtype == dtype and o.is_contiguous()
    assert lse.shape == (B, H, Lq) and lse.dtype == reference.compute_dtype(dtype) and lse.is_contiguous()
    do = torch.randn_like(o) if do is None else do
    grads = attn.attention_backward(do, q, k, v, o, lse, seed=seed, deterministic=deterministic, **kw)

    ref_kw = dict(kw, mask=mask.double() if mask is not None else None, dropout_mask=dropout_mask)
    ref, ref_lse = attn.attention_reference(*double(q, k, v), **ref_kw)
    ref_grads = attn.attention_backward_reference(*double(do, q, k, v), **ref_kw)
    fwd_err, bwd_errs = pytorch_errors(q, k, v, do, ref, ref_grads, **kw, dropout_mask=dropout_mask)

    assert_within_pytorch(o, ref, fwd_err, dtype, "o")
    finite = torch.isfinite(ref_lse)
    assert torch.equal(torch.isfinite(lse), finite), "lse: -inf rows differ"
    assert (lse[~finite] == float("-inf")).all()
    lse_tol = 1e-12 if dtype == torch.float64 else 1e-4
    assert (lse[finite].double() - ref_lse[finite]).abs().max().item() <= lse_tol
    for name, g, r, e, t in zip(("dq", "dk", "dv"), grads, ref_grads, bwd_errs, (q, k, v)):
        assert g.shape == t.shape and g.dtype == dtype and g.is_contiguous(), name
        assert_within_pytorch(g, r, e, dtype, name)
    return o, lse, grads


# ----------------------------------------------------------------------------- shapes

SHAPES = [  # B, H, Lq, Lk, D, causal
    (1, 2, 37, 37, 64, False),
    (1, 1, 19, 50, 80, True),    # Lq < Lk, causal: top-left aligned
    (2, 1, 50, 19, 96, True),    # Lq > Lk, causal
    (1, 2, 37, 37, 32, True),
    (1, 1, 17, 23, 128, False),
    (1, 1, 1, 1, 64, False),     # one key: dq = dk = 0
]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s[:5])) + ("-causal" if s[5] else ""))
def test_forward_backward(shape, dtype):
    B, H, Lq, Lk, D, causal = shape
    check(*make_qkv(B, H, Lq, Lk, D, dtype), causal=causal)


@pytest.mark.parametrize("L", [197, 257])  # ViT-B/16 at 224 px, ViT-H/14: no multiple of any block
@pytest.mark.parametrize("masked", [False, True], ids=["plain", "mask+causal"])
def test_vit_sequence_lengths(L, masked):
    """Forward and backward at ViT's token counts, where every tile loop ends in a
    partial block; masked: an additive mask with -inf entries and a fully masked
    query, and causal on top. One head keeps the interpreter to a few seconds."""
    q, k, v = make_qkv(1, 1, L, L, 16, torch.float32)
    mask = None
    if masked:
        mask = torch.randn(1, 1, L, L, device=DEVICE)
        mask[torch.rand_like(mask) < 0.2] = float("-inf")
        mask[0, 0, L - 2] = float("-inf")  # a query in the last, partial block sees nothing
    o, lse, (dq, _, _) = check(q, k, v, mask=mask, causal=masked)
    if masked:
        assert (o[0, 0, L - 2] == 0).all() and lse[0, 0, L - 2] == float("-inf") and (dq[0, 0, L - 2] == 0).all()


def test_float64_tight():
    """fp64 (the interpreter's gradcheck dtype): 1e-10 with mask, causal and a scale."""
    q, k, v = make_qkv(1, 2, 21, 29, 40, torch.float64)
    mask = torch.randn(1, 1, 21, 29, device=DEVICE, dtype=torch.float64).expand(1, 2, 21, 29)
    o, lse, grads = check(q, k, v, mask=mask, causal=True, scale=0.3)
    ref, ref_lse = attn.attention_reference(q, k, v, mask=mask, causal=True, scale=0.3)
    assert rel_error(o, ref) < 1e-10 and (lse - ref_lse).abs().max() < 1e-10
    do = torch.randn_like(o)
    for det in (False, True):
        grads = attn.attention_backward(do, q, k, v, o, lse, mask=mask, causal=True, scale=0.3, deterministic=det)
        ref_grads = attn.attention_backward_reference(do, q, k, v, mask=mask, causal=True, scale=0.3)
        for g, r in zip(grads, ref_grads):
            assert rel_error(g, r) < 1e-10


def test_causal_matches_sdpa_convention():
    """is_causal is SDPA's top-left tril, also when Lq != Lk."""
    for lq, lk in ((5, 9), (9, 5)):
        q, k, v = make_qkv(1, 1, lq, lk, 16, torch.float64)
        o, _ = attn.attention_reference(q, k, v, causal=True)
        assert rel_error(o, F.scaled_dot_product_attention(q, k, v, is_causal=True)) < 1e-12


# ----------------------------------------------------------------------------- masks

@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_additive_mask_broadcast_and_minus_inf(dtype):
    """A mask broadcast over heads (stride 0), with -inf entries and one fully masked
    row: o = 0, lse = -inf and zero gradient there, no NaN anywhere."""
    B, H, Lq, Lk, D = 2, 2, 21, 27, 32
    q, k, v = make_qkv(B, H, Lq, Lk, D, dtype)
    base = torch.randn(B, 1, Lq, Lk, device=DEVICE)
    base[torch.rand_like(base) < 0.3] = float("-inf")
    base[0, 0, 5] = float("-inf")  # query 5 of batch 0 sees nothing, in every head
    mask = base.to(dtype).expand(B, H, Lq, Lk)
    assert mask.stride(1) == 0
    o, lse, (dq, dk, dv) = check(q, k, v, mask=mask)
    assert (o[0, :, 5] == 0).all() and (lse[0, :, 5] == float("-inf")).all() and (dq[0, :, 5] == 0).all()


def test_float32_mask_with_half_inputs_and_causal():
    q, k, v = make_qkv(1, 2, 19, 19, 64, torch.float16)
    mask = torch.randn(19, 19, device=DEVICE).expand(1, 2, 19, 19)  # stride 0 on B and H
    check(q, k, v, mask=mask, causal=True)


# ----------------------------------------------------------------------------- dropout

def test_dropout_keep_mask():
    p = 0.3
    keep = attn.dropout_keep_mask(123, p, 2, 3, 33, 47, DEVICE)
    assert keep.shape == (2, 3, 33, 47) and keep.dtype == torch.bool
    assert abs(keep.float().mean().item() - (1 - p)) < 0.02
    assert torch.equal(keep, attn.dropout_keep_mask(123, p, 2, 3, 33, 47, DEVICE))
    assert not torch.equal(keep, attn.dropout_keep_mask(124, p, 2, 3, 33, 47, DEVICE))


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_dropout_matches_reference(dtype):
    """Forward and backward regenerate exactly dropout_keep_mask's mask for the seed."""
    B, H, Lq, Lk, D, p, seed = 1, 2, 23, 30, 32, 0.25, 7
    q, k, v = make_qkv(B, H, Lq, Lk, D, dtype)
    keep = attn.dropout_keep_mask(seed, p, B, H, Lq, Lk, DEVICE)
    o, _, _ = check(q, k, v, causal=True, dropout_p=p, seed=seed, dropout_mask=keep)
    again, _ = attn.attention_forward(q, k, v, causal=True, dropout_p=p, seed=seed)
    other, _ = attn.attention_forward(q, k, v, causal=True, dropout_p=p, seed=seed + 1)
    assert torch.equal(o, again) and not torch.equal(o, other)


# ----------------------------------------------------------------------------- layouts, determinism

def test_strided_inputs_and_expanded_grad():
    """q/k/v as transposes of (B, L, H, D) tensors and the stride-0 gradient of .sum()."""
    q, k, v = make_qkv(2, 3, 13, 13, 48, torch.float32, layout="blhd")
    assert not q.is_contiguous()
    do = expanded_grad((2, 3, 13, 48), torch.float32)
    check(q, k, v, do=do)


def test_deterministic_backward():
    """deterministic=True matches the atomic path up to rounding and repeats bitwise."""
    q, k, v = make_qkv(1, 2, 37, 33, 32, torch.float32)
    o, lse = attn.attention_forward(q, k, v, causal=True)
    do = torch.randn_like(o)
    fast = attn.attention_backward(do, q, k, v, o, lse, causal=True)
    det = attn.attention_backward(do, q, k, v, o, lse, causal=True, deterministic=True)
    det2 = attn.attention_backward(do, q, k, v, o, lse, causal=True, deterministic=True)
    for a, b, c in zip(fast, det, det2):
        assert rel_error(a, b) < 1e-6
        assert torch.equal(b, c)
    check(q, k, v, causal=True, deterministic=True)


# ----------------------------------------------------------------------------- edge cases

@pytest.mark.parametrize("B,H,Lq,Lk", [(0, 2, 5, 5), (1, 0, 5, 5), (1, 2, 0, 5), (1, 2, 5, 0)])
def test_empty(B, H, Lq, Lk):
    q, k, v = make_qkv(B, H, Lq, Lk, 16, torch.float32)
    o, lse = attn.attention_forward(q, k, v)
    assert o.shape == (B, H, Lq, 16) and lse.shape == (B, H, Lq)
    if Lk == 0:
        assert (o == 0).all() and (lse == float("-inf")).all()
    grads = attn.attention_backward(torch.randn_like(o), q, k, v, o, lse)
    for g, t in zip(grads, (q, k, v)):
        assert g.shape == t.shape and (g == 0).all()


def test_reasons_and_flops():
    q, k, v = make_qkv(1, 1, 4, 4, 64, torch.float32)
    assert attn.attention_reasons(q, k, v, None, False, 0.0) == []
    big = torch.empty(1, 1, 4, 320)
    assert any("head_dim" in r for r in attn.attention_reasons(big, big, big, None, False, 0.0))
    assert any("head dims differ" in r for r in attn.attention_reasons(q, k, v[..., :32], None, False, 0.0))
    assert any("dropout_p" in r for r in attn.attention_reasons(q, k, v, None, False, 1.0))
    huge = torch.empty(0, device="meta").as_strided((1, 1, 4, 64), (0, 0, 2**30, 1))  # rows 2^30 apart
    assert any("int32" in r for r in attn.attention_reasons(huge, k, v, None, False, 0.0))


def test_flops_and_traffic_bytes():
    """By hand for B, H, Lq, Lk, D = 2, 3, 5, 7, 8: forward 4 * 1680 = 6720 FLOPs (two
    matmuls of 2 * 1680 each), causal half; backward 2.5x, forward+backward 3.5x.
    Bytes (2-byte inputs, fp32 lse/delta), per (b, h) slice: forward q, o 40 elements
    each, k, v 56 each, lse 5 floats: 2 * 192 + 4 * 5 = 404; backward q, o, do, dq and
    k, v, dk, dv: 2 * 384, lse read, delta written and read: 4 * 15, = 828; six slices."""
    assert attn.flops(2, 3, 5, 7, 8, False) == 6720
    assert attn.flops(2, 3, 5, 7, 8, True) == 3360
    assert attn.flops(2, 3, 5, 7, 8, True, "bwd") == 8400
    assert attn.flops(2, 3, 5, 7, 8, False, "fwd+bwd") == 23520
    assert attn.traffic_bytes(2, 3, 5, 7, 8, 2, 4) == 6 * 404 == 2424
    assert attn.traffic_bytes(2, 3, 5, 7, 8, 2, 4, "bwd") == 6 * 828 == 4968
    assert attn.traffic_bytes(2, 3, 5, 7, 8, 2, 4, "fwd+bwd") == 2424 + 4968


# ----------------------------------------------------------------------------- GPU sizes

@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32], ids=str)
@pytest.mark.parametrize("D", [64, 80, 128])
@pytest.mark.parametrize("causal", [False, True])
def test_gpu_vit_sizes(D, dtype, causal):
    """ViT-B/16 at 384 px (577 tokens) against SDPA's error in the same dtype (fp32:
    both follow torch.backends.cuda.matmul.allow_tf32)."""
    q, k, v = make_qkv(2, 4, 577, 577, D, dtype, layout="blhd")
    check(q, k, v, causal=causal)
    check(q, k, v, causal=causal, deterministic=True)


def test_exact_fp32_calls_get_the_fma_autotuner():
    """On the GPU an exact (ieee) fp32 dot runs on FMAs, where the tensor-core tiles
    spill; the launcher hands such calls the autotuner over the small FMA tiles, every
    other call the tensor-core one. Each kernel's two autotuners wrap one jit function."""
    from fastcnn.triton_kernels import attention as at
    for kernel in (at._attention_forward_kernel, at._attention_dkdv_kernel, at._attention_dq_kernel):
        assert kernel.mma.fn is kernel.fn and kernel.fma.fn is kernel.fn
        for dtype, prec, want in [(torch.float32, "ieee", kernel.fma), (torch.float32, "tf32", kernel.mma),
                                  (torch.bfloat16, "ieee", kernel.mma), (torch.float16, "ieee", kernel.mma),
                                  (torch.float64, "ieee", kernel.mma)]:
            assert kernel.for_call(dtype, prec) is want, (kernel.fn.__name__, dtype, prec)

