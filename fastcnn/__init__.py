"""fastcnn: Triton and CUDA kernels for CNNs and vision transformers, as PyTorch ops.

Submodules load on first use (``fastcnn.ops``, ``fastcnn.nn``, ...), so a program
(or the ``fastcnn`` command) can set TRITON_INTERPRET before any kernel is defined.
"""
import importlib

__version__ = "0.1.0"
_SUBMODULES = ("ops", "nn", "models", "triton_kernels", "bench")


def __getattr__(name):
    if name in _SUBMODULES:
        return importlib.import_module(f"fastcnn.{name}")
    if name == "info":
        from fastcnn._info import info
        return info
    raise AttributeError(f"module 'fastcnn' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_SUBMODULES) + ["info"])
