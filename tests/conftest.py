"""Test set-up. Without a GPU, Triton kernels run on CPU tensors through Triton's
interpreter, which must be switched on before any kernel module is imported; on a
GPU, each kernel runs its first tile configuration only (FASTCNN_AUTOTUNE=0)."""
import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
# One tile configuration per kernel (triton_kernels/_common.autotune_configs): the
# tests check numbers; scripts/gpu_session.sh also runs the autotuned kernels.
os.environ.setdefault("FASTCNN_AUTOTUNE", "0")

import pytest  # noqa: E402


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
