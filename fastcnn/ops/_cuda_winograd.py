"""The Winograd part of fastcnn.ops.conv2d's "cuda" backend: torch-facing wrappers of
fastcnn._C.winograd_* (csrc/winograd.cu), for 3x3 convolutions with stride 1,
dilation 1, groups 1 and any padding.

    U = filter_transform(w, variant)           (alpha^2, K, C), cached per weight version
    y = act(A^T [U @ (B^T d B)] A + bias + residual)  per output tile

Variant per dtype (``VARIANT_FOR_DTYPE``), from the measured error bounds in
triton_kernels/winograd.py (``WINOGRAD_REL_ERROR_BOUND``): fp32 uses F(4x4,3x3)
(bound 5e-6, ~7x direct fp32 and still far below TF32's error; 4x fewer
multiplications than direct); fp16 / bf16 use F(2x2,3x3): in fp16 F(4x4) is bounded
by 1.2e-2 against 2.5e-3 for F(2x2) (direct: 3.6e-4), and its input transform (entries
up to 5: values grow up to 100x, F(2x2)'s 4x) overflows fp16 from |x| ~ 650; bf16
has 8x fp16's rounding unit. ``variant=`` overrides the choice.

The input gradient is a Winograd convolution of dy with the 180-degree rotated,
channel-transposed filter and padding 2 - p (0 <= p <= 2); the filter transform reads
w through its strides, so nothing is copied. The weight gradient is refused (the
dispatcher falls back to the other backends).

Workspaces (V in the storage dtype, M in fp32) are allocated here with torch, at most
``WORKSPACE_BYTES`` at a time: a large batch runs in chunks of images.
"""
import functools
import weakref
from collections import OrderedDict

import torch
from torch.optim.optimizer import register_optimizer_step_post_hook

from fastcnn import _ext
from fastcnn.ops._cuda_depthwise import _device_reasons
from fastcnn.triton_kernels._common import ACTIVATIONS, conv_memory_format, empty_nchw, memory_format_of
from fastcnn.triton_kernels.conv2d import conv_output_shape
from fastcnn.triton_kernels.winograd import VARIANTS, as_tensor, transforms

VARIANT_FOR_DTYPE = {torch.float32: "F4x4_3x3", torch.float16: "F2x2_3x3", torch.bfloat16: "F2x2_3x3"}
CUDA_DTYPES = tuple(VARIANT_FOR_DTYPE)
WORKSPACE_BYTES = 512 << 20
MAX_OUT_CHANNELS = 65535 * 64  # the GEMM's grid.y limit (64 output channels per block)


def geometry_reasons(weight_shape, stride, dilation, groups) -> list:
    reasons = []
    if tuple(weight_shape[2:]) != (3, 3):
        reasons.append(f"Winograd needs a 3x3 kernel, got {weight_shape[2]}x{weight_shape[3]}")
    if tuple(stride) != (1, 1):
        reasons.append(f"Winograd needs stride 1, got {tuple(stride)}")
    if tuple(dilation) != (1, 1):
        reasons.append(f"Winograd needs dilation 1, got {tuple(dilation)}")
    if groups != 1:
        reasons.append(f"Winograd needs groups=1, got {groups}")
    if weight_shape[0] > MAX_OUT_CHANNELS or weight_shape[1] > MAX_OUT_CHANNELS:
        reasons.append(f"Winograd takes at most {MAX_OUT_CHANNELS} channels")
    return reasons


def _dtype_reasons(t) -> list:
    # _device_reasons (shared with the depthwise kernels) names every dtype but fp64
    if t.dtype == torch.float64:
        return ["the Winograd kernels take float32/float16/bfloat16, got torch.float64"]
    return []


def forward_reasons(x, w, bias, residual, stride, padding, dilation, groups, activation) -> list:
    reasons = _device_reasons(x) + _dtype_reasons(x) + geometry_reasons(w.shape, stride, dilation, groups)
    if activation not in ACTIVATIONS:
        reasons.append(f"the Winograd output transform has no activation {activation!r}")
    return reasons


def input_grad_reasons(dy, w, input_shape, stride, padding, dilation, groups) -> list:
    reasons = _device_reasons(dy) + _dtype_reasons(dy) + geometry_reasons(w.shape, stride, dilation, groups)
    if not all(0 <= p <= 2 for p in padding):
        reasons.append(f"the Winograd input gradient needs padding in 0..2 (it pads dy by 2 - p), got {tuple(padding)}")
    return reasons


