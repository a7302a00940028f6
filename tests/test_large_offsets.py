"""64-bit offsets: kernels that take any strides, handed a tensor whose elements lie
more than 2^31 elements apart, give the same numbers as on a compact copy.

Each stride fits in int32 (so Triton passes it as one, as on a GPU) while index *
stride does not: a kernel that multiplies in 32 bits wraps around, which the
interpreter sanitizer reports as an access out of bounds (or the numbers differ).
The storage is reserved, not touched: only the pages of the few elements in use are
ever written, so a test costs megabytes, not the 4 GiB it spans."""

import pytest
import torch

import interpreter_sanitizer
from fastcnn.triton_kernels import attention as at
from fastcnn.triton_kernels import batchnorm as bn
from fastcnn.triton_kernels import bias_act as ba
from fastcnn.triton_kernels import lrn
from helpers import assert_close, far_apart

pytestmark = pytest.mark.skipif(
    not interpreter_sanitizer.installed,
    reason="the interpreter's sanitizer checks these launches (on a GPU, run compute-sanitizer)")


def _took_far_view(log, kernel):
    """The launch of ``kernel`` was handed a tensor spanning more than 2^31 elements."""
    spans = [(b.end - b.start) // b.itemsize for launch in log if launch.kernel == kernel for b in launch.buffers]
    assert spans and max(spans) > 2**31, f"{kernel} saw no far-apart tensor (a copy?): spans {spans}"


def test_bias_act():
    x = far_apart((3, 5, 24), dim=0)
    dy = far_apart((3, 5, 24), dim=0)
    b = torch.randn(24, dtype=torch.float16)
    with interpreter_sanitizer.record() as log:
        y = ba.bias_act_forward(x, b, "gelu")
        dx, db = ba.bias_act_backward(dy, x, b, "gelu")
    _took_far_view(log, "_bias_act_fwd_kernel")
    _took_far_view(log, "_bias_act_bwd_kernel")
    ref_dx, ref_db = ba.bias_act_backward_reference(dy.double(), x.double(), b.double(), "gelu")
    assert_close(y, ba.bias_act_reference(x.double(), b.double(), "gelu"), torch.float16)
    assert_close(dx, ref_dx, torch.float16)
    assert_close(db, ref_db, torch.float16)


@pytest.mark.parametrize("within", [False, True], ids=["across", "within"])
def test_lrn(within):
    x = far_apart((3, 7, 5, 6), dim=0)
    dy = far_apart((3, 7, 5, 6), dim=0)
    args = (3, 1e-2, 0.75, 1.0)
    with interpreter_sanitizer.record() as log:
        y, scale = lrn.lrn_forward(x, *args, within=within)
        dx = lrn.lrn_backward(dy, x, y, scale, *args, within=within)
    _took_far_view(log, "_lrn_forward_kernel")
    _took_far_view(log, "_lrn_backward_kernel")
    assert_close(y, lrn.lrn_forward_reference(x.double(), *args, within=within)[0], torch.float16)
    assert_close(dx, lrn.lrn_backward_reference(dy.double(), x.double(), *args, within=within), torch.float16)


def test_batchnorm():
    y = far_apart((3, 6, 5, 7), dim=0)
    g = far_apart((3, 6, 5, 7), dim=0)
    gamma, beta = torch.rand(6) + 0.5, torch.randn(6)
    eps = 1e-5
    with interpreter_sanitizer.record() as log:
        mean, var = bn.channel_stats(y)
        invstd = (var + eps).rsqrt()
        out = bn.bn_act_forward(y, mean, invstd, gamma, beta, None, "relu")
        dy, dgamma, dbeta = bn.bn_act_backward(g, y, mean, invstd, gamma, beta, None, "relu")[:3]
    for kernel in ("_stats_kernel", "_bn_act_fwd_kernel", "_bn_act_bwd_reduce_kernel",
                   "_bn_act_bwd_elementwise_kernel"):
        _took_far_view(log, kernel)
    # reference: autograd through the float64 formula
    yr = y.double().requires_grad_(True)
    gr, br = gamma.double().requires_grad_(True), beta.double().requires_grad_(True)
    m, v = yr.mean((0, 2, 3)), yr.var((0, 2, 3), unbiased=False)
    ref = torch.relu((yr - m[:, None, None]) * (v[:, None, None] + eps).rsqrt() * gr[:, None, None]
                     + br[:, None, None])
    ref_dy, ref_dgamma, ref_dbeta = torch.autograd.grad(ref, (yr, gr, br), g.double())
    assert_close(mean, yr.detach().mean((0, 2, 3)), torch.float16)
    assert_close(out, ref.detach(), torch.float16)
    assert_close(dy, ref_dy, torch.float16, factor=2)
    assert_close(dgamma, ref_dgamma, torch.float16)
    assert_close(dbeta, ref_dbeta, torch.float16)


def test_attention():
    shape = (3, 2, 19, 32)
    q, k, v, do = (far_apart(shape, dim=0) for _ in range(4))
    with interpreter_sanitizer.record() as log:
        o, lse = at.attention_forward(q, k, v, causal=True)
        dq, dk, dv = at.attention_backward(do, q, k, v, o, lse, causal=True)
    _took_far_view(log, "_attention_forward_kernel")
    _took_far_view(log, "_attention_dkdv_kernel")
    ref_o, ref_lse = at.attention_reference(q.double(), k.double(), v.double(), causal=True)
    assert_close(o, ref_o, torch.float16)
    for got, want in zip((dq, dk, dv), at.attention_backward_reference(do.double(), q.double(), k.double(),
                                                                       v.double(), causal=True)):
        assert_close(got, want, torch.float16, factor=2)
