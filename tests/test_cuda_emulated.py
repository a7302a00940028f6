"""The CUDA backend (csrc/ kernels, bindings.cpp and the torch wrappers in
fastcnn/ops/_cuda_*.py) run on the CPU through a host emulation of CUDA
(tests/cuda_emu/build.py says what it checks and what it cannot), against float64
references: LRN, depthwise convolution and Winograd, forward and backward, odd sizes,
empty batches, every layout and dtype. On a GPU the gpu-marked tests of
test_lrn.py, test_depthwise.py and test_winograd.py run the same kernels for real."""
import contextlib
import dataclasses
import os
import shutil
import subprocess
import sys
import types
import warnings
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from fastcnn import _ext
from fastcnn.ops import _cuda_depthwise as cd
from fastcnn.ops import _cuda_lrn as cl
from fastcnn.ops import _cuda_winograd as cw
from fastcnn.triton_kernels import lrn as lrn_kernels
from fastcnn.triton_kernels import reference
from fastcnn.triton_kernels._common import ACTIVATIONS
from fastcnn.triton_kernels.winograd import VARIANTS, error_bound
from helpers import assert_close, assert_grads_close, expanded_grad, far_apart, leaves64, make_input, rel_error

DTYPES = [torch.float32, torch.float16, torch.bfloat16, torch.float64]
# relative-norm bounds against float64, as the GPU tests of the same kernels use
TOL = {torch.float32: 1e-5, torch.float16: 3e-3, torch.bfloat16: 2e-2, torch.float64: 1e-10}


def _emu_cache() -> Path:
    return Path(os.environ.get("FASTCNN_EMU_CACHE", Path.home() / ".cache" / "fastcnn" / "cuda-emu"))


@pytest.fixture(scope="session")
def emulated_C():
    if shutil.which("g++") is None:
        pytest.skip("g++ is needed to build the host emulation of csrc/")
    pytest.importorskip("pybind11")
    from cuda_emu.build import build
    return build(_emu_cache())


@pytest.fixture
def cuda(emulated_C, monkeypatch):
    """fastcnn's CUDA wrappers bound to the emulated module, on CPU tensors."""
    monkeypatch.setattr(_ext, "_require_module", lambda op: emulated_C)
    monkeypatch.setattr(torch.cuda, "current_stream", lambda device=None: types.SimpleNamespace(cuda_stream=0))
    monkeypatch.setattr(torch.cuda, "device", lambda device: contextlib.nullcontext())
    cw.FILTER_CACHE.clear()
    yield emulated_C
    cw.FILTER_CACHE.clear()


@pytest.fixture(params=[32, 64], ids=lambda bits: f"int{bits}")
def index_bits(request, cuda):
    """LRN and depthwise kernels have a 32-bit index instantiation (every offset below
    2^31) and a 64-bit one; only the 32-bit one is reached by test-sized tensors unless
    the module is told to skip it."""
    cuda._force_int64_indexing(request.param == 64)
    yield request.param
    cuda._force_int64_indexing(False)


def _input(shape, dtype, layout, scale=1.0):
    return make_input(shape, dtype, layout).mul_(scale)  # in place: keeps the layout


# ----------------------------------------------------------------------------- the emulator itself

def test_half_and_bfloat16_conversions_round_like_torch(cuda):
    """axpby (csrc/smoke.cu) computes alpha * x + beta * y in fp32 and rounds once: the
    emulated conversions must give torch's bits, subnormals, infinities and ties included."""
    for dtype in (torch.float16, torch.bfloat16):
        info = torch.finfo(dtype)
        x = torch.cat([torch.randn(4000) * s for s in (1e-6, 1e-3, 1.0, 1e3)]
                      + [torch.tensor([0.0, -0.0, info.tiny, info.max, float("inf"), -float("inf")])]).to(dtype)
        y = torch.randn(x.shape).to(dtype)
        for alpha, beta in [(1.0, 0.0), (1 / 3, 0.0), (0.7, 1.3)]:
            out = torch.empty_like(x)
            cuda.axpby(x.numel(), alpha, x.data_ptr(), beta, y.data_ptr(), out.data_ptr(),
                       _ext._dtype_code(cuda, dtype))
            want = (x.float() * torch.tensor(alpha, dtype=torch.float32)
                    + y.float() * torch.tensor(beta, dtype=torch.float32)).to(dtype)
            assert torch.equal(out.view(torch.int16), want.view(torch.int16)), (dtype, alpha, beta)


