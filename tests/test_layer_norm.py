"""fastcnn.ops.layer_norm.layer_norm and fastcnn.nn.layernorm.LayerNorm: forward and
backward (dx, dweight, dbias, d residual, d sum) against float64, odd N, the chunked
long-row path, several normalized dims, empty batches, strided inputs, stride-0
gradients, low-precision error against PyTorch's own, gradcheck, opcheck,
torch.compile, dispatch, errors; real ViT sizes on the GPU."""
import warnings

import pytest
import torch
import torch.nn.functional as F

from fastcnn.nn.layernorm import LayerNorm
from fastcnn.ops.layer_norm import layer_norm, layer_norm_backward_op, layer_norm_op
from fastcnn.triton_kernels import layernorm as ln_kernels
from helpers import DEVICE, DTYPES, ON_GPU, assert_close, expanded_grad, rel_error


def _param(shape, dtype=torch.float32):
    return (1 + 0.5 * torch.randn(shape, device=DEVICE)).to(dtype).requires_grad_()


def reference64(x, shape, weight, bias, residual=None, eps=1e-5):
    """(leaves, y, h) of the float64 oracle: F.layer_norm(x + residual)."""
    leaves = [None if t is None else t.detach().double().requires_grad_() for t in (x, residual, weight, bias)]
    x64, r64, w64, b64 = leaves
    h = x64 if r64 is None else x64 + r64
    return leaves, F.layer_norm(h, shape, w64, b64, eps), h


def check_against_float64(x, shape, weight=None, bias=None, residual=None, dtype=torch.float32, algo="auto",
                          grad=None):
    """Forward and every gradient against float64; the sum gets a gradient of its own."""
    out = layer_norm(x, shape, weight, bias, residual=residual, algo=algo)
    leaves, ref, h = reference64(x, shape, weight, bias, residual)
    y, s = out if residual is not None else (out, None)
    assert_close(y, ref, dtype, what="y")
    if s is not None:
        assert_close(s, h, dtype, what="sum")
    g = torch.randn_like(ref) if grad is None else grad.double()
    outs, grads, refs = [y], [g.to(y.dtype) if grad is None else grad], [ref]
    if s is not None:
        gs = torch.randn_like(h)
        outs, grads, refs = outs + [s], grads + [gs.to(s.dtype)], refs + [h]
    inputs = [t for t in (x, residual, weight, bias) if t is not None and t.requires_grad]
    got = torch.autograd.grad(outs, inputs, grads)
    want = torch.autograd.grad(refs, [l for l in leaves if l is not None and l.requires_grad],
                               [g] + ([gs] if s is not None else []))
    for name, a, b in zip(("d1", "d2", "d3", "d4"), got, want):
        # dweight and dbias are sums over rows: the dtype's rounding of dy dominates
        assert_close(a, b, dtype, factor=2, what=name)


def test_reference_backward_matches_autograd():
    x = torch.randn(3, 4, 9, dtype=torch.float64)
    w, b, dy, ds = torch.randn(9, dtype=torch.float64), torch.randn(9, dtype=torch.float64), \
        torch.randn_like(x), torch.randn_like(x)
    _, _, mean, rstd = ln_kernels.layer_norm_reference(x, w, b)
    dx, dw, db = ln_kernels.layer_norm_backward_reference(dy, x, w, mean, rstd, ds)
    leaves = [t.clone().requires_grad_() for t in (x, w, b)]
    want = torch.autograd.grad(F.layer_norm(leaves[0], (9,), leaves[1], leaves[2]), leaves, dy)
    torch.testing.assert_close(dx, want[0] + ds)
    torch.testing.assert_close(dw, want[1])
    torch.testing.assert_close(db, want[2])


SHAPES = [(2, 5, 37), (7, 100), (4, 3), (37,), (2, 3, 2, 16)]


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("affine", ["wb", "w", "none"])
@pytest.mark.parametrize("residual", [False, True], ids=["plain", "residual"])
def test_forward_backward(shape, affine, residual):
    x = torch.randn(shape, device=DEVICE).mul_(3).add_(1).requires_grad_()
    n = shape[-1]
    w = _param(n) if affine != "none" else None
    b = _param(n) if affine == "wb" else None
    r = torch.randn(shape, device=DEVICE, requires_grad=True) if residual else None
    check_against_float64(x, (n,), w, b, r)


