"""Helpers shared by the tests (and imported by the benchmarks): devices, dtypes,
layouts, tolerances against a float64 reference."""
import contextlib
import sys
import types
from collections import namedtuple

import pytest
import torch

from fastcnn.triton_kernels._common import interpret_mode, interpreter_computes_bf16
from fastcnn.triton_kernels.conv2d import conv_output_shape
from fastcnn.triton_kernels.reference import compute_dtype

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
ON_GPU = DEVICE == "cuda"

# Triton's interpreter computes bf16 on raw bits; conftest installs
# tests/interpreter_bf16.py, which computes it as a GPU does, and the probe says
# whether that took (without it, bf16 is tested on the GPU only).
BF16 = ON_GPU or interpreter_computes_bf16()
DTYPES = [torch.float32, torch.float16] + ([torch.bfloat16] if BF16 else [])

# Bound on ||out - ref|| / ||ref|| against a float64 reference, per input dtype. fp32
# on the GPU may use TF32 (cuDNN's default flag), whose 10-bit mantissa sets its bound
# (checked on the CPU by test_tf32.py, which emulates it).
TF32_REL_TOL = 2e-3
REL_TOL = {
    torch.float64: 1e-10,
    torch.float32: TF32_REL_TOL if ON_GPU else 1e-5,
    torch.float16: 3e-3,
    torch.bfloat16: 2e-2,
}


def rel_error(out, ref):
    out, ref = out.double(), ref.double()
    return ((out - ref).norm() / ref.norm().clamp_min(1e-30)).item()


def assert_close(out, ref, dtype=None, factor=1.0, what=""):
    """Assert out matches the float64 ``ref`` within the dtype's relative-norm bound
    (times ``factor``), that shapes agree, and that nothing is NaN or Inf."""
    dtype = dtype or out.dtype
    assert out.shape == ref.shape, f"{what}: shape {tuple(out.shape)} != {tuple(ref.shape)}"
    assert torch.isfinite(out).all(), f"{what}: non-finite values"
    if ref.numel() == 0:
        return
    err = rel_error(out, ref)
    tol = REL_TOL[dtype] * factor
    assert err <= tol, f"{what}: relative error {err:.3e} > {tol:.1e} ({dtype})"


def make_input(shape, dtype=torch.float32, layout="nchw", device=DEVICE, requires_grad=False):
    """A random tensor in the given layout: 'nchw', 'nhwc' (channels_last),
    'noncontig' (a strided slice of a larger tensor)."""
    if layout == "noncontig":
        # sliced after the cast: .to() of a strided slice would return a contiguous copy
        n, c, h, w = shape
        t = torch.randn(n, c * 2, h, w + 3, device=device, dtype=torch.float32).to(dtype)[:, ::2, :, 1:w + 1]
    else:
        t = torch.randn(shape, device=device, dtype=torch.float32)
        if layout == "nhwc":
            t = t.contiguous(memory_format=torch.channels_last)
        t = t.to(dtype)
    assert tuple(t.shape) == tuple(shape)
    return t.requires_grad_(requires_grad)


def expanded_grad(shape, dtype, device=DEVICE):
    """The stride-0 gradient that ``out.sum().backward()`` sends."""
    return torch.ones((), dtype=dtype, device=device).expand(shape)


def leaves64(*tensors):
    """Detached float64 copies requiring grad (None stays None): the inputs of a
    float64 reference whose gradients the op's are checked against."""
    return [None if t is None else t.detach().double().requires_grad_() for t in tensors]


def assert_grads_close(out, ref, leaves, leaves64, dtype, grad=None, factor=1.0, names=None, what="",
                       skip_empty=True):
    """Backpropagate one upstream gradient through ``out`` (to ``leaves``) and through
    its float64 ``ref`` (to ``leaves64``) and compare leaf by leaf; None leaves are
    skipped. ``grad`` defaults to randn_like(ref); expanded_grad() is the stride-0 case.
    The bound is ``dtype``'s times ``factor``. An empty ``ref`` checks nothing unless
    ``skip_empty`` is False: then the backward still runs and each gradient is compared
    as usual (an empty input's: shape and finiteness; a weight's: zero, as its twin)."""
    if skip_empty and ref.numel() == 0:
        return
    grad = torch.randn_like(ref) if grad is None else grad  # in ref's layout: channels_last stays so
    live = [i for i, t in enumerate(leaves) if t is not None]
    names = names or [f"grad {i}" for i in range(len(leaves))]
    got = torch.autograd.grad(out, [leaves[i] for i in live], grad.to(out.dtype))
    want = torch.autograd.grad(ref, [leaves64[i] for i in live], grad.double())
    for i, g, r in zip(live, got, want):
        assert_close(g, r, dtype, factor=factor, what=f"{names[i]} {what}".strip())


