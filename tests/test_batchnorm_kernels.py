"""Triton kernels of training-mode BatchNorm + residual + activation
(fastcnn.triton_kernels.batchnorm): channel_stats, bn_act_forward, bn_act_backward,
against fastcnn.triton_kernels.reference in float64 and, for the backward, against
autograd through F.batch_norm(training=True) + residual + activation in float64."""
import pytest
import torch
import torch.nn.functional as F

from fastcnn.triton_kernels import reference
from fastcnn.triton_kernels._common import memory_format_of
from fastcnn.triton_kernels.batchnorm import bn_act_backward, bn_act_forward, channel_stats
from helpers import DEVICE, DTYPES, assert_close, expanded_grad, make_input, rel_error

ACTS = list(reference.ACTIVATION_FNS)
EPS = 1e-5
ALL_DTYPES = DTYPES + [torch.float64]
LAYOUTS = ["nchw", "nhwc", "noncontig"]


def _params(c, dtype=torch.float32):
    gamma = (torch.rand(c, device=DEVICE) + 0.5).to(dtype)
    beta = torch.randn(c, device=DEVICE).to(dtype)
    return gamma, beta


def _stats(y):
    """Batch mean and invstd of y, computed exactly (float64) and then stored in fp32
    (fp64 for fp64 y), as the conv epilogue hands them over."""
    mean, var = reference.batch_stats(y.double())
    st = reference.compute_dtype(y.dtype)
    return mean.to(st), torch.rsqrt(var + EPS).to(st)


def _d(t):
    return None if t is None else t.double()


def _check_forward(y, mean, invstd, gamma, beta, res, act):
    out = bn_act_forward(y, mean, invstd, gamma, beta, res, act)
    ref = reference.bn_act_forward(y.double(), mean.double(), invstd.double(), gamma.double(),
                                   beta.double(), _d(res), act)
    assert out.dtype == y.dtype
    assert out.stride() == torch.empty_like(y, memory_format=memory_format_of(y)).stride()
    assert_close(out, ref, y.dtype, what=f"forward {act}")
    return out


def _check_backward(g, y, mean, invstd, gamma, beta, res, act):
    dy, dgamma, dbeta, dres = bn_act_backward(g, y, mean, invstd, gamma, beta, res, act)
    ref = reference.bn_act_backward(g.double(), y.double(), mean.double(), invstd.double(), gamma.double(),
                                    beta.double(), _d(res), act)
    assert dy.dtype == y.dtype and dgamma.dtype == gamma.dtype and dbeta.dtype == beta.dtype
    assert dy.stride() == torch.empty_like(y, memory_format=memory_format_of(y)).stride()
    assert_close(dy, ref[0], y.dtype, what=f"dy {act}")
    assert_close(dgamma, ref[1], y.dtype, what=f"dgamma {act}")
    assert_close(dbeta, ref[2], y.dtype, what=f"dbeta {act}")
    if res is None:
        assert dres is None
    else:
        assert dres.dtype == res.dtype
        assert_close(dres, ref[3], y.dtype, what=f"dresidual {act}")
    return dy, dgamma, dbeta, dres


# ----------------------------------------------------------------------------- forward / backward vs reference

@pytest.mark.parametrize("residual", [False, True])
@pytest.mark.parametrize("act", ACTS)
def test_activations(act, residual):
    shape = (2, 5, 7, 9)
    y = make_input(shape)
    mean, invstd = _stats(y)
    gamma, beta = _params(5)
    res = make_input(shape) if residual else None
    _check_forward(y, mean, invstd, gamma, beta, res, act)
    _check_backward(make_input(shape), y, mean, invstd, gamma, beta, res, act)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", ALL_DTYPES)
@pytest.mark.parametrize("shape, act", [((1, 37, 9, 7), "silu"), ((3, 5, 1, 1), "relu"), ((2, 3, 7, 1), "gelu")])
def test_dtypes_layouts_shapes(shape, act, dtype, layout):
    y = make_input(shape, dtype, layout)
    mean, invstd = _stats(y)
    gamma, beta = _params(shape[1], reference.compute_dtype(dtype))
    res = make_input(shape, dtype, layout)
    _check_forward(y, mean, invstd, gamma, beta, res, act)
    _check_backward(make_input(shape, dtype, layout), y, mean, invstd, gamma, beta, res, act)


