"""fastcnn.ops.conv2d through the whole op stack: semantics of F.conv2d, autograd,
opcheck, torch.compile, dispatch and argument errors. The kernel-level shape and
dtype matrices are in test_conv2d_igemm.py and test_conv2d_grouped.py."""
import pytest
import torch
import torch.nn.functional as F

from fastcnn import ops
from fastcnn.ops import _dispatch
from fastcnn.ops.conv2d import conv2d_input_grad_op, conv2d_op, conv2d_weight_grad_op
from helpers import DEVICE, DTYPES, assert_close, assert_grads_close, expanded_grad, leaves64, make_input

# (N, C, H, W, K, kernel, stride, padding, dilation, groups)
CASES = [
    (2, 5, 9, 11, 18, 3, 1, 1, 1, 1),
    (1, 3, 17, 15, 16, 7, 2, 3, 1, 1),         # a stem: 3 input channels
    (3, 8, 10, 10, 16, 1, 1, 0, 1, 1),         # 1x1
    (1, 6, 23, 23, 16, 11, 4, 2, 1, 1),        # AlexNet-like 11x11 stride 4
    (2, 16, 9, 9, 32, 3, 2, 2, 2, 1),          # dilation 2
    (2, 8, 7, 9, 32, (5, 3), 1, "same", 1, 1),  # rectangular kernel, 'same'
    (2, 8, 8, 8, 16, 4, 1, "same", 1, 1),      # even kernel: asymmetric 'same'
    (1, 8, 9, 9, 16, 3, 1, "valid", 1, 2),     # groups 2
    (2, 16, 7, 7, 16, 3, 2, 1, 1, 4),          # groups 4, 4 channels each
    (2, 8, 9, 9, 8, 5, 1, 2, 1, 8),            # depthwise
    (0, 8, 9, 9, 16, 3, 1, 1, 1, 1),           # empty batch
]


def _reference(x, w, b, stride, padding, dilation, groups):
    x64, w64, b64 = leaves64(x, w, b)
    return x64, w64, b64, F.conv2d(x64, w64, b64, stride, padding, dilation, groups)


