"""The separable suite: MobileNet v1's depthwise-separable layers (3x3 depthwise ->
ReLU -> 1x1 pointwise -> ReLU, BatchNorm folded as at inference), fastcnn's fused
op, whose depthwise output never goes to memory, against the two cuDNN
convolutions PyTorch runs."""
from fastcnn.bench.registry import BenchConfig, Case, register_suite

# MobileNet v1 at 224x224 (paper Table 1): (name, C, K, H = W, depthwise stride)
MOBILENET_V1_SEPARABLE = [
    ("mobilenet_v1.sep1", 32, 64, 112, 1),
    ("mobilenet_v1.sep2", 64, 128, 112, 2),
    ("mobilenet_v1.sep3", 128, 128, 56, 1),
    ("mobilenet_v1.sep4", 128, 256, 56, 2),
    ("mobilenet_v1.sep5", 256, 256, 28, 1),
    ("mobilenet_v1.sep6", 256, 512, 28, 2),
    ("mobilenet_v1.sep7", 512, 512, 14, 1),
    ("mobilenet_v1.sep12", 512, 1024, 14, 2),
    ("mobilenet_v1.sep13", 1024, 1024, 7, 1),
]


def separable_callables(contenders, x, wd, bd, wp, bp, stride):
    import torch.nn.functional as F
    from fastcnn.ops import separable_conv2d

    def unfused():
        z = F.relu(F.conv2d(x, wd, bd, stride, 1, 1, x.shape[1]))
        return F.relu(F.conv2d(z, wp, bp))
    return {c: unfused if c == "cudnn" else
            (lambda c=c: separable_conv2d(x, wd, wp, bd, bp, stride, 1, activation="relu",
                                          pointwise_activation="relu", algo=c))
            for c in contenders}


@register_suite("separable", kind="op")
def separable_suite(config: BenchConfig):
    """MobileNet v1's depthwise-separable layers, inference, channels_last."""
    import math
    from fastcnn.bench.suites import ELEMENT_BYTES, OP_CONTENDERS, _torch_dtype, _want
    layers = MOBILENET_V1_SEPARABLE[::3] if config.quick else MOBILENET_V1_SEPARABLE
    for dtype in config.dtypes:
        for batch in config.batch_list():
            for name, c, k, hw, stride in layers:
                out = (hw - 1) // stride + 1

                def make(c=c, k=k, hw=hw, stride=stride, batch=batch, dtype=dtype):
                    import torch
                    dt, dev = _torch_dtype(dtype), config.device
                    x = torch.randn(batch, c, hw, hw, device=dev, dtype=dt).contiguous(
                        memory_format=torch.channels_last)
                    wd = torch.randn(c, 1, 3, 3, device=dev, dtype=dt) / 3
                    wp = (torch.randn(k, c, 1, 1, device=dev, dtype=dt) / math.sqrt(c)).contiguous(
                        memory_format=torch.channels_last)
                    bd, bp = torch.randn(c, device=dev, dtype=dt), torch.randn(k, device=dev, dtype=dt)
                    return separable_callables(_want(config, OP_CONTENDERS), x, wd, bd, wp, bp, stride)

                flops = 2 * batch * out * out * c * (9 + k)
                # compulsory traffic of the fused op: x in, y out (weights are small)
                traffic = (batch * c * hw * hw + batch * k * out * out) * ELEMENT_BYTES[dtype]
                yield Case(suite="separable", name=name, group=f"separable/{name}/{dtype}/b{batch}/fwd",
                           make=make, flops=flops, bytes=traffic, dtype=dtype, batch=batch, pass_="fwd",
                           meta={"c": c, "k": k, "hw": hw, "stride": stride})
