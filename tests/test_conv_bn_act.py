"""fastcnn.ops.conv_bn_act and fastcnn.nn.ConvBNAct: training (batch statistics,
running-stat updates, full backward) and inference (BatchNorm folded), against
F.conv2d -> F.batch_norm -> + residual -> activation in float64."""
import pytest
import torch
import torch.nn.functional as F

import fastcnn.nn as fnn
from fastcnn import ops
from fastcnn.ops.conv_bn_act import bn_act_backward_op, conv_bn_act_train_op
from fastcnn.triton_kernels.reference import ACTIVATION_FNS
from helpers import DEVICE, DTYPES, assert_close, assert_grads_close, expanded_grad, leaves64, make_input

ACTS = list(ACTIVATION_FNS)
GRAD_NAMES = ("dx", "dw", "dgamma", "dbeta", "dresidual")


def _block_inputs(n=2, c=6, h=9, w=7, k=16, layout="nchw", dtype=torch.float32, residual=False):
    x = make_input((n, c, h, w), dtype=dtype, layout=layout, requires_grad=True)
    wt = (torch.randn(k, c, 3, 3, device=DEVICE) / 4).to(dtype).requires_grad_()
    gamma = (torch.rand(k, device=DEVICE) + 0.5).requires_grad_()
    beta = torch.randn(k, device=DEVICE).requires_grad_()
    res = make_input((n, k, h, w), dtype=dtype, layout=layout, requires_grad=True) if residual else None
    return x, wt, gamma, beta, res


def _reference(x, wt, gamma, beta, res, activation, training, running=None, eps=1e-5):
    """(float64 leaves, float64 output); the leaves line up with (x, wt, gamma, beta, res)."""
    leaves = leaves64(x, wt, gamma, beta, res)
    x64, w64, g64, b64, r64 = leaves
    y = F.conv2d(x64, w64, None, 1, 1)
    mean, var = (None, None) if running is None else (running[0].double(), running[1].double())
    z = F.batch_norm(y, mean, var, g64, b64, training=training, eps=eps)
    if r64 is not None:
        z = z + r64
    return leaves, ACTIVATION_FNS[activation](z)


@pytest.mark.parametrize("activation", ACTS)
@pytest.mark.parametrize("layout, residual", [("nchw", False), ("nhwc", True), ("noncontig", True)])
def test_training_forward_backward(activation, layout, residual):
    x, wt, gamma, beta, res = _block_inputs(layout=layout, residual=residual)
    out = ops.conv_bn_act(x, wt, None, gamma, beta, None, None, training=True, padding=1,
                          activation=activation, residual=res)
    leaves, ref = _reference(x, wt, gamma, beta, res, activation, training=True)
    assert_close(out, ref, what="forward")
    assert_grads_close(out, ref, (x, wt, gamma, beta, res), leaves, torch.float32, factor=4, names=GRAD_NAMES)


@pytest.mark.parametrize("dtype", DTYPES)
def test_training_dtypes_and_expanded_grad(dtype):
    x, wt, gamma, beta, res = _block_inputs(dtype=dtype, layout="nhwc", residual=True)
    out = ops.conv_bn_act(x, wt, None, gamma, beta, None, None, training=True, padding=1, residual=res)
    assert out.dtype == dtype
    leaves, ref = _reference(x, wt, gamma, beta, res, "relu", training=True)
    assert_close(out, ref, dtype, what="forward")
    assert_grads_close(out, ref, (x, wt, gamma, beta, res), leaves, dtype, grad=expanded_grad(out.shape, dtype),
                       factor=4, names=GRAD_NAMES)


@pytest.mark.parametrize("training", [True, False])
def test_float64_gradcheck(training):
    # fp64 input keeps fp64 statistics and folding: the finite differences would see fp32's rounding
    x, wt, gamma, beta, res = (t.detach().double().requires_grad_() for t in
                               _block_inputs(n=2, c=3, h=5, w=4, k=4, residual=True))
    running = (torch.randn(4, device=DEVICE, dtype=torch.float64), torch.rand(4, device=DEVICE, dtype=torch.float64) + .5)

    def block(x, wt, gamma, beta, res):
        return ops.conv_bn_act(x, wt, None, gamma, beta, *running, training=training, padding=1,
                               activation="silu", residual=res)

    before = [r.clone() for r in running]
    assert torch.autograd.gradcheck(block, (x, wt, gamma, beta, res), atol=1e-8, rtol=1e-6, fast_mode=True)
    if training:  # gradcheck ran the block many times, each a training step: stats moved, and stay fp64
        assert all(r.dtype == torch.float64 and not torch.equal(r, b) for r, b in zip(running, before))


def test_running_stats_follow_batchnorm2d():
    torch.manual_seed(1)
    mine = fnn.ConvBNReLU(6, 16, 3).to(DEVICE)
    theirs = torch.nn.Sequential(torch.nn.Conv2d(6, 16, 3, padding=1, bias=False), torch.nn.BatchNorm2d(16),
                                 torch.nn.ReLU()).to(DEVICE)
    theirs.load_state_dict({k.replace("conv.", "0.").replace("bn.", "1."): v for k, v in mine.state_dict().items()})
    for momentum in (0.1, None):
        mine.bn.momentum = theirs[1].momentum = momentum
        for _ in range(3):
            x = make_input((3, 6, 7, 9)) * 2 + 1
            assert_close(mine(x), theirs(x.double().float()), torch.float32, factor=10)
        assert_close(mine.bn.running_mean, theirs[1].running_mean.double(), torch.float32, factor=10)
        assert_close(mine.bn.running_var, theirs[1].running_var.double(), torch.float32, factor=10)
        assert mine.bn.num_batches_tracked.item() == theirs[1].num_batches_tracked.item()
    mine.eval(), theirs.eval()
    x = make_input((2, 6, 7, 9))
    assert_close(mine(x), theirs(x).double(), torch.float32, factor=10)


