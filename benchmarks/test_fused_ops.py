"""The fused ops around the convolutions and the transformer MLP: conv -> BN -> ReLU
at inference on ResNet-50's layers (BN folded into the conv) against eager cuDNN conv
+ BN + ReLU in eval mode; bias + GELU after ViT-B/L's and ConvNeXt-T's MLP Linear and
their LayerNorms against eager PyTorch and torch.compile, forward and
forward+backward. bf16 and fp32, batch 32 (bias_act and layer_norm rows: batch x
tokens). GB/s against the compulsory traffic is the figure to read for the row ops.
Cases: fastcnn/bench/suites.py."""
import pytest

from _support import params
from fastcnn.bench.registry import BenchConfig, cases
from fastcnn.bench.suites import OP_CONTENDERS, ROW_OP_CONTENDERS


@pytest.mark.parametrize("contender", OP_CONTENDERS)
@pytest.mark.parametrize("case", params(cases(BenchConfig(dtypes=("bf16", "fp32"), batches=(32,)),
                                              ["conv_bn_act"])))
def test_conv_bn_act_inference(run_case, case, contender):
    run_case(case, contender)


@pytest.mark.parametrize("contender", ROW_OP_CONTENDERS)
@pytest.mark.parametrize("case", params(cases(BenchConfig(dtypes=("bf16", "fp32"), batches=(32,), backward=True),
                                              ["bias_act", "layer_norm"])))
def test_bias_act_and_layer_norm(run_case, case, contender):
    run_case(case, contender)