@pytest.mark.parametrize("layout", ["nchw", "nhwc"])
def test_many_chunks(layout):
    """Enough rows that the reductions split every image (NCHW) or the batch
    (channels_last) into several chunks, each walked in several row blocks."""
    shape = (3, 6, 16, 17)
    y = make_input(shape, layout=layout)
    mean, invstd = _stats(y)
    gamma, beta = _params(6)
    res = make_input(shape, layout=layout)
    _check_forward(y, mean, invstd, gamma, beta, res, "relu")
    _check_backward(make_input(shape, layout=layout), y, mean, invstd, gamma, beta, res, "relu")


def test_mixed_layouts_and_param_dtypes():
    """y channels_last, residual NCHW, grad_out a strided slice, fp16 gamma/beta and
    fp32 statistics: every tensor is read through its own strides."""
    shape = (2, 5, 7, 9)
    y = make_input(shape, torch.float16, "nhwc")
    res = make_input(shape, torch.float16, "nchw")
    g = make_input(shape, torch.float16, "noncontig")
    mean, invstd = _stats(y)
    gamma, beta = _params(5, torch.float16)
    _check_forward(y, mean, invstd, gamma, beta, res, "silu")
    _check_backward(g, y, mean, invstd, gamma, beta, res, "silu")


def _sliced_channels_last(shape):
    """A channels_last tensor sliced along W: channels are the unit stride but H and W
    do not collapse into one pixel stride."""
    n, c, h, w = shape
    t = torch.randn(n, c, h, w + 3, device=DEVICE).contiguous(memory_format=torch.channels_last)
    return t[..., 2:w + 2]


def test_sliced_channels_last():
    shape = (2, 5, 7, 9)
    y, res, g = (_sliced_channels_last(shape) for _ in range(3))
    assert y.stride(1) == 1 and y.stride(2) != y.shape[3] * y.stride(3)
    mean, invstd = _stats(y)
    gamma, beta = _params(5)
    _check_forward(y, mean, invstd, gamma, beta, res, "gelu")
    _check_backward(g, y, mean, invstd, gamma, beta, res, "gelu")
    ref_mean, ref_var = reference.batch_stats(y.double())
    mean, var = channel_stats(y)
    assert_close(mean, ref_mean, what="mean")
    assert_close(var, ref_var, what="var")


@pytest.mark.parametrize("layout", ["nchw", "nhwc"])
@pytest.mark.parametrize("act", ["relu", "gelu"])
def test_expanded_grad_out(act, layout):
    """The stride-0 gradient of out.sum(); a non-linear activation keeps dy non-zero."""
    shape = (2, 5, 7, 9)
    y = make_input(shape, layout=layout)
    mean, invstd = _stats(y)
    gamma, beta = _params(5)
    res = make_input(shape, layout=layout)
    _check_backward(expanded_grad(shape, torch.float32), y, mean, invstd, gamma, beta, res, act)


def test_deterministic():
    shape = (3, 6, 16, 17)
    y, g = make_input(shape, layout="nhwc"), make_input(shape, layout="nhwc")
    mean, invstd = _stats(y)
    gamma, beta = _params(6)
    first = bn_act_backward(g, y, mean, invstd, gamma, beta, None, "silu")
    second = bn_act_backward(g, y, mean, invstd, gamma, beta, None, "silu")
    for a, b in zip(first[:3], second[:3]):
        assert torch.equal(a, b)
    assert torch.equal(channel_stats(y)[1], channel_stats(y)[1])