def test_divmod_matches_integer_division(tmp_path):
    """The multiply-shift division of the 32-bit index paths (Divmod<int32_t>) gives
    the quotient and remainder of real division, up to 2^31 - 1."""
    if shutil.which("g++") is None:
        pytest.skip("g++ is needed to compile the check")
    here = Path(__file__).parent / "cuda_emu"
    exe = tmp_path / "divmod_check"
    subprocess.run(["g++", "-std=c++20", "-O2", "-D__CUDACC__", f"-I{here / 'include'}",
                    f"-I{here.parent.parent / 'csrc'}", str(here / "divmod_check.cpp"), "-o", str(exe)],
                   check=True, capture_output=True)
    out = subprocess.run([str(exe)], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip().endswith("bad 0"), out.stdout


# An overrun the sanitized build must report: axpby over one element more than the
# tensors hold. Without it a run that is not really instrumented would pass vacuously.
_ASAN_PROBE = """
import sys, torch
from pathlib import Path
sys.path.insert(0, {tests!r})
from cuda_emu.build import build
from fastcnn import _ext
C = build(Path({cache!r}))
x, y, out = torch.randn(1000), torch.randn(1000), torch.empty(1000)
C.axpby(1001, 1.0, x.data_ptr(), 1.0, y.data_ptr(), out.data_ptr(), _ext._dtype_code(C, torch.float32))
"""


@pytest.mark.skipif(os.environ.get("FASTCNN_EMU_SANITIZE") == "1", reason="this is the sanitized run")
@pytest.mark.skipif(torch.cuda.is_available(), reason="on a GPU, compute-sanitizer checks the real kernels")
def test_every_emulated_kernel_is_asan_and_ubsan_clean(emulated_C, tmp_path):
    """compute-sanitizer's memcheck, on the CPU: this file's tests again, against a build
    with AddressSanitizer and UBSan (tests/cuda_emu/build.py, FASTCNN_EMU_SANITIZE=1),
    so an access outside a tensor, a __shared__ array or a thread's locals, or an
    int32 overflow in index arithmetic, fails. libasan must be loaded first: a child
    process with LD_PRELOAD."""
    libasan = subprocess.run(["g++", "-print-file-name=libasan.so"], capture_output=True, text=True).stdout.strip()
    if not os.path.isabs(libasan):
        pytest.skip("g++ has no AddressSanitizer runtime")
    cache = _emu_cache()
    env = dict(os.environ, FASTCNN_EMU_SANITIZE="1", LD_PRELOAD=libasan, ASAN_OPTIONS="detect_leaks=0",
               FASTCNN_EMU_CACHE=str(cache))
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", __file__],
                         cwd=Path(__file__).parent.parent, env=env, capture_output=True, text=True, timeout=1800)
    report = (run.stdout + run.stderr)[-6000:]
    assert run.returncode == 0 and " passed" in run.stdout, report
    assert "Sanitizer" not in run.stderr and "runtime error" not in run.stderr, report
    probe = subprocess.run([sys.executable, "-c", _ASAN_PROBE.format(tests=str(Path(__file__).parent),
                                                                      cache=str(cache))],
                           env=env, capture_output=True, text=True, timeout=600)
    assert probe.returncode != 0 and "heap-buffer-overflow" in probe.stderr, probe.stderr[-3000:]


# ----------------------------------------------------------------------------- LRN

@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("layout", ["nchw", "nhwc", "noncontig"])
@pytest.mark.parametrize("size, within", [(5, False), (2, False), (1, False), (3, True), (4, True)])
def test_lrn_forward_backward(cuda, index_bits, dtype, layout, size, within):
    alpha, beta, k = 2e-2, 0.75, 1.5
    x = _input((2, 7, 5, 6), dtype, layout, scale=2.0)
    y, scale = cl.lrn_forward(x, size, alpha, beta, k, within, True)
    ref, ref_scale = lrn_kernels.lrn_forward_reference(x.double(), size, alpha, beta, k, within)
    assert y.dtype == dtype and y.shape == x.shape
    assert rel_error(y, ref) <= TOL[dtype]
    assert rel_error(scale, ref_scale) <= TOL[torch.float64 if dtype == torch.float64 else torch.float32]
    dy = expanded_grad(x.shape, dtype) if layout == "noncontig" else _input(x.shape, dtype, layout)
    dx = cl.lrn_backward(dy, x, y, scale, size, alpha, beta, k, within)
    want = lrn_kernels.lrn_backward_reference(dy.double(), x.double(), size, alpha, beta, k, within)
    assert dx.shape == x.shape and rel_error(dx, want) <= 2 * TOL[dtype]


