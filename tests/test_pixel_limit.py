"""The Triton convolution kernels' int32 index limit (triton_kernels/_common.py,
MAX_INDEX_COUNT): a call past it is one the Triton backend declines, with a reason
saying what exceeded what, so algo="auto", an explicit algo and the fused ops fall
back to another backend (reference on the CPU) and still give the right answer;
a direct call of a kernel module raises ValueError naming the kernel.

The limit is lowered to LIMIT pixels, so shapes of a few hundred pixels are
"too large" and everything runs in well under a second of interpreter time."""
import warnings

import pytest
import torch
import torch.nn.functional as F

from fastcnn import ops
from fastcnn.ops._dispatch import OpDispatcher
from fastcnn.ops.conv2d import forward_dispatch, input_grad_dispatch, weight_grad_dispatch
from fastcnn.ops.conv_bn_act import train_dispatch
from fastcnn.ops.separable import forward_dispatch as separable_dispatch
from fastcnn.triton_kernels import _common, conv2d_grouped, conv2d_igemm
from fastcnn.triton_kernels import separable as sep_kernels
from helpers import DEVICE, assert_close, assert_grads_close, leaves64

LIMIT = 100
ONE, ZERO = [1, 1], [0, 0]

# (weight shape, padding): K/groups = 4 goes to the grouped family, 16 to igemm; both
# weights stay under LIMIT elements, so only the pixel counts decide.
FAMILIES = {"grouped": ((4, 2, 3, 3), [1, 1]), "igemm": ((16, 2, 1, 1), [0, 0])}
OVER = (2, 2, 8, 8)   # 128 output (and input) pixels
UNDER = (1, 2, 8, 8)  # 64


@pytest.fixture
def small_limit(monkeypatch):
    monkeypatch.setattr(_common, "MAX_INDEX_COUNT", LIMIT)


@pytest.fixture
def chosen(monkeypatch):
    """(op, backend) of every dispatch while the test runs."""
    log, choose = [], OpDispatcher.choose

    def spy(self, algo, args):
        name = choose(self, algo, args)
        log.append((self.op, name))
        return name
    monkeypatch.setattr(OpDispatcher, "choose", spy)
    return log


def _randn(*shape, grad=False):
    return torch.randn(shape, device=DEVICE).requires_grad_(grad)


def _conv_reasons(x_shape, w_shape, padding, stride=ONE):
    """The Triton reasons of conv2d's forward, input grad and weight grad for one call."""
    x, w = _randn(*x_shape), _randn(*w_shape)
    y = F.conv2d(x, w, None, stride, padding)
    return {
        "forward": forward_dispatch.reasons("triton", (x, w, None, None, stride, padding, ONE, 1, "none")),
        "input_grad": input_grad_dispatch.reasons(
            "triton", (y, w, list(x.shape), stride, padding, ONE, 1)),
        "weight_grad": weight_grad_dispatch.reasons(
            "triton", (y, x, list(w.shape), stride, padding, ONE, 1)),
    }


def test_limit_at_its_real_value():
    limit = 2**31 - 2**16  # a tile of up to 2^16 rows past the count stays below 2^31
    assert _common.MAX_INDEX_COUNT == limit
    assert _common.index_limit_reasons({_common.OUTPUT_PIXELS: limit}) == []
    assert _common.index_limit_reasons({_common.OUTPUT_PIXELS: limit + 1}) == [
        f"{limit + 1} output pixels (N*P*Q) exceed the Triton convolution kernels' int32 index limit of {limit}"]


@pytest.mark.parametrize("family", FAMILIES)
def test_conv2d_reasons(small_limit, family):
    w_shape, padding = FAMILIES[family]
    over = _conv_reasons(OVER, w_shape, padding)
    limit = f"exceed the Triton convolution kernels' int32 index limit of {LIMIT}"
    assert f"128 output pixels (N*P*Q) {limit}" in over["forward"]
    assert f"128 input pixels of one stride phase (N*ceil(H/stride_h)*ceil(W/stride_w)) {limit}" \
        in over["input_grad"]
    assert f"128 output pixels (N*P*Q) {limit}" in over["weight_grad"]
    assert _conv_reasons(UNDER, w_shape, padding) == {"forward": [], "input_grad": [], "weight_grad": []}


def test_each_direction_counts_what_it_indexes(small_limit):
    """Stride 2 on 2 x 10 x 10 input pixels (200, over LIMIT): the forward and the
    weight gradient flatten the 2 x 5 x 5 output pixels, the input gradient one
    stride phase's 2 x 5 x 5 input pixels; x's 200 are never flattened."""
    assert _conv_reasons((2, 2, 10, 10), (4, 2, 3, 3), [1, 1], stride=[2, 2]) == \
        {"forward": [], "input_grad": [], "weight_grad": []}
    # stride 1 on the same input: 200 pixels in every direction
    assert all(len(r) == 1 and r[0].startswith("200 ") for r in _conv_reasons((2, 2, 10, 10), (4, 2, 3, 3),
                                                                               [1, 1]).values())


