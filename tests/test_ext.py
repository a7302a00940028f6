"""fastcnn._C (csrc/, the CUDA backend) and its loader fastcnn._ext.

Without a GPU (CI, dev machines with nvcc): the module is built and imports, knows
its architectures, reports the missing device cleanly, and the torch wrapper rejects
bad arguments with errors naming the op.  With a GPU: axpby matches torch.
"""
import os
import re

import pytest
import torch

from fastcnn import _ext

OP = "fastcnn._C.axpby"


@pytest.fixture(scope="module")
def C():
    mod = _ext.built()
    if mod is None:
        reason = _ext.unavailable_reason()
        if os.environ.get("FASTCNN_REQUIRE_EXT", "") == "1":
            pytest.fail(f"FASTCNN_REQUIRE_EXT=1 but fastcnn._C is not importable: {reason}")
        pytest.skip(f"fastcnn._C is not built here: {reason}")
    return mod


def _no_device(C):
    return C.device_count() == 0


# --------------------------------------------------------------------- build
def test_module_is_the_package_extension(C):
    assert C.__name__ == "fastcnn._C"
    assert re.search(r"_C\..*(so|pyd)$", C.__file__), C.__file__


def test_built_archs(C):
    archs = C.built_archs()
    assert isinstance(archs, list) and len(archs) >= 1
    for a in archs:
        assert re.fullmatch(r"(sm|compute)_\d{2,3}[af]?", a), a
    # every SASS target runs on exactly its own compute capability
    for a in archs:
        m = re.fullmatch(r"sm_(\d+)(\d)[af]?", a)
        if m:
            assert C.has_kernel_image_for(int(m.group(1)), int(m.group(2))), a


def test_kernels_do_not_spill(C):
    """Every CUDA kernel's SASS, for each built architecture, keeps its registers:
    no stack frame beyond a few bytes (spills would go to local memory)."""
    from fastcnn.bench.compile_check import cuobjdump
    tool = cuobjdump()
    if tool is None:
        pytest.skip("no cuobjdump (it comes with Triton's CUDA backend)")
    import subprocess
    out = subprocess.run([tool, "--dump-resource-usage", C.__file__], capture_output=True, text=True).stdout
    kernels = re.findall(r"Function (\S+):\s+REG:(\d+) STACK:(\d+)", out)
    assert len(kernels) >= 10, out[:2000]
    heavy = [(name, int(reg), int(stack)) for name, reg, stack in kernels if int(stack) > 16]
    assert not heavy, heavy


def test_kernel_image_rules(C):
    archs = set(C.built_archs())
    if "sm_80" in archs:
        assert C.has_kernel_image_for(8, 6) and C.has_kernel_image_for(8, 9)
    if "compute_90" in archs:
        assert C.has_kernel_image_for(10, 0) and C.has_kernel_image_for(12, 0)
    # nothing is built for Kepler
    assert not C.has_kernel_image_for(3, 5)


def test_versions(C):
    assert C.CUDA_RUNTIME_VERSION_BUILT >= 11000
    assert C.cuda_runtime_version() >= 11000
    assert C.driver_version() >= 0
    assert C.device_count() >= 0
    assert {C.DTYPE_FLOAT32, C.DTYPE_FLOAT16, C.DTYPE_BFLOAT16, C.DTYPE_FLOAT64} == {0, 1, 2, 3}


# ----------------------------------------------------------- no device (CI)
def test_available_reports_no_device_cleanly(C):
    if not _no_device(C):
        pytest.skip("a CUDA device is present")
    ok, reason = C.available()
    assert ok is False
    assert isinstance(reason, str) and "CUDA device" in reason, reason
    assert "cudaGetDeviceCount" in reason  # says which call and which error
    # the loader reports the same, and hands out no module
    assert _ext.load() is None
    assert _ext.unavailable_reason() == reason


def test_raw_binding_errors_name_the_op(C):
    with pytest.raises(ValueError, match=re.escape(OP) + ".*dtype code"):
        C.axpby(4, 1.0, 1, 1.0, 2, 3, 99, 0)
    with pytest.raises(ValueError, match=re.escape(OP) + ".*n must be >= 0"):
        C.axpby(-1, 1.0, 1, 1.0, 2, 3, C.DTYPE_FLOAT32, 0)
    with pytest.raises(ValueError, match=re.escape(OP) + ".*non-null"):
        C.axpby(4, 1.0, 0, 1.0, 2, 3, C.DTYPE_FLOAT32, 0)
    # n == 0 is a no-op that touches no device
    C.axpby(0, 1.0, 0, 1.0, 0, 0, C.DTYPE_FLOAT32, 0)


def test_raw_binding_cuda_error_becomes_runtime_error(C):
    if not _no_device(C):
        pytest.skip("needs a machine without a CUDA device (the pointers are fake)")
    with pytest.raises(RuntimeError, match=re.escape(OP) + " failed: cuda"):
        C.axpby(8, 1.0, 0x1000, 1.0, 0x2000, 0x3000, C.DTYPE_FLOAT32, 0)


