"""NaN and infinity go where PyTorch sends them. A training run that diverges must show
it: an activation that turned NaN into 0 (tl.maximum's and fmax's default) would hide
a NaN from the loss and from GradScaler, and a tile that multiplied a padded zero by
an infinity would invent NaN where PyTorch has none. Each op gets an input with a NaN,
a +inf and a -inf at separate places; its output and gradients must be NaN exactly
where the float64 PyTorch computation is, and +-inf where it is +-inf."""
import pytest
import torch
import torch.nn.functional as F

import fastcnn.ops as ops
from helpers import DEVICE

ACTS = ["none", "relu", "relu6"]


def _poisoned(shape, dtype=torch.float32, seed=0):
    """A random tensor with a NaN, a +inf and a -inf, far apart."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g).to(dtype)
    flat = x.view(-1)
    n = flat.numel()
    flat[n // 7], flat[n // 2], flat[(6 * n) // 7] = float("nan"), float("inf"), float("-inf")
    return x.to(DEVICE)


def _same_specials(out, ref, what):
    out, ref = out.detach().double().cpu(), ref.detach().double().cpu()
    assert ref.isnan().any(), f"{what}: the test's input should give a NaN"
    assert torch.equal(out.isnan(), ref.isnan()), \
        f"{what}: NaN at {out.isnan().sum()} places, PyTorch at {ref.isnan().sum()}"
    for sign in (1, -1):
        assert torch.equal(out == sign * float("inf"), ref == sign * float("inf")), f"{what}: {sign:+}inf differs"


def _check(fn, ref_fn, inputs, what, backward=True):
    """fn(*inputs) against ref_fn on float64 copies: output, then each input's gradient
    for an upstream gradient of ones (finite, so the specials come from the op)."""
    leaves = [t.clone().requires_grad_(backward and t.is_floating_point()) for t in inputs]
    leaves64 = [t.detach().double().requires_grad_(t.requires_grad) for t in leaves]
    out, ref = fn(*leaves), ref_fn(*leaves64)
    _same_specials(out, ref, what)
    if not backward:
        return
    grads = torch.autograd.grad(out, leaves, torch.ones_like(out))
    grads64 = torch.autograd.grad(ref, leaves64, torch.ones_like(ref))
    for i, (g, g64) in enumerate(zip(grads, grads64)):
        if g64.isnan().any() or g64.isinf().any():
            _same_specials(g, g64, f"{what}: gradient of input {i}")
        else:
            assert g.isfinite().all(), f"{what}: gradient of input {i} is not finite where PyTorch's is"


@pytest.mark.parametrize("activation", ACTS)
@pytest.mark.parametrize("groups", [1, 3, 6], ids=lambda g: f"groups{g}")
def test_conv2d(activation, groups):
    x = _poisoned((2, 6, 9, 7))
    w = torch.randn(6, 6 // groups, 3, 3).to(DEVICE)
    b = torch.randn(6).to(DEVICE)
    act = {"none": lambda t: t, "relu": F.relu, "relu6": F.relu6}[activation]
    _check(lambda x, w, b: ops.conv2d(x, w, b, 1, 1, groups=groups, activation=activation, algo="triton"),
           lambda x, w, b: act(F.conv2d(x, w, b, 1, 1, groups=groups)), [x, w, b],
           f"conv2d groups={groups} {activation}")


@pytest.mark.parametrize("training", [False, True], ids=["eval", "train"])
def test_conv_bn_act(training):
    """In training the batch statistics of the poisoned channels are NaN, so those
    channels are NaN everywhere, as in nn.BatchNorm2d."""
    x = _poisoned((2, 4, 7, 6))
    w = torch.randn(5, 4, 3, 3).to(DEVICE)
    gamma, beta = torch.rand(5).to(DEVICE) + 0.5, torch.randn(5).to(DEVICE)
    mean, var = torch.randn(5).to(DEVICE), torch.rand(5).to(DEVICE) + 0.5

    def ours(x, w, gamma, beta):
        return ops.conv_bn_act(x, w, None, gamma, beta, mean.clone(), var.clone(), training=training,
                               padding=1, activation="relu", algo="triton")

    def ref(x, w, gamma, beta):
        y = F.conv2d(x, w, None, 1, 1)
        return F.relu(F.batch_norm(y, mean.double(), var.double(), gamma, beta, training=training))

    _check(ours, ref, [x, w, gamma, beta], f"conv_bn_act training={training}", backward=not training)


@pytest.mark.parametrize("activation", ["relu", "gelu"])
def test_bias_act(activation):
    x, b = _poisoned((5, 24)), torch.randn(24).to(DEVICE)
    _check(lambda x, b: ops.bias_act(x, b, activation, algo="triton"),
           lambda x, b: getattr(F, activation)(x + b), [x, b], f"bias_act {activation}")


@pytest.mark.parametrize("activation", ["relu", "relu6"])
def test_separable(activation):
    x = _poisoned((2, 5, 9, 8))
    wd, wp = torch.randn(5, 1, 3, 3).to(DEVICE), torch.randn(7, 5, 1, 1).to(DEVICE)
    act = getattr(F, activation)
    _check(lambda x, wd, wp: ops.separable_conv2d(x, wd, wp, padding=1, activation=activation,
                                                  pointwise_activation=activation, algo="triton"),
           lambda x, wd, wp: act(F.conv2d(act(F.conv2d(x, wd, None, 1, 1, groups=5)), wp)), [x, wd, wp],
           f"separable {activation}")


def test_depthwise():
    x, w = _poisoned((2, 4, 8, 9)), torch.randn(4, 1, 3, 3).to(DEVICE)
    _check(lambda x, w: ops.depthwise_conv2d(x, w, None, 2, 1, algo="triton"),
           lambda x, w: F.conv2d(x, w, None, 2, 1, groups=4), [x, w], "depthwise")


@pytest.mark.parametrize("within", [False, True], ids=["across", "within"])
def test_lrn(within):
    x = _poisoned((2, 7, 5, 6))
    if within:
        def ref(x):  # the spatial neighbourhood variant: mean of squares over 3x3, per channel
            div = F.avg_pool2d(x * x, 3, 1, 1, count_include_pad=True).mul(1e-4).add(1.0).pow(0.75)
            return x / div
    else:
        def ref(x):
            return F.local_response_norm(x, 3)
    _check(lambda x: ops.local_response_norm(x, 3, within_channel=within, algo="triton"), ref, [x],
           f"lrn within={within}", backward=not within)


def test_layer_norm():
    x, w, b = _poisoned((6, 40)), torch.randn(40).to(DEVICE), torch.randn(40).to(DEVICE)
    _check(lambda x, w, b: ops.layer_norm(x, (40,), w, b, algo="triton"),
           lambda x, w, b: F.layer_norm(x, (40,), w, b), [x, w, b], "layer_norm")


@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
def test_attention(causal):
    """A NaN key poisons every query row that sees it, an infinite query its own row."""
    q, k, v = _poisoned((1, 2, 19, 32), seed=1), torch.randn(1, 2, 19, 32), torch.randn(1, 2, 19, 32)
    k[0, 1, 5, 3] = float("nan")
    _check(lambda q, k, v: ops.attention(q, k, v, causal=causal, algo="triton"),
           lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=causal), [q, k.to(DEVICE), v.to(DEVICE)],
           f"attention causal={causal}", backward=False)
