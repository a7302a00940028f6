"""fastcnn.ops.depthwise_conv2d / fastcnn.nn.DepthwiseConv2d: F.conv2d with
groups == C against float64 (through the Triton grouped family here, the CUDA
depthwise kernels on a GPU), the CUDA backend's scope and reasons, errors."""
import warnings

import pytest
import torch
import torch.nn.functional as F

from fastcnn import _ext
from fastcnn.nn.depthwise import DepthwiseConv2d
from fastcnn.ops import _cuda_depthwise
from fastcnn.ops.conv2d import conv2d_op, forward_dispatch, input_grad_dispatch, weight_grad_dispatch
from fastcnn.ops.depthwise import depthwise_conv2d
from fastcnn.triton_kernels._common import ACTIVATIONS
from helpers import DEVICE, DTYPES, assert_close, assert_grads_close, expanded_grad, leaves64, make_input, rel_error

# (N, C, H, W, multiplier, kernel, stride, padding, dilation)
CASES = [
    (2, 5, 9, 7, 1, 3, 1, 1, 1),
    (1, 3, 11, 9, 2, 5, 2, 2, 1),
    (2, 4, 8, 9, 1, 7, 2, 3, 1),
    (1, 3, 9, 9, 2, 3, 1, 2, 2),   # dilation 2
    (1, 6, 7, 5, 1, 3, 2, 0, 1),   # no padding, odd size with stride 2
    (0, 4, 6, 6, 1, 3, 1, 1, 1),   # empty batch
]


def _reference(x, w, b, stride, padding, dilation):
    x64, w64, b64 = leaves64(x, w, b)
    return x64, w64, b64, F.conv2d(x64, w64, b64, stride, padding, dilation, x.shape[1])


@pytest.mark.parametrize("case", CASES, ids=lambda c: "-".join(map(str, c)))
@pytest.mark.parametrize("layout", ["nchw", "nhwc"])
def test_forward_backward(case, layout):
    n, c, h, w_, m, ks, stride, padding, dilation = case
    x = make_input((n, c, h, w_), layout=layout, requires_grad=True)
    w = torch.randn(c * m, 1, ks, ks, device=DEVICE, requires_grad=True)
    b = torch.randn(c * m, device=DEVICE, requires_grad=True)
    out = depthwise_conv2d(x, w, b, stride, padding, dilation)
    x64, w64, b64, ref = _reference(x, w, b, stride, padding, dilation)
    assert_close(out, ref, what="forward")
    # the empty batch still runs the backward: its dw, dbias must be 0
    assert_grads_close(out, ref, (x, w, b), (x64, w64, b64), torch.float32, names=("dx", "dw", "dbias"),
                       skip_empty=False)


@pytest.mark.parametrize("dtype", DTYPES)
def test_dtypes_same_padding_and_expanded_grad(dtype):
    x = make_input((2, 4, 7, 6), dtype=dtype, layout="noncontig", requires_grad=True)
    w = (torch.randn(8, 1, 3, 3, device=DEVICE) / 3).to(dtype).requires_grad_()
    out = depthwise_conv2d(x, w, None, 1, "same")
    assert out.dtype == dtype
    out.sum().backward()
    x64, w64, _, ref = _reference(x, w, None, 1, "same", 1)
    ref.backward(expanded_grad(ref.shape, torch.float64))
    assert_close(out, ref, dtype, what="forward")
    assert_close(x.grad, x64.grad, dtype, what="dx")
    assert_close(w.grad, w64.grad, dtype, factor=2, what="dw")


def test_unbatched_module_and_compile():
    mod = DepthwiseConv2d(3, 3, padding=1, channel_multiplier=2, device=DEVICE)
    ref = torch.nn.Conv2d(3, 6, 3, padding=1, groups=3, device=DEVICE)
    assert mod.state_dict().keys() == ref.state_dict().keys()
    ref.load_state_dict(mod.state_dict())
    x = make_input((3, 7, 5))
    assert_close(mod(x), ref.double()(x.double()))

    xb = make_input((1, 3, 6, 6), layout="nhwc", requires_grad=True)
    compiled = torch.compile(lambda t: depthwise_conv2d(t, mod.weight, mod.bias, padding=1).sum(),
                             fullgraph=True, backend="aot_eager")
    loss = compiled(xb)
    (dx,) = torch.autograd.grad(loss, xb)
    x64 = xb.detach().double().requires_grad_()
    rloss = F.conv2d(x64, mod.weight.double(), mod.bias.double(), 1, 1, 1, 3).sum()
    assert_close(loss, rloss)
    assert_close(dx, torch.autograd.grad(rloss, x64)[0])


