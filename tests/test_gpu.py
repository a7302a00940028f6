"""GPU-only: the Triton kernels through the op stack on CUDA at real layer sizes
(every benchmarked layer at a small batch), every dtype including bf16, against
float64 references. Skipped without a GPU."""
import functools
import warnings

import pytest
import torch
import torch.nn.functional as F

from fastcnn import ops
from fastcnn.bench.layers import all_layers
from helpers import assert_close, assert_grads_close, leaves64

pytestmark = pytest.mark.gpu

DTYPES = [torch.float32, torch.float16, torch.bfloat16]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("layer", all_layers(), ids=lambda l: l.name)
def test_layer_forward_backward(layer, dtype):
    x = torch.randn(2, layer.c, layer.h, layer.w, device="cuda").to(dtype)
    x = x.contiguous(memory_format=torch.channels_last).requires_grad_()
    w = (torch.randn(layer.k, layer.c // layer.groups, layer.r, layer.s, device="cuda")
         / (layer.c // layer.groups * layer.r * layer.s) ** 0.5).to(dtype).requires_grad_()
    out = ops.conv2d(x, w, None, layer.stride, layer.padding, 1, layer.groups, algo="triton")
    x64, w64 = leaves64(x, w)
    ref = F.conv2d(x64, w64, None, layer.stride, layer.padding, 1, layer.groups)
    assert_close(out, ref, dtype, what="forward")
    grad = torch.randn_like(ref)
    dx, dw = torch.autograd.grad(out, (x, w), grad.to(dtype))
    rdx, rdw = torch.autograd.grad(ref, (x64, w64), grad)
    assert_close(dx, rdx, dtype, what="dx")
    assert_close(dw, rdw, dtype, factor=2, what="dw")


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("layout", ["nchw", "nhwc"])
def test_conv_bn_relu_training(dtype, layout):
    x = torch.randn(8, 64, 28, 28, device="cuda").to(dtype)
    if layout == "nhwc":
        x = x.contiguous(memory_format=torch.channels_last)
    x.requires_grad_()
    w = (torch.randn(128, 64, 3, 3, device="cuda") / 24).to(dtype).requires_grad_()
    gamma = torch.rand(128, device="cuda", requires_grad=True)
    beta = torch.randn(128, device="cuda", requires_grad=True)
    rm, rv = torch.zeros(128, device="cuda"), torch.ones(128, device="cuda")
    out = ops.conv_bn_act(x, w, None, gamma, beta, rm, rv, training=True, padding=1, algo="triton")
    leaves = leaves64(x, w, gamma, beta)
    rrm, rrv = torch.zeros(128, device="cuda", dtype=torch.float64), torch.ones(128, device="cuda", dtype=torch.float64)
    ref = torch.relu(F.batch_norm(F.conv2d(leaves[0], leaves[1], None, 1, 1), rrm, rrv, leaves[2], leaves[3],
                                  training=True))
    assert_close(out, ref, dtype, factor=2)
    assert_close(rm, rrm, dtype)
    assert_close(rv, rrv, dtype)
    assert_grads_close(out, ref, (x, w, gamma, beta), leaves, dtype, factor=4,
                       names=("dx", "dw", "dgamma", "dbeta"))


def test_auto_picks_and_caches(tmp_path, monkeypatch):
    monkeypatch.setenv("FASTCNN_CACHE_DIR", str(tmp_path))
    ops.AUTO_CACHE.clear()
    x = torch.randn(16, 64, 28, 28, device="cuda", dtype=torch.bfloat16).contiguous(memory_format=torch.channels_last)
    w = torch.randn(64, 64, 3, 3, device="cuda", dtype=torch.bfloat16)
    out = ops.conv2d(x, w, padding=1)
    assert_close(out, F.conv2d(x.double(), w.double(), padding=1), torch.bfloat16)
    assert (tmp_path / "autotune.json").exists()


@pytest.mark.parametrize("groups", [1, 16], ids=["igemm", "depthwise"])
def test_conv2d_past_2_31_elements(groups):
    """One fp16 image of 16 x 16392 x 8192 > 2^31 elements, channels_last: every
    offset past row 16384 overflows int32 (h * W * C), which the CPU tests cannot
    reach (the launchers copy strided inputs to dense NHWC, and the interpreter cannot
    run a tensor this size). Forward and input gradient are checked on the last rows
    against float64 on a crop, the weight gradient against float64 over bands of rows."""
    c, h, w = 16, 16392, 8192
    assert c * h * w > 2**31
    x = torch.randn(1, c, h, w, device="cuda", dtype=torch.float16).contiguous(memory_format=torch.channels_last)
    wt = (torch.randn(c, c // groups, 3, 3, device="cuda") / 6).half()
    x.requires_grad_()
    wt.requires_grad_()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a fallback to another backend would test nothing
        y = ops.conv2d(x, wt, None, 1, 1, 1, groups, algo="triton")
        dy = torch.randn_like(y)
        dx, dw = torch.autograd.grad(y, (x, wt), dy)
    rows = slice(h - 8, h)  # the crop: interior rows 1..6 of it are exact with zero padding in H
    xc, dyc, w64 = x.detach()[:, :, rows].double(), dy[:, :, rows].double(), wt.detach().double()
    assert_close(y[:, :, h - 7:h - 1], F.conv2d(xc, w64, None, 1, 1, 1, groups)[:, :, 1:7], torch.float16)
    ref_dx = torch.ops.aten.convolution_backward(dyc, xc, w64, None, [1, 1], [1, 1], [1, 1], False, [0, 0], groups,
                                                 [True, False, False])[0]
    assert_close(dx[:, :, h - 7:h - 1], ref_dx[:, :, 1:7], torch.float16)
    del y, dx
    # dw sums over every row: float64 over bands of rows, each with its one-row halo
    ref_dw = torch.zeros_like(w64)
    for top in range(0, h, 512):
        bottom = min(top + 512, h)
        band = x.detach()[:, :, max(top - 1, 0):bottom + 1].double()
        band = F.pad(band, (0, 0, int(top == 0), int(bottom == h)))  # the zero padding rows
        ref_dw += torch.ops.aten.convolution_backward(dy[:, :, top:bottom].double(), band, w64, None, [1, 1],
                                                      [0, 1], [1, 1], False, [0, 0], groups, [False, True, False])[1]
    assert_close(dw, ref_dw, torch.float16, factor=2)


def _conv_lrn_attention(x, w, q, k, v, algo="auto"):
    """A few ops, forward and backward: conv2d + LRN on an image, attention on a
    sequence; through fastcnn.ops with ``algo``, or (algo=None) through torch's own."""
    if algo is None:
        conv, lrn, attention = F.conv2d, F.local_response_norm, F.scaled_dot_product_attention
    else:
        conv, lrn, attention = (functools.partial(op, algo=algo)
                                for op in (ops.conv2d, ops.local_response_norm, ops.attention))
    y = lrn(torch.relu(conv(x, w, None, 1, 1)), 5)
    o = attention(q, k, v)
    return (y, o) + torch.autograd.grad((y.square().sum() + o.square().sum()), (x, w, q, k, v))


def _conv_lrn_attention_inputs():
    x = torch.randn(4, 32, 19, 23, device="cuda", dtype=torch.float16).contiguous(memory_format=torch.channels_last)
    w = (torch.randn(48, 32, 3, 3, device="cuda") / 17).half()
    q, k, v = torch.randn(3, 2, 4, 77, 64, device="cuda", dtype=torch.float16).unbind(0)
    return [t.requires_grad_() for t in (x, w, q, k, v)]


def _assert_matches_float64(got, inputs):
    """``got`` (from _conv_lrn_attention on ``inputs``) against torch in float64."""
    ref = _conv_lrn_attention(*[t.detach().double().requires_grad_() for t in inputs], algo=None)
    for g, r, what in zip(got, ref, ("y", "attention", "dx", "dw", "dq", "dk", "dv"), strict=True):
        assert g.device == inputs[0].device, what
        assert_close(g, r, torch.float16, factor=4, what=what)


@pytest.mark.parametrize("warm", [True, False], ids=["warmed-up", "cold"])
def test_cuda_graph_capture_and_replay(warm, tmp_path, monkeypatch):
    """Captured into a CUDA graph, forward and backward replay with new inputs and give
    what eager float64 gives on them. Warmed up first, as PyTorch asks, auto's cached
    choices are captured; met first during the capture ("cold"), auto cannot time and
    warns, and the capture must still succeed (nothing synchronizes)."""
    monkeypatch.setenv("FASTCNN_CACHE_DIR", str(tmp_path))
    ops.AUTO_CACHE.clear()
    static = _conv_lrn_attention_inputs()
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(2 if warm else 0):
            _conv_lrn_attention(*static)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with torch.cuda.graph(graph):
            outs = _conv_lrn_attention(*static)
    capture_warnings = [str(c.message) for c in caught if "graph capture" in str(c.message)]
    assert bool(capture_warnings) != warm, capture_warnings
    for _ in range(2):  # each replay on fresh data
        fresh = _conv_lrn_attention_inputs()
        with torch.no_grad():
            for s, f in zip(static, fresh):
                s.copy_(f)
        graph.replay()
        _assert_matches_float64(outs, fresh)


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two GPUs")
@pytest.mark.parametrize("algo", ["triton", "cuda", "auto"])
def test_tensors_on_another_gpu_run_there(algo):
    """Triton launches on the current device, not its tensors': with cuda:0 current,
    ops on cuda:1 tensors must still run there (forward and backward)."""
    torch.cuda.set_device(0)
    with torch.cuda.device(1):
        inputs = _conv_lrn_attention_inputs()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # algo="cuda" falls back where an op has no CUDA kernel
        got = _conv_lrn_attention(*inputs, algo=algo)
    assert torch.cuda.current_device() == 0
    assert inputs[0].device == torch.device("cuda:1")
    _assert_matches_float64(got, inputs)  # outputs on cuda:1 too