@pytest.mark.parametrize("residual", [False, True], ids=["plain", "residual"])
def test_chunked_long_rows(residual):
    """Rows wider than the register tile (forced: BLOCK_N = 16 < N = 37): the
    three-pass forward and the two-pass backward with partial-row read-modify-write."""
    x = torch.randn(3, 7, 37, device=DEVICE) * 2 + 5
    r = torch.randn_like(x) if residual else None
    w, b = torch.randn(37, device=DEVICE), torch.randn(37, device=DEVICE)
    y, s, mean, rstd = ln_kernels.layer_norm_forward(x, w, b, 1e-5, r, block_n=16)
    ref_y, ref_h, ref_mean, ref_rstd = ln_kernels.layer_norm_reference(
        x.double(), w.double(), b.double(), 1e-5, None if r is None else r.double())
    assert_close(y, ref_y)
    assert_close(mean, ref_mean)
    assert_close(rstd, ref_rstd)
    if residual:
        assert_close(s, ref_h)
    h = s if residual else x
    dy, ds = torch.randn_like(x), torch.randn_like(x)
    got = ln_kernels.layer_norm_backward(dy, h, w, mean, rstd, ds if residual else None, block_n=16)
    want = ln_kernels.layer_norm_backward_reference(dy.double(), h.double(), w.double(), ref_mean, ref_rstd,
                                                    ds.double() if residual else None)
    for a, b_, what in zip(got, want, ("dx", "dw", "db")):
        assert_close(a, b_, torch.float32, what=what)


def test_several_normalized_dims():
    x = torch.randn(2, 5, 3, 4, device=DEVICE, requires_grad=True)
    check_against_float64(x, (3, 4), _param((3, 4)), _param((3, 4)), torch.randn_like(x).requires_grad_())


@pytest.mark.parametrize("residual", [False, True], ids=["plain", "residual"])
def test_empty_batch(residual):
    x = torch.randn(0, 5, 37, device=DEVICE, requires_grad=True)
    r = torch.randn_like(x).requires_grad_() if residual else None
    w, b = _param(37), _param(37)
    out = layer_norm(x, 37, w, b, residual=r)
    y = out[0] if residual else out
    assert y.shape == x.shape
    dx, dw, db = torch.autograd.grad(y.sum(), (x, w, b))
    assert dx.shape == x.shape and torch.equal(dw, torch.zeros_like(dw)) and torch.equal(db, torch.zeros_like(db))


@pytest.mark.parametrize("view", ["transposed", "sliced", "last_dim_strided"])
def test_strided_inputs_and_expanded_grad(view):
    base = torch.randn(5, 2, 74, device=DEVICE)
    if view == "transposed":       # (B, L, N) seen through a (L, B, N) buffer
        x = base[..., :37].transpose(0, 1)
    elif view == "sliced":         # every other token, half the features
        x = base.transpose(0, 1)[:, ::2, 10:47]
    else:                          # features with stride 2
        x = base[..., ::2]
    x = x.requires_grad_()
    r = torch.randn(x.shape, device=DEVICE).transpose(0, 1).contiguous().transpose(0, 1).requires_grad_()
    w, b = _param(37), _param(37)
    y, h = layer_norm(x, (37,), w, b, residual=r)
    assert y.is_contiguous()
    (y.sum() + h.sum()).backward()  # stride-0 gradients for both outputs
    leaves, ref, h64 = reference64(x, (37,), w, b, r)
    (ref.sum() + h64.sum()).backward()
    assert_close(y, ref)
    for t, l in zip((x, r, w, b), leaves):
        assert_close(t.grad, l.grad, torch.float32, factor=2, what="grad")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("residual", [False, True], ids=["plain", "residual"])
def test_dtypes_error_at_most_twice_pytorchs(dtype, residual):
    x = (torch.randn(6, 9, 100, device=DEVICE) * 4 + 2).to(dtype).requires_grad_()
    r = torch.randn(x.shape, device=DEVICE).to(dtype).requires_grad_() if residual else None
    w, b = _param(100, dtype), _param(100, dtype)
    out = layer_norm(x, 100, w, b, residual=r)
    y = out[0] if residual else out
    assert y.dtype == dtype
    g = expanded_grad(y.shape, dtype)
    dx, dw, db = torch.autograd.grad(y, (x, w, b), g)
    leaves, ref, _ = reference64(x, (100,), w, b, r)
    want = torch.autograd.grad(ref, [leaves[0], leaves[2], leaves[3]], g.double())
    # PyTorch's own layer norm in this dtype (on the rounded sum, as ours), against float64
    hh = (x + r if residual else x).detach().requires_grad_()
    ww, bb = w.detach().requires_grad_(), b.detach().requires_grad_()
    theirs = F.layer_norm(hh, (100,), ww, bb)
    their_grads = torch.autograd.grad(theirs, (hh, ww, bb), g)
    floor = {torch.float32: 1e-6, torch.float16: 1e-4, torch.bfloat16: 1e-3}[dtype]
    for what, ours, tgt, pt in (("y", y, ref, theirs), ("dx", dx, want[0], their_grads[0]),
                                ("dw", dw, want[1], their_grads[1]), ("db", db, want[2], their_grads[2])):
        assert_close(ours, tgt, dtype, factor=2, what=what)
        assert rel_error(ours, tgt) <= 2 * rel_error(pt, tgt) + floor, what


