"""fastcnn.ops.separable.separable_conv2d (fused depthwise -> pointwise) and
fastcnn.nn.separable.DepthwiseSeparableConv2d: forward and every gradient against a
float64 F.conv2d oracle (kernels 3/5/7, stride, 'same' padding, dilation, odd sizes,
channel counts that fill no tile, empty and single batches, layouts, every
activation), dtypes, stride-0 gradients, opcheck, torch.compile, gradcheck, the
module (eval: one fused op equal to the unfused ConvBNAct pair; training: two
conv-BN-act ops), MobileNet v1's use of it, errors; MobileNetV2/EfficientNet sizes
against the unfused cuDNN pair on the GPU."""
import warnings

import pytest
import torch
import torch.nn.functional as F

from fastcnn.models.mobilenet import MobileNetV1
from fastcnn.nn.fused import ConvBNAct, unfused
from fastcnn.nn.separable import DepthwiseSeparableConv2d
from fastcnn.ops.separable import separable_conv2d, separable_conv2d_op
from fastcnn.triton_kernels import separable as kernels
from fastcnn.triton_kernels.reference import ACTIVATION_FNS
from helpers import DEVICE, DTYPES, ON_GPU, assert_close, assert_grads_close, expanded_grad, leaves64, make_input

ACTS = ("none", "relu", "relu6", "silu", "gelu")


def oracle(x, wd, bd, wp, bp, residual, stride, padding, dilation, act1, act2):
    """The unfused pair in plain torch.nn.functional, float64, differentiable."""
    d = leaves64(x, wd, bd, wp, bp, residual)
    z = ACTIVATION_FNS[act1](F.conv2d(d[0], d[1], d[2], stride, padding, dilation, x.shape[1]))
    y = F.conv2d(z, d[3], d[4])
    if residual is not None:
        y = y + d[5]
    return d, ACTIVATION_FNS[act2](y)


def make_args(n, c, h, w, k, kernel, dtype=torch.float32, layout="nchw", bias=True, residual=False,
              out_hw=None, requires_grad=True):
    kh, kw = (kernel, kernel) if isinstance(kernel, int) else kernel
    x = make_input((n, c, h, w), dtype, layout, requires_grad=requires_grad)
    wd = make_input((c, 1, kh, kw), dtype, requires_grad=requires_grad)
    wp = (make_input((k, c, 1, 1), dtype) / c ** 0.5).requires_grad_(requires_grad)
    bd = make_input((c,), dtype, requires_grad=requires_grad) if bias else None
    bp = make_input((k,), dtype, requires_grad=requires_grad) if bias else None
    res = make_input((n, k, *out_hw), dtype, "nhwc", requires_grad=requires_grad) if residual else None
    return x, wd, bd, wp, bp, res


def check_grads(out, ref, leaves, ours, grad=None):
    """Every gradient of make_args' tensors (those not None), fp32 bound; an empty batch
    still runs the backward (the weights' and biases' gradients must be 0)."""
    assert_grads_close(out, ref, ours, leaves, torch.float32, grad=grad,
                       names=("dx", "dwd", "dbd", "dwp", "dbp", "dres"), skip_empty=False)


# (n, c, h, w, k, kernel, stride, padding, dilation, act1, act2, layout, bias, residual)
CASES = [
    (2, 5, 7, 9, 7, 3, 1, 1, 1, "relu", "relu", "nhwc", False, False),      # MobileNet v1's pair
    (1, 19, 9, 7, 21, 5, 2, 2, 1, "relu6", "none", "nchw", True, False),    # C, K fill no tile; s2
    (3, 5, 5, 6, 7, 3, 1, "same", 2, "silu", "gelu", "noncontig", True, True),
    (1, 6, 9, 8, 7, 7, 2, 3, 1, "gelu", "silu", "nhwc", True, False),       # 7x7 s2
    (2, 5, 5, 7, 21, (2, 3), 1, "same", 1, "none", "relu6", "nhwc", True, True),  # odd total 'same'
    (2, 5, 6, 5, 7, 3, 1, "valid", 1, "relu", "silu", "nchw", False, True),
    (0, 5, 5, 5, 7, 3, 1, 1, 1, "relu", "relu", "nhwc", True, True),        # empty batch
]


