"""fastcnn.ops.attention and fastcnn.nn.MultiheadSelfAttention through the whole op
stack: SDPA's semantics (masks, causal, scale), autograd, dropout replayed by seed
across backends, determinism, opcheck, torch.compile, dispatch, errors; the module
against torch.nn.MultiheadAttention and ``convert``. Kernel-level shape and dtype
matrices are in test_attention_kernels.py."""
import warnings

import pytest
import torch
import torch.nn.functional as F

import fastcnn.nn
from fastcnn import ops
from fastcnn.nn import MultiheadSelfAttention
from fastcnn.ops.attention import _dropout_seed, attention_backward_op, attention_op, keep_mask
from fastcnn.triton_kernels import attention as attn_kernels
from helpers import DEVICE, DTYPES, assert_close, assert_grads_close, expanded_grad, leaves64

ALGOS = ["triton", "reference"]
# ops.attention takes the deterministic backward when torch's deterministic flag is
# on, which conftest's NaN fill of uninitialized memory needs: leave it off here so
# the default (atomic dq) path is the one tested.
FILL_UNINITIALIZED_MEMORY = False


def qkv(b=2, h=3, lq=13, lk=None, d=32, dtype=torch.float32, requires_grad=True):
    lk = lq if lk is None else lk
    make = lambda l: torch.randn(b, h, l, d, device=DEVICE, dtype=dtype).requires_grad_(requires_grad)  # noqa: E731
    return make(lq), make(lk), make(lk)


def sdpa64(q, k, v, **kwargs):
    """(leaves, out): PyTorch's SDPA in float64, the oracle."""
    leaves = leaves64(q, k, v)
    mask = kwargs.pop("attn_mask", None)
    if mask is not None and mask.is_floating_point():
        mask = mask.double()
    return leaves, F.scaled_dot_product_attention(*leaves, attn_mask=mask, **kwargs)


def check_grads(out, ref, inputs, leaves, dtype=torch.float32, grad=None):
    assert_grads_close(out, ref, inputs, leaves, dtype, grad=grad, factor=2, names=("dq", "dk", "dv", "dmask"))


def dropout_oracle(q, k, v, keep, p, mask=None):
    """softmax(q k^T / sqrt(D) + mask), dropped with the keep mask and rescaled, @ v:
    the float64 oracle of seeded dropout."""
    s = q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5
    s = s if mask is None else s + mask
    return (s.softmax(-1) * keep / (1 - p)) @ v


@pytest.mark.parametrize("algo", ALGOS)
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("lq, lk", [(13, 13), (7, 19)])
def test_forward_backward(algo, causal, lq, lk):
    q, k, v = qkv(lq=lq, lk=lk)
    out = ops.attention(q, k, v, causal=causal, algo=algo)
    leaves, ref = sdpa64(q, k, v, is_causal=causal)
    assert_close(out, ref, what="out")
    check_grads(out, ref, (q, k, v), leaves)


@pytest.mark.parametrize("dtype", DTYPES)
def test_dtypes_scale_and_expanded_grad(dtype):
    q, k, v = qkv(1, 2, 11, d=64, dtype=dtype)
    out = ops.attention(q, k, v, scale=0.3)
    assert out.dtype == dtype
    leaves, ref = sdpa64(q, k, v, scale=0.3)
    assert_close(out, ref, dtype, what="out")
    check_grads(out, ref, (q, k, v), leaves, dtype, grad=expanded_grad(ref.shape, torch.float64))


def test_autocast_casts_before_the_checks():
    """Under autocast the inputs are cast first (as SDPA's are), so the dtype check
    sees what the kernels get: mixed fp32/fp16 inputs are fine there, not outside."""
    q, k, v = qkv(1, 2, 9)
    k16 = k.detach().half().requires_grad_()
    with pytest.raises(TypeError, match="'key' has dtype"):
        ops.attention(q, k16, v)
    with torch.autocast(DEVICE, dtype=torch.float16):
        out = ops.attention(q, k16, v)
    assert out.dtype == torch.float16
    leaves, ref = sdpa64(q, k16, v)
    assert_close(out, ref, torch.float16, what="out")
    check_grads(out, ref, (q, k16, v), leaves, torch.float16)