def test_mixed_precision_parameters():
    """fp32 weight and bias with a half-precision input (PyTorch's CUDA kernel allows it)."""
    x = torch.randn(4, 3, 37, device=DEVICE).half().requires_grad_()
    w, b = _param(37), _param(37)
    y = layer_norm(x, 37, w, b)
    assert y.dtype == torch.float16
    dx, dw, db = torch.autograd.grad(y, (x, w, b), torch.randn_like(y))
    assert (dx.dtype, dw.dtype, db.dtype) == (torch.float16, torch.float32, torch.float32)
    leaves, ref, _ = reference64(x, (37,), w, b)
    assert_close(y, ref, torch.float16)


def test_only_the_sum_is_used():
    x = torch.randn(3, 37, device=DEVICE, requires_grad=True)
    r = torch.randn(3, 37, device=DEVICE, requires_grad=True)
    _, h = layer_norm(x, 37, residual=r)
    dx, dr = torch.autograd.grad(h, (x, r), torch.full_like(h, 3.0))
    assert torch.equal(dx, torch.full_like(x, 3.0)) and torch.equal(dr, torch.full_like(r, 3.0))


@pytest.mark.parametrize("residual", [False, True], ids=["plain", "residual"])
def test_outputs_take_in_place_ops(residual):
    """y = layer_norm(x); y.mul_(2) (an in-place dropout) works as after nn.LayerNorm:
    the outputs are tensors of their own, not views of the kernels' 2-D results."""
    x = torch.randn(2, 3, 5, 24, device=DEVICE, requires_grad=True)
    r = torch.randn(2, 3, 5, 24, device=DEVICE, requires_grad=True) if residual else None
    w, b = _param(24), _param(24)
    out = layer_norm(x, (24,), w, b, residual=r)
    y, s = out if residual else (out, None)
    assert not y._is_view() and (s is None or not s._is_view())
    y.mul_(2)
    # (the sum is saved for the backward, as F.layer_norm(x + r) saves x + r: no in-place there)
    loss = y.square().sum() + (3 * s.sum() if residual else 0)
    leaves, ref, h = reference64(x, (24,), w, b, r)
    ref_loss = (2 * ref).square().sum() + (3 * h.sum() if residual else 0)
    inputs = [t for t in (x, r, w, b) if t is not None]
    refs = [t for t in leaves if t is not None]
    for got, want in zip(torch.autograd.grad(loss, inputs), torch.autograd.grad(ref_loss, refs)):
        assert rel_error(got, want) < 1e-5


def test_backward_is_deterministic():
    x = torch.randn(40, 37, device=DEVICE, requires_grad=True)
    w, b = _param(37), _param(37)
    g = torch.randn(40, 37, device=DEVICE)
    first = torch.autograd.grad(layer_norm(x, 37, w, b), (x, w, b), g)
    second = torch.autograd.grad(layer_norm(x, 37, w, b), (x, w, b), g)
    assert all(torch.equal(a, b_) for a, b_ in zip(first, second))


def test_gradcheck():
    x = torch.randn(2, 3, 7, dtype=torch.float64, device=DEVICE, requires_grad=True)
    r = torch.randn_like(x, requires_grad=True)
    w = torch.randn(7, dtype=torch.float64, device=DEVICE, requires_grad=True)
    b = torch.randn(7, dtype=torch.float64, device=DEVICE, requires_grad=True)
    fn = lambda x, r, w, b: layer_norm(x, 7, w, b, residual=r)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (x, r, w, b), fast_mode=True)
    assert torch.autograd.gradcheck(lambda x: layer_norm(x, 7), (x,), fast_mode=True)


OPCHECK_TESTS = ("test_schema", "test_autograd_registration", "test_faketensor", "test_aot_dispatch_dynamic")


