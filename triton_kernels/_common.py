"""Pieces shared by every Triton kernel: interpreter detection, autotune configs,
the activation epilogue, output allocation and the convolution kernels' int32 index
limit."""
import functools
import os

import torch
import triton
import triton.language as tl


def interpret_mode() -> bool:
    """True when Triton runs kernels on the CPU through its interpreter."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


@triton.jit
def _bf16_probe_kernel(a_ptr,    # (16, 16) bf16
                       b_ptr,    # (16, 16) bf16
                       out_ptr,  # (3, 16, 16) fp32: dot, elementwise, row reductions (broadcast)
                       ):
    r = tl.arange(0, 16)
    offs = r[:, None] * 16 + r[None, :]
    a = tl.load(a_ptr + offs)
    b = tl.load(b_ptr + offs)
    tl.store(out_ptr + offs, tl.dot(a, b))
    tl.store(out_ptr + 256 + offs, tl.where(a < b, a * b + a, tl.maximum(a, b) - b).to(tl.float32))
    rows = tl.sum(a, axis=1) + tl.max(b, axis=1) + (a.to(tl.float32) * 3.0).to(tl.bfloat16).sum(axis=0)
    tl.store(out_ptr + 512 + offs, tl.broadcast_to(rows[:, None], (16, 16)).to(tl.float32))


@functools.cache
def interpreter_computes_bf16() -> bool:
    """Whether this Triton interpreter computes bf16 right: tl.dot, arithmetic,
    comparisons, reductions and casts, checked once on a 16 x 16 tile against torch.
    Triton 3.9's works on the raw bits (garbage, no error); tests/interpreter_bf16.py
    makes it compute in fp32 as a GPU does. False when not interpreting."""
    if not interpret_mode():
        return False
    with torch.autocast("cpu", enabled=False):  # the first call may come from inside a CPU autocast region
        return _bf16_probe_passes()


def _bf16_probe_passes() -> bool:
    gen = torch.Generator().manual_seed(0)
    a, b = (torch.randn(16, 16, generator=gen).bfloat16() for _ in range(2))
    out = torch.empty(3, 16, 16)
    _bf16_probe_kernel[(1,)](a, b, out)
    rows = a.sum(1) + b.max(1).values + (a.float() * 3.0).bfloat16().sum(0)
    want = (a.float() @ b.float(), torch.where(a < b, a * b + a, torch.maximum(a, b) - b).float(),
            rows.float()[:, None].expand(16, 16))
    # within a few bf16 roundings of the values: garbage is off by orders of magnitude
    return all(torch.allclose(o, w, rtol=2 ** -6, atol=2 ** -6 * w.abs().max().item()) for o, w in zip(out, want))


def autotune_configs(gpu_configs, interpreter_config):
    """The GPU tile configurations, or a single small one under the interpreter,
    where autotuning would run every configuration on the CPU for nothing.

    FASTCNN_AUTOTUNE=0 (read at import) keeps only the first GPU configuration: the
    GPU tests set it, since they check numbers, and compiling and timing every
    configuration for each of their hundreds of shapes would take most of their time."""
    if interpret_mode():
        return [interpreter_config]
    return gpu_configs[:1] if os.environ.get("FASTCNN_AUTOTUNE", "1") == "0" else gpu_configs


# Activation codes passed to kernels as tl.constexpr ACT, and to the CUDA kernels
# (csrc/common.cuh enum Act: the same numbers).
ACTIVATIONS = {"none": 0, "relu": 1, "relu6": 2, "silu": 3, "gelu": 4}


@triton.jit
def apply_activation(x, ACT: tl.constexpr):
    """Elementwise activation on an fp32 tile; ACT is a code from ACTIVATIONS.
    relu / relu6 keep NaN as torch.relu / F.relu6 do (tl.maximum's default drops it:
    relu(NaN) would be 0, hiding a diverged layer from NaN checks)."""
    if ACT == 1:
        x = tl.maximum(x, 0.0, propagate_nan=tl.PropagateNan.ALL)
    elif ACT == 2:
        x = tl.clamp(x, 0.0, 6.0, propagate_nan=tl.PropagateNan.ALL)
    elif ACT == 3:
        x = x / (1.0 + tl.exp(-x))
    elif ACT == 4:
        x = 0.5 * x * (1.0 + tl.math.erf(x * 0.7071067811865476))
    return x


@triton.jit
def activation_grad(z, ACT: tl.constexpr):
    """d act(z) / dz on an fp32 tile of pre-activation values z. relu / relu6 pass
    the gradient at NaN, as PyTorch's threshold / hardtanh backward do."""
    if ACT == 0:
        g = tl.full(z.shape, 1.0, tl.float32)
    elif ACT == 1:
        g = tl.where(z <= 0.0, 0.0, 1.0)
    elif ACT == 2:
        g = tl.where((z <= 0.0) | (z >= 6.0), 0.0, 1.0)
    elif ACT == 3:
        s = 1.0 / (1.0 + tl.exp(-z))
        g = s * (1.0 + z * (1.0 - s))
    else:
        cdf = 0.5 * (1.0 + tl.math.erf(z * 0.7071067811865476))
        pdf = 0.3989422804014327 * tl.exp(-0.5 * z * z)
        g = cdf + z * pdf
    return g