def test_lrn_empty_and_single(cuda):
    x = torch.randn(0, 4, 3, 3)
    y, _ = cl.lrn_forward(x, 3, 1e-2, 0.75, 1.0, False, True)
    assert y.shape == x.shape
    x = torch.randn(1, 1, 1, 1, dtype=torch.float64)
    y, _ = cl.lrn_forward(x, 5, 1e-2, 0.75, 1.0, False, True)
    assert rel_error(y, lrn_kernels.lrn_forward_reference(x, 5, 1e-2, 0.75, 1.0)[0]) <= 1e-12


# ----------------------------------------------------------------------------- depthwise

@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("layout", ["nchw", "nhwc", "noncontig"])
@pytest.mark.parametrize("n, m, ks, stride, padding, dilation", [
    (2, 1, 3, 1, 1, 1), (1, 2, 3, 2, 1, 1), (2, 1, 5, 1, 2, 1), (1, 2, 5, 2, 0, 1), (1, 1, 7, 2, 3, 1),
    (1, 1, 3, 1, 2, 2), (0, 1, 3, 1, 1, 1),
    (1, 2, 3, 2, (2, 1), (2, 1)),  # unequal padding and dilation pairs: h and w never swap
])
def test_depthwise_forward_backward(cuda, index_bits, dtype, layout, n, m, ks, stride, padding, dilation):
    c, h, w_ = 3, 11, 9
    x = _input((n, c, h, w_), dtype, layout)
    w = (torch.randn(c * m, 1, ks, ks) / ks).to(dtype)
    b = torch.randn(c * m).to(dtype)
    stride, padding, dilation = (list(v) if isinstance(v, tuple) else [v] * 2 for v in (stride, padding, dilation))
    geo = (stride, padding, dilation, c)
    assert not cd.geometry_reasons(c, c * m, w.shape, geo[0], c)
    y = cd.forward(x, w, b, None, *geo, "none")
    ref = F.conv2d(x.double(), w.double(), b.double(), stride, padding, dilation, c)
    assert y.dtype == dtype and y.shape == ref.shape
    if layout == "nhwc" and n:
        assert y.is_contiguous(memory_format=torch.channels_last)
    if ref.numel():
        assert rel_error(y, ref) <= TOL[dtype]
    dy = expanded_grad(ref.shape, dtype) if layout == "noncontig" else _input(ref.shape, dtype, layout)
    dx = cd.input_grad(dy, w, list(x.shape), *geo)
    dw = cd.weight_grad(dy, x, list(w.shape), *geo)
    want_dx, want_dw, _ = torch.ops.aten.convolution_backward(
        dy.double(), x.double(), w.double(), None, stride, padding, dilation, False, [0, 0], c,
        [True, True, False])
    assert dx.shape == x.shape and dw.shape == w.shape
    if n:
        assert rel_error(dx, want_dx) <= 4 * TOL[dtype]
        assert rel_error(dw, want_dw) <= 4 * TOL[dtype]
    else:
        assert (dw == 0).all()


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("activation", list(ACTIVATIONS))
def test_depthwise_fused_bias_residual_activation(cuda, index_bits, dtype, activation):
    """The forward's epilogue: act(conv + bias + residual), rounded once; a channels_last
    input with a non-contiguous residual, multiplier 2, stride 2, odd sizes."""
    c, m = 5, 2
    x = _input((2, c, 13, 10), dtype, "nhwc")
    w = (torch.randn(c * m, 1, 3, 3) / 3).to(dtype)
    b = torch.randn(c * m).to(dtype)
    geo = ([2, 2], [1, 1], [1, 1], c)
    res = _input((2, c * m, 7, 5), dtype, "noncontig")
    # CPU tensors: the only reasons are the device's, none about the epilogue
    assert not [r for r in cd.forward_reasons(x, w, b, res, *geo, activation) if "CUDA" not in r]
    y = cd.forward(x, w, b, res, *geo, activation)
    want = reference.conv2d_forward(x.double(), w.double(), b.double(), res.double(), *geo, activation)
    assert y.shape == want.shape and y.dtype == dtype and y.is_contiguous(memory_format=torch.channels_last)
    assert rel_error(y, want) <= 2 * TOL[dtype]