def test_autocast_runs_in_the_autocast_dtype():
    q, k, v = qkv(2, 2, 9, d=32)
    with torch.autocast(DEVICE, dtype=torch.float16):
        out = ops.attention(q, k, v, causal=True)
    assert out.dtype == torch.float16
    leaves, ref = sdpa64(q, k, v, is_causal=True)
    assert_close(out, ref, torch.float16, what="out")
    check_grads(out, ref, (q, k, v), leaves, torch.float16)


@pytest.mark.parametrize("algo", ALGOS)
def test_masks(algo):
    q, k, v = qkv(2, 3, 9, 12)
    float_mask = torch.randn(2, 1, 9, 12, device=DEVICE)     # broadcast over heads
    float_mask[0, 0, 3, :5] = float("-inf")
    bool_mask = torch.rand(9, 12, device=DEVICE) > 0.3       # broadcast over batch and heads
    bool_mask[4] = False                                     # a row that attends to nothing
    for mask in (float_mask, bool_mask):
        for causal in (False, True):
            out = ops.attention(q, k, v, attn_mask=mask, causal=causal, algo=algo)
            leaves, ref = sdpa64(q, k, v, attn_mask=_with_causal(mask, causal))
            ref = ref.nan_to_num(0.0)  # fully masked rows: ours are 0 (older SDPA versions give NaN)
            assert_close(out, ref, what=f"out ({mask.dtype}, causal={causal})")
    out = ops.attention(q, k, v, attn_mask=float_mask, algo=algo)
    leaves, ref = sdpa64(q, k, v, attn_mask=float_mask)
    check_grads(out, ref, (q, k, v), leaves)


def _with_causal(mask, causal):
    if not causal:
        return mask
    visible = torch.ones(mask.shape[-2:], dtype=torch.bool, device=mask.device).tril()
    if mask.dtype == torch.bool:
        return mask & visible
    return mask.masked_fill(~visible, float("-inf"))


def test_fully_masked_rows_are_zero_with_zero_grads():
    q, k, v = qkv(1, 1, 4, 6)
    mask = torch.zeros(4, 6, dtype=torch.bool, device=DEVICE)
    mask[:2] = True
    out = ops.attention(q, k, v, attn_mask=mask)
    assert torch.isfinite(out).all() and (out[:, :, 2:] == 0).all()
    out.sum().backward()
    assert torch.isfinite(q.grad).all() and (q.grad[:, :, 2:] == 0).all()


def test_mask_requiring_grad_is_differentiated():
    q, k, v = qkv(1, 2, 5)
    mask = torch.randn(1, 2, 5, 5, device=DEVICE, requires_grad=True)
    with pytest.warns(UserWarning, match="attn_mask requires grad"):
        out = ops.attention(q, k, v, attn_mask=mask, causal=True)
    leaves = leaves64(q, k, v, mask)
    ref = F.scaled_dot_product_attention(*leaves[:3], attn_mask=_with_causal(leaves[3], True))
    assert_close(out, ref, what="out")
    check_grads(out, ref, (q, k, v, mask), leaves)


def test_mask_requiring_grad_keeps_the_seeded_dropout():
    """The differentiable path a mask requiring grad takes drops with the seed's keep
    mask, as the kernels do: same output as without grad, gradients (the mask's too)
    against the float64 oracle."""
    q, k, v = qkv(1, 2, 9, dtype=torch.float64)
    mask = torch.randn(2, 9, 9, device=DEVICE, dtype=torch.float64, requires_grad=True)  # broadcast over batch
    p, seed = 0.3, 11
    with pytest.warns(UserWarning, match="attn_mask requires grad"):
        out = ops.attention(q, k, v, attn_mask=mask, dropout_p=p, seed=seed)
    assert_close(out, ops.attention(q, k, v, attn_mask=mask.detach(), dropout_p=p, seed=seed).double(),
                 torch.float64, what="grad path vs kernel")
    leaves = leaves64(q, k, v, mask)
    ref = dropout_oracle(*leaves[:3], keep_mask(seed, p, q, k), p, mask=leaves[3])
    assert_close(out, ref, torch.float64, what="out")
    check_grads(out, ref, (q, k, v, mask), leaves, torch.float64)


@pytest.mark.parametrize("mask_dtype, q_dtype", [(torch.bool, torch.float32), (torch.float64, torch.float32),
                                                 (torch.float32, torch.float16)])
