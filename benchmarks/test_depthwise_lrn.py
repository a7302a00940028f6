"""Depthwise convolution on MobileNetV2 and EfficientNet-B0 layers, and local response
normalization on AlexNet and GoogLeNet shapes, and the fused depthwise-separable
convolution on MobileNet v1's layers (inference): fastcnn (triton, cuda, auto) against
PyTorch (cuDNN / ATen), forward and forward+backward, bf16 and fp32, channels_last.
GB/s against the compulsory traffic is the figure to read. Cases:
fastcnn/bench/suites.py."""
import pytest

from _support import params
from fastcnn.bench.registry import BenchConfig, cases
from fastcnn.bench.suites import OP_CONTENDERS

CONFIG = BenchConfig(dtypes=("bf16", "fp32"), batches=(32, 128), backward=True)


@pytest.mark.parametrize("contender", OP_CONTENDERS + ("cuda",))
@pytest.mark.parametrize("case", params(cases(CONFIG, ["depthwise", "lrn"])))
def test_depthwise_and_lrn(run_case, case, contender):
    run_case(case, contender)


@pytest.mark.parametrize("contender", OP_CONTENDERS)
@pytest.mark.parametrize("case", params(cases(BenchConfig(dtypes=("bf16", "fp32"), batches=(32, 128)),
                                              ["separable"])))
def test_separable(run_case, case, contender):
    run_case(case, contender)
