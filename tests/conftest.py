"""Test set-up. Without a GPU, Triton kernels run on CPU tensors through Triton's
interpreter, which must be switched on before any kernel module is imported, which
computes bf16 on raw bits (tests/interpreter_bf16.py makes it compute as a GPU
does), and which checks no memory access: tests/interpreter_sanitizer.py checks them
instead, and uninitialized memory is filled with NaN so that reading it shows. On a GPU, each
kernel runs its first tile configuration only (FASTCNN_AUTOTUNE=0)."""
import os

import torch

# The interpreter sanitizer and the NaN fill of uninitialized memory (CPU only).
SANITIZE = not torch.cuda.is_available() and os.environ.get("FASTCNN_SANITIZE", "1") != "0"

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
    import interpreter_bf16
    interpreter_bf16.install()
    if SANITIZE:
        # bounds, alignment and races of every interpreted launch
        from interpreter_sanitizer import install
        install()
# One tile configuration per kernel (triton_kernels/_common.autotune_configs): the
# tests check numbers; scripts/gpu_session.sh also runs the autotuned kernels.
os.environ.setdefault("FASTCNN_AUTOTUNE", "0")

import pytest  # noqa: E402


def pytest_runtest_logreport(report):
    """FASTCNN_FAILURE_LOG=path: each failure's traceback is appended to the file as it
    happens, so a run cut off by a time limit (a GPU session's) still says what failed
    and why; pytest itself prints tracebacks only at the end."""
    path = os.environ.get("FASTCNN_FAILURE_LOG")
    if path and report.failed:
        with open(path, "a") as f:
            f.write(f"==== {report.nodeid} ({report.when}, {report.duration:.1f} s)\n{report.longreprtext}\n\n")


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(autouse=True)
def _fill_uninitialized_memory(request):
    """Without a GPU, every torch.empty* is filled with NaN (max int for integers), so
    a kernel that reads memory nobody wrote gives NaN instead of the zeros a CPU's
    fresh pages hold. PyTorch does this only with deterministic algorithms on (warn
    only, here); a test module that depends on that flag being off sets
    FILL_UNINITIALIZED_MEMORY = False. FASTCNN_SANITIZE=0 turns it off too."""
    if not SANITIZE or not getattr(request.module, "FILL_UNINITIALIZED_MEMORY", True):
        yield
        return
    saved = (torch.are_deterministic_algorithms_enabled(),
             torch.is_deterministic_algorithms_warn_only_enabled(),
             torch.utils.deterministic.fill_uninitialized_memory)
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.utils.deterministic.fill_uninitialized_memory = True
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(saved[0], warn_only=saved[1])
        torch.utils.deterministic.fill_uninitialized_memory = saved[2]