def test_expanded_mask_reaches_the_kernels_as_a_view(monkeypatch, mask_dtype, q_dtype):
    """A (1, 1, L, L) mask expanded to (B, H, L, L) reaches the forward and backward
    kernels as a stride-0 view of L*L elements, also when it had to be converted (bool
    to additive, fp64 to fp32): no B*H*L*L copy."""
    B, H, L = 2, 3, 9
    seen = []
    for name, at in (("attention_forward", 3), ("attention_backward", 6)):
        def spy(*args, real=getattr(attn_kernels, name), at=at, **kwargs):
            seen.append(args[at])
            return real(*args, **kwargs)
        monkeypatch.setattr(attn_kernels, name, spy)
    q, k, v = qkv(B, H, L, dtype=q_dtype)
    base = torch.rand(1, 1, L, L, device=DEVICE) > 0.3 if mask_dtype == torch.bool else \
        torch.randn(1, 1, L, L, device=DEVICE, dtype=mask_dtype)
    mask = base.expand(B, H, L, L)
    out = ops.attention(q, k, v, attn_mask=mask, algo="triton")
    out.backward(torch.randn_like(out))
    assert len(seen) == 2
    for m in seen:
        assert m.shape == (B, H, L, L) and m.stride()[:2] == (0, 0)
        assert m.untyped_storage().nbytes() == L * L * m.element_size()
    leaves, ref = sdpa64(q, k, v, attn_mask=mask)
    assert_close(out, ref.nan_to_num(0.0), what="out")


def test_sdpa_backend_keeps_expanded_masks_as_views(monkeypatch):
    """The cudnn backend (SDPA; called directly, dispatch keeps CPU tensors off it)
    folds causal into an expanded float32 mask and casts it to q's float64 without a
    (B, H, L, L) copy."""
    from fastcnn.ops.attention import _cudnn_forward
    B, H, L = 2, 3, 9
    seen = []

    def spy(*args, real=F.scaled_dot_product_attention, **kwargs):
        seen.append(kwargs["attn_mask"])
        return real(*args, **kwargs)
    monkeypatch.setattr(F, "scaled_dot_product_attention", spy)
    q, k, v = qkv(B, H, L, dtype=torch.float64, requires_grad=False)
    mask = torch.randn(1, 1, L, L, device=DEVICE).expand(B, H, L, L)
    out, _ = _cudnn_forward(q, k, v, mask, True, 0.25, 0.0, None, False)
    (m,) = seen
    assert m.dtype == torch.float64 and m.stride()[:2] == (0, 0) and m.untyped_storage().nbytes() == L * L * 8
    assert_close(out, sdpa64(q, k, v, attn_mask=_with_causal(mask, True), scale=0.25)[1], torch.float64)


@pytest.mark.parametrize("algo", ALGOS)
def test_dropout_is_replayed_by_seed(algo):
    q, k, v = qkv(1, 2, 10, d=32, dtype=torch.float64)
    p = 0.3
    out = ops.attention(q, k, v, dropout_p=p, seed=1234, algo=algo)
    again = ops.attention(q, k, v, dropout_p=p, seed=1234, algo=algo)
    other = ops.attention(q, k, v, dropout_p=p, seed=99, algo=algo)
    assert torch.equal(out, again) and not torch.allclose(out, other)
    keep = keep_mask(1234, p, q, k)
    assert 0.5 < keep.float().mean().item() < 0.9
    leaves = leaves64(q, k, v)
    ref = dropout_oracle(*leaves, keep, p)
    assert_close(out, ref, torch.float64, what="out")
    check_grads(out, ref, (q, k, v), leaves, torch.float64)


def test_dropout_forward_and_backward_backends_agree():
    """auto may send the forward and the backward to different backends: the seed's
    mask must be the same in both."""
    q, k, v = qkv(1, 2, 8, dtype=torch.float64)
    seed = torch.tensor(7, device=DEVICE)
    out, lse = attention_op(q, k, v, None, False, 0.2, 0.25, seed, False, True, "triton")
    do = torch.randn_like(out)
    grads = [attention_backward_op(do, q, k, v, out, lse, None, False, 0.2, 0.25, seed, False, algo)
             for algo in ALGOS]
    for a, b in zip(*grads):
        assert_close(a, b.double(), torch.float64)


