"""fastcnn.ops.bias_act.bias_act and fastcnn.nn.linear.Linear: act(x + bias) forward
and backward (dx, dbias) against float64 for every activation (gelu_tanh included),
odd N, empty batches, strided inputs, stride-0 gradients, low-precision error
against PyTorch's own, gradcheck, opcheck, torch.compile, autocast, dispatch,
errors; real ViT MLP sizes on the GPU."""
import copy
import warnings

import pytest
import torch
import torch.nn.functional as F

from fastcnn.nn.linear import Linear
from fastcnn.ops.bias_act import ACTIVATION_NAMES, bias_act, bias_act_backward_op, bias_act_op
from fastcnn.triton_kernels import bias_act as ba_kernels
from helpers import DEVICE, DTYPES, ON_GPU, assert_close, expanded_grad, rel_error


def torch_act(z, activation):
    """PyTorch's own activation, independent of the kernels' reference."""
    return {"none": lambda t: t, "relu": F.relu, "relu6": F.relu6, "silu": F.silu, "gelu": F.gelu,
            "gelu_tanh": lambda t: F.gelu(t, approximate="tanh")}[activation](z)


def reference64(x, bias, activation):
    x64 = x.detach().double().requires_grad_()
    b64 = None if bias is None else bias.detach().double().requires_grad_()
    return x64, b64, torch_act(x64 if b64 is None else x64 + b64, activation)


def _input(shape, dtype=torch.float32):
    return (torch.randn(shape, device=DEVICE) * 3).to(dtype).requires_grad_()


def test_reference_backward_matches_autograd():
    x = torch.randn(3, 4, 9, dtype=torch.float64) * 3
    b, dy = torch.randn(9, dtype=torch.float64), torch.randn(3, 4, 9, dtype=torch.float64)
    for act in ACTIVATION_NAMES:
        x64, b64, ref = reference64(x, b, act)
        want = torch.autograd.grad(ref, (x64, b64), dy)
        dx, db = ba_kernels.bias_act_backward_reference(dy, x, b, act)
        torch.testing.assert_close(dx, want[0])
        torch.testing.assert_close(db, want[1])
        torch.testing.assert_close(ba_kernels.bias_act_reference(x, b, act), ref.detach())


