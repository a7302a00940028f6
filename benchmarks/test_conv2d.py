"""Every distinct conv layer of AlexNet, VGG-16, ResNet-50 and ResNeXt-50: fastcnn
(triton), fastcnn (auto) and cuDNN, forward and forward+backward, bf16 and fp32,
batch 32 and 128, channels_last. Also the fused conv-BN-ReLU training step against
eager Conv2d + BatchNorm2d + ReLU. Cases: fastcnn/bench/suites.py."""
import pytest

from _support import params
from fastcnn.bench.registry import BenchConfig, cases
from fastcnn.bench.suites import OP_CONTENDERS

CONFIG = BenchConfig(dtypes=("bf16", "fp32"), batches=(32, 128), backward=True)


@pytest.mark.parametrize("contender", OP_CONTENDERS)
@pytest.mark.parametrize("case", params(cases(CONFIG, ["conv2d"])))
def test_conv2d(run_case, case, contender):
    run_case(case, contender)


@pytest.mark.parametrize("contender", OP_CONTENDERS)
@pytest.mark.parametrize("case", params(cases(BenchConfig(dtypes=("bf16", "fp32"), batches=(32,)),
                                              ["conv_bn_relu"])))
def test_conv_bn_relu_training_step(run_case, case, contender):
    """One training step (forward + backward) of conv -> BN -> ReLU, under autocast for
    bf16 as a mixed-precision training run would have it; 'cudnn' is eager PyTorch."""
    run_case(case, contender)