def test_deterministic_backward_is_bitwise_repeatable():
    q, k, v = qkv(2, 2, 21, d=32)
    runs = []
    for _ in range(2):
        out = ops.attention(q, k, v, deterministic=True, algo="triton")
        runs.append(torch.autograd.grad(out.sum(), (q, k, v)))
    for a, b in zip(*runs):
        assert torch.equal(a, b)


def test_empty_batch_and_no_grad_skips_lse():
    q, k, v = qkv(0, 2, 5)
    out = ops.attention(q, k, v)
    assert out.shape == (0, 2, 5, 32)
    q, k, v = qkv(1, 2, 5, requires_grad=False)
    out, lse = attention_op(q, k, v, None, False, 0.5, 0.0, None, False, False, "triton")
    assert lse.numel() == 0


def test_noncontiguous_vit_layout():
    """q, k, v as ViT produces them: views of one (B, L, 3, H, D) projection."""
    qkv_ = torch.randn(2, 11, 3, 2, 32, device=DEVICE, requires_grad=True)
    q, k, v = qkv_.permute(2, 0, 3, 1, 4).unbind(0)
    assert not q.is_contiguous()
    out = ops.attention(q, k, v)
    leaves, ref = sdpa64(q, k, v)
    assert_close(out, ref, what="out")
    out.sum().backward()
    ref.sum().backward()
    assert_close(qkv_.grad, torch.stack([t.grad for t in leaves]).permute(1, 3, 0, 2, 4), what="grad")


@pytest.mark.parametrize("with_mask, dropout_p", [(False, 0.0), (True, 0.0), (False, 0.2)])
def test_opcheck(with_mask, dropout_p):
    q, k, v = qkv(1, 2, 7, 9)
    mask = torch.randn(1, 2, 7, 9, device=DEVICE) if with_mask else None
    seed = torch.tensor(3, device=DEVICE) if dropout_p else None
    args = (mask, False, 0.25, dropout_p, seed)
    torch.library.opcheck(attention_op, (q, k, v, *args, False, True, "triton"))
    out, lse = attention_op(q, k, v, *args, False, True, "triton")
    do = torch.randn_like(out)
    # no double backward: everything but the autograd checks
    torch.library.opcheck(attention_backward_op, (do, q, k, v, out, lse, *args, False, "triton"),
                          test_utils=("test_schema", "test_faketensor"))


def test_torch_compile_fullgraph():
    q, k, v = qkv(1, 2, 9)
    fn = torch.compile(lambda q, k, v: ops.attention(q, k, v, causal=True), fullgraph=True, backend="aot_eager")
    out = fn(q, k, v)
    leaves, ref = sdpa64(q, k, v, is_causal=True)
    assert_close(out, ref)
    check_grads(out, ref, (q, k, v), leaves)


def test_torch_compile_fullgraph_with_dropout():
    """The default dropout seed is a device tensor drawn by a traced op: no graph
    break. The same torch.manual_seed repeats the output, and the backward replays
    the forward's mask (gradients against the oracle of that seed's keep mask)."""
    q, k, v = qkv(1, 2, 9, dtype=torch.float64)
    p = 0.3
    fn = torch.compile(lambda q, k, v: ops.attention(q, k, v, dropout_p=p), fullgraph=True, backend="aot_eager")
    torch.manual_seed(5)
    seed = _dropout_seed(None, p, q)
    torch.manual_seed(5)
    out = fn(q, k, v)
    torch.manual_seed(5)
    assert torch.equal(fn(q, k, v), out)
    assert not torch.equal(fn(q, k, v), out)  # the generator moved on: another mask
    leaves = leaves64(q, k, v)
    ref = dropout_oracle(*leaves, keep_mask(seed, p, q, k), p)
    assert_close(out, ref, torch.float64, what="out")
    check_grads(out, ref, (q, k, v), leaves, torch.float64)


def test_fallback_warns_and_stays_right():
    q, k, v = qkv(1, 1, 4)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = ops.attention(q, k, v, algo="cudnn")  # CPU tensors: cudnn cannot take it
    assert any("cannot take this call" in str(w.message) for w in caught)
    assert_close(out, sdpa64(q, k, v)[1])