def weight_grad_reasons(dy, x, weight_shape, stride, padding, dilation, groups) -> list:
    return ["weight gradient uses the other backends"]


# ----------------------------------------------------------------------------- filter transform

def reference_filter_transform(w, variant, flip=False):
    """U = G g G^T in float64 (the oracle of the CUDA filter transform): (alpha^2, K, C)
    for w (K, C, 3, 3); with ``flip`` of w.flip(2, 3).transpose(0, 1), i.e. (alpha^2, C, K)."""
    m = VARIANTS[variant]
    G = as_tensor(transforms(m)[1], torch.float64, w.device)
    g = w.double()
    if flip:
        g = g.flip(2, 3).transpose(0, 1)
    u = G @ g @ G.T                                   # K, C, alpha, alpha
    n = m + 2
    return u.permute(2, 3, 0, 1).reshape(n * n, g.shape[0], g.shape[1])


def _cuda_filter_transform(w, variant, flip):
    mod = _ext._require_module("fastcnn.conv2d (Winograd filter transform)")
    m = VARIANTS[variant]
    src = w.transpose(0, 1) if flip else w            # the channel transpose is only strides
    k, c = src.shape[:2]
    u = torch.empty((m + 2) ** 2, k, c, dtype=w.dtype, device=w.device)
    if u.numel():
        with torch.cuda.device(w.device):
            mod.winograd_filter_transform(k, c, m, flip, src.data_ptr(), list(src.stride()), u.data_ptr(),
                                          _ext._dtype_code(mod, w.dtype),
                                          torch.cuda.current_stream(w.device).cuda_stream)
    return u


def graph_capture_underway() -> bool:
    """Whether the current CUDA stream is capturing a graph (False without CUDA)."""
    return torch.cuda.is_available() and torch.cuda.is_current_stream_capturing()


# Fused optimizer steps (Adam, AdamW, SGD with fused=True) write the parameters
# without bumping their version counters (measured on torch 2.13), so a cached U is
# also tied to the count of optimizer steps taken: any torch.optim step ends it.
_optimizer_steps = 0


def _count_optimizer_step(optimizer, args, kwargs):
    global _optimizer_steps
    _optimizer_steps += 1


register_optimizer_step_post_hook(_count_optimizer_step)


class FilterTransformCache:
    """U per weight view (address, dtype, variant, flip, device, shape, strides), valid
    for one ``_version`` of it and until the next optimizer step: an in-place change
    bumps the version, and any torch.optim step (a fused one changes no version) ends
    the entry, so the next call recomputes U and replaces it; stale versions are never
    kept. An entry holds a weak reference to the weight (to its base, for a view) and
    goes when that is freed: it pins no memory, and an address reused by a new tensor
    cannot meet an old entry. So a fresh tensor per call (autocast's cast copy of an
    fp32 weight, any computed filter) costs a transform each call and leaves nothing
    behind; a parameter is transformed once per version. At most ``size`` entries (least recently
    used go). Inference tensors (no version counter) are not cached, and nothing is
    cached or served while a CUDA graph is being captured: a cached U would be baked
    into the graph, and every replay, after an optimizer step that the graph also
    replays without bumping any version counter, would convolve with the filter of
    capture time; computed inside the capture, the transform is replayed with the rest.
    Caveat: a write through ``w.data`` bypasses the version counter; call
    ``FILTER_CACHE.clear()`` after one."""

    def __init__(self, compute, size=64):
        self.compute = compute
        self.size = size
        self._entries = OrderedDict()  # key -> ((version, optimizer steps), weakref to the weight or its base, U)
        self.hits = self.misses = 0

    @staticmethod
    def key(w, variant, flip):
        return (w.data_ptr(), w.dtype, variant, bool(flip), str(w.device), tuple(w.shape), tuple(w.stride()))

    def get(self, w, variant, flip=False):
        # no version counter (an in-place change could not be seen), or a graph capture
        if w.is_inference() or graph_capture_underway():
            self.misses += 1
            return self.compute(w, variant, flip)
        key = self.key(w, variant, flip)
        owner = w if w._base is None else w._base  # views share the base's storage and version
        stamp = (w._version, _optimizer_steps)
        entry = self._entries.get(key)
        if entry is not None and entry[0] == stamp and entry[1]() is not None:
            self._entries.move_to_end(key)
            self.hits += 1
            return entry[2]
        self.misses += 1
        u = self.compute(w, variant, flip)
        self._entries[key] = (stamp, weakref.ref(owner, functools.partial(self._forget, key)), u)
        self._entries.move_to_end(key)
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)
        return u

    def _forget(self, key, ref):
        """The weakref callback: the weight died; drop its entry unless a newer one has
        taken the key."""
        entry = self._entries.get(key)
        if entry is not None and entry[1] is ref:
            del self._entries[key]

    def __len__(self):
        return len(self._entries)

    def clear(self):
        self._entries.clear()
        self.hits = self.misses = 0


