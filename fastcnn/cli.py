"""The ``fastcnn`` command: ``bench`` (the main job), ``info``."""
import argparse
import os
import sys


def _cuda_available() -> bool:
    import torch
    return torch.cuda.is_available()


def cmd_info(args) -> int:
    from fastcnn._info import info
    info()
    return 0


def cmd_bench(args) -> int:
    if not _cuda_available():
        print("fastcnn bench: no CUDA GPU here, so nothing is timed (a CPU timing would say nothing "
              "about the kernels' speed). Running the CPU check instead: the Triton kernels through "
              "Triton's interpreter, against float64 references.")
        from fastcnn.bench.check import run_cpu_check
        return 0 if run_cpu_check() else 1
    from fastcnn.bench.conv import run_conv_bench
    return run_conv_bench(args)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="fastcnn", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("info", help="which backends work here, and why not").set_defaults(fn=cmd_info)
    bench = sub.add_parser("bench", help="throughput of fastcnn's kernels against cuDNN")
    bench.add_argument("--networks", nargs="+", default=None,
                       help="networks whose conv layers to run (alexnet vgg16 resnet50 resnext50_32x4d)")
    bench.add_argument("--dtypes", nargs="+", default=["bf16", "fp32"], help="bf16 fp16 fp32")
    bench.add_argument("--batch", nargs="+", type=int, default=[32], help="batch sizes")
    bench.add_argument("--backward", action="store_true", help="time forward+backward as well")
    bench.add_argument("--quick", action="store_true", help="a few layers only")
    bench.add_argument("--out", default="bench-report", help="report folder")
    bench.set_defaults(fn=cmd_bench)
    args = parser.parse_args(argv)
    if args.command == "bench" and not _cuda_available():
        os.environ.setdefault("TRITON_INTERPRET", "1")  # before any kernel module is imported
    return args.fn(args)


if __name__ == "__main__":
    sys.exit(main())