def test_gradcheck():
    x = torch.randn(1, 2, 5, 4, dtype=torch.float64, device=DEVICE, requires_grad=True)
    w = torch.randn(4, 1, 3, 3, dtype=torch.float64, device=DEVICE, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, w: depthwise_conv2d(x, w, None, 2, 1), (x, w), fast_mode=True)


# ----------------------------------------------------------------------------- the CUDA backend's scope

@pytest.mark.parametrize("c, k, weight_shape, stride, groups, ok", [
    (8, 8, (8, 1, 3, 3), (1, 1), 8, True),
    (8, 16, (16, 1, 7, 7), (2, 2), 8, True),
    (8, 24, (24, 1, 3, 3), (1, 1), 8, False),   # multiplier 3
    (8, 8, (8, 2, 3, 3), (1, 1), 4, False),     # grouped, not depthwise
    (8, 8, (8, 1, 4, 4), (1, 1), 8, False),     # kernel 4
    (8, 8, (8, 1, 3, 5), (1, 1), 8, False),     # rectangular
    (8, 8, (8, 1, 3, 3), (1, 2), 8, False),     # unequal stride
    (8, 8, (8, 1, 3, 3), (3, 3), 8, False),     # stride 3
])
def test_cuda_backend_scope(c, k, weight_shape, stride, groups, ok):
    assert (not _cuda_depthwise.geometry_reasons(c, k, weight_shape, stride, groups)) == ok


def test_cuda_backend_refuses_with_reasons_and_falls_back():
    x, w = make_input((1, 4, 6, 6)), torch.randn(4, 1, 4, 4, device=DEVICE)
    args = (x, w, None, None, [1, 1], [1, 1], [1, 1], 4, "relu")
    assert any("kernel 4x4 is not 3x3, 5x5 or 7x7" in r for r in forward_dispatch.reasons("cuda", args))
    # the epilogue takes every activation and a residual: no reason about them
    w3 = torch.randn(4, 1, 3, 3, device=DEVICE)
    for activation in ACTIVATIONS:
        reasons = forward_dispatch.reasons("cuda", (x, w3, None, x, [1, 1], [1, 1], [1, 1], 4, activation))
        assert not [r for r in reasons if "activation" in r or "residual" in r]
    if DEVICE == "cpu":
        with pytest.warns(UserWarning, match="algo='cuda' cannot take this call"):
            out = depthwise_conv2d(x, w, None, 1, 1, algo="cuda")
        assert_close(out, F.conv2d(x.double(), w.double(), None, 1, 1, 1, 4))  # 4x4: falls back


@pytest.mark.parametrize("args, kwargs, error, match", [
    ((torch.randn(1, 4, 5, 5), torch.randn(4, 2, 3, 3)), {}, ValueError, "'weight' must have shape \\(C \\* multiplier"),
    ((torch.randn(1, 4, 5, 5), torch.randn(6, 1, 3, 3)), {}, ValueError, "'weight' must have shape"),
    ((torch.randn(1, 4, 5, 5), torch.randn(4, 1, 3)), {}, ValueError, "'weight' must be 4-dimensional"),
    ((torch.randn(5, 5), torch.randn(4, 1, 3, 3)), {}, ValueError, "'input' must be 4-dimensional"),
    ((torch.randn(1, 4, 5, 5), torch.randn(4, 1, 3, 3)), {"stride": 0}, ValueError, "'stride' must be >= 1"),
    ((torch.randn(1, 4, 5, 5), torch.randn(4, 1, 3, 3), torch.randn(3)), {}, ValueError, "'bias' has 3"),
    ((torch.randn(1, 4, 2, 2), torch.randn(4, 1, 3, 3)), {}, ValueError, "too small"),
    ((torch.randn(1, 4, 5, 5), torch.randn(4, 1, 3, 3)), {"algo": "fast"}, ValueError, "argument 'algo'"),
])
def test_bad_arguments_name_the_op_and_argument(args, kwargs, error, match):
    with pytest.raises(error, match=f"fastcnn.(depthwise_)?conv2d: .*{match}"):
        depthwise_conv2d(*args, **kwargs)


