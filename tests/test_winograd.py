"""Winograd F(2x2,3x3) and F(4x4,3x3): the transform matrices (exact Cook-Toom
identity in rationals, the Lavin-Gray values), the generated CUDA header against its
generator, the PyTorch reference of the algorithm against F.conv2d in float64, and
the documented error bound per variant and dtype."""
import random
import re
import shutil
import subprocess
from fractions import Fraction
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from fastcnn.triton_kernels import winograd
from fastcnn.triton_kernels.winograd import (VARIANTS, WINOGRAD_REL_ERROR_BOUND, as_tensor, cuda_header,
                                             error_bound, transforms, winograd_conv2d_reference)
from helpers import rel_error

ROOT = Path(__file__).resolve().parents[1]
HEADER = ROOT / "csrc" / "winograd_transforms.h"


def _matvec(A, v):
    return [sum((a * b for a, b in zip(row, v)), Fraction(0)) for row in A]


@pytest.mark.parametrize("name", VARIANTS)
def test_identity_exact(name):
    m = VARIANTS[name]
    AT, G, BT = transforms(m)
    n = m + 2
    assert (len(AT), len(AT[0]), len(G), len(G[0]), len(BT), len(BT[0])) == (m, n, n, 3, n, n)
    rng = random.Random(m)
    for _ in range(200):
        d = [Fraction(rng.randint(-9, 9)) for _ in range(n)]
        g = [Fraction(rng.randint(-9, 9)) for _ in range(3)]
        y = _matvec(AT, [u * v for u, v in zip(_matvec(G, g), _matvec(BT, d))])
        assert y == [sum(d[i + k] * g[k] for k in range(3)) for i in range(m)]
    # and for the basis vectors, so every entry of the bilinear form is exercised
    for i in range(n):
        for k in range(3):
            d = [Fraction(int(j == i)) for j in range(n)]
            g = [Fraction(int(j == k)) for j in range(3)]
            y = _matvec(AT, [u * v for u, v in zip(_matvec(G, g), _matvec(BT, d))])
            assert y == [Fraction(int(i - o == k)) for o in range(m)]


def test_lavin_gray_matrices():
    AT, G, BT = transforms(2)
    assert BT == [[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]]
    assert G == [[1, 0, 0], [Fraction(1, 2)] * 3, [Fraction(1, 2), Fraction(-1, 2), Fraction(1, 2)], [0, 0, 1]]
    assert AT == [[1, 1, 1, 0], [0, 1, -1, -1]]
    AT, G, BT = transforms(4)
    f = Fraction
    assert G == [[f(1, 4), 0, 0], [f(-1, 6)] * 3, [f(-1, 6), f(1, 6), f(-1, 6)],
                 [f(1, 24), f(1, 12), f(1, 6)], [f(1, 24), f(-1, 12), f(1, 6)], [0, 0, 1]]
    assert BT[0] == [4, 0, -5, 0, 1, 0] and BT[5] == [0, 4, 0, -5, 0, 1]
    assert AT[3] == [0, 1, -1, 8, -8, 1]
    with pytest.raises(ValueError, match="unsupported"):
        transforms(3)


def test_header_matches_generator(tmp_path):
    assert HEADER.read_text(encoding="utf-8") == cuda_header(), (
        "csrc/winograd_transforms.h is stale: run "
        "python -m fastcnn.triton_kernels.winograd --write csrc/winograd_transforms.h")
    out = tmp_path / "h.h"
    winograd.main(["--write", str(out)])
    assert out.read_text(encoding="utf-8") == cuda_header()


def test_header_values_round_trip():
    """Every literal in the header is the float32 nearest to the exact matrix entry."""
    text = cuda_header()
    for name, m in VARIANTS.items():
        for label, mat in zip(("AT", "G", "BT"), transforms(m)):
            assert f"constexpr float {name}_{label}[{len(mat)}][{len(mat[0])}]" in text
            body = text.split(f"{name}_{label}[")[1].split("};")[0].split("= {", 1)[1]
            body = re.sub(r"/\*.*?\*/", "", body)
            vals = [float(t.strip().rstrip("f")) for t in re.findall(r"[-0-9.e+]+f", body)]
            want = as_tensor(mat, torch.float32).flatten().tolist()
            assert torch.tensor(vals, dtype=torch.float32).tolist() == want