@pytest.mark.filterwarnings("ignore:var_mean")
@pytest.mark.parametrize("layout", LAYOUTS)
def test_empty_batch(layout):
    shape = (0, 5, 3, 3)
    y = make_input(shape, layout=layout)
    mean, invstd = torch.zeros(5, device=DEVICE), torch.ones(5, device=DEVICE)
    gamma, beta = _params(5)
    res = make_input(shape, layout=layout)
    out = bn_act_forward(y, mean, invstd, gamma, beta, res, "relu")
    assert out.shape == shape and out.dtype == y.dtype
    dy, dgamma, dbeta, dres = bn_act_backward(make_input(shape, layout=layout), y, mean, invstd,
                                              gamma, beta, res, "relu")
    assert dy.shape == shape and dres.shape == shape
    assert torch.equal(dgamma, torch.zeros_like(gamma)) and torch.equal(dbeta, torch.zeros_like(beta))
    mean, var = channel_stats(y)
    ref_var, ref_mean = torch.var_mean(y, dim=(0, 2, 3), unbiased=False)
    assert mean.shape == var.shape == (5,) and mean.dtype == var.dtype == torch.float32
    assert torch.isnan(mean).all() and torch.isnan(var).all()
    assert torch.isnan(ref_mean).all() and torch.isnan(ref_var).all()


# ----------------------------------------------------------------------------- backward vs autograd

@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("residual", [False, True])
@pytest.mark.parametrize("act", ACTS)
def test_backward_matches_autograd(act, residual, dtype):
    """The whole training pipeline of the kernels: channel_stats -> bn_act_forward ->
    bn_act_backward, against autograd through F.batch_norm(training=True)."""
    shape = (2, 5, 7, 9)
    layout = "nhwc" if residual else "nchw"
    y = make_input(shape, dtype, layout)
    res = make_input(shape, dtype, layout) if residual else None
    gamma, beta = _params(5, dtype)
    g = torch.randn(shape, device=DEVICE, dtype=torch.float64)

    leaves = [t.detach().double().requires_grad_() for t in (y, gamma, beta) + ((res,) if residual else ())]
    z = F.batch_norm(leaves[0], None, None, leaves[1], leaves[2], training=True, eps=EPS)
    if residual:
        z = z + leaves[3]
    ref_out = reference.ACTIVATION_FNS[act](z)
    ref_grads = torch.autograd.grad(ref_out, leaves, g)

    mean, var = channel_stats(y)
    invstd = torch.rsqrt(var + EPS)
    out = bn_act_forward(y, mean, invstd, gamma, beta, res, act)
    assert_close(out, ref_out, dtype, factor=4, what="forward")
    grads = bn_act_backward(g.to(dtype), y, mean, invstd, gamma, beta, res, act)
    names = ("dy", "dgamma", "dbeta", "dresidual")
    for got, want, name in zip(grads, ref_grads, names):
        assert_close(got, want, dtype, factor=4, what=name)


# ----------------------------------------------------------------------------- channel_stats

@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", ALL_DTYPES)
@pytest.mark.parametrize("shape", [(2, 37, 7, 9), (3, 5, 1, 1), (1, 3, 9, 1), (2, 6, 16, 17)])
def test_channel_stats(shape, dtype, layout):
    y = make_input(shape, dtype, layout)
    mean, var = channel_stats(y)
    ref_mean, ref_var = reference.batch_stats(y.double())
    assert mean.dtype == var.dtype == reference.compute_dtype(dtype)
    # the statistics are fp32 (fp64) whatever y's dtype: judge them at that precision
    assert_close(mean, ref_mean, mean.dtype, what="mean")
    assert_close(var, ref_var, var.dtype, what="var")


@pytest.mark.parametrize("layout", ["nchw", "nhwc"])
def test_channel_stats_large_mean(layout):
    """|mean| = 1e4 * std in fp32: the shifted Welford / Chan combination keeps the
    variance to about fp32 precision, where E[y^2] - E[y]^2 loses every digit."""
    y = 1e4 + make_input((3, 6, 16, 17), layout=layout)
    assert y.is_contiguous(memory_format=torch.channels_last if layout == "nhwc" else torch.contiguous_format)
    mean, var = channel_stats(y)
    ref_mean, ref_var = reference.batch_stats(y.double())
    assert rel_error(mean, ref_mean) < 1e-6
    assert rel_error(var, ref_var) < 1e-5
    naive = (y * y).mean((0, 2, 3)) - y.mean((0, 2, 3)) ** 2
    assert rel_error(naive, ref_var) > 1e-2  # the test data does defeat the naive formula