# ----------------------------------------------------------------------------- the fused ops reach them

@pytest.fixture
def cuda_backends(cuda, monkeypatch):
    """The dispatchers' cuda backends taking CPU tensors, on the emulated kernels: the
    depthwise wrappers' device check passes (Winograd's still refuses), the cuda
    training backend's BatchNorm backward (ATen's) runs on the CPU, a fallback away
    from algo='cuda' is an error, and the _C entry points each call reaches are
    recorded (by the name the wrappers ask _ext for)."""
    from fastcnn.ops.conv_bn_act import bn_backward_dispatch
    monkeypatch.setattr(cd, "_device_reasons", lambda t: [])
    aten_bn = bn_backward_dispatch.backends["cuda"]
    monkeypatch.setitem(bn_backward_dispatch.backends, "cuda",
                        dataclasses.replace(aten_bn, not_supported_reasons=lambda *args: []))
    reached = []
    monkeypatch.setattr(_ext, "_require_module", lambda op: reached.append(op) or cuda)
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*algo='cuda' cannot take")
        # separable's pointwise half asks for cuDNN, which on CPU tensors is the reference
        warnings.filterwarnings("ignore", message=".*algo='cudnn' cannot take .*CPU tensors")
        yield reached


DW_ENTRY_POINTS = {"fastcnn.conv2d", "fastcnn.conv2d_input_grad", "fastcnn.conv2d_weight_grad"}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("training", [False, True], ids=["eval", "train"])
def test_conv_bn_act_runs_depthwise_on_the_cuda_kernels(cuda_backends, dtype, training):
    """A depthwise conv -> BatchNorm -> + residual -> ReLU6 with algo='cuda': folded into
    the kernel's epilogue at inference, the cuda training backend's convolution in
    training; forward and every gradient against the float64 reference."""
    from fastcnn import ops
    c = 6
    x = make_input((2, c, 9, 11), dtype, "nhwc", requires_grad=True)
    w = (torch.randn(c, 1, 3, 3, dtype=dtype) / 3).requires_grad_()
    gamma = (torch.rand(c, dtype=dtype) + 0.5).requires_grad_()
    beta = torch.randn(c, dtype=dtype).requires_grad_()
    res = make_input((2, c, 5, 6), dtype, "noncontig", requires_grad=True)
    stats = torch.randn(c, dtype=dtype), torch.rand(c, dtype=dtype) + 0.5
    kw = dict(training=training, stride=2, padding=1, groups=c, activation="relu6")
    out = ops.conv_bn_act(x, w, None, gamma, beta, *(t.clone() for t in stats), residual=res, algo="cuda", **kw)
    x64, w64, g64, b64, r64 = leaves64(x, w, gamma, beta, res)
    ref = ops.conv_bn_act(x64, w64, None, g64, b64, *(t.double() for t in stats), residual=r64,
                          algo="reference", **kw)
    assert_close(out, ref, dtype, what="out")
    assert out.is_contiguous(memory_format=torch.channels_last)
    assert_grads_close(out, ref, [x, w, gamma, beta, res], [x64, w64, g64, b64, r64], dtype, factor=4,
                       names=["dx", "dw", "dgamma", "dbeta", "dresidual"])
    assert set(cuda_backends) == DW_ENTRY_POINTS


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_separable_runs_its_depthwise_half_on_the_cuda_kernels(cuda_backends, dtype):
    """separable_conv2d(algo='cuda'): depthwise + bias + ReLU6 in the CUDA kernel, the
    pointwise half (+ residual, SiLU) and its gradients cuDNN's (here: ATen's)."""
    from fastcnn.ops.separable import separable_conv2d
    c, k = 5, 7
    x = make_input((2, c, 8, 7), dtype, "nhwc", requires_grad=True)
    wd = (torch.randn(c, 1, 5, 5, dtype=dtype) / 5).requires_grad_()
    bd = torch.randn(c, dtype=dtype).requires_grad_()
    wp = (torch.randn(k, c, 1, 1, dtype=dtype) / 2).requires_grad_()
    bp = torch.randn(k, dtype=dtype).requires_grad_()
    res = make_input((2, k, 4, 4), dtype, "nchw", requires_grad=True)
    kw = dict(stride=2, padding=2, activation="relu6", pointwise_activation="silu")
    leaves = [x, wd, bd, wp, bp, res]
    out = separable_conv2d(x, wd, wp, bd, bp, residual=res, algo="cuda", **kw)
    l64 = leaves64(*leaves)
    ref = separable_conv2d(l64[0], l64[1], l64[3], l64[2], l64[4], residual=l64[5], algo="reference", **kw)
    assert_close(out, ref, dtype, what="out")
    assert_grads_close(out, ref, leaves, l64, dtype, factor=4, names=["dx", "dwd", "dbd", "dwp", "dbp", "dres"])
    assert set(cuda_backends) == DW_ENTRY_POINTS


