"""The attention bench suite (fastcnn/bench/attention.py): its batches follow the
config's (``--batch``), and its FLOP and byte counts and peak rate, by hand."""
import pytest
import torch

from fastcnn.bench.registry import BenchConfig, cases
from helpers import setting


def attention_cases(**config):
    return {c.group: c for c in cases(BenchConfig(device="cpu", **config), ["attention"])}


def test_vit_cases_follow_the_batch_list():
    """Every --batch and nothing else; without one, the issue's ViT batches 64 and 256
    (not the other suites' 32). The long sequences keep FlashAttention's 16k tokens
    per batch."""
    for batches, want in (((32,), {32}), ((8, 16), {8, 16}), (None, {64, 256})):
        got = {c.batch for c in attention_cases(dtypes=("bf16",), batches=batches).values() if "vit" in c.name}
        assert got == want
    long = attention_cases(dtypes=("bf16",), batches=(8,))
    assert long["attention/seq1024_d64/bf16/b16/fwd"].meta["heads"] == 32  # 16384 / 1024 sequences, 2048 / 64 heads


def test_vit_b_16_flops_and_bytes():
    """ViT-B/16, batch 64, bf16: B*H = 768 slices of 197 tokens, head_dim 64 (12608
    elements per q, k, v, o, ... slice). FLOPs 4 * 768 * 197^2 * 64 = 7630159872 forward,
    3.5x that forward+backward (FlashAttention's count). Bytes per slice: forward
    q, k, v, o (2 * 4 * 12608) + the fp32 lse (4 * 197) = 101652; forward+backward
    twelve such tensors (forward's four, then q, k, v, o, do, dq, dk, dv) = 302592,
    + lse written and read and delta written and read (4 * 4 * 197) = 305744."""
    got = attention_cases(dtypes=("bf16",), batches=(64,), backward=True)
    fwd, both = got["attention/vit_b_16/bf16/b64/fwd"], got["attention/vit_b_16/bf16/b64/fwd+bwd"]
    assert fwd.flops == 7630159872 and both.flops == 26705559552
    assert fwd.bytes == 768 * 101652 == 78068736
    assert both.bytes == 768 * 305744 == 234811392


def test_causal_long_sequence_flops_are_halved():
    got = attention_cases(dtypes=("fp16",), batches=(8,))
    full, causal = got["attention/seq2048_d128/fp16/b8/fwd"], got["attention/seq2048_d128_causal/fp16/b8/fwd"]
    assert full.flops == 4 * 8 * 16 * 2048 * 2048 * 128 == 2 * causal.flops
    assert full.bytes == causal.bytes  # a causal mask skips work, not tensors


@pytest.mark.parametrize("allow_tf32, want", [(False, "fp32"), (True, "tf32")])
def test_fp32_peak_follows_the_matmul_tf32_flag(allow_tf32, want):
    """Attention's fp32 matmuls follow torch.backends.cuda.matmul.allow_tf32 (off by
    default), not cuDNN's convolution flag: the FMA peak unless it is on."""
    with setting(torch.backends.cuda.matmul, allow_tf32=allow_tf32), setting(torch.backends.cudnn, allow_tf32=True):
        got = attention_cases(dtypes=("fp32", "bf16"), batches=(64,))
    assert got["attention/vit_b_16/fp32/b64/fwd"].meta["peak_dtype"] == want
    assert got["attention/vit_b_16/bf16/b64/fwd"].meta["peak_dtype"] == "bf16"