def _case_id(c):
    return f"n{c[0]}c{c[1]}{c[2]}x{c[3]}k{c[4]}-r{c[5]}s{c[6]}p{c[7]}d{c[8]}-{c[9]}-{c[10]}-{c[11]}"


@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_forward_backward(case):
    n, c, h, w, k, kernel, stride, padding, dilation, act1, act2, layout, bias, residual = case
    kh, kw = (kernel, kernel) if isinstance(kernel, int) else kernel
    if padding == "same":
        out_hw = (h, w)
    else:
        p = 0 if padding == "valid" else padding
        out_hw = tuple((s + 2 * p - dilation * (kk - 1) - 1) // stride + 1 for s, kk in ((h, kh), (w, kw)))
    args = make_args(n, c, h, w, k, kernel, layout=layout, bias=bias, residual=residual, out_hw=out_hw)
    x, wd, bd, wp, bp, res = args
    out = separable_conv2d(x, wd, wp, bd, bp, stride, padding, dilation, activation=act1,
                           pointwise_activation=act2, residual=res)
    leaves, ref = oracle(*args, stride, padding, dilation, act1, act2)
    assert_close(out, ref, what="forward")
    if layout == "nhwc" and n > 0:
        assert out.is_contiguous(memory_format=torch.channels_last)
    check_grads(out, ref, leaves, args)


def test_every_activation_pair():
    # Forward of the kernel itself for all 25 pairs; the op's backward of each
    # activation on each side is covered by CASES.
    x, wd, bd, wp, bp, _ = make_args(1, 5, 4, 5, 7, 3, layout="nhwc", requires_grad=False)
    for act1 in ACTS:
        for act2 in ACTS:
            out = kernels.separable_conv2d_forward(x, wd, bd, wp, bp, None, [1, 1], [1, 1], [1, 1], act1, act2)
            _, ref = oracle(x, wd, bd, wp, bp, None, 1, 1, 1, act1, act2)
            assert_close(out, ref, what=f"{act1}->{act2}")


def test_reference_is_the_unfused_pair():
    x, wd, bd, wp, bp, res = (None if t is None else t.double()
                              for t in make_args(2, 5, 6, 7, 7, 3, residual=True, out_hw=(3, 4), requires_grad=False))
    got = kernels.separable_conv2d_reference(x, wd, bd, wp, bp, res, [2, 2], [1, 1], [1, 1], "silu", "relu6")
    torch.testing.assert_close(got, oracle(x, wd, bd, wp, bp, res, 2, 1, 1, "silu", "relu6")[1])


@pytest.mark.parametrize("dtype", DTYPES)
def test_dtypes_and_expanded_grad(dtype):
    args = make_args(2, 19, 5, 6, 21, 3, dtype=dtype, layout="nhwc", residual=True, out_hw=(5, 6))
    out = separable_conv2d(args[0], args[1], args[3], args[2], args[4], 1, 1, activation="relu6",
                           pointwise_activation="silu", residual=args[5])
    assert out.dtype == dtype
    leaves, ref = oracle(*args, 1, 1, 1, "relu6", "silu")
    assert_close(out, ref, dtype, what="forward")
    out.sum().backward()  # the stride-0 gradient
    ref.backward(expanded_grad(ref.shape, torch.float64))
    # fp16: the depthwise output is rounded to fp16 before the pointwise convolution
    # (as the unfused pair stores it), and every gradient passes through two rounded
    # convolutions.
    factor = 3 if dtype != torch.float32 else 1
    for ours, theirs, name in zip(args, leaves, ("dx", "dwd", "dbd", "dwp", "dbp", "dres")):
        assert_close(ours.grad, theirs.grad, dtype, factor=factor, what=name)


def test_unbatched_input_and_no_bias():
    x, wd, _, wp, _, _ = make_args(1, 5, 5, 6, 7, 3, requires_grad=False)
    out = separable_conv2d(x[0], wd, wp, padding=1, activation="relu")
    assert out.shape == (7, 5, 6)
    assert_close(out, oracle(x, wd, None, wp, None, None, 1, 1, 1, "relu", "none")[1][0])


def test_saves_no_depthwise_output():
    # The forward saves only its inputs (and the output for relu/relu6): nothing of
    # the depthwise output's shape (N, C, P, Q).
    x, wd, bd, wp, bp, _ = make_args(2, 6, 5, 5, 5, 3)
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(tuple(t.shape)) or t, lambda t: t):
        separable_conv2d(x, wd, wp, bd, bp, 1, 1, activation="relu", pointwise_activation="relu")
    assert (2, 6, 5, 5) in saved and (2, 5, 5, 5) in saved  # x and the output
    assert saved.count((2, 6, 5, 5)) == 1