# ----------------------------------------------------------------------------- offsets past 2^31

def test_lrn_depthwise_and_winograd_at_offsets_past_int32(cuda):
    """Images 2^30 + 7 elements apart: offsets pass 2^31, so the LRN and depthwise
    wrappers pick their 64-bit kernels, and every kernel meets real large offsets (the
    index_bits tests force the 64-bit kernels on small tensors, where a 32-bit
    truncation inside them would not show). No tensor is copied on the way."""
    half = torch.float16
    x, dy = far_apart((3, 4, 6, 5), dim=0), far_apart((3, 4, 6, 5), dim=0)
    lrn_args = (3, 2e-2, 0.75, 1.5, False)
    y, scale = cl.lrn_forward(x, *lrn_args, True)
    assert rel_error(y, lrn_kernels.lrn_forward_reference(x.double(), *lrn_args)[0]) <= TOL[half]
    dx = cl.lrn_backward(dy, x, y, scale, *lrn_args)
    assert rel_error(dx, lrn_kernels.lrn_backward_reference(dy.double(), x.double(), *lrn_args)) <= 2 * TOL[half]

    geo = ([1, 1], [1, 1], [1, 1], 4)
    w = (torch.randn(4, 1, 3, 3) / 3).to(half)
    want = torch.ops.aten.convolution_backward(dy.double(), x.double(), w.double(), None, *geo[:3], False, [0, 0],
                                               4, [True, True, False])
    assert rel_error(cd.forward(x, w, None, None, *geo, "none"), F.conv2d(x.double(), w.double(), None, 1, 1, 1, 4)) \
        <= TOL[half]
    assert rel_error(cd.forward(x, w, None, dy, *geo, "relu"),  # a far-apart residual too
                     torch.relu(F.conv2d(x.double(), w.double(), None, 1, 1, 1, 4) + dy.double())) <= TOL[half]
    assert rel_error(cd.input_grad(dy, w, list(x.shape), *geo), want[0]) <= 4 * TOL[half]
    assert rel_error(cd.weight_grad(dy, x, list(w.shape), *geo), want[1]) <= 4 * TOL[half]

    wt = (torch.randn(5, 4, 3, 3) / 3).to(half)
    for variant in VARIANTS:
        y = cw.forward(x, wt, None, None, [1, 1], [1, 1], [1, 1], 1, "none", variant=variant)
        assert rel_error(y, F.conv2d(x.double(), wt.double(), None, 1, 1)) <= error_bound(variant, half)


# ----------------------------------------------------------------------------- Winograd

@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("layout", ["nchw", "nhwc", "noncontig"])
@pytest.mark.parametrize("n, h, w, padding", [(2, 9, 7, (1, 1)), (1, 6, 11, (0, 0)), (1, 5, 6, (2, 2)),
                                              (1, 7, 5, (2, 0)), (0, 6, 6, (1, 1))])
