"""Every 3x3 stride-1 conv of VGG-16 and ResNet-50: the CUDA Winograd kernels
(algo="cuda"), cuDNN, the Triton direct kernel and auto, forward and forward+backward
(Winograd's input gradient; its weight gradient falls back), fp16, bf16 and fp32,
batch 32, channels_last. Target: >= 1.2x cuDNN on the layers with >= 64 channels,
the report's ``target_geomean_speedup``. Cases: fastcnn/bench/suites.py."""
import pytest

from _support import params
from fastcnn.bench.registry import BenchConfig, cases
from fastcnn.bench.suites import WINOGRAD_CONTENDERS

CONFIG = BenchConfig(dtypes=("fp16", "bf16", "fp32"), batches=(32,), backward=True)


@pytest.mark.parametrize("contender", WINOGRAD_CONTENDERS)
@pytest.mark.parametrize("case", params(cases(CONFIG, ["winograd"])))
def test_winograd(run_case, case, contender):
    run_case(case, contender)