def test_gradcheck():
    dev = DEVICE
    x = torch.randn(1, 3, 4, 4, dtype=torch.float64, device=dev, requires_grad=True)
    wd = torch.randn(3, 1, 3, 3, dtype=torch.float64, device=dev, requires_grad=True)
    bd = torch.randn(3, dtype=torch.float64, device=dev, requires_grad=True)
    wp = torch.randn(2, 3, 1, 1, dtype=torch.float64, device=dev, requires_grad=True)
    bp = torch.randn(2, dtype=torch.float64, device=dev, requires_grad=True)
    res = torch.randn(1, 2, 2, 2, dtype=torch.float64, device=dev, requires_grad=True)

    def fn(x, wd, bd, wp, bp, res):
        return separable_conv2d(x, wd, wp, bd, bp, 2, 1, activation="silu", pointwise_activation="gelu",
                                residual=res)
    assert torch.autograd.gradcheck(fn, (x, wd, bd, wp, bp, res), fast_mode=True)


OPCHECK_TESTS = ("test_schema", "test_autograd_registration", "test_faketensor", "test_aot_dispatch_dynamic")


def test_opcheck():
    x, wd, bd, wp, bp, res = make_args(1, 5, 4, 3, 3, 3, layout="nhwc", residual=True, out_hw=(2, 2))
    torch.library.opcheck(separable_conv2d_op, (x, wd, bd, wp, bp, res, [2, 2], [1, 1], [1, 1], "relu", "silu",
                                                "auto"), test_utils=OPCHECK_TESTS)


def test_torch_compile_fullgraph():
    x, wd, bd, wp, bp, _ = make_args(2, 5, 5, 4, 7, 3, layout="nhwc")

    def f(x, wd, bd, wp, bp):
        return (separable_conv2d(x, wd, wp, bd, bp, 1, "same", activation="relu6",
                                 pointwise_activation="relu") * 2).sum()

    compiled = torch.compile(f, fullgraph=True, backend="aot_eager")
    loss = compiled(x, wd, bd, wp, bp)
    grads = torch.autograd.grad(loss, (x, wd, bd, wp, bp))
    leaves, ref = oracle(x, wd, bd, wp, bp, None, 1, "same", 1, "relu6", "relu")
    ref = (ref * 2).sum()
    assert_close(loss, ref)
    for g, w in zip(grads, torch.autograd.grad(ref, leaves[:5])):
        assert_close(g, w)


def test_every_algo_gives_the_right_answer():
    args = make_args(1, 5, 5, 4, 7, 3, residual=True, out_hw=(5, 4))
    leaves, ref = oracle(*args, 1, 1, 1, "gelu", "relu")
    grad = torch.randn(ref.shape, dtype=torch.float64, device=ref.device)
    x, wd, bd, wp, bp, res = args
    for algo in ("auto", "triton", "cuda", "cudnn", "reference"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # cuda/cudnn fall back on CPU
            out = separable_conv2d(x, wd, wp, bd, bp, 1, 1, activation="gelu", pointwise_activation="relu",
                                   residual=res, algo=algo)
        assert_close(out, ref, what=algo)
    check_grads(out, ref, leaves, args, grad=grad)  # the reference backend's forward, conv2d ops' backward


def test_autocast():
    x, wd, bd, wp, bp, _ = make_args(1, 5, 4, 4, 7, 3, requires_grad=False)
    with torch.autocast(x.device.type, dtype=torch.float16 if ON_GPU else torch.bfloat16):
        out = separable_conv2d(x, wd, wp, bd, bp, 1, 1, algo="reference")
    assert out.dtype == (torch.float16 if ON_GPU else torch.bfloat16)


# ----------------------------------------------------------------------------- reasons and errors

def test_reasons():
    x, wd, bd, wp, bp, _ = make_args(1, 4, 3, 3, 5, 3, requires_grad=False)
    assert kernels.separable_reasons(x, wd, bd, wp, bp, None) == []
    why = kernels.separable_reasons(x, torch.randn(8, 1, 3, 3), None, wp, None, None)
    assert any("multiplier 1" in r for r in why)
    assert any("mixed dtypes" in r for r in kernels.separable_reasons(x, wd.double(), None, wp, None, None))


ERRORS = [
    (dict(input=torch.randn(1, 4, 5, 5, 1)), "'input'"),
    (dict(depthwise_weight=torch.randn(8, 1, 3, 3)), "'depthwise_weight'"),  # multiplier 2
    (dict(depthwise_weight=torch.randn(4, 2, 3, 3)), "'depthwise_weight'"),
    (dict(pointwise_weight=torch.randn(6, 4, 3, 3)), "'pointwise_weight'"),
    (dict(pointwise_weight=torch.randn(6, 5, 1, 1)), "'pointwise_weight'"),
    (dict(pointwise_weight=torch.randn(6, 4, 1, 1, dtype=torch.float64)), "'pointwise_weight'"),
    (dict(depthwise_bias=torch.randn(5)), "'depthwise_bias'"),
    (dict(pointwise_bias=torch.randn(5)), "'pointwise_bias'"),
    (dict(activation="tanh"), "'activation'"),
    (dict(pointwise_activation="elu"), "'pointwise_activation'"),
    (dict(residual=torch.randn(1, 6, 4, 4)), "'residual'"),
    (dict(stride=0), "'stride'"),
    (dict(stride=2, padding="same"), "'same'"),
    (dict(padding="full"), "'padding'"),
    (dict(input=torch.randn(1, 4, 1, 1), padding=0), "'input'"),  # too small for 3x3
    (dict(algo="fastest"), "'algo'"),
]


@pytest.mark.parametrize("bad, name", ERRORS, ids=[f"{i}-{e[1]}" for i, e in enumerate(ERRORS)])
def test_errors_name_op_and_argument(bad, name):
    kwargs = dict(input=torch.randn(1, 4, 5, 5), depthwise_weight=torch.randn(4, 1, 3, 3),
                  pointwise_weight=torch.randn(6, 4, 1, 1), padding=1)
    kwargs.update(bad)
    with pytest.raises((ValueError, TypeError), match="fastcnn.separable_conv2d") as info:
        separable_conv2d(**kwargs)
    assert name in str(info.value)


# ----------------------------------------------------------------------------- module

def _randomize_bn(module):
    for m in module.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 1.5)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.5, 0.5)


def _unfused_pair(mod, stride):
    """The same layer as two ConvBNAct modules, loaded from ``mod``'s state_dict."""
    c, k = mod.depthwise.in_channels, mod.pointwise.out_channels
    pair = torch.nn.Sequential(ConvBNAct(c, c, 3, stride, groups=c, activation=mod.activation),
                               ConvBNAct(c, k, 1, activation=mod.pointwise_activation)).to(DEVICE)
    remap = {"0.0.": "0.conv.", "0.1.": "0.bn.", "1.0.": "1.conv.", "1.1.": "1.bn."}
    pair.load_state_dict({remap[key[:4]] + key[4:]: v for key, v in mod.state_dict().items()})
    return pair


def test_module_keys_and_params():
    mod = DepthwiseSeparableConv2d(8, 16, 3, 2)
    keys = list(mod.state_dict())
    bn = ["weight", "bias", "running_mean", "running_var", "num_batches_tracked"]
    assert keys == ["0.0.weight"] + [f"0.1.{b}" for b in bn] + ["1.0.weight"] + [f"1.1.{b}" for b in bn]
    assert sum(p.numel() for p in mod.parameters()) == 8 * 9 + 2 * 8 + 16 * 8 + 2 * 16
    plain = DepthwiseSeparableConv2d(8, 16, 5, norm=False, bias=True, activation="silu", pointwise_activation="none")
    assert list(plain.state_dict()) == ["0.0.weight", "0.0.bias", "1.0.weight", "1.0.bias"]
    assert plain.depthwise.padding == (2, 2)
    with pytest.raises(ValueError, match="'pointwise_activation'"):
        DepthwiseSeparableConv2d(8, 16, pointwise_activation="tanh")


@pytest.mark.parametrize("stride", [1, 2])
def test_module_eval_is_one_fused_op_equal_to_the_unfused_pair(stride):
    mod = DepthwiseSeparableConv2d(5, 7, 3, stride, activation="relu6", pointwise_activation="silu").to(DEVICE)
    _randomize_bn(mod)
    mod.eval()
    pair = _unfused_pair(mod, stride).double().eval()  # the float64 oracle
    x = make_input((2, 5, 6, 5), layout="nhwc", requires_grad=True)
    calls = []
    handle = torch.nn.modules.module.register_module_forward_hook(lambda m, i, o: calls.append(type(m)))
    try:
        out = mod(x)
    finally:
        handle.remove()
    assert calls == [DepthwiseSeparableConv2d]  # no child ran: one fused op
    x64 = x.detach().double().requires_grad_()
    ref = pair(x64)
    assert_close(out, ref, what="eval forward")
    g = torch.randn_like(ref)
    got = torch.autograd.grad(out, [x] + list(mod.parameters()), g.float())
    want = torch.autograd.grad(ref, [x64] + list(pair.parameters()), g)
    for a, b in zip(got, want):
        assert_close(a, b, torch.float32, factor=2, what="eval grad")


def test_module_training_matches_the_pair_and_updates_running_stats():
    mod = DepthwiseSeparableConv2d(5, 7, 3, 1).to(DEVICE)
    _randomize_bn(mod)
    pair = _unfused_pair(mod, 1)
    x = make_input((2, 5, 5, 4), requires_grad=True)
    res = make_input((2, 7, 5, 4))
    out = mod(x, residual=res)
    want = pair[1](pair[0](x), res)
    assert_close(out, want.double(), what="training forward")
    g = torch.randn_like(out)
    got = torch.autograd.grad(out, [x] + list(mod.parameters()), g)
    ref = torch.autograd.grad(want, [x] + list(pair.parameters()), g)
    for a, b in zip(got, ref):
        assert_close(a, b.double(), factor=2, what="training grad")
    for (name, a), b in zip(mod.state_dict().items(), pair.state_dict().values()):
        assert torch.equal(a, b) if "num_batches" in name else torch.allclose(a, b, atol=1e-6), name


def test_module_without_norm_uses_the_fused_op_in_training_too():
    mod = DepthwiseSeparableConv2d(5, 7, 3, norm=False, bias=True, activation="gelu").to(DEVICE).train()
    x = make_input((1, 5, 4, 4), requires_grad=True)
    out = mod(x)
    conv0, conv1 = mod.depthwise, mod.pointwise
    _, ref = oracle(x, conv0.weight, conv0.bias, conv1.weight, conv1.bias, None, 1, 1, 1, "gelu", "relu")
    assert_close(out, ref)