def test_winograd_forward_and_input_grad(cuda, dtype, variant, layout, n, h, w, padding):
    c, k = 19, 21  # not multiples of the GEMM's 64 x 64 tiles or its 16/32-deep steps
    x = _input((n, c, h, w), dtype, layout)
    wt = (torch.randn(k, c, 3, 3) / 3).to(dtype)
    pad = list(padding)
    y = cw.forward(x, wt, None, None, [1, 1], pad, [1, 1], 1, "none", variant=variant)
    ref = F.conv2d(x.double(), wt.double(), None, 1, pad)
    assert y.dtype == dtype and y.shape == ref.shape
    if ref.numel():
        assert torch.isfinite(y).all() and rel_error(y, ref) <= error_bound(variant, dtype)
    dy = expanded_grad(ref.shape, dtype) if layout == "noncontig" else _input(ref.shape, dtype, layout)
    dx = cw.input_grad(dy, wt, list(x.shape), [1, 1], pad, [1, 1], 1, variant=variant)
    want = torch.ops.aten.convolution_backward(dy.double(), x.double(), wt.double(), None, [1, 1], pad, [1, 1],
                                               False, [0, 0], 1, [True, False, False])[0]
    assert dx.shape == x.shape and dx.dtype == dtype
    if want.numel():
        assert rel_error(dx, want) <= error_bound(variant, dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("activation", list(cw.ACTIVATIONS))
def test_winograd_fused_bias_residual_activation(cuda, dtype, activation):
    x = _input((2, 16, 10, 9), dtype, "nhwc")
    wt = (torch.randn(24, 16, 3, 3) / 4).to(dtype)
    b = torch.randn(24).to(dtype)
    res = _input((2, 24, 10, 9), dtype, "noncontig")
    y = cw.forward(x, wt, b, res, [1, 1], [1, 1], [1, 1], 1, activation)
    want = reference.conv2d_forward(x.double(), wt.double(), b.double(), res.double(), [1, 1], [1, 1], [1, 1], 1,
                                    activation)
    assert rel_error(y, want) <= 2 * error_bound(cw.VARIANT_FOR_DTYPE[dtype], dtype)


def test_winograd_filter_transform_cache_and_batch_chunks(cuda, monkeypatch):
    x = _input((5, 8, 12, 12), torch.float32, "nchw")
    wt = torch.randn(70, 8, 3, 3)  # two 64-channel GEMM tiles
    y1 = cw.forward(x, wt, None, None, [1, 1], [1, 1], [1, 1], 1, "none")
    y2 = cw.forward(x, wt, None, None, [1, 1], [1, 1], [1, 1], 1, "none")
    assert cw.FILTER_CACHE.misses == 1 and cw.FILTER_CACHE.hits == 1 and torch.equal(y1, y2)
    for variant in VARIANTS:
        for flip in (False, True):
            torch.testing.assert_close(cw.filter_transform(wt, variant, flip=flip),
                                       cw.reference_filter_transform(wt, variant, flip=flip).float(),
                                       rtol=1e-6, atol=1e-6)
    monkeypatch.setattr(cw, "WORKSPACE_BYTES", 1)  # one image per chunk: the same numbers
    torch.testing.assert_close(cw.forward(x, wt, None, None, [1, 1], [1, 1], [1, 1], 1, "none"), y1, rtol=0, atol=0)
    assert rel_error(y1, F.conv2d(x.double(), wt.double(), None, 1, 1)) <= error_bound("F4x4_3x3", torch.float32)


def test_winograd_zero_input_channels_gives_bias(cuda):
    b = torch.randn(4)
    y = cw.forward(torch.randn(2, 0, 5, 5), torch.randn(4, 0, 3, 3), b, None, [1, 1], [1, 1], [1, 1], 1, "relu")
    torch.testing.assert_close(y, F.relu(b)[None, :, None, None].expand(2, 4, 5, 5))


@pytest.mark.parametrize("activation", ["relu", "relu6"])
def test_epilogue_activations_keep_nan(cuda, activation):
    """relu / relu6 in the CUDA epilogues keep NaN and inf as torch.relu does (fmax
    would turn NaN into 0). Winograd's transforms spread a NaN or inf over its output
    tile (inf - inf), as any Winograd does: it must hide none, but may show more."""
    x = torch.randn(2, 16, 9, 8)
    x[0, 3, 4, 4], x[1, 9, 2, 6] = float("nan"), float("inf")
    geo = ([1, 1], [1, 1], [1, 1])
    wd = torch.randn(16, 1, 3, 3)
    y = cd.forward(x, wd, None, None, *geo, 16, activation)
    want = reference.conv2d_forward(x.double(), wd.double(), None, None, *geo, 16, activation)
    assert want.isnan().any() and torch.equal(y.isnan(), want.isnan()) and torch.equal(y.isinf(), want.isinf())
    wt = torch.randn(8, 16, 3, 3)
    y = cw.forward(x, wt, None, None, *geo, 1, activation)
    want = reference.conv2d_forward(x.double(), wt.double(), None, None, *geo, 1, activation)
    assert not (y.isfinite() & ~want.isfinite()).any()