def test_extension_validates_depthwise_arguments():
    mod = _ext.built()
    if mod is None:
        pytest.skip(_ext.unavailable_reason() or "fastcnn._C is not built")
    s4 = [1, 1, 1, 1]
    with pytest.raises(ValueError, match="geometry must be"):
        mod.depthwise_conv2d_forward([1, 2, 3], 0, s4, 0, s4, 0, 0, 0, [], 0, 0, s4, mod.DTYPE_FLOAT32, 0)
    with pytest.raises(ValueError, match="y_stride must have 4 strides"):
        mod.depthwise_conv2d_forward([1] * 15, 0, s4, 0, s4, 0, 0, 0, [], 0, 0, [1], mod.DTYPE_FLOAT32, 0)
    with pytest.raises(ValueError, match="activation code must be 0..4, got 7"):
        mod.depthwise_conv2d_forward([1] * 15, 0, s4, 0, s4, 0, 0, 0, [], 7, 0, s4, mod.DTYPE_FLOAT32, 0)
    with pytest.raises(ValueError, match="residual_stride must have 4 strides"):
        mod.depthwise_conv2d_forward([1] * 15, 0, s4, 0, s4, 0, 0, 1, [1, 1], 1, 0, s4, mod.DTYPE_FLOAT32, 0)
    with pytest.raises(ValueError, match="out of range"):
        mod.depthwise_conv2d_weight_grad([1] * 14 + [-1], 0, s4, 0, s4, 0, s4, mod.DTYPE_FLOAT32, 0)


# ----------------------------------------------------------------------------- GPU

