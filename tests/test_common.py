"""triton_kernels/_common.py: the configuration list a kernel autotunes over, and
which PyTorch flag decides TF32 for convolutions and for matmul-like ops."""
import torch

from fastcnn.triton_kernels import _common


def test_autotune_configs(monkeypatch):
    gpu, interp = ["a", "b", "c"], "small"
    monkeypatch.setattr(_common, "interpret_mode", lambda: True)
    assert _common.autotune_configs(gpu, interp) == ["small"]
    monkeypatch.setattr(_common, "interpret_mode", lambda: False)
    monkeypatch.setenv("FASTCNN_AUTOTUNE", "1")
    assert _common.autotune_configs(gpu, interp) == gpu
    monkeypatch.setenv("FASTCNN_AUTOTUNE", "0")  # what the tests run with
    assert _common.autotune_configs(gpu, interp) == ["a"]


def test_tf32_follows_the_flag_pytorch_uses():
    # Set and restored by hand: torch.backends.cuda.matmul answers allow_tf32 through
    # __getattr__, and pytest 9.2's monkeypatch undoes such an attribute with delattr.
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    try:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = True, False
        assert _common.dot_precision(torch.float32) == "tf32"          # convolutions: cuDNN's flag
        assert _common.matmul_dot_precision(torch.float32) == "ieee"   # attention: the matmul flag
        torch.backends.cuda.matmul.allow_tf32 = True
        assert _common.matmul_dot_precision(torch.float32) == "tf32"
        assert _common.matmul_dot_precision(torch.float16) == _common.dot_precision(torch.float16) == "ieee"
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved
