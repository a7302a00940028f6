"""The fastcnn command: info, and bench's no-GPU path (a CPU check through the
Triton interpreter, exit 0, no timings)."""
import os
import subprocess
import sys

import pytest
import torch

from fastcnn.cli import main


def test_info_lists_every_backend(capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    for backend in ("triton", "cuda", "cudnn", "reference"):
        assert f"  {backend} " in out
    if not torch.cuda.is_available():
        assert "cudnn      unavailable: no CUDA GPU" in out


def test_info_function_returns_reasons():
    import fastcnn
    status = fastcnn.info()["backends"]
    assert status["reference"] is None
    assert set(status) == {"triton", "cuda", "cudnn", "reference"}


@pytest.mark.skipif(torch.cuda.is_available(), reason="the no-GPU path")
def test_bench_without_gpu_runs_the_interpreter_check():
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    proc = subprocess.run([sys.executable, "-m", "fastcnn.cli", "bench"], env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "no CUDA GPU here, so nothing is timed" in proc.stdout
    assert proc.stdout.count(" ok") >= 4 and "FAIL" not in proc.stdout