@pytest.mark.skipif(shutil.which("g++") is None, reason="needs g++")
def test_header_compiles():
    src = ('#include "csrc/winograd_transforms.h"\n'
           'static_assert(fastcnn::winograd::F4x4_3x3_N == 6, "");\n'
           'static_assert(fastcnn::winograd::F4x4_3x3_BT[0][2] == -5.0f, "");\n'
           'int main() { return 0; }\n')
    subprocess.run(["g++", "-std=c++17", "-x", "c++", f"-I{ROOT}", "-fsyntax-only", "-"],
                   input=src, text=True, check=True)


@pytest.mark.parametrize("name", VARIANTS)
@pytest.mark.parametrize("h,w", [(1, 1), (5, 7), (7, 13), (10, 10), (13, 5), (1, 10)])
@pytest.mark.parametrize("padding", [0, 1, 2, (2, 0)])
@pytest.mark.parametrize("n", [0, 1, 3])
def test_reference_matches_conv2d_float64(name, h, w, padding, n):
    ph, pw = (padding, padding) if isinstance(padding, int) else padding
    if h + 2 * ph < 3 or w + 2 * pw < 3:
        with pytest.raises(ValueError, match="empty"):
            winograd_conv2d_reference(torch.zeros(n, 3, h, w, dtype=torch.float64),
                                      torch.zeros(5, 3, 3, 3, dtype=torch.float64), padding, name)
        return
    g = torch.Generator().manual_seed(h * 100 + w)
    x = torch.randn(n, 3, h, w, generator=g, dtype=torch.float64)
    wt = torch.randn(5, 3, 3, 3, generator=g, dtype=torch.float64)
    out = winograd_conv2d_reference(x, wt, padding, VARIANTS[name])
    ref = F.conv2d(x, wt, padding=padding)
    assert out.shape == ref.shape and out.dtype == torch.float64
    if ref.numel():
        assert rel_error(out, ref) < 1e-12
        assert (out - ref).abs().max().item() < 1e-12 * max(1.0, ref.abs().max().item())


def test_reference_args():
    x = torch.randn(1, 2, 5, 5)
    with pytest.raises(ValueError, match="unknown variant"):
        winograd_conv2d_reference(x, torch.randn(3, 2, 3, 3), 1, "F6x6_3x3")
    with pytest.raises(ValueError, match="3, 3"):
        winograd_conv2d_reference(x, torch.randn(3, 2, 5, 5), 1, 2)
    with pytest.raises(ValueError, match="dtype"):
        winograd_conv2d_reference(x, torch.randn(3, 2, 3, 3, dtype=torch.float64), 1, 2)


@pytest.fixture(scope="module")
def error_case():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 64, 14, 14, generator=g, dtype=torch.float64)
    w = torch.randn(32, 64, 3, 3, generator=g, dtype=torch.float64)
    return x, w, F.conv2d(x, w, padding=1)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_error_bounds(error_case, dtype):
    x, w, ref = error_case
    xs, ws = x.to(dtype), w.to(dtype)
    direct = rel_error(F.conv2d(xs, ws, padding=1), ref)
    errs = {}
    for name in VARIANTS:
        out = winograd_conv2d_reference(xs, ws, 1, name)
        assert out.dtype == dtype and torch.isfinite(out).all()
        errs[name] = rel_error(out, ref)
        bound = WINOGRAD_REL_ERROR_BOUND[(name, dtype)]
        assert errs[name] <= bound, f"{name} {dtype}: relative error {errs[name]:.3e} > bound {bound:.1e}"
        # the bound is meaningful: not more than ~10x what we measure
        assert errs[name] > bound / 10
    # F(4x4)'s larger transforms cost accuracy. F(2x2) in fp32 is on par with a direct
    # convolution, whose own error depends on the CPU kernel's summation order (2.2e-7
    # on one machine, 4.2e-7 on another), so only F(4x4) is compared with it.
    assert errs["F4x4_3x3"] > errs["F2x2_3x3"], errs
    assert errs["F4x4_3x3"] > direct, (errs, direct)


# ============================================================================ CUDA kernels
# csrc/winograd.cu through fastcnn/ops/_cuda_winograd.py and the composite "cuda" backend
# of fastcnn.ops.conv2d. Without a GPU: the bindings, their argument checks, the
# backend's reasons and fallback, the filter-transform cache, and the kernels' data
# layouts (emulated in float64). With a GPU: the kernels against float64.
import contextlib  # noqa: E402
import warnings  # noqa: E402

from fastcnn import _ext  # noqa: E402
from fastcnn.ops import _cuda_winograd as cw  # noqa: E402
from fastcnn.ops.conv2d import conv2d, forward_dispatch, input_grad_dispatch, weight_grad_dispatch  # noqa: E402
from fastcnn.triton_kernels import reference  # noqa: E402
from helpers import DEVICE, assert_close, expanded_grad, make_input  # noqa: E402


