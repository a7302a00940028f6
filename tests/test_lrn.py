"""fastcnn.ops.local_response_norm and fastcnn.nn.LocalResponseNorm: PyTorch's
semantics (asymmetric window for even sizes, alpha / size), the within-channel
mode, forward and backward against float64, layouts, stride-0 gradients, opcheck,
torch.compile, dispatch, errors; the CUDA kernels on the GPU."""
import warnings

import pytest
import torch
import torch.nn.functional as F

import fastcnn.nn.lrn as lrn_nn
from fastcnn import _ext
from fastcnn.ops import lrn as lrn_ops
from fastcnn.ops.lrn import local_response_norm, local_response_norm_backward_op, local_response_norm_op
from fastcnn.triton_kernels import lrn as lrn_kernels
from helpers import DEVICE, DTYPES, ON_GPU, assert_close, assert_grads_close, expanded_grad, make_input, rel_error

# Large enough that the normalization is far from the identity.
ALPHA, BETA, K = 2.0, 0.75, 1.5

# (shape, size, within_channel); the interpreter's tile is 32 pixels x 8 channels
CASES = [
    ((2, 7, 5, 3), 5, False),
    ((1, 3, 7, 9), 2, False),    # even size: asymmetric window
    ((2, 20, 3, 5), 4, False),   # 20 channels: windows straddle channel tiles
    ((1, 5, 7, 5), 1, False),
    ((1, 3, 9, 11), 3, False),   # odd H, W; pixels span two tiles
    ((2, 5, 9, 7), 3, True),
    ((1, 3, 6, 5), 4, True),     # even spatial window
    ((1, 2, 5, 7), 1, True),
    ((0, 5, 4, 4), 3, False),    # empty batch
]


def naive_within_reference(x, size, alpha, beta, k):
    """Caffe's WITHIN_CHANNEL written as loops (float64), independent of the kernels'
    reference: window [i - size//2, i + (size-1)//2] in both spatial directions."""
    n, c, h, w = x.shape
    x = x.double()
    out = torch.empty_like(x)
    lo, hi = size // 2, (size - 1) // 2
    for i in range(h):
        for j in range(w):
            win = x[:, :, max(i - lo, 0):i + hi + 1, max(j - lo, 0):j + hi + 1]
            s = k + alpha / size ** 2 * (win * win).sum((2, 3))
            out[:, :, i, j] = x[:, :, i, j] * s.pow(-beta)
    return out


def reference64(x, size, within, alpha=ALPHA, beta=BETA, k=K):
    """(x64 leaf, y64): the float64 oracle, differentiable by autograd."""
    x64 = x.detach().double().requires_grad_()
    if within:
        y = lrn_kernels.lrn_forward_reference(x64, size, alpha, beta, k, True)[0]
    else:
        y = F.local_response_norm(x64, size, alpha, beta, k)
    return x64, y


def test_within_channel_reference_is_caffes():
    x = torch.randn(2, 3, 6, 5, dtype=torch.float64)
    for size in (1, 2, 3, 4, 5):
        got = lrn_kernels.lrn_forward_reference(x, size, ALPHA, BETA, K, True)[0]
        torch.testing.assert_close(got, naive_within_reference(x, size, ALPHA, BETA, K))


def test_reference_backward_matches_autograd():
    x = torch.randn(2, 6, 4, 5, dtype=torch.float64)
    dy = torch.randn_like(x)
    for within in (False, True):
        for size in (1, 2, 3, 4):
            x64, y = reference64(x, size, within)
            want = torch.autograd.grad(y, x64, dy)[0]
            got = lrn_kernels.lrn_backward_reference(dy, x, size, ALPHA, BETA, K, within)
            torch.testing.assert_close(got, want)


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{'x'.join(map(str, c[0]))}-s{c[1]}-{'within' if c[2] else 'across'}")
@pytest.mark.parametrize("layout", ["nchw", "nhwc", "noncontig"])
def test_forward_backward(case, layout):
    shape, size, within = case
    x = make_input(shape, layout=layout, requires_grad=True)
    out = local_response_norm(x, size, ALPHA, BETA, K, within_channel=within)
    x64, ref = reference64(x, size, within)
    assert_close(out, ref, what="forward")
    if layout == "nhwc" and shape[0] > 0:
        assert out.is_contiguous(memory_format=torch.channels_last)
    # randn_like keeps ref's layout (channels_last for nhwc); the empty batch still runs the backward
    assert_grads_close(out, ref, [x], [x64], torch.float32, names=["dx"], skip_empty=False)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("within", [False, True], ids=["across", "within"])