class Conv(namedtuple("Conv", "n c h w k groups r s stride padding dilation")):
    """A convolution geometry for the kernel tests; stride/padding/dilation are pairs."""

    @property
    def input_shape(self):
        return (self.n, self.c, self.h, self.w)

    @property
    def weight_shape(self):
        return (self.k, self.c // self.groups, self.r, self.s)

    @property
    def out_shape(self):
        return conv_output_shape(self.input_shape, self.weight_shape, self.stride, self.padding, self.dilation)

    @property
    def args(self):
        """(stride, padding, dilation, groups) as the launchers take them."""
        return list(self.stride), list(self.padding), list(self.dilation), self.groups


def check_forward_stats(g, dtype, layout, offset, family):
    """The family's forward with stats=True on geometry ``g``: y against the float64
    reference, and the batch mean/var it returns. The statistics are of the fp32
    accumulator (after bias and residual), before rounding to y's dtype: fp32 accuracy
    whatever the dtype (fp64 for fp64). ``offset`` shifts the mean far from zero,
    where sum(y^2) - sum(y)^2 / n would cancel catastrophically."""
    from fastcnn.triton_kernels import reference
    from fastcnn.triton_kernels.conv2d import conv2d_forward
    x = make_input(g.input_shape, dtype, layout)
    w = make_input(g.weight_shape, dtype)
    b = (make_input((g.k,), dtype) + offset).to(dtype)
    res = make_input(g.out_shape, dtype, "nhwc")
    y, (mean, var) = conv2d_forward(x, w, b, res, *g.args, stats=True, family=family)
    ref = reference.conv2d_forward(x.double(), w.double(), b.double(), res.double(), *g.args)
    pixels = y.shape[0] * y.shape[2] * y.shape[3]
    assert pixels > 32 and pixels % 32, "needs several pixel tiles, the last one partial"
    assert_close(y, ref, dtype, what="stats output")
    stats_dtype = compute_dtype(dtype)
    # With an offset, against y's own statistics: y's rounding near the offset would
    # dominate a comparison of the variance with the exact reference.
    ref_var, ref_mean = torch.var_mean(y.double() if offset else ref, dim=(0, 2, 3), unbiased=False)
    assert_close(mean, ref_mean, stats_dtype, what="mean")
    assert_close(var, ref_var, stats_dtype, what="var")


# Stride of far_apart's spread dimension: it fits int32 (Triton and the CUDA wrappers
# pass it as one), twice it does not.
FAR = 2**30 + 7


@contextlib.contextmanager
def _no_fill():
    saved = torch.utils.deterministic.fill_uninitialized_memory
    torch.utils.deterministic.fill_uninitialized_memory = False  # a 4 GiB memset otherwise
    try:
        yield
    finally:
        torch.utils.deterministic.fill_uninitialized_memory = saved


@contextlib.contextmanager
def setting(obj, **values):
    """``obj``'s attributes set to ``values`` for the block, then restored. For torch's
    flag objects (torch.backends.cuda.matmul answers through __getattr__, which
    pytest's monkeypatch, from 9.2, does not restore)."""
    saved = {name: getattr(obj, name) for name in values}
    for name, value in values.items():
        setattr(obj, name, value)
    try:
        yield
    finally:
        for name, value in saved.items():
            setattr(obj, name, value)


def far_apart(shape, dim, dtype=torch.float16):
    """A random tensor of ``shape`` whose ``dim`` has stride FAR (the others compact),
    so its last index along ``dim`` starts past element 2^31."""
    inner = [d for d in range(len(shape)) if d != dim]
    strides = [0] * len(shape)
    step = 1
    for d in reversed(inner):
        strides[d] = step
        step *= shape[d]
    assert step <= FAR
    strides[dim] = FAR
    with _no_fill():
        storage = torch.empty((shape[dim] - 1) * FAR + step, dtype=dtype)
    t = storage.as_strided(shape, strides)
    t.copy_(torch.randn(shape))
    return t


__all__ = ["Conv", "check_forward_stats", "DEVICE", "ON_GPU", "DTYPES", "REL_TOL", "rel_error", "assert_close",
           "make_input", "expanded_grad", "leaves64", "assert_grads_close", "far_apart", "interpret_mode", "setting"]


def torchvision_models():
    """torchvision.models, or skip. Its model definitions need none of its compiled
    ops: where the installed wheel's ops do not load against this torch (its fake-op
    registrations then fail at import), they are skipped."""
    try:
        import torchvision.models as tvm
        return tvm
    except ImportError:
        pytest.skip("torchvision is not installed")
    except RuntimeError:
        for mod in [m for m in sys.modules if m.startswith("torchvision")]:
            del sys.modules[mod]
        sys.modules["torchvision._meta_registrations"] = types.ModuleType("torchvision._meta_registrations")
        import torchvision.models as tvm
        return tvm