@pytest.mark.parametrize("activation", ACTIVATION_NAMES)
@pytest.mark.parametrize("shape", [(2, 5, 37), (7, 100), (37,), (2, 3, 2, 16)], ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("with_bias", [True, False], ids=["bias", "nobias"])
def test_forward_backward(activation, shape, with_bias):
    x = _input(shape)
    b = torch.randn(shape[-1], device=DEVICE, requires_grad=True) if with_bias else None
    y = bias_act(x, b, activation)
    x64, b64, ref = reference64(x, b, activation)
    assert_close(y, ref, what="y")
    g = torch.randn_like(ref)
    inputs = (x, b) if with_bias else (x,)
    got = torch.autograd.grad(y, inputs, g.float())
    want = torch.autograd.grad(ref, (x64, b64) if with_bias else (x64,), g)
    for a, w in zip(got, want):
        assert_close(a, w, torch.float32, what="grad")


def test_empty_batch():
    x = _input((0, 5, 37))
    b = torch.randn(37, device=DEVICE, requires_grad=True)
    y = bias_act(x, b, "gelu")
    assert y.shape == x.shape
    dx, db = torch.autograd.grad(y.sum(), (x, b))
    assert dx.shape == x.shape and torch.equal(db, torch.zeros_like(db))


@pytest.mark.parametrize("view", ["transposed", "sliced", "last_dim_strided"])
def test_strided_inputs_and_expanded_grad(view):
    base = torch.randn(5, 2, 74, device=DEVICE) * 3
    x = {"transposed": lambda: base[..., :37].transpose(0, 1),
         "sliced": lambda: base.transpose(0, 1)[:, ::2, 10:47],
         "last_dim_strided": lambda: base[..., ::2]}[view]().requires_grad_()
    b = torch.randn(37, device=DEVICE, requires_grad=True)
    y = bias_act(x, b, "gelu_tanh")
    assert y.is_contiguous()
    y.sum().backward()  # stride-0 gradient
    x64, b64, ref = reference64(x, b, "gelu_tanh")
    ref.sum().backward()
    assert_close(y, ref)
    assert_close(x.grad, x64.grad, torch.float32)
    assert_close(b.grad, b64.grad, torch.float32)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("activation", ["gelu", "gelu_tanh", "silu"])
def test_dtypes_error_at_most_twice_pytorchs(dtype, activation):
    x = _input((6, 9, 100), dtype)
    b = torch.randn(100, device=DEVICE).to(dtype).requires_grad_()
    y = bias_act(x, b, activation)
    assert y.dtype == dtype
    g = expanded_grad(y.shape, dtype)
    dx, db = torch.autograd.grad(y, (x, b), g)
    assert db.dtype == dtype
    x64, b64, ref = reference64(x, b, activation)
    want = torch.autograd.grad(ref, (x64, b64), g.double())
    # PyTorch's own x + bias, then the activation, in this dtype
    xx, bb = x.detach().requires_grad_(), b.detach().requires_grad_()
    theirs = torch_act(xx + bb, activation)
    their_grads = torch.autograd.grad(theirs, (xx, bb), g)
    floor = {torch.float32: 1e-6, torch.float16: 1e-4, torch.bfloat16: 1e-3}[dtype]
    for what, ours, tgt, pt in (("y", y, ref, theirs), ("dx", dx, want[0], their_grads[0]),
                                ("db", db, want[1], their_grads[1])):
        assert_close(ours, tgt, dtype, what=what)
        assert rel_error(ours, tgt) <= 2 * rel_error(pt, tgt) + floor, what


def test_gelu_tanh_saturates_cleanly():
    x = torch.tensor([-1e4, -60.0, -10.0, 0.0, 10.0, 60.0, 1e4], device=DEVICE, requires_grad=True)
    y = bias_act(x, None, "gelu_tanh")
    (dx,) = torch.autograd.grad(y.sum(), x)
    torch.testing.assert_close(y, F.gelu(x.detach(), approximate="tanh"))
    x64, _, ref = reference64(x, None, "gelu_tanh")
    torch.testing.assert_close(dx, torch.autograd.grad(ref.sum(), x64)[0].float())


def test_backward_is_deterministic():
    x = _input((40, 37))
    b = torch.randn(37, device=DEVICE, requires_grad=True)
    g = torch.randn(40, 37, device=DEVICE)
    first = torch.autograd.grad(bias_act(x, b, "gelu"), (x, b), g)
    second = torch.autograd.grad(bias_act(x, b, "gelu"), (x, b), g)
    assert all(torch.equal(a, c) for a, c in zip(first, second))


@pytest.mark.parametrize("activation", ["silu", "gelu", "gelu_tanh"])
def test_gradcheck(activation):
    x = torch.randn(2, 3, 7, dtype=torch.float64, device=DEVICE, requires_grad=True)
    b = torch.randn(7, dtype=torch.float64, device=DEVICE, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, b: bias_act(x, b, activation), (x, b), fast_mode=True)


OPCHECK_TESTS = ("test_schema", "test_autograd_registration", "test_faketensor", "test_aot_dispatch_dynamic")


@pytest.mark.parametrize("with_bias", [True, False], ids=["bias", "nobias"])
def test_opcheck(with_bias):
    x = _input((2, 5, 13))
    b = torch.randn(13, device=DEVICE, requires_grad=True) if with_bias else None
    torch.library.opcheck(bias_act_op, (x, b, "gelu_tanh", "auto"), test_utils=OPCHECK_TESTS)
    dy = torch.randn_like(x)
    bd = None if b is None else b.detach()
    for bias_grad in (True, False):
        torch.library.opcheck(bias_act_backward_op, (dy, x.detach(), bd, "gelu", bias_grad, "auto"),
                              test_utils=OPCHECK_TESTS)


def test_torch_compile_fullgraph():
    x = _input((2, 5, 37))
    b = torch.randn(37, device=DEVICE, requires_grad=True)
    compiled = torch.compile(lambda x, b: (bias_act(x, b, "gelu") * 2).sum(), fullgraph=True, backend="aot_eager")
    loss = compiled(x, b)
    grads = torch.autograd.grad(loss, (x, b))
    x64, b64, ref = reference64(x, b, "gelu")
    ref = (ref * 2).sum()
    assert_close(loss, ref)
    for a, w in zip(grads, torch.autograd.grad(ref, (x64, b64))):
        assert_close(a, w, torch.float32)


def test_autocast_casts_the_bias_not_the_input():
    x = _input((4, 37), torch.float16)
    b = torch.randn(37, device=DEVICE, requires_grad=True)  # fp32 parameter
    with torch.autocast(DEVICE, dtype=torch.float16):
        y = bias_act(x, b, "gelu")
    assert y.dtype == torch.float16
    (db,) = torch.autograd.grad(y.float().sum(), b)
    assert db.dtype == torch.float32
    x64, b64, ref = reference64(x, b.half(), "gelu")
    assert_close(y, ref, torch.float16)


# ----------------------------------------------------------------------------- module

@pytest.mark.parametrize("activation", ["none", "gelu", "relu"])
@pytest.mark.parametrize("bias", [True, False])
def test_linear_is_a_drop_in(activation, bias):
    theirs = torch.nn.Linear(13, 37, bias=bias, device=DEVICE)
    ours = Linear(13, 37, bias=bias, device=DEVICE, activation=activation)
    assert isinstance(ours, torch.nn.Linear)
    ours.load_state_dict(theirs.state_dict())
    theirs.load_state_dict(ours.state_dict())
    assert ours.state_dict().keys() == theirs.state_dict().keys()
    x = torch.randn(2, 5, 13, device=DEVICE, requires_grad=True)
    y = ours(x)
    x64 = x.detach().double().requires_grad_()
    theirs64 = copy.deepcopy(theirs).double()
    ref = torch_act(theirs64(x64), activation)
    assert_close(y, ref)
    g = torch.randn_like(ref)
    got = torch.autograd.grad(y, [x] + list(ours.parameters()), g.float())
    want = torch.autograd.grad(ref, [x64] + list(theirs64.parameters()), g)
    for a, w in zip(got, want):
        assert_close(a, w, torch.float32)
    assert f"activation={activation!r}" in repr(ours)
    same = Linear.from_torch(theirs, activation="gelu_tanh", algo="reference")
    assert (same.activation, same.algo) == ("gelu_tanh", "reference")
    assert same.weight is theirs.weight and same.bias is theirs.bias


# ----------------------------------------------------------------------------- dispatch and errors

def test_every_algo_gives_the_right_answer():
    x = _input((3, 4, 37))
    b = torch.randn(37, device=DEVICE, requires_grad=True)
    x64, b64, ref = reference64(x, b, "gelu")
    g = torch.randn_like(ref)
    want = torch.autograd.grad(ref, (x64, b64), g)
    for algo in ("auto", "triton", "cuda", "cudnn", "reference"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            y = bias_act(x, b, "gelu", algo=algo)
            got = torch.autograd.grad(y, (x, b), g.float())
        assert_close(y, ref, what=algo)
        for a, w in zip(got, want):
            assert_close(a, w, torch.float32, what=algo)


def test_unavailable_backends_say_why():
    if ON_GPU:
        pytest.skip("CPU-only fallback messages")
    x = torch.randn(2, 8)
    with pytest.warns(UserWarning, match="bias_act: algo='cuda' cannot take this call"):
        bias_act(x, None, algo="cuda")
    with pytest.raises(ValueError, match="fastcnn.bias_act: argument 'algo'"):
        bias_act(x, None, algo="fastest")


@pytest.mark.parametrize("args, error, match", [
    (("x",), TypeError, "'input' must be a Tensor"),
    ((torch.randint(0, 3, (2, 5)),), TypeError, "'input' must be a floating-point"),
    ((torch.tensor(1.0),), ValueError, "'input' must have at least one dimension"),
    ((torch.randn(2, 5), torch.randn(4)), ValueError, "'bias' must have shape \\(5,\\)"),
    ((torch.randn(2, 5), torch.randn(5, dtype=torch.float64)), TypeError, "'bias' has dtype torch.float64"),
    ((torch.randn(2, 5), None, "tanh"), ValueError, "'activation' must be one of"),
])
def test_bad_arguments_name_the_op_and_argument(args, error, match):
    with pytest.raises(error, match=f"fastcnn.bias_act: .*{match}"):
        bias_act(*args)


def test_linear_rejects_an_unknown_activation():
    with pytest.raises(ValueError, match="fastcnn.nn.Linear: argument 'activation'"):
        Linear(3, 4, activation="swish")


# ----------------------------------------------------------------------------- GPU

@pytest.mark.gpu
@pytest.mark.parametrize("algo", ["triton", "cudnn"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("n", [3072, 4096, 37])
@pytest.mark.parametrize("activation", ["gelu", "gelu_tanh"])
def test_gpu_vit_mlp_sizes(algo, dtype, n, activation):
    """The hidden layer of a ViT-B/L MLP (64 x 197 tokens, 3072 / 4096 features) and an odd N."""
    x = (torch.randn(64 * 197, n, device="cuda") * 3).to(dtype).requires_grad_()
    b = torch.randn(n, device="cuda").to(dtype).requires_grad_()
    y = bias_act(x, b, activation, algo=algo)
    g = torch.randn_like(y)
    got = torch.autograd.grad(y, (x, b), g)
    x64, b64, ref = reference64(x, b, activation)
    want = torch.autograd.grad(ref, (x64, b64), g.double())
    xx, bb = x.detach().requires_grad_(), b.detach().requires_grad_()
    theirs = torch_act(xx + bb, activation)
    their_grads = torch.autograd.grad(theirs, (xx, bb), g)
    floor = {torch.float32: 1e-6, torch.float16: 1e-4, torch.bfloat16: 1e-3}[dtype]
    for what, ours, tgt, pt in (("y", y, ref, theirs), ("dx", got[0], want[0], their_grads[0]),
                                ("db", got[1], want[1], their_grads[1])):
        assert rel_error(ours, tgt) <= 2 * rel_error(pt, tgt) + floor, f"{algo} {what}"
