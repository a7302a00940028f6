"""Every distinct conv layer of AlexNet, VGG-16, ResNet-50 and ResNeXt-50: fastcnn
(triton), fastcnn (auto) and cuDNN, forward and forward+backward, bf16 and fp32,
batch 32 and 128, channels_last. Also the fused conv-BN-ReLU training step against
eager Conv2d + BatchNorm2d + ReLU."""
import pytest
import torch

from fastcnn.bench.conv import CONTENDERS, DTYPES, conv_fn, layer_inputs, step_fn, time_ms
from fastcnn.bench.layers import RESNET50, all_layers

BATCHES = (32, 128)


def _record(benchmark, fn, args, flops, baseline_ms=None):
    ms = time_ms(fn, *args)

    def synchronized():
        fn(*args)
        torch.cuda.synchronize()

    benchmark.pedantic(synchronized, rounds=10, warmup_rounds=2)
    benchmark.extra_info.update({"cuda_event_median_ms": ms, "flops": flops, "tflops": flops / ms / 1e9})
    if baseline_ms is not None:
        benchmark.extra_info["speedup_vs_cudnn"] = baseline_ms / ms
    return ms


@pytest.mark.parametrize("contender", CONTENDERS)
@pytest.mark.parametrize("backward", [False, True], ids=["fwd", "fwd+bwd"])
@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("dtype", ["bf16", "fp32"])
@pytest.mark.parametrize("layer", all_layers(), ids=lambda l: l.name)
def test_conv2d(benchmark, layer, dtype, batch, backward, contender):
    benchmark.group = f"{layer.name}-{dtype}-b{batch}-{'fwd+bwd' if backward else 'fwd'}"
    x, w = layer_inputs(layer, batch, DTYPES[dtype], requires_grad=backward)
    flops = layer.flops(batch) * (3 if backward else 1)
    baseline = time_ms(step_fn(conv_fn("cudnn", layer), backward), x, w)
    _record(benchmark, step_fn(conv_fn(contender, layer), backward), (x, w), flops, baseline)


def _eager_block(layer, dtype):
    return torch.nn.Sequential(
        torch.nn.Conv2d(layer.c, layer.k, layer.r, layer.stride, layer.padding, groups=layer.groups, bias=False),
        torch.nn.BatchNorm2d(layer.k), torch.nn.ReLU(inplace=True),
    ).cuda().to(memory_format=torch.channels_last)


def _fused_block(layer):
    import fastcnn.nn as fnn
    return fnn.ConvBNReLU(layer.c, layer.k, layer.r, layer.stride, layer.padding, groups=layer.groups).cuda()


@pytest.mark.parametrize("impl", ["eager", "fastcnn"])
@pytest.mark.parametrize("dtype", ["bf16", "fp32"])
@pytest.mark.parametrize("layer", RESNET50, ids=lambda l: l.name)
def test_conv_bn_relu_training_step(benchmark, layer, dtype, impl):
    """One training step (forward + backward) of conv -> BN -> ReLU, under autocast
    for bf16 as a mixed-precision training run would have it."""
    benchmark.group = f"conv_bn_relu-train-{layer.name}-{dtype}"
    batch = 32
    x, _ = layer_inputs(layer, batch, torch.float32, requires_grad=True)
    block = _eager_block(layer, dtype) if impl == "eager" else _fused_block(layer)
    autocast = DTYPES[dtype] != torch.float32

    def step():
        with torch.autocast("cuda", dtype=DTYPES[dtype], enabled=autocast):
            out = block(x)
        out.backward(torch.ones_like(out))

    eager = _eager_block(layer, dtype)

    def eager_step():
        with torch.autocast("cuda", dtype=DTYPES[dtype], enabled=autocast):
            out = eager(x)
        out.backward(torch.ones_like(out))

    _record(benchmark, step, (), layer.flops(batch) * 3, time_ms(eager_step))