def emulate_kernels(x, u, m, padding, bias=None, residual=None, activation="none"):
    """csrc/winograd.cu's pipeline in float64 with its exact layouts: V (alpha^2, C, P)
    with p = (n, tile row, tile col), M = U @ V, the output transform cropped to the
    convolution's size. ``u``: (alpha^2, K, C) as the filter transform writes it."""
    AT, _, BT = (as_tensor(t, torch.float64) for t in transforms(m))
    n_, c, h, w = x.shape
    a = m + 2
    ph, pw = padding
    oh, ow = h + 2 * ph - 2, w + 2 * pw - 2
    th, tw = -(-oh // m), -(-ow // m)
    xp = F.pad(x.double(), (pw, tw * m + 2 - w - pw, ph, th * m + 2 - h - ph))
    d = xp.unfold(2, a, m).unfold(3, a, m)                           # N, C, th, tw, a, a
    V = (BT @ d @ BT.T).permute(4, 5, 1, 0, 2, 3).reshape(a * a, c, -1)
    Mt = u.double() @ V                                              # a^2, K, P
    Mt = Mt.reshape(a, a, -1, n_, th, tw).permute(3, 2, 4, 5, 0, 1)
    y = (AT @ Mt @ AT.T).permute(0, 1, 2, 4, 3, 5).reshape(n_, -1, th * m, tw * m)[:, :, :oh, :ow]
    if bias is not None:
        y = y + bias.double()[:, None, None]
    if residual is not None:
        y = y + residual.double()
    return reference.ACTIVATION_FNS[activation](y)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("padding", [(0, 0), (1, 1), (2, 1)])
def test_emulated_kernels_forward_and_input_grad(variant, padding):
    """The layouts the kernels use, the filter transform of the rotated, channel-transposed
    filter and the padding 2 - p of the input gradient give F.conv2d and its dx."""
    m = VARIANTS[variant]
    g = torch.Generator().manual_seed(m)
    x = torch.randn(2, 3, 7, 9, generator=g, dtype=torch.float64)
    w = torch.randn(5, 3, 3, 3, generator=g, dtype=torch.float64)
    b, act = torch.randn(5, generator=g, dtype=torch.float64), "relu6"
    ref = F.conv2d(x, w, b, padding=padding)
    res = torch.randn(ref.shape, generator=g, dtype=torch.float64)
    y = emulate_kernels(x, cw.reference_filter_transform(w, variant), m, padding, b, res, act)
    assert rel_error(y, F.relu6(ref + res)) < 1e-12
    dy = torch.randn(ref.shape, generator=g, dtype=torch.float64)
    want = torch.ops.aten.convolution_backward(dy, x, w, None, [1, 1], list(padding), [1, 1], False, [0, 0], 1,
                                               [True, False, False])[0]
    dx = emulate_kernels(dy, cw.reference_filter_transform(w, variant, flip=True), m,
                         [2 - padding[0], 2 - padding[1]])
    assert dx.shape == x.shape and rel_error(dx, want) < 1e-12


def test_reference_filter_transform_layout():
    w = torch.randn(4, 3, 3, 3, dtype=torch.float64)
    for variant, m in VARIANTS.items():
        G = as_tensor(transforms(m)[1])
        u = cw.reference_filter_transform(w, variant)
        assert u.shape == ((m + 2) ** 2, 4, 3)
        torch.testing.assert_close(u[:, 2, 1].reshape(m + 2, m + 2), G @ w[2, 1] @ G.T)
        uf = cw.reference_filter_transform(w, variant, flip=True)
        assert uf.shape == ((m + 2) ** 2, 3, 4)
        torch.testing.assert_close(uf[:, 1, 2].reshape(m + 2, m + 2), G @ w[2, 1].flip(0, 1) @ G.T)


# ----------------------------------------------------------------------------- bindings

@pytest.fixture(scope="module")
def C():
    mod = _ext.built()
    if mod is None:
        pytest.skip(f"fastcnn._C is not built here: {_ext.unavailable_reason()}")
    return mod


S4 = [1, 1, 1, 1]


def _fwd(C, geom=(1, 2, 5, 5, 3, 1, 1, 5, 5), m=2, x=0x1000, u=0x2000, residual=0, res_stride=(), act=0,
         y=0x3000, dtype=0, y_stride=S4):
    C.winograd_conv2d_forward(list(geom), m, x, S4, u, 0, 0, residual, list(res_stride), act, y, list(y_stride),
                              0x4000, 0x5000, dtype, 0)


def test_bindings_exist_with_documented_signatures(C):
    for name in ("winograd_filter_transform", "winograd_conv2d_forward"):
        fn = getattr(C, name)
        assert callable(fn) and "Winograd" in fn.__doc__
    assert "geometry" in C.winograd_conv2d_forward.__doc__ and "v_workspace" in C.winograd_conv2d_forward.__doc__


@pytest.mark.parametrize("kwargs, match", [
    ({"m": 3}, "m \\(output tile\\) must be 2 or 4"),
    ({"dtype": 3}, "unsupported dtype code 3"),
    ({"geom": (1, 2, 5, 5, 3, 1, 1)}, "geometry must be \\[n, c, h, w, k, ph, pw, oh, ow\\]"),
    ({"geom": (1, 2, 5, 5, 3, -1, 1, 3, 5)}, "geometry value 5 out of range"),
    ({"geom": (1, 2, 5, 5, 3, 1, 1, 4, 5)}, "oh, ow must be h \\+ 2 ph - 2"),
    ({"act": 5}, "activation code must be 0..4"),
    ({"y_stride": [1, 1]}, "y_stride must have 4 strides"),
    ({"residual": 0x6000, "res_stride": [1]}, "residual_stride must have 4 strides"),
    ({"x": 0}, ".*must be non-null device pointers"),
])
def test_forward_binding_validates_arguments(C, kwargs, match):
    with pytest.raises(ValueError, match="fastcnn._C.winograd_conv2d_forward: " + match):
        _fwd(C, **kwargs)


def test_filter_binding_validates_arguments(C):
    op = "fastcnn._C.winograd_filter_transform: "
    with pytest.raises(ValueError, match=op + "m \\(output tile\\)"):
        C.winograd_filter_transform(2, 2, 6, False, 0x1000, S4, 0x2000, 0, 0)
    with pytest.raises(ValueError, match=op + "w_stride must have 4 strides"):
        C.winograd_filter_transform(2, 2, 2, False, 0x1000, [1], 0x2000, 0, 0)
    with pytest.raises(ValueError, match=op + "sizes must be >= 0"):
        C.winograd_filter_transform(-1, 2, 2, False, 0x1000, S4, 0x2000, 0, 0)
    with pytest.raises(ValueError, match=op + "weight and u must be non-null"):
        C.winograd_filter_transform(2, 2, 4, True, 0, S4, 0x2000, 0, 0)
    # empty problems touch no device
    C.winograd_filter_transform(0, 2, 2, False, 0, S4, 0, 0, 0)
    _fwd(C, geom=(0, 2, 5, 5, 3, 1, 1, 5, 5), x=0, u=0, y=0)


def test_bindings_without_device_raise_a_clean_cuda_error(C):
    if C.device_count() > 0:
        pytest.skip("needs a machine without a CUDA device (the pointers are fake)")
    with pytest.raises(RuntimeError, match="fastcnn._C.winograd_conv2d_forward failed: cuda"):
        _fwd(C)
    with pytest.raises(RuntimeError, match="fastcnn._C.winograd_filter_transform failed: cuda"):
        C.winograd_filter_transform(2, 2, 2, False, 0x1000, S4, 0x2000, 0, 0)


# ----------------------------------------------------------------------------- the "cuda" backend

def _fwd_args(x, w, stride=(1, 1), padding=(1, 1), dilation=(1, 1), groups=1, activation="none"):
    return (x, w, None, None, list(stride), list(padding), list(dilation), groups, activation)


@pytest.mark.parametrize("weight_shape, stride, dilation, groups, ok", [
    ((8, 4, 3, 3), (1, 1), (1, 1), 1, True),
    ((8, 4, 5, 5), (1, 1), (1, 1), 1, False),
    ((8, 4, 3, 1), (1, 1), (1, 1), 1, False),
    ((8, 4, 3, 3), (2, 2), (1, 1), 1, False),
    ((8, 4, 3, 3), (1, 1), (2, 2), 1, False),
    ((8, 2, 3, 3), (1, 1), (1, 1), 2, False),
])
def test_winograd_scope(weight_shape, stride, dilation, groups, ok):
    assert (not cw.geometry_reasons(weight_shape, stride, dilation, groups)) == ok


def test_cuda_backend_reasons_are_clean_sentences():
    x, w = torch.randn(1, 4, 6, 6), torch.randn(5, 4, 3, 3)
    cases = [
        forward_dispatch.reasons("cuda", _fwd_args(x, w)),
        forward_dispatch.reasons("cuda", _fwd_args(x, torch.randn(5, 4, 5, 5), stride=(2, 2))),
        input_grad_dispatch.reasons("cuda", (x, w, [1, 4, 6, 6], [1, 1], [3, 3], [1, 1], 1)),
        weight_grad_dispatch.reasons("cuda", (x, x, [5, 4, 3, 3], [1, 1], [1, 1], [1, 1], 1)),
    ]
    for reasons in cases:
        assert reasons and all(isinstance(r, str) and r for r in reasons)
        assert len(reasons) == len(set(reasons))  # the device reasons of both kernels appear once
    if DEVICE == "cpu":
        assert any("CUDA tensors" in r for r in cases[0])
    assert any("not a depthwise convolution" in r for r in cases[0])
    assert any("3x3" in r for r in cases[1]) and any("stride 1" in r for r in cases[1])
    assert any("padding in 0..2" in r for r in cases[2])
    assert "weight gradient uses the other backends" in cases[3]
    assert "weight gradient uses the other backends" in cw.weight_grad_reasons(x, x, [5, 4, 3, 3], [1, 1], [1, 1],
                                                                               [1, 1], 1)
    fp64 = cw.forward_reasons(*_fwd_args(x.double(), w.double()))
    assert any("float64" in r for r in fp64)
    assert any("activation 'tanh'" in r for r in cw.forward_reasons(*_fwd_args(x, w, activation="tanh")))


@pytest.mark.skipif(DEVICE != "cpu", reason="the fallback of a CPU call")
def test_cuda_backend_falls_back_on_cpu():
    x = make_input((2, 4, 7, 5), requires_grad=True)
    w = torch.randn(3, 4, 3, 3, requires_grad=True)
    with pytest.warns(UserWarning, match="algo='cuda' cannot take this call"):
        out = conv2d(x, w, None, 1, 1, algo="cuda")
        dx, dw = torch.autograd.grad(out.square().sum(), (x, w))
    x64, w64 = x.detach().double().requires_grad_(), w.detach().double().requires_grad_()
    ref = F.conv2d(x64, w64, None, 1, 1)
    assert_close(out, ref)
    for got, want in zip((dx, dw), torch.autograd.grad(ref.square().sum(), (x64, w64))):
        assert_close(got, want)


# ----------------------------------------------------------------------------- filter cache

class _CountingTransform:
    def __init__(self):
        self.calls = []

    def __call__(self, w, variant, flip):
        self.calls.append((variant, flip))
        return cw.reference_filter_transform(w, variant, flip)


def test_filter_cache_keys_on_weight_version_dtype_variant_and_flip():
    fn = _CountingTransform()
    cache = cw.FilterTransformCache(fn)
    w = torch.randn(4, 3, 3, 3)
    u = cache.get(w, "F2x2_3x3")
    assert cache.get(w, "F2x2_3x3") is u and len(fn.calls) == 1 and cache.hits == 1
    torch.testing.assert_close(u, cw.reference_filter_transform(w, "F2x2_3x3"))
    # another variant, the flipped filter, another dtype: each its own entry
    cache.get(w, "F4x4_3x3")
    cache.get(w, "F2x2_3x3", flip=True)
    wh = w.half()  # kept alive: an entry goes with its weight
    cache.get(wh, "F2x2_3x3")
    assert len(fn.calls) == 4 and len(cache) == 4
    # an in-place update (what an optimizer step does) bumps the version: recomputed
    with torch.no_grad():
        w.mul_(2)
    u2 = cache.get(w, "F2x2_3x3")
    assert len(fn.calls) == 5
    torch.testing.assert_close(u2, 2 * u)
    # a view with other strides is another key; the same view again is a hit
    wt = w.transpose(2, 3)
    cache.get(wt, "F2x2_3x3")
    cache.get(wt, "F2x2_3x3")
    assert len(fn.calls) == 6


@pytest.mark.parametrize("make_optimizer", [
    lambda p: torch.optim.Adam([p], lr=0.1, fused=True), lambda p: torch.optim.SGD([p], lr=0.1, fused=True),
    lambda p: torch.optim.AdamW([p], lr=0.1)], ids=["adam-fused", "sgd-fused", "adamw"])
def test_filter_cache_ends_at_every_optimizer_step(make_optimizer):
    """A fused optimizer step writes the parameter without bumping its version counter:
    the cache must still serve the new filter's U after it."""
    fn = _CountingTransform()
    cache = cw.FilterTransformCache(fn)
    w = torch.nn.Parameter(torch.randn(4, 3, 3, 3))
    optimizer = make_optimizer(w)
    for _ in range(2):
        u = cache.get(w, "F2x2_3x3")
        assert cache.get(w, "F2x2_3x3") is u  # cached between steps
        w.grad = torch.randn_like(w)
        optimizer.step()
        torch.testing.assert_close(cache.get(w, "F2x2_3x3"), cw.reference_filter_transform(w.detach(), "F2x2_3x3"))
    assert len(fn.calls) == 3 and cache.hits == 3  # one transform per parameter value


def test_filter_cache_does_not_cache_inference_tensors():
    fn = _CountingTransform()
    cache = cw.FilterTransformCache(fn)
    with torch.inference_mode():
        w = torch.randn(4, 3, 3, 3)
        u = cache.get(w, "F2x2_3x3")
        w.mul_(2)  # in place without a version counter
        torch.testing.assert_close(cache.get(w, "F2x2_3x3"), 2 * u)
    assert len(fn.calls) == 2 and len(cache) == 0


def test_filter_cache_is_bypassed_during_cuda_graph_capture(monkeypatch):
    """A U served from the cache would be baked into a captured graph, and replays after
    an (also replayed) optimizer step would use the old filter; so during a capture
    each call computes U (the transform is captured too) and stores nothing."""
    fn = _CountingTransform()
    cache = cw.FilterTransformCache(fn)
    w = torch.randn(4, 3, 3, 3)
    cache.get(w, "F2x2_3x3")
    monkeypatch.setattr(cw, "graph_capture_underway", lambda: True)
    cache.get(w, "F2x2_3x3")
    cache.get(w, "F2x2_3x3")
    assert len(fn.calls) == 3 and cache.hits == 0 and len(cache) == 1
    monkeypatch.setattr(cw, "graph_capture_underway", lambda: False)
    cache.get(w, "F2x2_3x3")
    assert len(fn.calls) == 3 and cache.hits == 1


def test_filter_cache_keeps_one_version_per_weight_and_evicts_lru():
    fn = _CountingTransform()
    cache = cw.FilterTransformCache(fn, size=2)
    w = torch.randn(4, 3, 3, 3)
    for step in range(3):  # optimizer steps: each version replaces the last
        cache.get(w, "F2x2_3x3")
        with torch.no_grad():
            w.add_(1)
    assert len(cache) == 1 and len(fn.calls) == 3
    others = [torch.randn(4, 3, 3, 3) for _ in range(2)]
    cache.get(others[0], "F2x2_3x3")
    cache.get(others[1], "F2x2_3x3")
    assert len(cache) == 2 and len(fn.calls) == 5  # w's entry was the least recently used
    cache.get(others[0], "F2x2_3x3")           # still cached (most recent two)
    assert len(fn.calls) == 5
    cache.clear()
    assert len(cache) == 0 and cache.hits == 0


def test_filter_cache_entries_go_with_their_weight():
    """Entries hold weak references: a fresh weight per call (autocast's cast copy of a
    parameter) leaves nothing pinned once it is freed, and an address a freed weight
    leaves can never serve its U to the tensor that takes it next."""
    fn = _CountingTransform()
    cache = cw.FilterTransformCache(fn)
    param = torch.nn.Parameter(torch.randn(4, 3, 3, 3))
    for _ in range(3):
        copy = param.to(torch.float64)  # what autocast hands the op each call
        cache.get(copy, "F2x2_3x3")
        del copy
    assert len(cache) == 0 and len(fn.calls) == 3 and cache.hits == 0
    # a view keeps its entry while its base lives: the same view geometry hits again
    cache.get(param.transpose(2, 3), "F2x2_3x3")
    cache.get(param.transpose(2, 3), "F2x2_3x3")
    assert len(cache) == 1 and cache.hits == 1
    # the same address taken by another tensor after the first is freed: recomputed
    w = torch.randn(4, 3, 3, 3)
    ptr, u = w.data_ptr(), cache.get(w, "F2x2_3x3")
    del w
    w2 = torch.randn(4, 3, 3, 3)
    if w2.data_ptr() == ptr:  # the allocator usually hands the block back
        torch.testing.assert_close(cache.get(w2, "F2x2_3x3"), cw.reference_filter_transform(w2, "F2x2_3x3"))
        assert not torch.equal(cache.get(w2, "F2x2_3x3"), u)


# ----------------------------------------------------------------------------- GPU

GPU_DTYPES = [torch.float32, torch.float16, torch.bfloat16]


@contextlib.contextmanager
def _no_fallback():
    """Any warning (a dispatcher fallback above all) fails the test."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        yield


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", GPU_DTYPES, ids=str)
@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("layout", ["nchw", "nhwc", "noncontig"])
@pytest.mark.parametrize("n, h, w, padding", [(3, 9, 7, 1), (1, 13, 6, 0), (1, 5, 11, 2), (0, 6, 6, 1)])
def test_gpu_forward_and_input_grad_against_float64(dtype, variant, layout, n, h, w, padding):
    assert _ext.load() is not None, _ext.unavailable_reason()
    c, k = 19, 21  # not multiples of the GEMM tiles
    x = make_input((n, c, h, w), dtype, layout)
    wt = (torch.randn(k, c, 3, 3, device="cuda") / 3).to(dtype)
    pad = [padding, padding]
    y = cw.forward(x, wt, None, None, [1, 1], pad, [1, 1], 1, "none", variant=variant)
    ref = F.conv2d(x.double(), wt.double(), None, 1, padding)
    assert y.dtype == dtype and y.shape == ref.shape
    assert y.is_contiguous(memory_format=torch.channels_last) == (layout == "nhwc")
    bound = error_bound(variant, dtype)
    if ref.numel():
        assert torch.isfinite(y).all()
        assert rel_error(y, ref) <= bound, (variant, dtype, rel_error(y, ref))
    dy = expanded_grad(ref.shape, dtype) if layout == "noncontig" else make_input(ref.shape, dtype, layout)
    dx = cw.input_grad(dy, wt, list(x.shape), [1, 1], pad, [1, 1], 1, variant=variant)
    want = torch.ops.aten.convolution_backward(dy.double(), x.double(), wt.double(), None, [1, 1], pad, [1, 1],
                                               False, [0, 0], 1, [True, False, False])[0]
    assert dx.shape == x.shape and dx.dtype == dtype
    if want.numel():
        assert rel_error(dx, want) <= bound, (variant, dtype, rel_error(dx, want))


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", GPU_DTYPES, ids=str)
@pytest.mark.parametrize("activation", list(cw.ACTIVATIONS))
def test_gpu_fused_bias_residual_activation(dtype, activation):
    x = make_input((2, 16, 10, 9), dtype, "nhwc")
    wt = (torch.randn(24, 16, 3, 3, device="cuda") / 4).to(dtype)
    b = torch.randn(24, device="cuda").to(dtype)
    ref0 = F.conv2d(x.double(), wt.double(), b.double(), 1, 1)
    res = make_input(ref0.shape, dtype, "noncontig")
    args = (x, wt, b, res, [1, 1], [1, 1], [1, 1], 1, activation)
    assert not forward_dispatch.reasons("cuda", args)
    y = forward_dispatch("cuda", *args)
    ref = reference.conv2d_forward(x.double(), wt.double(), b.double(), res.double(), [1, 1], [1, 1], [1, 1], 1,
                                   activation)
    variant = cw.VARIANT_FOR_DTYPE[dtype]
    assert rel_error(y, ref) <= 2 * error_bound(variant, dtype)


@pytest.mark.gpu
def test_gpu_conv2d_op_routes_3x3_to_winograd_and_depthwise_unchanged(monkeypatch):
    calls, run = [], cw._run
    monkeypatch.setattr(cw, "_run", lambda *a: (calls.append(a[4]), run(*a))[1])
    x = make_input((2, 8, 9, 9), torch.float16, requires_grad=True)
    wt = (torch.randn(8, 8, 3, 3, device="cuda") / 3).half().requires_grad_()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = conv2d(x, wt, None, 1, 1, algo="cuda")
        dx, dw = torch.autograd.grad(out.float().square().sum(), (x, wt))
    # only the weight gradient falls back
    fallbacks = [str(c.message) for c in caught if "cannot take this call" in str(c.message)]
    assert fallbacks and all("weight gradient uses the other backends" in f for f in fallbacks), fallbacks
    assert calls == [[1, 1], [1, 1]]  # forward (padding 1) and input gradient (padding 2 - 1) ran Winograd
    x64, w64 = x.detach().double().requires_grad_(), wt.detach().double().requires_grad_()
    ref = F.conv2d(x64, w64, None, 1, 1)
    want = torch.autograd.grad(ref.square().sum(), (x64, w64))
    assert rel_error(out, ref) <= error_bound("F2x2_3x3", torch.float16)
    assert rel_error(dx, want[0]) <= 4 * error_bound("F2x2_3x3", torch.float16)
    assert rel_error(dw, want[1]) <= 4 * error_bound("F2x2_3x3", torch.float16)
    calls.clear()
    xd = make_input((2, 8, 9, 9), torch.float32)
    with _no_fallback():
        conv2d(xd, torch.randn(8, 1, 3, 3, device="cuda"), None, 1, 1, groups=8, algo="cuda")
    assert not calls  # the depthwise kernels, not Winograd


@pytest.mark.gpu
def test_gpu_filter_cache_and_batch_chunks(monkeypatch):
    cw.FILTER_CACHE.clear()
    x = make_input((5, 8, 12, 12), torch.float32)
    wt = torch.randn(6, 8, 3, 3, device="cuda")
    y1 = cw.forward(x, wt, None, None, [1, 1], [1, 1], [1, 1], 1, "none")
    y2 = cw.forward(x, wt, None, None, [1, 1], [1, 1], [1, 1], 1, "none")
    assert cw.FILTER_CACHE.misses == 1 and cw.FILTER_CACHE.hits == 1
    assert torch.equal(y1, y2)
    torch.testing.assert_close(cw.filter_transform(wt, "F4x4_3x3"),
                               cw.reference_filter_transform(wt, "F4x4_3x3").float(), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(cw.filter_transform(wt, "F2x2_3x3", flip=True),
                               cw.reference_filter_transform(wt, "F2x2_3x3", flip=True).float(), rtol=1e-6,
                               atol=1e-6)
    with torch.no_grad():
        wt.mul_(-1)
    y3 = cw.forward(x, wt, None, None, [1, 1], [1, 1], [1, 1], 1, "none")
    torch.testing.assert_close(y3, -y1)
    # workspaces for one image at a time: five chunks, same result
    monkeypatch.setattr(cw, "WORKSPACE_BYTES", 1)
    y4 = cw.forward(x, wt, None, None, [1, 1], [1, 1], [1, 1], 1, "none")
    torch.testing.assert_close(y4, y3, rtol=0, atol=0)


@pytest.mark.gpu
def test_gpu_cuda_graph_replays_see_in_place_weight_updates():
    """A captured Winograd convolution followed by an in-place weight update (what a
    captured optimizer step does): every replay convolves with the current weight."""
    cw.FILTER_CACHE.clear()
    x = make_input((2, 8, 10, 10), torch.float32)
    wt = torch.randn(6, 8, 3, 3, device="cuda")
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm-up outside the capture, as torch.cuda.graph asks
        cw.forward(x, wt, None, None, [1, 1], [1, 1], [1, 1], 1, "none")
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        y = cw.forward(x, wt, None, None, [1, 1], [1, 1], [1, 1], 1, "none")
        with torch.no_grad():
            wt.mul_(0.5)
    w0 = wt.detach().clone()  # capturing ran nothing: the weight of the first replay
    for step in range(3):
        graph.replay()
        torch.cuda.synchronize()
        want = F.conv2d(x.double(), w0.double() * 0.5 ** step, None, 1, 1)
        assert rel_error(y, want) <= error_bound(cw.VARIANT_FOR_DTYPE[torch.float32], torch.float32), step


@pytest.mark.gpu
def test_gpu_zero_input_channels_gives_bias():
    x = torch.randn(2, 0, 5, 5, device="cuda")
    wt = torch.randn(4, 0, 3, 3, device="cuda")
    b = torch.randn(4, device="cuda")
    y = cw.forward(x, wt, b, None, [1, 1], [1, 1], [1, 1], 1, "relu")
    torch.testing.assert_close(y, F.relu(b)[None, :, None, None].expand(2, 4, 5, 5))


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", GPU_DTYPES, ids=str)
def test_gpu_real_size_layer(dtype):
    """A ResNet stage-1 layer (3x3, 64 -> 64, 56 x 56), batch 8, channels_last."""
    x = make_input((8, 64, 56, 56), dtype, "nhwc")
    wt = (torch.randn(64, 64, 3, 3, device="cuda") / 24).to(dtype)
    variant = cw.VARIANT_FOR_DTYPE[dtype]
    with _no_fallback():
        y = conv2d(x, wt, None, 1, 1, algo="cuda")
    ref = F.conv2d(x.double(), wt.double(), None, 1, 1)
    assert rel_error(y, ref) <= error_bound(variant, dtype)
    dy = make_input(ref.shape, dtype, "nhwc")
    dx = cw.input_grad(dy, wt, list(x.shape), [1, 1], [1, 1], [1, 1], 1)
    want = torch.ops.aten.convolution_backward(dy.double(), x.double(), wt.double(), None, [1, 1], [1, 1], [1, 1],
                                               False, [0, 0], 1, [True, False, False])[0]
    assert rel_error(dx, want) <= error_bound(variant, dtype)
