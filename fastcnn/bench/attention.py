"""The attention suite: fastcnn.ops.attention against PyTorch's
scaled_dot_product_attention on ViT shapes and on long sequences.

Contenders: ``cudnn`` is SDPA as PyTorch dispatches it (the baseline);
``sdpa_flash`` and ``sdpa_cudnn`` pin SDPA to its FlashAttention-2 and cuDNN
backends (left out of a case where PyTorch cannot run them); ``triton`` and
``auto`` are fastcnn. Inputs are (batch, heads, seq, head_dim) views of one
(batch, seq, 3, heads, head_dim) projection, as a ViT block produces them.

FLOPs and bytes are those of fastcnn.triton_kernels.attention.flops / traffic_bytes
(FlashAttention's FLOP convention; each tensor the kernels touch, once). fp32 cases
record in meta "peak_dtype" the rate they run at: "tf32" only where
torch.backends.cuda.matmul.allow_tf32 is on (the flag attention follows, off by
default; cuDNN's convolution flag is not it), else the FMA rate "fp32"."""
from fastcnn.bench.registry import BenchConfig, Case, register_suite

# name: (heads, head_dim, sequence length); ViT paper Table 1, 224x224 (and 384x384) images
VIT_SHAPES = [
    ("vit_b_16", 12, 64, 197),
    ("vit_l_16", 16, 64, 197),
    ("vit_h_14", 16, 80, 257),
    ("vit_b_16@384", 12, 64, 577),
    ("vit_l_16@384", 16, 64, 577),
]
VIT_BATCHES = (64, 256)  # the "batch 64..256", ends of the range
# FlashAttention's benchmark convention: 16k tokens per batch, hidden size 2048.
LONG_SEQUENCES = (1024, 2048, 4096, 8192, 16384)
LONG_HEAD_DIMS = (64, 128)
TOKENS, HIDDEN = 16384, 2048
SDPA_BACKENDS = {"sdpa_flash": "FLASH_ATTENTION", "sdpa_cudnn": "CUDNN_ATTENTION"}
CONTENDERS = ("cudnn", "sdpa_flash", "sdpa_cudnn", "triton", "auto")


def shapes(config: BenchConfig):
    """(name, batch, heads, seq, head_dim, causal) of every case: the ViT shapes at each
    of the config's batches (``--batch``, else VIT_BATCHES); the long sequences at FlashAttention's fixed
    16k tokens per batch, so their batch is TOKENS // seq."""
    vit = [(name, b, h, l, d, False) for name, h, d, l in VIT_SHAPES
           for b in config.batch_list(VIT_BATCHES)]
    long = [(f"seq{l}_d{d}" + ("_causal" if causal else ""), TOKENS // l, HIDDEN // d, l, d, causal)
            for d in LONG_HEAD_DIMS for l in LONG_SEQUENCES for causal in (False, True)]
    if config.quick:
        return vit[:1] + long[4:6]
    return vit + long


def attention_inputs(batch, heads, seq, head_dim, dtype, device, requires_grad=False):
    import torch
    qkv = torch.randn(batch, seq, 3, heads, head_dim, device=device, dtype=dtype, requires_grad=requires_grad)
    return qkv, qkv.permute(2, 0, 3, 1, 4).unbind(0)


def attention_callables(contenders, q, k, v, causal, backward):
    """{contender: step}; SDPA backends PyTorch cannot run for these inputs are left out."""
    import torch
    import torch.nn.functional as F
    from fastcnn import ops

    def sdpa(backend):
        if backend is None:
            return lambda: F.scaled_dot_product_attention(q, k, v, is_causal=causal)
        from torch.nn.attention import SDPBackend, sdpa_kernel
        chosen = getattr(SDPBackend, backend)

        def run():
            with sdpa_kernel(chosen):
                return F.scaled_dot_product_attention(q, k, v, is_causal=causal)
        return run

    def step(fn):
        if not backward:
            return fn
        def fwd_bwd():
            out = fn()
            torch.autograd.grad(out, (q, k, v), torch.ones_like(out))
        return fwd_bwd

    out = {}
    for c in contenders:
        if c == "cudnn" or c in SDPA_BACKENDS:
            fn = sdpa(SDPA_BACKENDS.get(c))
            if c != "cudnn":
                try:
                    fn()
                except RuntimeError:  # this backend cannot take these inputs (dtype, head_dim, GPU)
                    continue
        else:
            fn = (lambda c=c: ops.attention(q, k, v, causal=causal, algo=c))
        out[c] = step(fn)
    return out


@register_suite("attention", kind="op")
def attention_suite(config: BenchConfig):
    """Fused attention on ViT-B/L/H shapes (at each --batch) and long sequences
    (1k..16k tokens, head_dim 64 and 128, causal and not)."""
    import torch

    from fastcnn.bench.peaks import compute_dtype as peak_dtype
    from fastcnn.bench.suites import ELEMENT_BYTES, _passes, _torch_dtype, _want
    from fastcnn.triton_kernels.attention import flops, traffic_bytes
    from fastcnn.triton_kernels.reference import compute_dtype
    for dtype in config.dtypes:
        acc_bytes = compute_dtype(_torch_dtype(dtype)).itemsize  # lse and delta
        peak = peak_dtype(dtype, tf32=torch.backends.cuda.matmul.allow_tf32)
        for name, batch, heads, seq, head_dim, causal in shapes(config):
            for backward in _passes(config):
                pass_ = "fwd+bwd" if backward else "fwd"

                def make(batch=batch, heads=heads, seq=seq, head_dim=head_dim, causal=causal, dtype=dtype,
                         backward=backward):
                    _, (q, k, v) = attention_inputs(batch, heads, seq, head_dim, _torch_dtype(dtype), config.device,
                                                    requires_grad=backward)
                    return attention_callables(_want(config, CONTENDERS), q, k, v, causal, backward)

                dims = (batch, heads, seq, seq, head_dim)
                yield Case(suite="attention", name=name, group=f"attention/{name}/{dtype}/b{batch}/{pass_}",
                           make=make, flops=flops(*dims, causal, pass_),
                           bytes=traffic_bytes(*dims, ELEMENT_BYTES[dtype], acc_bytes, pass_),
                           dtype=dtype, batch=batch, pass_=pass_,
                           meta={"heads": heads, "seq": seq, "head_dim": head_dim, "causal": causal,
                                 "peak_dtype": peak})