def test_weight_elements_bound_the_channels(small_limit):
    reasons = _conv_reasons((1, 4, 4, 4), (32, 4, 1, 1), [0, 0])
    assert all(r == [f"128 weight elements exceed the Triton convolution kernels' int32 index limit of {LIMIT}"]
               for r in reasons.values())


def _separable_args(x_shape):
    x, wd, bd, wp, bp = _randn(*x_shape), _randn(4, 1, 3, 3), _randn(4), _randn(6, 4, 1, 1), _randn(6)
    return x, wd, bd, wp, bp, None, ONE, ONE, ONE, "relu", "none"


def test_separable_reasons(small_limit):
    over = separable_dispatch.reasons("triton", _separable_args((2, 4, 8, 8)))
    assert over == [f"128 output pixels (N*P*Q) exceed the Triton convolution kernels' int32 index limit of {LIMIT}"]
    assert separable_dispatch.reasons("triton", _separable_args((1, 4, 8, 8))) == []


def _train_args(x_shape, w_shape, padding):
    k = w_shape[0]
    return (_randn(*x_shape), _randn(*w_shape), None, _randn(k), _randn(k), None, ONE, padding, ONE, 1, 1e-5,
            "relu")


@pytest.mark.parametrize("family", FAMILIES)
def test_conv_bn_act_reasons(small_limit, family):
    w_shape, padding = FAMILIES[family]
    over = train_dispatch.reasons("triton", _train_args(OVER, w_shape, padding))
    assert over == [f"128 output pixels (N*P*Q) exceed the Triton convolution kernels' int32 index limit of {LIMIT}"]
    assert train_dispatch.reasons("triton", _train_args(UNDER, w_shape, padding)) == []


def _conv_case(x_shape, family, stride=ONE):
    """(leaves, their float64 twins, F.conv2d on the twins, conv arguments)."""
    w_shape, padding = FAMILIES[family]
    leaves = [_randn(*x_shape, grad=True), _randn(*w_shape, grad=True), _randn(w_shape[0], grad=True)]
    twins = leaves64(*leaves)
    return leaves, twins, F.conv2d(*twins, stride=stride, padding=padding), dict(stride=stride, padding=padding)


def _no_triton(chosen, ops_expected):
    assert {op for op, _ in chosen} == ops_expected, chosen
    assert all(name != "triton" for _, name in chosen), chosen


CONV_OPS = {"fastcnn.conv2d", "fastcnn.conv2d_input_grad", "fastcnn.conv2d_weight_grad"}


@pytest.mark.parametrize("family", FAMILIES)
def test_auto_falls_back_forward_and_backward(small_limit, chosen, family):
    leaves, twins, ref, kw = _conv_case(OVER, family)
    out = ops.conv2d(*leaves, algo="auto", **kw)
    assert_close(out, ref.detach(), torch.float32)
    assert_grads_close(out, ref, leaves, twins, torch.float32, names=["dx", "dw", "db"])
    _no_triton(chosen, CONV_OPS)


def test_explicit_triton_warns_and_falls_back(small_limit, chosen):
    leaves, twins, ref, kw = _conv_case(OVER, "grouped")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = ops.conv2d(*leaves, algo="triton", **kw)
        assert_close(out, ref.detach(), torch.float32)
        assert_grads_close(out, ref, leaves, twins, torch.float32, names=["dx", "dw", "db"])
    messages = sorted(str(w.message) for w in caught)
    limit = f"exceed the Triton convolution kernels' int32 index limit of {LIMIT}); using 'reference'"
    assert messages == [
        f"fastcnn.conv2d: algo='triton' cannot take this call (128 output pixels (N*P*Q) {limit}",
        "fastcnn.conv2d_input_grad: algo='triton' cannot take this call (128 input pixels of one stride phase "
        f"(N*ceil(H/stride_h)*ceil(W/stride_w)) {limit}",
        f"fastcnn.conv2d_weight_grad: algo='triton' cannot take this call (128 output pixels (N*P*Q) {limit}",
    ]
    _no_triton(chosen, CONV_OPS)