# ------------------------------------------------------------ torch wrapper
def test_wrapper_rejects_cpu_tensors():
    x, y = torch.ones(5), torch.ones(5)
    with pytest.raises(ValueError, match=re.escape(OP) + r".*'x' must be a CUDA tensor.*cpu"):
        _ext.axpby(1.0, x, 2.0, y)


def test_wrapper_rejects_non_tensors():
    with pytest.raises(TypeError, match=re.escape(OP) + r".*'x' must be a torch.Tensor"):
        _ext.axpby(1.0, [1.0, 2.0], 2.0, torch.ones(2))


def test_unavailable_reason_is_a_sentence_or_none():
    reason = _ext.unavailable_reason()
    assert reason is None or (isinstance(reason, str) and reason)
    assert (_ext.load() is None) == (reason is not None)
    if reason is not None and _ext.built() is None:
        assert reason.startswith("fastcnn._C is not built") or "cannot be imported" in reason


# ------------------------------------------------------------------- GPU
DTYPES = [torch.float32, torch.float16, torch.bfloat16, torch.float64]
TOL = {torch.float32: 1e-6, torch.float64: 1e-12, torch.float16: 1e-3, torch.bfloat16: 8e-3}


def _reference(alpha, x, beta, y):
    acc = torch.float64 if x.dtype == torch.float64 else torch.float32
    return (alpha * x.to(acc) + beta * y.to(acc)).to(x.dtype)


@pytest.mark.gpu
def test_gpu_loader_finds_device(C):
    ok, reason = C.available()
    assert ok, reason
    assert _ext.load() is C and _ext.unavailable_reason() is None
    major, minor = torch.cuda.get_device_capability()
    assert C.has_kernel_image_for(major, minor)
    assert C.device_count() == torch.cuda.device_count()


@pytest.mark.gpu
@pytest.mark.parametrize("n", [0, 1, 2, 3, 255, 257, 4097, 10_000_001])
def test_gpu_axpby_fp32_sizes(C, n):
    x = torch.randn(n, device="cuda")
    y = torch.randn(n, device="cuda")
    out = _ext.axpby(1.5, x, -0.25, y)
    torch.cuda.synchronize()
    assert out.shape == x.shape and out.dtype == x.dtype and out.device == x.device
    torch.testing.assert_close(out, _reference(1.5, x, -0.25, y), rtol=1e-6, atol=1e-6)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", [1, 1000, 1_000_003])
def test_gpu_axpby_dtypes(C, dtype, n):
    x = torch.randn(n, device="cuda").to(dtype)
    y = torch.randn(n, device="cuda").to(dtype)
    out = _ext.axpby(0.5, x, 3.0, y)
    tol = TOL[dtype]
    torch.testing.assert_close(out, _reference(0.5, x, 3.0, y), rtol=tol, atol=tol)


@pytest.mark.gpu
def test_gpu_axpby_grid_stride_wraps(C):
    # more elements than one grid covers (65535 blocks x 256 threads)
    n = 65535 * 256 * 2 + 7
    x = torch.ones(n, device="cuda")
    y = torch.arange(n, device="cuda", dtype=torch.float32)
    out = _ext.axpby(2.0, x, 1.0, y)
    torch.testing.assert_close(out, 2.0 + y, rtol=0, atol=0)


@pytest.mark.gpu
def test_gpu_axpby_multidim_and_side_stream(C):
    x = torch.randn(3, 5, 7, device="cuda")
    y = torch.randn(3, 5, 7, device="cuda")
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        out = _ext.axpby(2.0, x, 1.0, y)
    s.synchronize()
    torch.testing.assert_close(out, _reference(2.0, x, 1.0, y), rtol=1e-6, atol=1e-6)


@pytest.mark.gpu
def test_gpu_wrapper_argument_errors(C):
    x = torch.randn(4, 6, device="cuda")
    with pytest.raises(ValueError, match=re.escape(OP) + r".*'x' must be contiguous"):
        _ext.axpby(1.0, x.t(), 1.0, x.t().contiguous())
    with pytest.raises(ValueError, match=re.escape(OP) + r".*'y' has dtype"):
        _ext.axpby(1.0, x, 1.0, x.half())
    with pytest.raises(ValueError, match=re.escape(OP) + r".*'y' has shape"):
        _ext.axpby(1.0, x, 1.0, x[:2])
    with pytest.raises(ValueError, match=re.escape(OP) + r".*'x' has dtype torch.int32"):
        _ext.axpby(1.0, x.int(), 1.0, x.int())
    with pytest.raises(ValueError, match=re.escape(OP) + r".*'y' must be a CUDA tensor"):
        _ext.axpby(1.0, x, 1.0, x.cpu())
