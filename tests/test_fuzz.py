"""Seeded random configurations of each op against float64, forward and backward.

The other test files walk hand-picked matrices; here sizes, layouts, dtypes,
strides, dilations, groups, paddings, biases, residuals, activations and masks are
drawn together, so combinations nobody named get run too. Each test id is a seed
and each failure message names the whole configuration; a seed reproduces it.

Not drawn: configurations whose exact gradient is zero, where a relative error
measures only noise (one input channel under batch statistics, whose output does
not depend on the weight's scale; a single key), and relu6 in 16-bit, whose kink
at 6 sits on the output's rounding grid (PyTorch's own fp16 hardtanh backward
flips there too)."""
import random

import pytest
import torch
import torch.nn.functional as F

from fastcnn import ops
from fastcnn.triton_kernels.attention import attention_reference
from fastcnn.triton_kernels.lrn import lrn_forward_reference
from fastcnn.triton_kernels.reference import ACTIVATION_FNS
from helpers import DEVICE, DTYPES, assert_close, assert_grads_close, leaves64, make_input

LAYOUTS = ["nchw", "nhwc", "noncontig"]


def _check_forward_backward(out, ref, leaves, ref_leaves, dtype, cfg, factor=1.0):
    """out against the float64 ref, then the gradients of every leaf for one random
    upstream gradient (with twice the bound, as elsewhere). The drawn configurations'
    worst error was under a fifth of these bounds when they were written."""
    assert_close(out, ref, dtype, factor=factor, what=f"forward {cfg}")
    assert_grads_close(out, ref, leaves, ref_leaves, dtype, factor=2 * factor, what=str(cfg))


def _weight(shape, dtype, rng_fan):
    return (torch.randn(shape, device=DEVICE) / rng_fan ** 0.5).to(dtype).requires_grad_()


