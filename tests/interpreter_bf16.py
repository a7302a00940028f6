"""bfloat16 in Triton's interpreter, computed the way a GPU computes it.

The interpreter keeps a bf16 tensor as its raw bits in a NumPy uint16 array and
hands those to NumPy: a bf16 ``tl.dot``, arithmetic, comparison, math function or
reduction works on the bit patterns (garbage, and no error), and a cast to bf16
truncates where the GPU rounds to nearest even. ``install()`` wraps each such
builder method so that bf16 operands enter as their exact fp32 values and a bf16
result is rounded to nearest even, which is what sm_80+ does:

- ``tl.dot``: bf16 products are exact in fp32 and summed into the fp32 (or bf16)
  accumulator, as the tensor cores do (their summation order is not modelled);
- elementwise ops and casts: one fp32 operation, one rounding (for add, sub, mul,
  div and sqrt, fp32's 24 bits make that the correctly rounded bf16 result);
- ``tl.sum``, ``tl.max``, ``tl.min`` of bf16: in fp32, rounded once (a GPU rounds
  each step of its tree, so its error is larger, never smaller).

Installed by conftest with the interpreter sanitizer, it lets the CPU suite run the
Triton kernels in bf16; ``fastcnn.triton_kernels._common.interpreter_computes_bf16``
probes for it, so the dispatcher keeps bf16 off an interpreter that lacks it."""
import contextlib

import numpy as np
import torch
import triton.language as tl
from triton.runtime import interpreter as interp

installed = False

_FLOAT_OPS = {np.add, np.subtract, np.multiply, np.divide, np.fmod, np.minimum, np.maximum, np.fmin, np.fmax}
_COMPARISONS = {np.less, np.less_equal, np.greater, np.greater_equal, np.equal, np.not_equal}


def _is_bf16(handle) -> bool:
    return handle.dtype.scalar == tl.bfloat16


def to_f32(bits: np.ndarray) -> np.ndarray:
    """bf16 bits -> their exact fp32 values."""
    return (np.asarray(bits, dtype=np.uint16).astype(np.uint32) << 16).view(np.float32)


def to_bf16(values: np.ndarray) -> np.ndarray:
    """Any real values -> bf16 bits, rounded to nearest even (torch's conversion)."""
    values = np.array(values, order="C")  # keeps 0-d arrays 0-d
    if values.dtype == np.bool_:
        values = values.astype(np.float32)
    return torch.from_numpy(values).to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16)


def _f32(handle):
    return interp.TensorHandle(to_f32(handle.data), tl.float32) if _is_bf16(handle) else handle


def _bf16(handle):
    return interp.TensorHandle(to_bf16(handle.data), tl.bfloat16)


_WRAPPED = []  # (class, name, original, wrapped)


def _wrap(cls, name, make):
    original = getattr(cls, name)
    wrapped = make(original)
    setattr(cls, name, wrapped)
    _WRAPPED.append((cls, name, original, wrapped))


def _binary_op(original):
    def binary_op(self, lhs, rhs, op):
        if not ((_is_bf16(lhs) or _is_bf16(rhs)) and (op in _FLOAT_OPS or op in _COMPARISONS)):
            return original(self, lhs, rhs, op)
        out = original(self, _f32(lhs), _f32(rhs), op)
        return out if op in _COMPARISONS else _bf16(out)
    return binary_op


def _elementwise(original):
    """A method whose operands and result share one dtype (unary math, fma, clamp)."""
    def method(self, *args):
        handles = [a for a in args if isinstance(a, interp.TensorHandle)]
        if not any(_is_bf16(h) for h in handles):
            return original(self, *args)
        out = original(self, *[_f32(a) if isinstance(a, interp.TensorHandle) else a for a in args])
        return _bf16(out)
    return method


def _cast_impl(original):
    def cast_impl(self, src, dst_type):
        s, d = src.dtype.scalar, dst_type.scalar
        if s != tl.bfloat16 and d != tl.bfloat16:
            return original(self, src, dst_type)
        if s == d:
            return src
        values = to_f32(src.data) if s == tl.bfloat16 else src.data
        if d == tl.bfloat16:
            return interp.TensorHandle(to_bf16(values), tl.bfloat16)
        return interp.TensorHandle(values.astype(interp._get_np_dtype(dst_type)), d)
    return cast_impl


def _fp_to_fp(original):
    def create_fp_to_fp(self, src, dst_type, rounding_mode):
        if tl.bfloat16 in (src.dtype.scalar, dst_type.scalar) and rounding_mode != interp._ir.ROUNDING_MODE.RTZ:
            return self.cast_impl(src, dst_type)
        return original(self, src, dst_type, rounding_mode)
    return create_fp_to_fp


def _dot(original):
    def create_dot(self, a, b, d, input_precision, max_num_imprecise_acc):
        if not (_is_bf16(a) or _is_bf16(b) or _is_bf16(d)):
            return original(self, a, b, d, input_precision, max_num_imprecise_acc)
        out = original(self, _f32(a), _f32(b), _f32(d), input_precision, max_num_imprecise_acc)
        return _bf16(out) if _is_bf16(d) else out
    return create_dot


def _reduce_in_f32(original):
    """ReduceOps.sum / min_max: bf16 reduced as its fp32 values, rounded once."""
    def method(self, input, *args, **kwargs):
        input = input[0] if isinstance(input, tuple) else input
        if input.dtype.scalar != tl.bfloat16:
            return original(self, input, *args, **kwargs)
        as_f32 = tl.core.tensor(interp.TensorHandle(to_f32(input.handle.data), tl.float32),
                                input.type.with_element_ty(tl.float32))
        out = original(self, as_f32, *args, **kwargs)
        outs = out if isinstance(out, tuple) else (out,)
        fixed = tuple(self.to_tensor(to_bf16(o.handle.data), tl.bfloat16) if o.dtype == tl.float32 else o
                      for o in outs)
        return fixed if isinstance(out, tuple) else fixed[0]
    return method


def install():
    """Route the interpreter's bf16 through fp32 (idempotent)."""
    global installed
    if installed:
        return
    builder = interp.InterpreterBuilder
    _wrap(builder, "binary_op", _binary_op)
    for name in ("unary_op", "create_fma", "create_erf", "create_rsqrt", "create_clampf"):
        _wrap(builder, name, _elementwise)
    _wrap(builder, "cast_impl", _cast_impl)
    _wrap(builder, "create_fp_to_fp", _fp_to_fp)
    _wrap(builder, "create_dot", _dot)
    _wrap(interp.ReduceOps, "sum", _reduce_in_f32)
    _wrap(interp.ReduceOps, "min_max", _reduce_in_f32)
    installed = True


@contextlib.contextmanager
def disabled():
    """The interpreter's own bf16 for a while (to show what install() fixes)."""
    global installed
    was = installed
    for cls, name, original, _ in _WRAPPED:
        setattr(cls, name, original)
    installed = False
    try:
        yield
    finally:
        for cls, name, _, wrapped in _WRAPPED:
            setattr(cls, name, wrapped)
        installed = was
