"""Loader for fastcnn._C, the CUDA backend (csrc/), and the torch-facing wrappers
that the CUDA backend of fastcnn.ops calls.

fastcnn._C takes raw device pointers and a cudaStream_t; this module checks
torch tensors, allocates outputs with torch, and passes ``data_ptr()`` and
``torch.cuda.current_stream().cuda_stream``.

    from fastcnn import _ext
    if _ext.load() is None:
        print(_ext.unavailable_reason())   # why the "cuda" backend cannot run here
"""
from __future__ import annotations

import functools
import importlib

import torch

_NOT_BUILT = ("fastcnn._C is not built (nvcc was not found at install time, or "
              "FASTCNN_NO_CUDA=1 was set)")


@functools.lru_cache(maxsize=None)
def _import():
    """(module, None) if fastcnn._C imports, else (None, reason)."""
    try:
        return importlib.import_module("fastcnn._C"), None
    except ModuleNotFoundError as e:
        if e.name == "fastcnn._C":
            return None, _NOT_BUILT
        return None, f"fastcnn._C cannot be imported: {e}"
    except ImportError as e:  # built, but the .so does not load here
        return None, f"fastcnn._C cannot be imported: {e}"


def built():
    """The fastcnn._C module if it was built and imports, else None (device or not)."""
    return _import()[0]


@functools.lru_cache(maxsize=None)
def _status():
    mod, reason = _import()
    if mod is None:
        return None, reason
    try:
        ok, why = mod.available()
    except Exception as e:  # never let a probe crash the caller
        return None, f"fastcnn._C.available() failed: {e}"
    return (mod, None) if ok else (None, why)


def load():
    """fastcnn._C if it is built and a CUDA device it has code for is present, else None."""
    return _status()[0]


def unavailable_reason() -> str | None:
    """None when the CUDA backend can run here, else a sentence saying why not."""
    return _status()[1]


# ---------------------------------------------------------------------------
# torch-facing wrappers
# ---------------------------------------------------------------------------
def _dtype_code(mod, dtype):
    return {
        torch.float32: mod.DTYPE_FLOAT32,
        torch.float16: mod.DTYPE_FLOAT16,
        torch.bfloat16: mod.DTYPE_BFLOAT16,
        torch.float64: mod.DTYPE_FLOAT64,
    }.get(dtype)


_AXPBY_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)


def _require_module(op):
    mod = load()
    if mod is None:
        raise RuntimeError(f"{op}: the CUDA backend is unavailable: {unavailable_reason()}")
    return mod


def axpby(alpha, x: torch.Tensor, beta, y: torch.Tensor) -> torch.Tensor:
    """alpha * x + beta * y computed by fastcnn._C.axpby (a smoke test of the CUDA path).

    x and y: contiguous CUDA tensors of the same shape, dtype (float32, float16,
    bfloat16 or float64) and device.  Runs on the current stream of x's device.
    """
    op = "fastcnn._C.axpby"
    for name, t in (("x", x), ("y", y)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{op}: argument '{name}' must be a torch.Tensor, got {type(t).__name__}")
        if t.device.type != "cuda":
            raise ValueError(f"{op}: argument '{name}' must be a CUDA tensor, got a tensor on {t.device}")
        if t.dtype not in _AXPBY_DTYPES:
            raise ValueError(f"{op}: argument '{name}' has dtype {t.dtype}; expected one of "
                             f"{', '.join(str(d) for d in _AXPBY_DTYPES)}")
        if not t.is_contiguous():
            raise ValueError(f"{op}: argument '{name}' must be contiguous (got strides {t.stride()} "
                             f"for shape {tuple(t.shape)}); call .contiguous() first")
    if y.dtype != x.dtype:
        raise ValueError(f"{op}: argument 'y' has dtype {y.dtype} but 'x' has {x.dtype}")
    if y.shape != x.shape:
        raise ValueError(f"{op}: argument 'y' has shape {tuple(y.shape)} but 'x' has {tuple(x.shape)}")
    if y.device != x.device:
        raise ValueError(f"{op}: argument 'y' is on {y.device} but 'x' is on {x.device}")
    mod = _require_module(op)
    out = torch.empty_like(x, memory_format=torch.contiguous_format)
    n = x.numel()
    if n == 0:
        return out
    with torch.cuda.device(x.device):
        stream = torch.cuda.current_stream(x.device).cuda_stream
        mod.axpby(n, float(alpha), x.data_ptr(), float(beta), y.data_ptr(), out.data_ptr(),
                  _dtype_code(mod, x.dtype), stream)
    return out