@pytest.mark.parametrize("case", CASES, ids=lambda c: "-".join(map(str, c)))
@pytest.mark.parametrize("layout", ["nchw", "nhwc", "noncontig"])
def test_conv2d_forward_backward(case, layout):
    n, c, h, w_, k, ks, stride, padding, dilation, groups = case
    ks = (ks, ks) if isinstance(ks, int) else ks
    x = make_input((n, c, h, w_), layout=layout, requires_grad=True)
    w = torch.randn(k, c // groups, *ks, device=DEVICE, requires_grad=True)
    b = torch.randn(k, device=DEVICE, requires_grad=True)
    out = ops.conv2d(x, w, b, stride, padding, dilation, groups)
    x64, w64, b64, ref = _reference(x, w, b, stride, padding, dilation, groups)
    assert_close(out, ref, what="forward")
    if layout == "nhwc" and n > 0:
        assert out.is_contiguous(memory_format=torch.channels_last)
    # the empty batch still runs the backward: its dw, dbias must be 0
    assert_grads_close(out, ref, (x, w, b), (x64, w64, b64), torch.float32, names=("dx", "dw", "dbias"),
                       skip_empty=False)


@pytest.mark.parametrize("dtype", DTYPES)
def test_conv2d_dtypes_and_expanded_grad(dtype):
    x = make_input((2, 8, 9, 7), dtype=dtype, layout="nhwc", requires_grad=True)
    w = (torch.randn(16, 8, 3, 3, device=DEVICE) / 5).to(dtype).requires_grad_()
    out = ops.conv2d(x, w, None, 1, 1)
    assert out.dtype == dtype
    out.sum().backward()  # sends the stride-0 gradient
    x64, w64, _, ref = _reference(x, w, None, 1, 1, 1, 1)
    ref.backward(expanded_grad(ref.shape, torch.float64))
    assert_close(out, ref, dtype, what="forward")
    assert_close(x.grad, x64.grad, dtype, what="dx")
    assert_close(w.grad, w64.grad, dtype, factor=2, what="dw")


def test_unbatched_input():
    x, w = torch.randn(4, 8, 8, device=DEVICE), torch.randn(6, 4, 3, 3, device=DEVICE)
    out = ops.conv2d(x, w, padding=1)
    assert out.shape == (6, 8, 8)
    assert_close(out, F.conv2d(x.double(), w.double(), padding=1))


@pytest.mark.parametrize("groups, k", [(1, 16), (2, 6)], ids=["igemm", "grouped"])
def test_gradcheck_and_gradgradcheck(groups, k):
    # fast_mode checks random projections of the Jacobian: a real numerical check
    # at a cost the interpreter can afford.
    x = torch.randn(1, 4, 5, 4, dtype=torch.float64, device=DEVICE, requires_grad=True)
    w = torch.randn(k, 4 // groups, 3, 3, dtype=torch.float64, device=DEVICE, requires_grad=True)
    b = torch.randn(k, dtype=torch.float64, device=DEVICE, requires_grad=True)
    fn = lambda x, w, b: ops.conv2d(x, w, b, 2, 1, 1, groups)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (x, w, b), fast_mode=True)
    assert torch.autograd.gradgradcheck(fn, (x, w, b), fast_mode=True)


def test_fused_epilogue_relu_residual_grad():
    x = make_input((2, 8, 7, 7), layout="nhwc", requires_grad=True)
    w = torch.randn(16, 8, 3, 3, device=DEVICE, requires_grad=True)
    b = torch.randn(16, device=DEVICE, requires_grad=True)
    res = make_input((2, 16, 7, 7), layout="nhwc", requires_grad=True)
    out = conv2d_op(x, w, b, res, [1, 1], [1, 1], [1, 1], 1, "relu", "auto")
    x64, w64, b64, y = _reference(x, w, b, 1, 1, 1, 1)
    (r64,) = leaves64(res)
    ref = torch.relu(y + r64)
    assert_close(out, ref)
    assert_grads_close(out, ref, (x, w, b, res), (x64, w64, b64, r64), torch.float32,
                       names=("dx", "dw", "dbias", "dres"))


OPCHECK_TESTS = ("test_schema", "test_autograd_registration", "test_faketensor", "test_aot_dispatch_dynamic")


@pytest.mark.parametrize("layout", ["nchw", "nhwc"])
def test_opcheck(layout):
    x = make_input((2, 4, 7, 6), layout=layout, requires_grad=True)
    w = torch.randn(8, 4, 3, 3, device=DEVICE, requires_grad=True)
    b = torch.randn(8, device=DEVICE, requires_grad=True)
    res = make_input((2, 8, 4, 3), layout=layout, requires_grad=True)
    params = ([2, 2], [1, 1], [1, 1], 1)
    torch.library.opcheck(conv2d_op, (x, w, b, res, *params, "relu", "auto"), test_utils=OPCHECK_TESTS)
    g = make_input((2, 8, 4, 3), layout=layout, requires_grad=True)
    torch.library.opcheck(conv2d_input_grad_op, (g, w, list(x.shape), *params, "auto"), test_utils=OPCHECK_TESTS)
    torch.library.opcheck(conv2d_weight_grad_op, (g, x, list(w.shape), *params, "auto"), test_utils=OPCHECK_TESTS)


@pytest.mark.parametrize("x_layout, w_layout, groups", [
    ("nchw", "nhwc", 1), ("nhwc", "nchw", 1), ("nchw", "nhwc", 2),
    ("nchw", "nhwc", 8),  # depthwise: a (C, 1, 3, 3) weight is both layouts, the input decides
])
def test_output_layout_follows_f_conv2d(x_layout, w_layout, groups):
    """F.conv2d writes channels_last when the input or the weight is; so do every
    backend, the fake kernel (opcheck) and conv_bn_act's training op."""
    x = make_input((2, 8, 7, 6), layout=x_layout, requires_grad=True)
    w = make_input((16, 8 // groups, 3, 3), layout=w_layout, requires_grad=True)
    want = F.conv2d(x.detach(), w.detach(), None, 1, 1, 1, groups)
    assert want.is_contiguous(memory_format=torch.channels_last) == (groups < 8)
    x64, w64 = leaves64(x, w)
    ref = F.conv2d(x64, w64, None, 1, 1, 1, groups)
    gamma, beta = torch.ones(16, device=DEVICE), torch.zeros(16, device=DEVICE)
    for algo in ("triton", "reference") + (("cudnn",) if DEVICE == "cuda" else ()):
        out = ops.conv2d(x, w, None, 1, 1, 1, groups, algo=algo)
        assert out.stride() == want.stride(), algo
        assert_close(out, ref, what=algo)
        fused = ops.conv_bn_act(x, w, None, gamma, beta, None, None, training=True, padding=1, groups=groups,
                                algo=algo)
        assert fused.stride() == want.stride(), algo
    torch.library.opcheck(conv2d_op, (x, w, None, None, [1, 1], [1, 1], [1, 1], groups, "none", "auto"),
                          test_utils=OPCHECK_TESTS)


def test_torch_compile_fullgraph():
    x = make_input((2, 4, 9, 9), layout="nhwc", requires_grad=True)
    w = torch.randn(8, 4, 3, 3, device=DEVICE, requires_grad=True)

    def f(x, w):
        return torch.relu(ops.conv2d(x, w, None, 1, "same")).sum()

    compiled = torch.compile(f, fullgraph=True, backend="aot_eager")
    loss = compiled(x, w)
    dx, dw = torch.autograd.grad(loss, (x, w))
    x64, w64 = x.detach().double().requires_grad_(), w.detach().double().requires_grad_()
    ref = torch.relu(F.conv2d(x64, w64, None, 1, "same")).sum()
    rdx, rdw = torch.autograd.grad(ref, (x64, w64))
    assert_close(loss, ref)
    assert_close(dx, rdx)
    assert_close(dw, rdw)


# ----------------------------------------------------------------------------- dispatch

def test_every_algo_gives_the_right_answer():
    x, w = make_input((2, 8, 9, 9)), torch.randn(16, 8, 3, 3, device=DEVICE)
    ref = F.conv2d(x.double(), w.double(), padding=1)
    for algo in ops.ALGOS:
        # on a GPU, the cuda backend takes this 3x3 stride-1 call (Winograd)
        with pytest.warns(UserWarning) if (algo in ("cuda", "cudnn") and DEVICE == "cpu") else _no_warning():
            out = ops.conv2d(x, w, padding=1, algo=algo)
        assert_close(out, ref, what=algo)


def test_bf16_on_a_broken_interpreter_falls_back_to_a_correct_backend(monkeypatch):
    if DEVICE != "cpu":
        pytest.skip("interpreter-only limitation")
    # what Triton's own interpreter (without tests/interpreter_bf16.py) gets
    monkeypatch.setattr(_dispatch, "interpreter_computes_bf16", lambda: False)
    x, w = make_input((1, 8, 9, 9), dtype=torch.bfloat16), torch.randn(16, 8, 3, 3).bfloat16()
    with pytest.warns(UserWarning, match="computes bf16 wrong"):
        out = ops.conv2d(x, w, padding=1, algo="triton")
    assert_close(out, F.conv2d(x.double(), w.double(), padding=1), torch.bfloat16)


class _no_warning:
    def __enter__(self):
        import warnings
        self._ctx = warnings.catch_warnings()
        self._ctx.__enter__()
        warnings.simplefilter("error")

    def __exit__(self, *exc):
        return self._ctx.__exit__(*exc)


def test_unknown_algo_is_an_error():
    with pytest.raises(ValueError, match="fastcnn.conv2d: argument 'algo'"):
        ops.conv2d(torch.randn(1, 2, 5, 5), torch.randn(2, 2, 3, 3), algo="winograd9000")


# ----------------------------------------------------------------------------- errors

@pytest.mark.parametrize("args, kwargs, error, match", [
    ((torch.randn(1, 3, 5, 5), torch.randn(2, 2, 3, 3)), {}, ValueError, "'input' has 3 channels"),
    ((torch.randn(5, 5), torch.randn(2, 2, 3, 3)), {}, ValueError, "'input' must be 4-dimensional"),
    ((torch.randn(1, 2, 5, 5), torch.randn(2, 2, 3)), {}, ValueError, "'weight' must be 4-dimensional"),
    ((torch.randn(1, 2, 5, 5), torch.randn(2, 2, 3, 3).double()), {}, TypeError, "'weight' has dtype"),
    ((torch.randn(1, 2, 5, 5), torch.randn(2, 2, 3, 3, device="meta")), {}, ValueError, "'weight' is on meta"),
    ((torch.randn(1, 4, 5, 5), torch.randn(3, 2, 3, 3)), {"groups": 2}, ValueError, "'groups'=2 does not divide"),
    ((torch.randn(1, 4, 5, 5), torch.randn(4, 2, 3, 3)), {"groups": 0}, ValueError, "'groups' must be a positive"),
    ((torch.randn(1, 2, 5, 5), torch.randn(2, 2, 3, 3), torch.randn(3)), {}, ValueError, "'bias' has 3"),
    ((torch.randn(1, 2, 5, 5), torch.randn(2, 2, 3, 3)), {"stride": 0}, ValueError, "'stride' must be >= 1"),
    ((torch.randn(1, 2, 5, 5), torch.randn(2, 2, 3, 3)), {"padding": -1}, ValueError, "'padding' must be >= 0"),
    ((torch.randn(1, 2, 5, 5), torch.randn(2, 2, 3, 3)), {"padding": "full"}, ValueError, "'padding' must be"),
    ((torch.randn(1, 2, 5, 5), torch.randn(2, 2, 3, 3)), {"padding": "same", "stride": 2}, ValueError, "strided"),
    ((torch.randn(1, 2, 2, 2), torch.randn(2, 2, 3, 3)), {}, ValueError, "too small"),
    ((torch.randint(0, 3, (1, 2, 5, 5)), torch.randn(2, 2, 3, 3)), {}, TypeError, "floating-point"),
    (("x", torch.randn(2, 2, 3, 3)), {}, TypeError, "'input' must be a Tensor"),
])
def test_bad_arguments_name_the_op_and_argument(args, kwargs, error, match):
    with pytest.raises(error, match=f"fastcnn.conv2d: .*{match}"):
        ops.conv2d(*args, **kwargs)


def test_autocast_runs_in_the_autocast_dtype():
    x = make_input((2, 4, 7, 7), layout="nhwc", requires_grad=True)
    w = torch.randn(8, 4, 3, 3, device=DEVICE, requires_grad=True)
    with torch.autocast(DEVICE, dtype=torch.float16):
        out = ops.conv2d(x, w, None, 1, 1)
    assert out.dtype == torch.float16
    out.float().sum().backward()
    assert x.grad.dtype == torch.float32 and w.grad.dtype == torch.float32
    assert_close(out, F.conv2d(x.double(), w.double(), None, 1, 1), torch.float16)


def test_autocast_leaves_float64_alone():
    """As for F.conv2d: autocast casts fp32 (and fp16/bf16) arguments, never fp64."""
    x, w = torch.randn(1, 2, 5, 5, device=DEVICE, dtype=torch.float64), torch.randn(3, 2, 3, 3, device=DEVICE,
                                                                                  dtype=torch.float64)
    with torch.autocast(DEVICE, dtype=torch.bfloat16):
        want = F.conv2d(x, w)
        got = ops.conv2d(x, w, algo="reference")
    assert got.dtype == want.dtype == torch.float64
    torch.testing.assert_close(got, want)


def test_meta_tensors_give_f_conv2d_shapes():
    x, w = torch.empty(2, 3, 9, 7, device="meta"), torch.empty(4, 3, 3, 3, device="meta")
    assert ops.conv2d(x, w, stride=2, padding=1).shape == F.conv2d(x, w, stride=2, padding=1).shape


@pytest.mark.parametrize("activation", ["relu", "relu6", "silu", "gelu"])
def test_activation_in_the_epilogue(activation):
    """conv2d(..., activation=): act(conv(x) + bias), forward and every gradient."""
    from fastcnn.triton_kernels.reference import ACTIVATION_FNS
    x = make_input((2, 3, 9, 7), requires_grad=True)
    w = torch.randn(5, 3, 3, 3, device=DEVICE, requires_grad=True)
    b = torch.randn(5, device=DEVICE, requires_grad=True)
    out = ops.conv2d(x, 3 * w, 3 * b, 1, 1, activation=activation)  # x3: past relu6's upper bend too
    leaves = [t.detach().double().requires_grad_() for t in (x, w, b)]
    ref = ACTIVATION_FNS[activation](F.conv2d(leaves[0], 3 * leaves[1], 3 * leaves[2], 1, 1))
    assert_close(out, ref)
    g = torch.randn_like(out)
    for a, r in zip(torch.autograd.grad(out, (x, w, b), g), torch.autograd.grad(ref, leaves, g.double())):
        assert_close(a, r)
    with pytest.raises(ValueError, match="fastcnn.conv2d: argument 'activation'"):
        ops.conv2d(x, w, activation="tanh")