@pytest.mark.parametrize("residual", [False, True], ids=["plain", "residual"])
def test_opcheck(residual):
    x = torch.randn(2, 5, 3, 4, device=DEVICE, requires_grad=True)
    r = torch.randn_like(x, requires_grad=True) if residual else None
    w, b = _param((3, 4)), _param((3, 4))
    args = (x, r, w, b, 2, 1e-5, "auto")
    torch.library.opcheck(layer_norm_op, args, test_utils=OPCHECK_TESTS)
    torch.library.opcheck(layer_norm_op, (x, r, None, None, 1, 1e-5, "auto"), test_utils=OPCHECK_TESTS)
    y, s, mean, rstd = layer_norm_op(*args)
    dy = torch.randn_like(x)
    h = (s if residual else x).detach()
    ds = torch.randn_like(x) if residual else None
    torch.library.opcheck(layer_norm_backward_op, (dy, ds, h, w.detach(), mean, rstd, 2, True, True, "auto"),
                          test_utils=OPCHECK_TESTS)
    torch.library.opcheck(layer_norm_backward_op, (dy, ds, h, None, mean, rstd, 2, False, False, "auto"),
                          test_utils=OPCHECK_TESTS)


def test_torch_compile_fullgraph():
    x = torch.randn(2, 5, 37, device=DEVICE, requires_grad=True)
    r = torch.randn_like(x, requires_grad=True)
    w, b = _param(37), _param(37)

    def block(x, r):
        y, h = layer_norm(x, (37,), w, b, residual=r)
        return (y * 2).sum() + h.sum()

    compiled = torch.compile(block, fullgraph=True, backend="aot_eager")
    loss = compiled(x, r)
    grads = torch.autograd.grad(loss, (x, r, w, b))
    leaves, ref, h = reference64(x, (37,), w, b, r)
    ref = (ref * 2).sum() + h.sum()
    assert_close(loss, ref)
    for a, b_ in zip(grads, torch.autograd.grad(ref, leaves)):
        assert_close(a, b_, torch.float32, factor=2)


# ----------------------------------------------------------------------------- module

@pytest.mark.parametrize("affine, bias", [(True, True), (True, False), (False, False)])
def test_module_is_a_drop_in(affine, bias):
    theirs = torch.nn.LayerNorm((3, 5), eps=1e-6, elementwise_affine=affine, bias=bias, device=DEVICE)
    with torch.no_grad():
        for p in theirs.parameters():
            p.normal_()
    ours = LayerNorm((3, 5), eps=1e-6, elementwise_affine=affine, bias=bias, device=DEVICE)
    assert isinstance(ours, torch.nn.LayerNorm)
    ours.load_state_dict(theirs.state_dict())
    theirs.load_state_dict(ours.state_dict())
    assert ours.state_dict().keys() == theirs.state_dict().keys()
    x = torch.randn(4, 3, 5, device=DEVICE)
    assert_close(ours(x), theirs.double()(x.double()))
    assert "algo='auto'" in repr(ours)
    theirs.float()
    same = LayerNorm.from_torch(theirs, algo="reference")
    assert same.algo == "reference" and same.eps == 1e-6 and same.normalized_shape == (3, 5)
    assert same.weight is theirs.weight and same.bias is theirs.bias
    r = torch.randn_like(x)
    y, h = ours(x, r)
    assert_close(y, F.layer_norm((x + r).double(), (3, 5), *(None if p is None else p.double()
                                                              for p in (theirs.weight, theirs.bias)), 1e-6))


# ----------------------------------------------------------------------------- dispatch