@pytest.mark.parametrize("activation", ACTS)
def test_inference_folds_bn(activation):
    x, wt, gamma, beta, res = _block_inputs(layout="nhwc", residual=True)
    running = (torch.randn(16, device=DEVICE), torch.rand(16, device=DEVICE) + 0.5)
    out = ops.conv_bn_act(x, wt, None, gamma, beta, *running, training=False, padding=1,
                          activation=activation, residual=res)
    leaves, ref = _reference(x, wt, gamma, beta, res, activation, training=False, running=running)
    assert_close(out, ref, factor=4)
    assert_grads_close(out, ref, (x, wt, gamma, beta, res), leaves, torch.float32, factor=10, names=GRAD_NAMES)


def test_batch_of_one_pixel_is_an_error_like_batchnorm():
    x, wt, gamma, beta, _ = _block_inputs(n=1, h=1, w=1)
    with pytest.raises(ValueError, match="fastcnn.conv_bn_act: training needs more than 1 value"):
        ops.conv_bn_act(x, wt, None, gamma, beta, None, None, training=True, padding=1)


def test_empty_batch():
    x, wt, gamma, beta, _ = _block_inputs(n=0)
    rm, rv = torch.zeros(16, device=DEVICE), torch.ones(16, device=DEVICE)
    out = ops.conv_bn_act(x, wt, None, gamma, beta, rm, rv, training=True, padding=1)
    assert out.shape == (0, 16, 9, 7)
    assert (rm == 0).all() and (rv == 1).all()


@pytest.mark.parametrize("name, value, match", [
    ("activation", "tanh", "'activation' must be one of"),
    ("bn_weight", torch.ones(5), "'bn_weight' has 5 elements"),
    ("residual", torch.zeros(2, 16, 3, 3), "'residual' has shape"),
    ("momentum", None, "'momentum' must be a number"),
])
def test_bad_arguments(name, value, match):
    x, wt, gamma, beta, _ = _block_inputs()
    kwargs = dict(training=True, padding=1, activation="relu", residual=None)
    args = dict(bn_weight=gamma, bn_bias=beta)
    (args if name in args else kwargs)[name] = value.to(DEVICE) if torch.is_tensor(value) else value
    with pytest.raises(ValueError, match=f"fastcnn.conv_bn_act: argument {match}"):
        ops.conv_bn_act(x, wt, None, args["bn_weight"], args["bn_bias"], None, None, **kwargs)


def test_double_backward_refused_in_training_works_in_eval():
    """create_graph=True through the training op would drop every second-order path
    through the batch statistics (a wrong gradient penalty, silently): it raises. In
    eval (BN folded into the convolution) it is conv2d's and matches float64 torch."""
    x, wt, gamma, beta, _ = _block_inputs()
    x64, wt64 = x.detach().double().requires_grad_(), wt.detach().double().requires_grad_()
    c = torch.randn(2, 16, 9, 7, device=DEVICE, dtype=torch.float64)
    out = ops.conv_bn_act(x64, wt64, None, None, None, None, None, training=True, padding=1, activation="none")
    with pytest.raises(NotImplementedError, match="fastcnn.conv_bn_act: double backward"):
        torch.autograd.grad((out * c).sum(), x64, create_graph=True)
    assert torch.autograd.grad((out * c).sum(), x64)[0].shape == x64.shape  # a plain backward works

    rm, rv = torch.randn(16, device=DEVICE).double(), torch.rand(16, device=DEVICE).double() + 0.5
    def penalty(fn):
        gx, = torch.autograd.grad((fn(x64, wt64) * c).sum(), x64, create_graph=True)
        return torch.autograd.grad(gx.square().sum(), wt64)[0]
    ours = penalty(lambda x, w: ops.conv_bn_act(x, w, None, None, None, rm, rv, training=False, padding=1,
                                                activation="none"))
    want = penalty(lambda x, w: F.batch_norm(F.conv2d(x, w, None, 1, 1), rm, rv, training=False))
    torch.testing.assert_close(ours, want)


OPCHECK_TESTS = ("test_schema", "test_autograd_registration", "test_faketensor", "test_aot_dispatch_dynamic")


@pytest.mark.parametrize("layout", ["nchw", "nhwc"])
def test_opcheck(layout):
    x, wt, gamma, beta, res = _block_inputs(n=2, c=4, h=5, w=6, k=8, layout=layout, residual=True)
    torch.library.opcheck(conv_bn_act_train_op, (x, wt, None, gamma, beta, res, [1, 1], [1, 1], [1, 1], 1,
                                                 1e-5, "silu", "auto"), test_utils=OPCHECK_TESTS)
    y = make_input((2, 8, 5, 6), layout=layout, requires_grad=True)
    var, mean = torch.var_mean(y.detach(), (0, 2, 3), unbiased=False)
    g = make_input((2, 8, 5, 6), layout=layout)
    torch.library.opcheck(bn_act_backward_op, (g, y, mean, torch.rsqrt(var + 1e-5), gamma, beta, res,
                                               "gelu", "auto"), test_utils=OPCHECK_TESTS[:3])


def test_torch_compile_training_step():
    block = fnn.ConvBNReLU(4, 8, 3).to(DEVICE)
    x = make_input((2, 4, 7, 7), layout="nhwc")
    compiled = torch.compile(block, fullgraph=True, backend="aot_eager")
    loss = compiled(x).square().sum()
    loss.backward()
    assert block.bn.num_batches_tracked.item() == 1
    assert block.conv.weight.grad is not None and torch.isfinite(block.conv.weight.grad).all()