def test_dtypes_and_expanded_grad(dtype, within):
    x = make_input((2, 9, 5, 7), dtype=dtype, layout="nhwc", requires_grad=True)
    out = local_response_norm(x, 3, ALPHA, BETA, K, within_channel=within)
    assert out.dtype == dtype
    out.sum().backward()  # sends the stride-0 gradient
    x64, ref = reference64(x, 3, within)
    ref.backward(expanded_grad(ref.shape, torch.float64))
    assert_close(out, ref, dtype, what="forward")
    assert_close(x.grad, x64.grad, dtype, factor=2, what="dx")


def test_pytorch_default_arguments_and_3d_input():
    x = make_input((2, 6, 11), requires_grad=True)  # (N, C, L), as nn.LocalResponseNorm takes it
    out = local_response_norm(x, 3)
    x64 = x.detach().double().requires_grad_()
    ref = F.local_response_norm(x64, 3)
    assert out.shape == x.shape
    assert_close(out, ref)
    g = torch.randn_like(ref)
    assert_close(torch.autograd.grad(out, x, g.float())[0], torch.autograd.grad(ref, x64, g)[0], torch.float32)


def test_no_grad_saves_no_scale_and_backward_recomputes_it():
    x = make_input((1, 5, 4, 3), requires_grad=True)
    with torch.no_grad():
        y, scale = local_response_norm_op(x, 3, ALPHA, BETA, K, False, False, "auto")
    assert scale.numel() == 0
    # Called with save_scale=False but differentiated anyway: the backward recomputes.
    y, scale = local_response_norm_op(x, 3, ALPHA, BETA, K, False, False, "auto")
    g = torch.randn_like(y)
    (dx,) = torch.autograd.grad(y, x, g)
    x64, ref = reference64(x, 3, False)
    assert_close(dx, torch.autograd.grad(ref, x64, g.double())[0], torch.float32)


@pytest.mark.parametrize("within", [False, True], ids=["across", "within"])
@pytest.mark.parametrize("size", [2, 3])
def test_gradcheck(within, size):
    x = torch.randn(1, 4, 3, 4, dtype=torch.float64, device=DEVICE, requires_grad=True)
    fn = lambda x: local_response_norm(x, size, ALPHA, BETA, K, within_channel=within)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (x,), fast_mode=True)


OPCHECK_TESTS = ("test_schema", "test_autograd_registration", "test_faketensor", "test_aot_dispatch_dynamic")


@pytest.mark.parametrize("layout", ["nchw", "nhwc"])
def test_opcheck(layout):
    x = make_input((2, 5, 3, 4), layout=layout, requires_grad=True)
    for within in (False, True):
        args = (x, 3, ALPHA, BETA, K, within, True, "auto")
        torch.library.opcheck(local_response_norm_op, args, test_utils=OPCHECK_TESTS)
        y, scale = local_response_norm_op(*args)
        dy = make_input(tuple(x.shape), layout=layout)
        torch.library.opcheck(local_response_norm_backward_op,
                              (dy, x.detach(), y.detach(), scale, 3, ALPHA, BETA, K, within, "auto"),
                              test_utils=OPCHECK_TESTS)


def test_torch_compile_fullgraph():
    x = make_input((2, 6, 5, 5), layout="nhwc", requires_grad=True)

    def f(x):
        return (local_response_norm(x, 5, ALPHA, BETA, K) * 2).sum()

    compiled = torch.compile(f, fullgraph=True, backend="aot_eager")
    loss = compiled(x)
    (dx,) = torch.autograd.grad(loss, x)
    x64, ref = reference64(x, 5, False)
    ref = (ref * 2).sum()
    assert_close(loss, ref)
    assert_close(dx, torch.autograd.grad(ref, x64)[0])


# ----------------------------------------------------------------------------- module