def test_module_unfused_mode_for_summary():
    mod = DepthwiseSeparableConv2d(5, 7, 3, 2).to(DEVICE).eval()
    _randomize_bn(mod)
    x = make_input((1, 5, 5, 5))
    with torch.no_grad():
        fused = mod(x)
        with unfused():
            assert_close(fused, mod(x).double(), what="unfused()")


def test_mobilenet_v1_layers_and_keys():
    model = MobileNetV1(num_classes=4, width_mult=0.25, config=[(16, 1), (32, 2)])
    layers = [m for m in model.features if isinstance(m, DepthwiseSeparableConv2d)]
    assert len(layers) == 2
    keys = set(model.state_dict())
    for i in (1, 2):
        assert {f"features.{i}.0.0.weight", f"features.{i}.0.1.running_var", f"features.{i}.1.0.weight",
                f"features.{i}.1.1.weight"} <= keys


def test_mobilenet_v2_inference_runs_depthwise_and_projection_as_one_op(monkeypatch):
    """MobileNetV2's inverted residuals at inference: depthwise-BN-ReLU6 and the
    projection-BN (+ input) are one separable_conv2d call per block, equal to the
    block run module by module."""
    import fastcnn.models as M
    import fastcnn.nn.separable as sep
    model = M.create("mobilenet_v2", num_classes=4, width_mult=0.25, algo="triton").to(DEVICE)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            _randomize_bn(torch.nn.Sequential(m))
    model.eval()
    x = make_input((1, 3, 16, 16), layout="nhwc")
    calls = []
    real = sep.separable_conv2d
    monkeypatch.setattr(sep, "separable_conv2d", lambda *a, **k: calls.append(k.get("residual") is not None)
                        or real(*a, **k))
    with torch.no_grad():
        fused = model(x)
        with unfused():
            one_by_one = model(x)
    assert len(calls) == 17 and sum(calls) == 11  # every block; 11 add their input at this width
    assert_close(fused, one_by_one.double(), factor=5)


# ----------------------------------------------------------------------------- GPU

# (n, c, hw, k, kernel, stride): MobileNetV2 / EfficientNet-B0 depthwise -> project layers
GPU_CASES = [(32, 96, 28, 24, 3, 1), (32, 144, 28, 32, 3, 2), (32, 192, 28, 64, 3, 1), (32, 384, 14, 64, 3, 1),
             (32, 240, 28, 80, 5, 2), (32, 384, 14, 96, 5, 1), (32, 256, 14, 256, 3, 1)]


@pytest.mark.gpu
@pytest.mark.parametrize("case", GPU_CASES, ids=lambda c: "-".join(map(str, c)))
@pytest.mark.parametrize("dtype", DTYPES)
def test_gpu_sizes_against_cudnn_pair(case, dtype):
    n, c, hw, k, kernel, stride = case
    args = make_args(n, c, hw, hw, k, kernel, dtype=dtype, layout="nhwc", requires_grad=False)
    x, wd, bd, wp, bp, _ = args
    pad = kernel // 2
    with torch.no_grad():
        out = separable_conv2d(x, wd, wp, bd, bp, stride, pad, activation="relu6", algo="triton")
        cudnn = separable_conv2d(x, wd, wp, bd, bp, stride, pad, activation="relu6", algo="cudnn")
        _, ref = oracle(*args, stride, pad, 1, "relu6", "none")
    assert_close(out, ref.detach(), dtype, what="triton")
    assert_close(cudnn, ref.detach(), dtype, factor=2, what="cudnn")
    # no worse than the unfused cuDNN pair, with slack for TF32/fp16 rounding order
    assert (out.double() - ref).norm() <= 2 * (cudnn.double() - ref).norm() + 1e-6 * ref.norm()