@pytest.mark.parametrize("seed", range(14))
def test_conv2d(seed):
    rng = random.Random(seed)
    groups = rng.choice([1, 1, 2, 3, 4, "depthwise"])
    if groups == "depthwise":
        c = rng.randint(2, 12)
        groups, k = c, c * rng.choice([1, 2])
    else:
        c, k = rng.randint(1, 9) * groups, rng.randint(1, 12) * groups
    r, s = rng.choice([1, 2, 3, 5, 7]), rng.choice([1, 3, 5])
    stride, dilation = (rng.choice([1, 2, 3]), rng.choice([1, 2])), (rng.choice([1, 2]), rng.choice([1, 3]))
    padding = rng.choice([0, 1, (2, 0), "same", "valid"])
    if padding == "same" and stride != (1, 1):
        padding = 1
    n = rng.choice([0, 1, 2])
    h, w = rng.randint(dilation[0] * (r - 1) + 1, 13), rng.randint(dilation[1] * (s - 1) + 1, 13)
    layout, dtype, bias = rng.choice(LAYOUTS), rng.choice(DTYPES), rng.random() < 0.5
    cfg = dict(n=n, c=c, h=h, w=w, k=k, kernel=(r, s), stride=stride, padding=padding, dilation=dilation,
               groups=groups, layout=layout, dtype=dtype, bias=bias)
    x = make_input((n, c, h, w), dtype, layout, requires_grad=True)
    wt = _weight((k, c // groups, r, s), dtype, c // groups * r * s)
    b = torch.randn(k, device=DEVICE).to(dtype).requires_grad_() if bias else None
    out = ops.conv2d(x, wt, b, stride, padding, dilation, groups, algo="triton")
    x64, w64, b64 = ref_leaves = leaves64(x, wt, b)
    ref = F.conv2d(x64, w64, b64, stride, padding, dilation, groups)
    _check_forward_backward(out, ref, [x, wt, b], ref_leaves, dtype, cfg)


@pytest.mark.parametrize("seed", range(14))
def test_attention(seed):
    rng = random.Random(seed)
    B, H, D = rng.choice([0, 1, 2]), rng.choice([1, 2, 3]), rng.choice([8, 16, 24, 32, 40, 64, 80])
    Lq = rng.randint(1, 70)
    Lk = rng.choice([Lq, rng.randint(2, 70)])
    Lk = max(Lk, 2)
    causal, dtype = rng.random() < 0.4, rng.choice(DTYPES)
    mask_kind, layout, scale = rng.choice([None, "bool", "float", "broadcast"]), rng.choice(["bhld", "blhd"]), \
        rng.choice([None, 0.3])
    cfg = dict(B=B, H=H, Lq=Lq, Lk=Lk, D=D, causal=causal, dtype=dtype, mask=mask_kind, layout=layout, scale=scale)

    def qkv(L):
        if layout == "blhd":  # the (batch, seq, heads, dim) view of a projection's output
            return torch.randn(B, L, H, D, device=DEVICE).to(dtype).transpose(1, 2).requires_grad_()
        return torch.randn(B, H, L, D, device=DEVICE).to(dtype).requires_grad_()

    q, k, v = qkv(Lq), qkv(Lk), qkv(Lk)
    mask = {None: None,
            "bool": lambda: torch.rand(B, H, Lq, Lk, device=DEVICE) > 0.3,
            "float": lambda: torch.randn(B, H, Lq, Lk, device=DEVICE).to(dtype),
            "broadcast": lambda: torch.randn(1, 1, Lq, Lk, device=DEVICE).to(dtype)}[mask_kind]
    mask = mask() if mask else None
    out = ops.attention(q, k, v, causal=causal, scale=scale, attn_mask=mask)
    ref_leaves = leaves64(q, k, v)
    additive = None if mask is None else (
        torch.zeros(mask.shape, dtype=torch.float64, device=DEVICE).masked_fill(~mask, float("-inf"))
        if mask.dtype == torch.bool else mask.double())
    ref, _ = attention_reference(*ref_leaves, additive, causal, scale)
    _check_forward_backward(out, ref, [q, k, v], ref_leaves, dtype, cfg)


def _lrn(rng, x, dtype, cfg):
    size, within = rng.randint(1, 7), rng.random() < 0.3
    alpha, beta, k = rng.choice([1e-4, 0.5, 2.0]), rng.choice([0.75, 0.5, 1.3]), rng.choice([1.0, 2.0])
    cfg.update(size=size, within=within, alpha=alpha, beta=beta, k=k)
    out = ops.local_response_norm(x, size, alpha, beta, k, within_channel=within)
    (x64,) = ref_leaves = leaves64(x)
    return out, lrn_forward_reference(x64, size, alpha, beta, k, within)[0], [x], ref_leaves


def _depthwise(rng, x, dtype, cfg):
    c, h, w = x.shape[1:]
    mult, ks, stride, dilation = rng.choice([1, 2]), rng.choice([3, 5, 7]), rng.choice([1, 2]), rng.choice([1, 2])
    padding = rng.choice([0, ks // 2] + (["same"] if stride == 1 else []))
    pad = ks // 2 if padding == "same" else padding
    if dilation * (ks - 1) + 1 > min(h, w) + 2 * pad:  # the window must fit the padded image
        dilation, padding = 1, ks // 2
    bias = rng.random() < 0.5
    cfg.update(multiplier=mult, kernel=ks, stride=stride, dilation=dilation, padding=padding, bias=bias)
    wt = _weight((c * mult, 1, ks, ks), dtype, ks * ks)
    b = torch.randn(c * mult, device=DEVICE).to(dtype).requires_grad_() if bias else None
    out = ops.depthwise_conv2d(x, wt, b, stride, padding, dilation)
    x64, w64, b64 = ref_leaves = leaves64(x, wt, b)
    return out, F.conv2d(x64, w64, b64, stride, padding, dilation, c), [x, wt, b], ref_leaves


def _activation(rng, dtype):
    acts = [a for a in ACTIVATION_FNS if a != "relu6" or dtype in (torch.float32, torch.float64)]
    return rng.choice(acts)


def _conv_bn_act(rng, x, dtype, cfg):
    n, c, h, w = x.shape
    k, ks, stride = rng.randint(1, 12), rng.choice([1, 3]), rng.choice([1, 2])
    act, training = _activation(rng, dtype), c > 1 and rng.random() < 0.6
    ho, wo = (h + 2 * (ks // 2) - ks) // stride + 1, (w + 2 * (ks // 2) - ks) // stride + 1
    residual = make_input((n, k, ho, wo), dtype, "nhwc") if rng.random() < 0.4 else None
    cfg.update(k=k, kernel=ks, stride=stride, activation=act, training=training, residual=residual is not None)
    wt = _weight((k, c, ks, ks), dtype, c * ks * ks)
    gamma = (torch.rand(k, device=DEVICE) + 0.5).requires_grad_()
    beta = torch.randn(k, device=DEVICE).requires_grad_()
    running = [torch.randn(k, device=DEVICE) * 0.1, torch.rand(k, device=DEVICE) + 0.5]
    running64 = [t.double() for t in running]
    out = ops.conv_bn_act(x, wt, None, gamma, beta, *running, training=training, stride=stride, padding=ks // 2,
                          activation=act, residual=residual)
    x64, w64, g64, b64 = ref_leaves = leaves64(x, wt, gamma, beta)
    z = F.batch_norm(F.conv2d(x64, w64, None, stride, ks // 2), *running64, g64, b64, training=training)
    ref = ACTIVATION_FNS[act](z if residual is None else z + residual.double())
    for got, want in zip(running, running64):  # updated once, like nn.BatchNorm2d's
        assert_close(got, want, torch.float32, what=f"running stats {cfg}")
    return out, ref, [x, wt, gamma, beta], ref_leaves


def _separable(rng, x, dtype, cfg):
    c = x.shape[1]
    k, ks, stride = rng.randint(1, 12), rng.choice([3, 5]), rng.choice([1, 2])
    act1, act2 = _activation(rng, dtype), _activation(rng, dtype)
    bd, bp = rng.random() < 0.5, rng.random() < 0.5
    cfg.update(k=k, kernel=ks, stride=stride, activations=(act1, act2), biases=(bd, bp))
    wd, wp = _weight((c, 1, ks, ks), dtype, ks * ks), _weight((k, c, 1, 1), dtype, c)
    bd = torch.randn(c, device=DEVICE).to(dtype).requires_grad_() if bd else None
    bp = torch.randn(k, device=DEVICE).to(dtype).requires_grad_() if bp else None
    out = ops.separable_conv2d(x, wd, wp, bd, bp, stride, ks // 2, activation=act1, pointwise_activation=act2)
    x64, wd64, wp64, bd64, bp64 = ref_leaves = leaves64(x, wd, wp, bd, bp)
    u = ACTIVATION_FNS[act1](F.conv2d(x64, wd64, bd64, stride, ks // 2, 1, c))
    return out, ACTIVATION_FNS[act2](F.conv2d(u, wp64, bp64)), [x, wd, wp, bd, bp], ref_leaves


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("op", [_lrn, _depthwise, _conv_bn_act, _separable], ids=lambda f: f.__name__[1:])
def test_image_op(op, seed):
    rng = random.Random(seed)
    n, c, h, w = rng.choice([0, 1, 2, 3]), rng.randint(1, 13), rng.randint(3, 13), rng.randint(3, 13)
    if op is _conv_bn_act:
        n = max(n, 1)  # batch statistics of an empty batch are an error, as in BatchNorm2d
    layout, dtype = rng.choice(LAYOUTS), rng.choice(DTYPES)
    cfg = dict(n=n, c=c, h=h, w=w, layout=layout, dtype=dtype)
    x = make_input((n, c, h, w), dtype, layout, requires_grad=True)
    out, ref, leaves, ref_leaves = op(rng, x, dtype, cfg)
    _check_forward_backward(out, ref, leaves, ref_leaves, dtype, cfg)