def test_every_algo_gives_the_right_answer():
    x = torch.randn(3, 4, 37, device=DEVICE, requires_grad=True)
    r = torch.randn_like(x, requires_grad=True)
    w, b = _param(37), _param(37)
    for algo in ("auto", "triton", "cuda", "cudnn", "reference"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # cuda (none) and cudnn on CPU fall back
            check_against_float64(x, (37,), w, b, r, algo=algo)


def test_unavailable_backends_say_why():
    if ON_GPU:
        pytest.skip("CPU-only fallback messages")
    x = torch.randn(2, 8)
    with pytest.warns(UserWarning, match="layer_norm: algo='cuda' cannot take this call"):
        layer_norm(x, 8, algo="cuda")
    with pytest.warns(UserWarning, match="cudnn runs on CUDA tensors only"):
        layer_norm(x, 8, algo="cudnn")
    with pytest.raises(ValueError, match="fastcnn.layer_norm: argument 'algo'"):
        layer_norm(x, 8, algo="fastest")


# ----------------------------------------------------------------------------- errors

_X = torch.randn(2, 3, 5)


@pytest.mark.parametrize("args, kwargs, error, match", [
    (("x", 5), {}, TypeError, "'input' must be a Tensor"),
    ((torch.randint(0, 3, (2, 5)), 5), {}, TypeError, "'input' must be a floating-point"),
    ((_X, 4), {}, ValueError, "'input' of shape \\(2, 3, 5\\) does not end with normalized_shape=\\[4\\]"),
    ((_X, (2, 3, 5, 1)), {}, ValueError, "does not end with normalized_shape"),
    ((_X, ()), {}, TypeError, "'normalized_shape' must be an int or a non-empty sequence"),
    ((_X, "5"), {}, TypeError, "'normalized_shape' must be an int"),
    ((_X, 0), {}, ValueError, "'normalized_shape' must have positive sizes"),
    ((_X, 5, torch.randn(4)), {}, ValueError, "'weight' must have shape normalized_shape=\\[5\\]"),
    ((_X, 5, None, torch.randn(5, 1)), {}, ValueError, "'bias' must have shape normalized_shape"),
    ((_X, 5, torch.randn(5, dtype=torch.float64)), {}, TypeError, "'weight' has dtype torch.float64"),
    ((_X, 5, "w"), {}, TypeError, "'weight' must be a Tensor"),
    ((_X, 5), {"residual": torch.randn(3, 5)}, ValueError, "'residual' must have the input's shape"),
    ((_X, 5), {"residual": torch.randint(0, 2, (2, 3, 5))}, TypeError, "'residual' must be a floating-point"),
    ((_X, 5), {"eps": -1.0}, ValueError, "'eps' must be a non-negative real number"),
    ((_X, 5), {"eps": "small"}, ValueError, "'eps' must be a non-negative real number"),
])
def test_bad_arguments_name_the_op_and_argument(args, kwargs, error, match):
    with pytest.raises(error, match=f"fastcnn.layer_norm: .*{match}"):
        layer_norm(*args, **kwargs)


# ----------------------------------------------------------------------------- GPU

GPU_DTYPES = [torch.float32, torch.float16, torch.bfloat16]


@pytest.mark.gpu
@pytest.mark.parametrize("algo", ["triton", "cudnn"])
@pytest.mark.parametrize("dtype", GPU_DTYPES, ids=str)
@pytest.mark.parametrize("n", [768, 1024, 1280, 37, 12288])
@pytest.mark.parametrize("residual", [False, True], ids=["plain", "residual"])
def test_gpu_vit_sizes(algo, dtype, n, residual):
    """(batch 64 x 197 tokens, N) as in ViT-B/L/H, odd N, and a row wider than the
    register tile (12288: the chunked path), against float64 and F.layer_norm."""
    rows = 64 * 197 if n <= 1280 else 197
    x = (torch.randn(rows, n, device="cuda") * 3 + 1).to(dtype).requires_grad_()
    r = torch.randn(rows, n, device="cuda").to(dtype).requires_grad_() if residual else None
    w, b = _param(n, dtype), _param(n, dtype)
    out = layer_norm(x, n, w, b, residual=r, algo=algo)
    y = out[0] if residual else out
    g = torch.randn_like(y)
    got = torch.autograd.grad(y, (x, w, b), g)
    leaves, ref, _ = reference64(x, (n,), w, b, r)
    want = torch.autograd.grad(ref, [leaves[0], leaves[2], leaves[3]], g.double())
    hh = (x + r if residual else x).detach().requires_grad_()
    ww, bb = w.detach().requires_grad_(), b.detach().requires_grad_()
    theirs = F.layer_norm(hh, (n,), ww, bb)
    their_grads = torch.autograd.grad(theirs, (hh, ww, bb), g)
    floor = {torch.float32: 1e-6, torch.float16: 1e-4, torch.bfloat16: 1e-3}[dtype]
    for what, ours, tgt, pt in (("y", y, ref, theirs), ("dx", got[0], want[0], their_grads[0]),
                                ("dw", got[1], want[1], their_grads[1]), ("db", got[2], want[2], their_grads[2])):
        assert rel_error(ours, tgt) <= 2 * rel_error(pt, tgt) + floor, f"{algo} {what}"


def test_autocast_runs_in_the_input_dtype():
    """Documented choice: under autocast nothing is cast (PyTorch would compute in
    fp32); the input's dtype is kept, with fp32 statistics."""
    x = torch.randn(4, 37, device=DEVICE).half()
    w, b = _param(37), _param(37)
    with torch.autocast(DEVICE, dtype=torch.float16):
        y = layer_norm(x, 37, w, b)
        y32 = layer_norm(x.float(), 37, w, b)
    assert (y.dtype, y32.dtype) == (torch.float16, torch.float32)
    assert_close(y, reference64(x, (37,), w, b)[1], torch.float16)