@pytest.mark.parametrize("call, match", [
    (lambda q, k, v: ops.attention(q[0], k, v), "'query' must be 4-dimensional"),
    (lambda q, k, v: ops.attention(q, k.double(), v), "'key' has dtype"),
    (lambda q, k, v: ops.attention(q, k[..., :16], v), "head_dim"),
    (lambda q, k, v: ops.attention(q, k, v[:, :, :3]), "sequence length"),
    (lambda q, k, v: ops.attention(q, k, v, attn_mask=torch.zeros(3, 5, 5)), "does not broadcast"),
    (lambda q, k, v: ops.attention(q, k, v, dropout_p=1.0), "dropout_p"),
    (lambda q, k, v: ops.attention(q, k, v, algo="fast"), "algo"),
])
def test_errors_name_op_and_argument(call, match):
    q, k, v = qkv(1, 2, 5, requires_grad=False)
    with pytest.raises((ValueError, TypeError), match=match) as info:
        call(q, k, v)
    assert "fastcnn.attention" in str(info.value)


# ----------------------------------------------------------------------------- nn module

def _mha_pair(batch_first=True, dropout=0.0, bias=True):
    torch_mha = torch.nn.MultiheadAttention(32, 2, dropout=dropout, bias=bias, batch_first=batch_first).to(DEVICE)
    return torch_mha, MultiheadSelfAttention.from_torch(torch_mha)


@pytest.mark.parametrize("batch_first", [True, False])
@pytest.mark.parametrize("masks", ["none", "padding", "bool2d", "float3d", "causal", "causal+padding"])
def test_mha_matches_torch(batch_first, masks):
    torch_mha, ours = _mha_pair(batch_first)
    b, l = 2, 7
    x = torch.randn((b, l, 32) if batch_first else (l, b, 32), device=DEVICE, requires_grad=True)
    kwargs = {}
    if "padding" in masks:
        kwargs["key_padding_mask"] = torch.tensor([[False] * 7, [False] * 4 + [True] * 3], device=DEVICE)
    elif masks == "bool2d":
        kwargs["attn_mask"] = torch.rand(l, l, device=DEVICE) > 0.7
        kwargs["attn_mask"].fill_diagonal_(False)
    elif masks == "float3d":
        kwargs["attn_mask"] = torch.randn(b * 2, l, l, device=DEVICE)
    if masks == "causal":
        kwargs.update(attn_mask=torch.nn.Transformer.generate_square_subsequent_mask(l, device=DEVICE),
                      is_causal=True)
    elif masks == "causal+padding":  # bool, like the padding mask (torch deprecates mixing the two)
        kwargs.update(attn_mask=torch.ones(l, l, dtype=torch.bool, device=DEVICE).triu(1), is_causal=True)
    out, weights = ours(x, x, x, need_weights=False, **kwargs)
    # torch given the explicit masks alone: no is_causal hint to act on
    ref, _ = torch_mha(x, x, x, need_weights=False, **{k: m for k, m in kwargs.items() if k != "is_causal"})
    assert weights is None
    assert_close(out, ref.double(), factor=3, what="out")
    g_ours = torch.autograd.grad(out.sum(), (x, torch_mha.in_proj_weight))
    g_ref = torch.autograd.grad(ref.sum(), (x, torch_mha.in_proj_weight))
    for a, r in zip(g_ours, g_ref):
        assert_close(a, r.double(), factor=3)


def test_mha_cross_attention_and_need_weights_fallback():
    torch_mha, ours = _mha_pair()
    q, kv = torch.randn(2, 5, 32, device=DEVICE), torch.randn(2, 9, 32, device=DEVICE)
    assert_close(ours(q, kv, kv, need_weights=False)[0], torch_mha(q, kv, kv, need_weights=False)[0].double(),
                 factor=3)
    out, weights = ours(q, kv, kv)  # torch's default need_weights=True: torch's own forward
    assert weights.shape == (2, 5, 9)
    assert "need_weights" in ours.fused_reasons(q, kv, kv, True)[0]


def test_mha_state_dict_matches_torch():
    torch_mha, ours = _mha_pair()
    assert ours.in_proj_weight is torch_mha.in_proj_weight
    fresh = MultiheadSelfAttention(32, 2, batch_first=True)
    assert fresh.state_dict().keys() == torch_mha.state_dict().keys()
    fresh.load_state_dict(torch_mha.state_dict())