GPU_DTYPES = [torch.float32, torch.float16, torch.bfloat16, torch.float64]
GPU_TOL = {torch.float32: 1e-5, torch.float16: 3e-3, torch.bfloat16: 2e-2, torch.float64: 1e-10}


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", GPU_DTYPES, ids=str)
@pytest.mark.parametrize("layout", ["nchw", "nhwc", "noncontig"])
@pytest.mark.parametrize("m, ks, stride, padding, dilation", [
    (1, 3, 1, 1, 1), (2, 3, 2, 1, 1), (1, 5, 1, 2, 1), (2, 5, 2, 0, 1), (1, 7, 2, 3, 1), (1, 3, 1, 2, 2),
])
def test_gpu_cuda_kernels_against_float64(dtype, layout, m, ks, stride, padding, dilation):
    assert _ext.load() is not None, _ext.unavailable_reason()
    n, c, h, w_ = 3, 24, 17, 15
    x = make_input((n, c, h, w_), dtype=dtype, layout=layout).requires_grad_()
    w = (torch.randn(c * m, 1, ks, ks, device=DEVICE) / ks).to(dtype).requires_grad_()
    b = torch.randn(c * m, device=DEVICE).to(dtype).requires_grad_()
    args = (x, w, b, None, [stride] * 2, [padding] * 2, [dilation] * 2, c, "none")
    assert not forward_dispatch.reasons("cuda", args)
    x64, w64, b64, ref = _reference(x, w, b, stride, padding, dilation)
    if layout == "noncontig":  # the stride-0 gradient of out.sum()
        g, g_low = expanded_grad(ref.shape, torch.float64), expanded_grad(ref.shape, dtype)
    else:
        g = torch.randn_like(ref)
        g_low = g.to(dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no fallback
        out = depthwise_conv2d(x, w, b, stride, padding, dilation, algo="cuda")
        got = torch.autograd.grad(out, (x, w, b), g_low)
    if layout == "nhwc":
        assert out.is_contiguous(memory_format=torch.channels_last)
    want = torch.autograd.grad(ref, (x64, w64, b64), g)
    tol = GPU_TOL[dtype]
    assert rel_error(out, ref) <= tol
    for a, r, what in zip(got, want, ("dx", "dw", "dbias")):
        assert rel_error(a, r) <= 4 * tol, what


@pytest.mark.gpu
def test_gpu_cuda_empty_batch_gives_zero_weight_grad():
    x = torch.randn(0, 4, 6, 6, device="cuda")
    dy = torch.randn(0, 4, 6, 6, device="cuda")
    args = (dy, x, [4, 1, 3, 3], [1, 1], [1, 1], [1, 1], 4)
    assert not weight_grad_dispatch.reasons("cuda", args)
    assert not input_grad_dispatch.reasons("cuda", (dy, torch.randn(4, 1, 3, 3, device="cuda"), list(x.shape),
                                                     [1, 1], [1, 1], [1, 1], 4))
    dw = weight_grad_dispatch("cuda", *args)
    assert dw.shape == (4, 1, 3, 3) and (dw == 0).all()


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", GPU_DTYPES, ids=str)
@pytest.mark.parametrize("activation", list(ACTIVATIONS))
def test_gpu_cuda_epilogue_and_the_fused_ops_that_reach_it(dtype, activation):
    """The CUDA forward's bias + residual + activation epilogue, through conv2d, then
    conv_bn_act (eval: folded into it; train: the cuda backend's convolution) and
    separable_conv2d's depthwise half, with algo='cuda' and no fallback."""
    from fastcnn import ops
    from fastcnn.triton_kernels import reference
    c = 24
    x = make_input((3, c, 17, 15), dtype=dtype, layout="nhwc")
    w = (torch.randn(c, 1, 5, 5, device=DEVICE) / 5).to(dtype)
    b = torch.randn(c, device=DEVICE).to(dtype)
    res = make_input((3, c, 9, 8), dtype=dtype, layout="noncontig")
    geo = ([2, 2], [2, 2], [1, 1], c)
    want = reference.conv2d_forward(x.double(), w.double(), b.double(), res.double(), *geo, activation)
    gamma, beta = torch.rand(c, device=DEVICE).to(dtype) + 0.5, torch.randn(c, device=DEVICE).to(dtype)
    wp = (torch.randn(7, c, 1, 1, device=DEVICE) / 5).to(dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no fallback
        out = conv2d_op(x, w, b, res, *geo, activation, "cuda")
        evald = ops.conv_bn_act(x, w, None, gamma, beta, torch.zeros(c, device=DEVICE), torch.ones(c, device=DEVICE),
                                training=False, stride=2, padding=2, groups=c, activation=activation, algo="cuda")
        trained = ops.conv_bn_act(x, w, None, gamma, beta, None, None, training=True, stride=2, padding=2,
                                  groups=c, activation=activation, algo="cuda")
        sep = ops.separable_conv2d(x, w, wp, b, None, stride=2, padding=2, activation=activation, algo="cuda")
    assert out.is_contiguous(memory_format=torch.channels_last)
    assert rel_error(out, want) <= 2 * GPU_TOL[dtype]
    x64, w64, g64, b64 = x.double(), w.double(), gamma.double(), beta.double()
    y64 = F.conv2d(x64, w64, None, 2, 2, 1, c)
    shift = (1, -1, 1, 1)
    eval_want = reference.ACTIVATION_FNS[activation](y64 * (g64 / (1 + 1e-5) ** 0.5).view(shift) + b64.view(shift))
    train_want = reference.ACTIVATION_FNS[activation](
        F.batch_norm(y64, None, None, g64, b64, training=True, eps=1e-5))
    sep_want = F.conv2d(reference.ACTIVATION_FNS[activation](F.conv2d(x64, w64, b.double(), 2, 2, 1, c)),
                        wp.double())
    assert rel_error(evald, eval_want) <= 4 * GPU_TOL[dtype]
    assert rel_error(trained, train_want) <= 4 * GPU_TOL[dtype]
    assert rel_error(sep, sep_want) <= 4 * GPU_TOL[dtype]