def test_module_is_a_drop_in():
    theirs = torch.nn.LocalResponseNorm(4, alpha=ALPHA, beta=BETA, k=K)
    ours = lrn_nn.LocalResponseNorm(4, alpha=ALPHA, beta=BETA, k=K)
    assert isinstance(ours, torch.nn.LocalResponseNorm)
    assert ours.state_dict().keys() == theirs.state_dict().keys()
    x = make_input((2, 7, 4, 5), layout="nhwc")
    assert_close(ours(x), theirs(x.double()))
    x5 = make_input((1, 4, 2, 3, 3)).view(1, 4, 2, 3, 3)  # 5-d: PyTorch's own path
    assert_close(ours(x5), theirs(x5.double()))
    assert "algo='auto'" in repr(ours)
    same = lrn_nn.LocalResponseNorm.from_torch(theirs, algo="reference")
    assert (same.size, same.alpha, same.beta, same.k, same.algo) == (4, ALPHA, BETA, K, "reference")
    within = lrn_nn.LocalResponseNorm(3, ALPHA, BETA, K, within_channel=True)
    assert_close(within(x), naive_within_reference(x, 3, ALPHA, BETA, K))


# ----------------------------------------------------------------------------- dispatch

@pytest.mark.parametrize("within", [False, True], ids=["across", "within"])
def test_every_algo_gives_the_right_answer(within):
    x = make_input((2, 6, 5, 4), requires_grad=True)
    x64, ref = reference64(x, 3, within)
    g = torch.randn_like(ref)
    (want,) = torch.autograd.grad(ref, x64, g)
    for algo in ("auto", "triton", "cuda", "cudnn", "reference"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # cuda/cudnn fall back on CPU (tested below)
            out = local_response_norm(x, 3, ALPHA, BETA, K, within_channel=within, algo=algo)
            (dx,) = torch.autograd.grad(out, x, g.float())
        assert_close(out, ref, what=algo)
        assert_close(dx, want, torch.float32, what=algo)


def test_unavailable_backends_say_why():
    if ON_GPU:
        pytest.skip("CPU-only fallback messages")
    x = make_input((1, 3, 4, 4))
    with pytest.warns(UserWarning, match="local_response_norm: algo='cuda' cannot take this call"):
        local_response_norm(x, 3, algo="cuda")
    with pytest.warns(UserWarning, match="within-channel mode has no ATen op"):
        local_response_norm(x, 3, within_channel=True, algo="cudnn")
    with pytest.raises(ValueError, match="fastcnn.local_response_norm: argument 'algo'"):
        local_response_norm(x, 3, algo="fastest")


# ----------------------------------------------------------------------------- errors

@pytest.mark.parametrize("args, kwargs, error, match", [
    ((torch.randn(5, 5), 3), {}, ValueError, "'input' must be \\(3, 4\\)-dimensional"),
    ((torch.randn(1, 2, 3, 4, 5), 3), {}, ValueError, "'input' must be"),
    ((torch.randint(0, 3, (1, 2, 5, 5)), 3), {}, TypeError, "'input' must be a floating-point"),
    (("x", 3), {}, TypeError, "'input' must be a Tensor"),
    ((torch.randn(1, 2, 5, 5), 0), {}, ValueError, "'size' must be a positive int"),
    ((torch.randn(1, 2, 5, 5), 2.0), {}, ValueError, "'size' must be a positive int"),
    ((torch.randn(1, 2, 5, 5), True), {}, ValueError, "'size' must be a positive int"),
    ((torch.randn(1, 2, 5, 5), 3), {"alpha": "big"}, TypeError, "'alpha' must be a real number"),
    ((torch.randn(1, 2, 5, 5), 3), {"beta": None}, TypeError, "'beta' must be a real number"),
    ((torch.randn(1, 2, 5, 5), 3), {"k": True}, TypeError, "'k' must be a real number"),
    ((torch.randn(1, 2, 5, 5), 3), {"within_channel": 1}, TypeError, "'within_channel' must be a bool"),
    ((torch.randn(1, 2, 5), 3), {"within_channel": True}, ValueError, "'input' must be 4-dimensional"),
])
def test_bad_arguments_name_the_op_and_argument(args, kwargs, error, match):
    with pytest.raises(error, match=f"fastcnn.local_response_norm: .*{match}"):
        local_response_norm(*args, **kwargs)


# ----------------------------------------------------------------------------- the extension

def test_extension_exports_lrn_and_validates_arguments():
    mod = _ext.built()
    if mod is None:
        pytest.skip(_ext.unavailable_reason() or "fastcnn._C is not built")
    s4 = [1, 1, 1, 1]
    with pytest.raises(ValueError, match="fastcnn._C.lrn_forward: size must be >= 1"):
        mod.lrn_forward(1, 1, 1, 1, 0, 1.0, 0.75, 1.0, False, 0, s4, 0, s4, 0, s4, mod.DTYPE_FLOAT32, 0)
    with pytest.raises(ValueError, match="x_stride must have 4 strides"):
        mod.lrn_forward(1, 1, 1, 1, 3, 1.0, 0.75, 1.0, False, 0, [1], 0, s4, 0, s4, mod.DTYPE_FLOAT32, 0)
    with pytest.raises(ValueError, match="unsupported dtype code"):
        mod.lrn_backward(1, 1, 1, 1, 3, 1.0, 0.75, 1.0, False, 0, s4, 0, s4, 0, s4, 0, s4, 0, s4, 99, 0)
    with pytest.raises(ValueError, match="non-null device pointers"):
        mod.lrn_backward(1, 1, 1, 1, 3, 1.0, 0.75, 1.0, False, 0, s4, 0, s4, 0, s4, 0, s4, 0, s4,
                         mod.DTYPE_FLOAT32, 0)


# ----------------------------------------------------------------------------- GPU

GPU_DTYPES = [torch.float32, torch.float16, torch.bfloat16, torch.float64]
GPU_TOL = {torch.float32: 1e-5, torch.float16: 3e-3, torch.bfloat16: 2e-2, torch.float64: 1e-10}


@pytest.mark.gpu
@pytest.mark.parametrize("algo", ["cuda", "triton", "cudnn"])
@pytest.mark.parametrize("dtype", GPU_DTYPES, ids=str)
@pytest.mark.parametrize("layout", ["nchw", "nhwc", "noncontig"])
@pytest.mark.parametrize("size, within", [(5, False), (2, False), (3, True)])
def test_gpu_backends_against_float64(algo, dtype, layout, size, within):
    reasons = lrn_ops.forward_dispatch.reasons(algo, (make_input((1, 3, 4, 4), dtype=dtype), size, 1.0, 1.0, 1.0,
                                                      within, True))
    if reasons:
        pytest.skip("; ".join(reasons))
    x = make_input((4, 37, 13, 19), dtype=dtype, layout=layout)
    x = x.mul_(2).requires_grad_()  # in place: keeps the layout
    out = local_response_norm(x, size, ALPHA, BETA, K, within_channel=within, algo=algo)
    x64, ref = reference64(x, size, within)
    g = torch.randn_like(ref)
    (dx,) = torch.autograd.grad(out, x, g.to(dtype))
    (want,) = torch.autograd.grad(ref, x64, g, retain_graph=True)
    # cudnn is PyTorch's composite computed in the input dtype: a few roundings more
    tol = GPU_TOL[dtype] * (4 if algo == "cudnn" else 1)
    assert rel_error(out, ref) <= tol, algo
    assert rel_error(dx, want) <= 2 * tol, algo
    dx2 = local_response_norm_backward_op(expanded_grad(x.shape, dtype), x.detach(), out.detach(),
                                          local_response_norm_op(x.detach(), size, ALPHA, BETA, K, within, True,
                                                                 algo)[1],
                                          size, ALPHA, BETA, K, within, algo)
    ref.backward(expanded_grad(ref.shape, torch.float64))
    assert rel_error(dx2, x64.grad) <= 2 * tol, f"{algo}: expanded grad"


@pytest.mark.gpu
def test_gpu_cuda_backend_is_available():
    assert _ext.load() is not None, _ext.unavailable_reason()
    x = make_input((2, 8, 5, 5), layout="nhwc")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = local_response_norm(x, 5, ALPHA, BETA, K, algo="cuda")
    assert_close(out, F.local_response_norm(x.double(), 5, ALPHA, BETA, K))



@pytest.mark.gpu
def test_gpu_auto_backward_under_deterministic_algorithms():
    """ATen's LRN backward (avg_pool3d_backward) raises in deterministic mode on CUDA:
    the cudnn backend says so and auto takes a deterministic kernel."""
    x = make_input((2, 8, 5, 5), requires_grad=True)
    previous = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        y = local_response_norm(x, 5, ALPHA, BETA, K, algo="auto")
        args = (torch.ones_like(y), x.detach(), y.detach(), torch.empty(0, device=DEVICE), 5, ALPHA, BETA, K, False)
        assert any("deterministic" in r for r in lrn_ops.backward_dispatch.reasons("cudnn", args))
        (dx,) = torch.autograd.grad(y, x, torch.ones_like(y))
    finally:
        torch.use_deterministic_algorithms(previous)
    x64, ref = reference64(x, 5, False)
    (want,) = torch.autograd.grad(ref, x64, torch.ones_like(ref))
    assert_close(dx, want)