FILTER_CACHE = FilterTransformCache(_cuda_filter_transform)


def filter_transform(w, variant, flip=False):
    """The cached CUDA filter transform U of w (see FilterTransformCache): (alpha^2, K, C),
    or with ``flip`` that of w.flip(2, 3).transpose(0, 1), (alpha^2, C, K)."""
    return FILTER_CACHE.get(w, variant, flip)


# ----------------------------------------------------------------------------- convolution

def _run(mod, x, u, m, padding, bias, residual, activation, y):
    """y = act(winograd(x, U) + bias + residual), in chunks of images that keep the
    workspaces under WORKSPACE_BYTES."""
    n, c, h, w_ = x.shape
    k, oh, ow = y.shape[1:]
    tiles = -(-oh // m) * -(-ow // m)
    alpha2 = (m + 2) ** 2
    per_image = alpha2 * tiles * (c * u.element_size() + k * 4)
    chunk = max(1, min(n, WORKSPACE_BYTES // max(per_image, 1)))
    v_work = torch.empty(alpha2 * c * chunk * tiles, dtype=u.dtype, device=x.device)
    m_work = torch.empty(alpha2 * k * chunk * tiles, dtype=torch.float32, device=x.device)
    b = None if bias is None else bias.to(x.dtype)
    bias_ptr, bias_stride = (0, 0) if b is None else (b.data_ptr(), b.stride(0))
    r = None if residual is None else residual.to(x.dtype)
    code, stream = _ext._dtype_code(mod, x.dtype), torch.cuda.current_stream(x.device).cuda_stream
    for n0 in range(0, n, chunk):
        xs, ys = x[n0:n0 + chunk], y[n0:n0 + chunk]
        rs = None if r is None else r[n0:n0 + chunk]
        geom = [xs.shape[0], c, h, w_, k, padding[0], padding[1], oh, ow]
        mod.winograd_conv2d_forward(geom, m, xs.data_ptr(), list(xs.stride()), u.data_ptr(), bias_ptr, bias_stride,
                                    0 if rs is None else rs.data_ptr(), [] if rs is None else list(rs.stride()),
                                    ACTIVATIONS[activation], ys.data_ptr(), list(ys.stride()),
                                    v_work.data_ptr(), m_work.data_ptr(), code, stream)


def forward(x, w, bias, residual, stride, padding, dilation, groups, activation, variant=None):
    mod = _ext._require_module("fastcnn.conv2d")
    variant = variant or VARIANT_FOR_DTYPE[x.dtype]
    w = w.to(x.dtype)
    shape = conv_output_shape(x.shape, w.shape, stride, padding, dilation)
    y = empty_nchw(x, shape, conv_memory_format(x, w))
    if y.numel() == 0:
        return y
    with torch.cuda.device(x.device):
        u = filter_transform(w, variant)
        _run(mod, x, u, VARIANTS[variant], padding, bias, residual, activation, y)
    return y


def input_grad(dy, w, input_shape, stride, padding, dilation, groups, variant=None):
    mod = _ext._require_module("fastcnn.conv2d_input_grad")
    variant = variant or VARIANT_FOR_DTYPE[dy.dtype]
    w = w.to(dy.dtype)
    dx = empty_nchw(dy, input_shape, memory_format_of(dy))
    if dx.numel() == 0:
        return dx
    with torch.cuda.device(dy.device):
        u = filter_transform(w, variant, flip=True)   # of w.flip(2, 3).transpose(0, 1)
        _run(mod, dy, u, VARIANTS[variant], [2 - padding[0], 2 - padding[1]], None, None, "none", dx)
    return dx


def weight_grad(dy, x, weight_shape, stride, padding, dilation, groups):
    raise RuntimeError("fastcnn.conv2d_weight_grad: the Winograd kernels have no weight gradient "
                       "(weight_grad_reasons refuses every call)")