def memory_format_of(t: torch.Tensor) -> torch.memory_format:
    """The layout an output derived from ``t`` is allocated in: channels_last when
    ``t`` is channels_last (and not also plain contiguous), else contiguous. Real and
    fake kernels both use this, so their output strides agree."""
    if t.dim() == 4 and not t.is_contiguous() and t.is_contiguous(memory_format=torch.channels_last):
        return torch.channels_last
    return torch.contiguous_format


def conv_memory_format(x: torch.Tensor, w: torch.Tensor) -> torch.memory_format:
    """The layout of a convolution's output, as F.conv2d picks it (cuDNN's and
    oneDNN's suggest_memory_format of both operands): channels_last when the input or
    the weight is. Depthwise and 1x1 weights are both layouts at once
    (memory_format_of: contiguous), so only a k x k weight with C/groups > 1 can
    switch an NCHW input's output to channels_last."""
    if torch.channels_last in (memory_format_of(x), memory_format_of(w)):
        return torch.channels_last
    return torch.contiguous_format


def empty_nchw(like: torch.Tensor, shape, memory_format, dtype=None) -> torch.Tensor:
    """An uninitialised 4-d tensor on ``like``'s device in the given layout (works
    under FakeTensorMode too, so fake kernels allocate through it)."""
    return torch.empty(shape, dtype=dtype or like.dtype, device=like.device, memory_format=memory_format)


def allow_tf32() -> bool:
    """Convolutions follow cuDNN's TF32 flag, as PyTorch's do."""
    return torch.backends.cudnn.allow_tf32


def dot_precision(dtype: torch.dtype) -> str:
    """input_precision for a convolution's tl.dot: tf32 only for fp32 inputs with
    cuDNN's TF32 flag on."""
    return "tf32" if dtype == torch.float32 and allow_tf32() else "ieee"


def matmul_dot_precision(dtype: torch.dtype) -> str:
    """input_precision for a matmul-like op's tl.dot (attention): PyTorch's matmuls
    and SDPA follow torch.backends.cuda.matmul.allow_tf32 (off by default)."""
    return "tf32" if dtype == torch.float32 and torch.backends.cuda.matmul.allow_tf32 else "ieee"


# The convolution kernels (conv2d_igemm, conv2d_grouped, separable) index pixels (a
# flattened (n, p, q)) and channels with int32, by design: 64-bit index arithmetic
# would cost registers and integer throughput in every tile. A tile's offsets run up
# to one block past its count (start + arange(BLOCK), BLOCK <= 256), so the limit
# keeps a margin of 2^16 below 2^31. The dispatchers' Triton reasons (from
# index_limit_reasons, via conv2d.py's and separable.py's *_index_reasons) send
# larger calls to another backend; the launchers raise (check_index_limit) for
# direct callers. Both read this name at call time, so a test can lower it with
# monkeypatch.setattr(_common, "MAX_INDEX_COUNT", ...): import the module, never
# the constant.
MAX_INDEX_COUNT = 2**31 - 2**16

# What the convolution kernels count with int32 (keys of the counts below). Every
# channel index (input or output, flattened (k, c) or (r, s, c) weight columns) is
# below the weight's element count, so that one count bounds them all. Input pixels
# are indexed by (n, h, w) separately, never flattened, except by the input
# gradient, which flattens the input pixels of one stride phase.
OUTPUT_PIXELS = "output pixels (N*P*Q)"
PHASE_PIXELS = "input pixels of one stride phase (N*ceil(H/stride_h)*ceil(W/stride_w))"
WEIGHT_ELEMENTS = "weight elements"


def index_limit_reasons(counts: dict) -> list:
    """A reason for each ``{what: count}`` above MAX_INDEX_COUNT, saying what
    exceeded what; empty when every count fits."""
    limit = MAX_INDEX_COUNT
    return [f"{count} {what} exceed the Triton convolution kernels' int32 index limit of {limit}"
            for what, count in counts.items() if count > limit]


def check_index_limit(kernel: str, counts: dict) -> None:
    """ValueError naming ``kernel`` when a count exceeds MAX_INDEX_COUNT (see there)."""
    reasons = index_limit_reasons(counts)
    if reasons:
        raise ValueError(f"{kernel}: " + "; ".join(reasons))
