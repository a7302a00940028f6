"""Fused attention: fastcnn (triton, auto) against PyTorch's
scaled_dot_product_attention (as dispatched, and pinned to its FlashAttention-2 and
cuDNN backends) on ViT-B/16, ViT-L/16 and ViT-H/14 shapes (batch 64 and 256; 197,
257 and 577 tokens) and long sequences (1k..16k tokens, head_dim 64 and 128, causal
and not), forward and forward+backward, bf16 and fp16. Cases:
fastcnn/bench/attention.py."""
import pytest

from _support import params
from fastcnn.bench.attention import CONTENDERS
from fastcnn.bench.registry import BenchConfig, cases

CONFIG = BenchConfig(dtypes=("bf16", "fp16"), backward=True)


@pytest.mark.parametrize("contender", CONTENDERS)
@pytest.mark.parametrize("case", params(cases(CONFIG, ["attention"])))
def test_attention(run_case, case, contender):
    run_case(case, contender)