def test_convert_swaps_multihead_attention():
    layer = torch.nn.TransformerEncoderLayer(32, 2, 64, dropout=0.0, batch_first=True).to(DEVICE)
    x = torch.randn(2, 6, 32, device=DEVICE)
    ref = layer(x)
    fastcnn.nn.convert(layer)
    assert type(layer.self_attn) is MultiheadSelfAttention
    assert_close(layer(x), ref.double(), factor=3)



# (module arguments, call) of the torch.nn.MultiheadAttention matrix beyond the one
# above: whatever torch accepts, ours returns the same (its fused path or torch's).
MHA_CONFIGS = {
    "kdim_vdim": (dict(kdim=24, vdim=40), "cross"),
    "bias_kv": (dict(add_bias_kv=True), "self"),
    "zero_attn": (dict(add_zero_attn=True), "self"),
    "no_bias": (dict(bias=False), "self"),
    "dropout_eval": (dict(dropout=0.5), "self"),
    "unbatched": ({}, "unbatched"),
    "float_padding": ({}, "float_padding"),
    "bool3d": ({}, "bool3d"),
    "per_head_weights": ({}, "per_head_weights"),
}


@pytest.mark.parametrize("config", list(MHA_CONFIGS))
def test_mha_matches_torch_across_its_arguments(config):
    module_args, call = MHA_CONFIGS[config]
    torch.manual_seed(0)
    torch_mha = torch.nn.MultiheadAttention(32, 4, batch_first=True, **module_args).to(DEVICE).eval()
    ours = MultiheadSelfAttention.from_torch(torch_mha)
    b, l, s = 2, 7, 5
    x = torch.randn(b, l, 32, device=DEVICE, requires_grad=True)
    q = k = v = x
    kwargs = dict(need_weights=False)
    if call == "cross":
        k, v = torch.randn(b, s, 24, device=DEVICE), torch.randn(b, s, 40, device=DEVICE)
    elif call == "unbatched":
        q = k = v = x[0]
    elif call == "float_padding":
        pad = torch.zeros(b, l, device=DEVICE)
        pad[1, 5:] = float("-inf")
        kwargs["key_padding_mask"] = pad
    elif call == "bool3d":
        mask = torch.rand(b * 4, l, l, device=DEVICE) > 0.6
        mask[:, torch.arange(l), torch.arange(l)] = False
        kwargs["attn_mask"] = mask
    elif call == "per_head_weights":
        kwargs = dict(need_weights=True, average_attn_weights=False)
    out, weights = ours(q, k, v, **kwargs)
    ref, ref_weights = torch_mha(q, k, v, **kwargs)
    assert_close(out, ref.double(), factor=3, what=f"{config}: out")
    if ref_weights is not None:
        assert weights.shape == ref_weights.shape == (b, 4, l, l)
        assert_close(weights, ref_weights.double(), factor=3, what=f"{config}: weights")
    (g_ours,), (g_ref,) = (torch.autograd.grad(o.square().sum(), (x,)) for o in (out, ref))
    assert_close(g_ours, g_ref.double(), factor=3, what=f"{config}: dx")


def test_mha_is_causal_without_a_mask_is_refused_as_torch_refuses_it():
    torch_mha, ours = _mha_pair()
    x = torch.randn(2, 5, 32, device=DEVICE)
    for mha in (torch_mha, ours):
        with pytest.raises(RuntimeError, match="attn_mask"):
            mha(x, x, x, need_weights=False, is_causal=True)


@pytest.mark.parametrize("budget", [1 << 26, 50, 1])
def test_sdpa_forward_lse_in_bounded_blocks(budget):
    """The cudnn forward's log-sum-exp (for a backward on another backend) is computed
    in blocks of at most ``budget`` scores: any split of images and query rows gives
    the whole matrix's answer."""
    from fastcnn.ops.attention import _lse_chunked
    q, k = torch.randn(3, 2, 9, 8, dtype=torch.float64), torch.randn(3, 2, 11, 8, dtype=torch.float64)
    mask = torch.randn(1, 2, 9, 11, dtype=torch.float64).expand(3, 2, 9, 11)
    for causal in (False, True):
        s = q @ k.transpose(-1, -2) * 0.3 + mask
        if causal:
            s = s.masked_fill(torch.ones(9, 11, dtype=torch.bool).triu(1), float("-inf"))
        torch.testing.assert_close(_lse_chunked(q, k, mask, causal, 0.3, budget), torch.logsumexp(s, -1))
