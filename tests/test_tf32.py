"""fp32 convolutions under TF32, on the CPU: tests/interpreter_tf32.py makes the
interpreter's TF32 dot drop mantissa bits as a GPU's does. Two things no other CPU
test can see: the kernels follow cuDNN's TF32 flag (exact fp32 with it off), and with
it on (PyTorch's default, so the GPU tests' case) their error against float64 stays
within the fp32 bound the GPU tests use."""
import pytest
import torch
import torch.nn.functional as F

from fastcnn import ops
from helpers import DEVICE, ON_GPU, REL_TOL, TF32_REL_TOL, leaves64, make_input, rel_error

pytestmark = pytest.mark.skipif(ON_GPU, reason="emulates the GPU's TF32 in Triton's interpreter")

# (C, H, W, K, kernel, stride, padding, groups): layer kinds of the benchmarked nets, shrunk
CASES = [
    (64, 9, 9, 32, 3, 1, 1, 1),     # 3x3 body layer
    (3, 19, 19, 16, 7, 2, 3, 1),    # stem: 3 input channels
    (96, 7, 7, 48, 1, 1, 0, 1),     # 1x1 bottleneck
    (64, 8, 8, 64, 3, 1, 1, 2),     # AlexNet's groups=2
]


@pytest.fixture
def cudnn_tf32(request):
    """cuDNN's TF32 flag set to the test's parameter, with the emulation on."""
    from interpreter_tf32 import emulated
    saved = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = request.param
    try:
        with emulated():
            yield request.param
    finally:
        torch.backends.cudnn.allow_tf32 = saved


def _errors(outs, refs):
    return [rel_error(o, r) for o, r in zip(outs, refs)]


def _assert_tf32_errors(errors, tf32, factors, what):
    """TF32 on: every error within the GPU's fp32 bound (times the GPU test's factor),
    and the forward's visibly above fp32's (the emulation took). Off: fp32's CPU bound,
    as without emulation."""
    print(dict(zip(what, (f"{e:.2e}" for e in errors))))
    if tf32:
        assert errors[0] > 1e-4, f"{what[0]}: relative error {errors[0]:.2e}, no TF32 rounding seen"
    for err, factor, name in zip(errors, factors, what):
        bound = TF32_REL_TOL * factor if tf32 else REL_TOL[torch.float32]
        assert err <= bound, f"{name}: relative error {err:.2e} > {bound:.1e} ({'TF32' if tf32 else 'fp32'})"


@pytest.mark.parametrize("cudnn_tf32", [True, False], ids=["tf32", "ieee"], indirect=True)
@pytest.mark.parametrize("case", CASES, ids=lambda c: "-".join(map(str, c)))
def test_conv2d(case, cudnn_tf32):
    """As test_gpu.test_layer_forward_backward: forward, dx, dw (dw's bound doubled)."""
    c, h, w_, k, ks, stride, padding, groups = case
    x = make_input((2, c, h, w_), layout="nhwc", requires_grad=True)
    w = (torch.randn(k, c // groups, ks, ks, device=DEVICE) / (c // groups * ks * ks) ** 0.5).requires_grad_()
    out = ops.conv2d(x, w, None, stride, padding, 1, groups, algo="triton")
    x64, w64 = leaves64(x, w)
    ref = F.conv2d(x64, w64, None, stride, padding, 1, groups)
    grad = torch.randn_like(ref)
    got = (out, *torch.autograd.grad(out, (x, w), grad.float()))
    want = (ref, *torch.autograd.grad(ref, (x64, w64), grad))
    _assert_tf32_errors(_errors(got, want), cudnn_tf32, (1, 1, 2), ("forward", "dx", "dw"))


@pytest.mark.parametrize("cudnn_tf32", [True, False], ids=["tf32", "ieee"], indirect=True)
def test_conv_bn_relu_training(cudnn_tf32):
    """As test_gpu.test_conv_bn_relu_training, smaller: output and every gradient."""
    x = make_input((2, 32, 9, 9), layout="nhwc", requires_grad=True)
    w = (torch.randn(48, 32, 3, 3) / 17).requires_grad_()
    gamma, beta = torch.rand(48, requires_grad=True), torch.randn(48, requires_grad=True)
    out = ops.conv_bn_act(x, w, None, gamma, beta, torch.zeros(48), torch.ones(48), training=True, padding=1,
                          algo="triton")
    leaves = leaves64(x, w, gamma, beta)
    ref = torch.relu(F.batch_norm(F.conv2d(leaves[0], leaves[1], None, 1, 1), None, None, leaves[2], leaves[3],
                                  training=True))
    grad = torch.randn_like(ref)
    got = (out, *torch.autograd.grad(out, (x, w, gamma, beta), grad.float()))
    want = (ref, *torch.autograd.grad(ref, leaves, grad))
    _assert_tf32_errors(_errors(got, want), cudnn_tf32, (2, 4, 4, 4, 4), ("out", "dx", "dw", "dgamma", "dbeta"))


def test_to_tf32_keeps_ten_mantissa_bits_toward_zero():
    import numpy as np
    from interpreter_tf32 import to_tf32
    x = np.array([1 + 2**-10, 1 + 2**-11 + 2**-12, -(3 - 2**-11), 2.0**-140, np.inf], dtype=np.float32)
    want = np.array([1 + 2**-10, 1.0, -(3 - 2**-9), 0.0, np.inf], dtype=np.float32)
    np.testing.assert_array_equal(to_tf32(x), want)
