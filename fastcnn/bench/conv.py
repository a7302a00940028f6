"""Convolution layer inputs and the callables timed per contender: fastcnn per backend
and cuDNN side by side in one process, on the same channels_last inputs. Used by the
conv2d suite (suites.py), hence by ``fastcnn bench`` and ``benchmarks/``."""
import math

import torch

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def layer_inputs(layer, batch, dtype, device="cuda", requires_grad=False):
    x = torch.randn(batch, layer.c, layer.h, layer.w, device=device, dtype=dtype)
    x = x.contiguous(memory_format=torch.channels_last).requires_grad_(requires_grad)
    w = torch.randn(layer.k, layer.c // layer.groups, layer.r, layer.s, device=device, dtype=dtype)
    w = (w / math.sqrt(w[0].numel())).contiguous(memory_format=torch.channels_last).requires_grad_(requires_grad)
    return x, w


def conv_fn(contender, layer):
    """The callable timed for one contender: cuDNN through ATen, or fastcnn.ops.conv2d."""
    if contender == "cudnn":
        return lambda x, w: torch.nn.functional.conv2d(x, w, None, layer.stride, layer.padding, layer.dilation,
                                                       layer.groups)
    from fastcnn import ops
    return lambda x, w: ops.conv2d(x, w, None, layer.stride, layer.padding, layer.dilation, layer.groups,
                                   algo=contender)


def step_fn(fn, backward, wrt=(0, 1)):
    """``fn(x, w)``, or with ``backward`` forward+backward with gradients for the
    arguments at positions ``wrt``."""
    if not backward:
        return fn

    def fwd_bwd(*args):
        out = fn(*args)
        torch.autograd.grad(out, [args[i] for i in wrt], torch.ones_like(out))
    return fwd_bwd


def time_ms(fn, *args):
    """Median GPU time (ms) of ``fn(*args)`` by CUDA events (timing.time_cuda)."""
    from fastcnn.bench.timing import median, time_cuda
    return median(time_cuda(lambda: fn(*args)))