def test_under_the_limit_triton_still_runs(small_limit, chosen):
    """The strided case of test_each_direction_counts_what_it_indexes runs on the
    Triton kernels in every direction (their own checks agree with the reasons)."""
    leaves, twins, ref, kw = _conv_case((2, 2, 10, 10), "grouped", stride=[2, 2])
    out = ops.conv2d(*leaves, algo="triton", **kw)
    assert_close(out, ref.detach(), torch.float32)
    assert_grads_close(out, ref, leaves, twins, torch.float32, names=["dx", "dw", "db"])
    assert sorted(chosen) == sorted((op, "triton") for op in CONV_OPS)


@pytest.mark.parametrize("training", [True, False], ids=["training", "inference"])
def test_conv_bn_act_falls_back(small_limit, chosen, training):
    leaves, twins, _, kw = _conv_case(OVER, "grouped")
    k = leaves[1].shape[0]
    bn = [_randn(k, grad=True), _randn(k, grad=True)]
    mean, var = torch.randn(k, device=DEVICE), torch.rand(k, device=DEVICE) + 0.5
    # no convolution bias: batch statistics cancel it, its gradient is rounding noise
    leaves, twins = leaves[:2] + [None] + bn, twins[:2] + [None] + leaves64(*bn)
    x, w, b, gamma, beta = leaves
    out = ops.conv_bn_act(x, w, b, gamma, beta, mean.clone(), var.clone(), training=training, algo="auto", **kw)
    x64, w64, b64, gamma64, beta64 = twins
    ref = F.relu(F.batch_norm(F.conv2d(x64, w64, b64, **kw), mean.double(), var.double(), gamma64, beta64,
                              training=training))
    assert_close(out, ref.detach(), torch.float32)
    assert_grads_close(out, ref, leaves, twins, torch.float32, names=["dx", "dw", "db", "dgamma", "dbeta"])
    conv_ops_run = {op for op, _ in chosen if op != "fastcnn.bn_act_backward"}
    # training: the fused forward (conv + statistics); inference: BN folded into conv2d
    forward = "fastcnn.conv_bn_act_train" if training else "fastcnn.conv2d"
    assert conv_ops_run == {forward, "fastcnn.conv2d_input_grad", "fastcnn.conv2d_weight_grad"}
    assert all(name != "triton" for op, name in chosen if op in conv_ops_run), chosen


def test_separable_falls_back(small_limit, chosen):
    leaves = [_randn(2, 4, 8, 8, grad=True), _randn(4, 1, 3, 3, grad=True), _randn(4, grad=True),
              _randn(6, 4, 1, 1, grad=True), _randn(6, grad=True)]
    twins = leaves64(*leaves)
    x, wd, bd, wp, bp = leaves
    out = ops.separable_conv2d(x, wd, wp, bd, bp, padding=1, activation="relu", algo="auto")
    x64, wd64, bd64, wp64, bp64 = twins
    ref = F.conv2d(F.relu(F.conv2d(x64, wd64, bd64, padding=1, groups=4)), wp64, bp64)
    assert_close(out, ref.detach(), torch.float32)
    assert_grads_close(out, ref, leaves, twins, torch.float32, names=["dx", "dwd", "dbd", "dwp", "dbp"])
    _no_triton(chosen, CONV_OPS | {"fastcnn.separable_conv2d"})


def _nhwc(t):
    return t.contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("module", [conv2d_igemm, conv2d_grouped], ids=["igemm", "grouped"])
def test_kernel_modules_raise(small_limit, module):
    name = module.__name__.rsplit(".", 1)[1]
    w_shape = (16, 2, 1, 1) if module is conv2d_igemm else (4, 2, 1, 1)
    x, w = _nhwc(_randn(*OVER)), _nhwc(_randn(*w_shape))
    y = _nhwc(torch.empty(2, w_shape[0], 8, 8, device=DEVICE))
    with pytest.raises(ValueError, match=rf"{name}\.forward: 128 output pixels \(N\*P\*Q\) exceed .* of {LIMIT}"):
        module.forward(x, w, None, None, y, ONE, ZERO, ONE, 1, 0, False)
    with pytest.raises(ValueError, match=rf"{name}\.input_grad: 128 input pixels of one stride phase"):
        module.input_grad(y, w, torch.empty_like(x), ONE, ZERO, ONE, 1)
    with pytest.raises(ValueError, match=rf"{name}\.weight_grad: 128 output pixels"):
        module.weight_grad(y, x, ONE, ZERO, ONE, 1, w_shape)


def test_separable_kernel_raises(small_limit):
    x, wd, bd, wp, bp, *_ = _separable_args((2, 4, 8, 8))
    with pytest.raises(ValueError, match=r"separable_conv2d: 128 output pixels"):
        sep_kernels.separable_conv2d_forward(x, wd, bd, wp, bp, None, ONE, ONE, ONE)
