"""TF32 in Triton's interpreter, for the tests that ask for it.

A GPU's ``tl.dot(..., input_precision="tf32")`` on fp32 operands multiplies them on
the tensor cores with 10 of their 23 mantissa bits; the interpreter ignores the
precision and multiplies exact fp32 values. So no CPU test sees the error the fp32
convolutions make on a GPU, where they follow cuDNN's TF32 flag (on by default), and
the GPU tests' fp32 tolerance was never checked against it.

``emulated()`` makes a TF32 dot drop the 13 low mantissa bits of each fp32 operand
(round toward zero), as Triton's lowering does: it hands the raw fp32 registers to
the tensor cores, which read only the upper 19 bits (triton-lang/triton#4574 shows
its TF32 dot less accurate than fp16's, which has the same mantissa). Truncation is
also the worse of the two roundings: its error is biased, so a kernel within a bound
here is within it under round-to-nearest too. Products are then exact and summed in
fp32, as the tensor cores do (their summation order is not modelled). An IEEE or
tf32x3 dot is left as it is."""
import contextlib

import numpy as np
import triton.language as tl
from triton.runtime import interpreter as interp

_TF32 = interp._ir.INPUT_PRECISION.TF32


def to_tf32(values: np.ndarray) -> np.ndarray:
    """fp32 values with the 13 low mantissa bits cleared (fp32 in, fp32 out)."""
    return (np.ascontiguousarray(values, dtype=np.float32).view(np.uint32) & np.uint32(0xFFFFE000)).view(np.float32)


def _truncated(handle):
    return interp.TensorHandle(to_tf32(handle.data), tl.float32) if handle.dtype.scalar == tl.float32 else handle


@contextlib.contextmanager
def emulated():
    """TF32 dots truncate their fp32 operands while the block runs (stacks on whatever
    create_dot is installed, e.g. tests/interpreter_bf16.py's)."""
    builder = interp.InterpreterBuilder
    original = builder.create_dot

    def create_dot(self, a, b, d, input_precision, max_num_imprecise_acc):
        if input_precision == _TF32:
            a, b = _truncated(a), _truncated(b)
        return original(self, a, b, d, input_precision, max_num_imprecise_acc)

    builder.create_dot = create_dot
    try:
        yield
    finally:
        builder.create_dot = original
