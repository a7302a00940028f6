"""Convolution layer benchmark on the GPU: fastcnn per backend and cuDNN side by side
in one process, on the same channels_last inputs. Used by ``fastcnn bench`` and by
``benchmarks/test_conv2d.py``."""
import datetime
import json
import math
import os

import torch

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
CONTENDERS = ("cudnn", "triton", "auto")


def layer_inputs(layer, batch, dtype, device="cuda", requires_grad=False):
    x = torch.randn(batch, layer.c, layer.h, layer.w, device=device, dtype=dtype)
    x = x.contiguous(memory_format=torch.channels_last).requires_grad_(requires_grad)
    w = torch.randn(layer.k, layer.c // layer.groups, layer.r, layer.s, device=device, dtype=dtype)
    w = (w / math.sqrt(w[0].numel())).contiguous(memory_format=torch.channels_last).requires_grad_(requires_grad)
    return x, w


def conv_fn(contender, layer):
    """The callable timed for one contender: cuDNN through ATen, or fastcnn.ops.conv2d."""
    if contender == "cudnn":
        return lambda x, w: torch.nn.functional.conv2d(x, w, None, layer.stride, layer.padding, 1, layer.groups)
    from fastcnn import ops
    return lambda x, w: ops.conv2d(x, w, None, layer.stride, layer.padding, 1, layer.groups, algo=contender)


def step_fn(fn, backward):
    if not backward:
        return fn

    def fwd_bwd(x, w):
        out = fn(x, w)
        grad = torch.ones_like(out)
        torch.autograd.grad(out, (x, w), grad)
    return fwd_bwd


def time_ms(fn, *args):
    import triton.testing
    return triton.testing.do_bench(lambda: fn(*args), warmup=25, rep=100, return_mode="median")


def environment():
    from fastcnn._info import environment as env
    out = env()
    out["date"] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    out["sm_count"] = torch.cuda.get_device_properties(0).multi_processor_count
    return out


def run_conv_bench(args) -> int:
    from fastcnn.bench.layers import all_layers
    torch.backends.cudnn.benchmark = True
    layers = all_layers(args.networks)
    if args.quick:
        layers = layers[::8]
    rows = []
    for dtype_name in args.dtypes:
        dtype = DTYPES[dtype_name]
        for batch in args.batch:
            for layer in layers:
                for backward in ([False, True] if args.backward else [False]):
                    x, w = layer_inputs(layer, batch, dtype, requires_grad=backward)
                    flops = layer.flops(batch) * (3 if backward else 1)
                    times = {c: time_ms(step_fn(conv_fn(c, layer), backward), x, w) for c in CONTENDERS}
                    row = {"layer": layer.name, "dtype": dtype_name, "batch": batch,
                           "pass": "fwd+bwd" if backward else "fwd", "flops": flops,
                           "ms": times, "tflops": {c: flops / t / 1e9 for c, t in times.items()},
                           "speedup_vs_cudnn": {c: times["cudnn"] / t for c, t in times.items()}}
                    rows.append(row)
                    print(f"{layer.name:<34}{dtype_name:>5}{batch:>5} {row['pass']:<8}" +
                          "".join(f"{c}={times[c]:8.3f}ms " for c in CONTENDERS) +
                          f"triton x{row['speedup_vs_cudnn']['triton']:.2f}", flush=True)
    os.makedirs(args.out, exist_ok=True)
    report = {"environment": environment(), "rows": rows}
    for c in ("triton", "auto"):
        speedups = [r["speedup_vs_cudnn"][c] for r in rows]
        report[f"geomean_speedup_{c}"] = math.exp(sum(map(math.log, speedups)) / len(speedups))
    with open(os.path.join(args.out, "conv2d.json"), "w") as f:
        json.dump(report, f, indent=1)
    print(f"geometric-mean speedup over cuDNN: triton x{report['geomean_speedup_triton']:.3f}, "
          f"auto x{report['geomean_speedup_auto']:.3f}; report in {args.out}/conv2d.json")
    return 0
