"""The ``fastcnn`` command: ``bench`` (the main job), ``profile`` (Nsight), ``info``,
``compile-check`` (every Triton kernel compiled for a GPU, without one)."""
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


def cmd_compare(args) -> int:
    from fastcnn.bench import report as rep
    old, new = (rep.load(p) for p in args.compare)
    result = rep.compare(old, new, args.threshold)
    print(rep.format_compare(result))
    return 1 if (args.fail_on_regression and result["regressions"]) else 0


def cmd_list(args) -> int:
    from fastcnn.bench.registry import list_suites
    from fastcnn.bench.suites import MODELS, resolve_model
    import fastcnn.models
    for s in list_suites():
        print(f"{s.kind:<6} {s.name:<14} {s.doc}")
    registered = fastcnn.models.list_models()
    for m in MODELS:
        found = resolve_model(m, registered)
        print(f"model  {m:<18} {'-> ' + found if found else 'not registered yet (skipped)'}")
    return 0


def bench_config(args):
    from fastcnn.bench.registry import BenchConfig
    quick = args.quick
    dtypes = args.dtypes or (["bf16"] if quick else ["bf16", "fp32"])
    return BenchConfig(ops=args.ops, models=args.models or None, networks=args.networks, dtypes=tuple(dtypes),
                       batches=tuple(args.batch) if args.batch else None, model_batches=tuple(args.model_batch) if args.model_batch else None,
                       backward=args.backward, quick=quick, contenders=args.contenders,
                       warmup_ms=10.0 if quick else 25.0, rep_ms=40.0 if quick else 100.0)


def cmd_bench(args) -> int:
    if args.compare:
        return cmd_compare(args)
    if args.list:
        return cmd_list(args)
    if not _cuda_available():
        print("fastcnn bench: no CUDA GPU here, so nothing is timed (a CPU timing would say nothing "
              "about the kernels' speed). Running the CPU check instead: the Triton kernels through "
              "Triton's interpreter, against float64 references.", flush=True)
        from fastcnn.bench.check import run_cpu_check
        return 0 if run_cpu_check() else 1
    from fastcnn.bench import runner
    config = bench_config(args)
    op_suites = [] if args.ops == [] else args.ops
    model_suites = [] if args.models == [] else None
    report = runner.run(config, op_suites=op_suites, model_suites=model_suites, out=args.out)
    paths = runner.write_report(report, args.out, charts=not args.no_charts)
    for suite, per in report["summary"].items():
        base = next(r["baseline"] for r in report["results"] if r["suite"] == suite)
        means = ", ".join(f"{c} x{s['geomean_speedup']:.3f} ({s['cases']} of {s['suite_cases']} cases)"
                          for c, s in per.items() if c != base and s["geomean_speedup"])
        print(f"{suite}: geometric-mean speedup over {base}: {means or '-'}")
    for s in report["skipped"]:
        print(f"skipped {s['suite']}/{s['name']}: {s['reason']}")
    print(f"report: {paths['markdown']} {paths['json']}" + (f" and {len(paths.get('charts', []))} charts"
                                                            if paths.get("charts") else ""))
    return 0


def cmd_profile(args) -> int:
    from fastcnn.bench.profile import profile
    return profile(args)


def cmd_compile_check(args) -> int:
    import json
    from fastcnn.bench import compile_check
    report = compile_check.run(args.arch, quick=args.quick, families=args.families, jobs=args.jobs,
                               verbose=args.verbose)
    print(compile_check.format_summary(report))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)
    return 1 if report["failures"] else 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="fastcnn", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("info", help="which backends work here, and why not").set_defaults(fn=cmd_info)

    bench = sub.add_parser("bench", help="throughput of fastcnn's kernels and models against cuDNN and "
                                         "torch.compile; writes a report folder")
    bench.add_argument("--ops", nargs="*", default=None,
                       help="op suites to run (default: all; `--ops` alone: none). See --list")
    bench.add_argument("--models", nargs="*", default=None,
                       help="models for the model suite (default: the configured list; `--models` alone: none)")
    bench.add_argument("--networks", nargs="+", default=None,
                       help="networks whose conv layers the conv2d suite runs (alexnet vgg16 resnet50 "
                            "resnext50_32x4d)")
    bench.add_argument("--dtypes", nargs="+", default=None, choices=["bf16", "fp16", "fp32"],
                       help="op-suite dtypes (default bf16 fp32; --quick: bf16)")
    bench.add_argument("--batch", nargs="+", type=int, default=None, help="batch sizes (default: each suite's own, 32; attention 64 and 256)")
    bench.add_argument("--model-batch", nargs="+", type=int, default=None,
                       help="batch sizes of the model suite (default: --batch)")
    bench.add_argument("--contenders", nargs="+", default=None,
                       help="only these contenders (cudnn triton auto compile)")
    bench.add_argument("--backward", action="store_true", help="op suites: time forward+backward as well")
    bench.add_argument("--quick", action="store_true", help="a few layers, bf16, ResNet-50 only, short timing")
    bench.add_argument("--out", default="bench-report", help="report folder (default bench-report)")
    bench.add_argument("--no-charts", action="store_true", help="skip the PNG charts")
    bench.add_argument("--list", action="store_true", help="list the suites and models, and exit")
    bench.add_argument("--compare", nargs=2, metavar=("OLD.json", "NEW.json"),
                       help="compare two reports' timings and show regressions (no GPU needed)")
    bench.add_argument("--threshold", type=float, default=0.05,
                       help="--compare: relative change counted as a regression/improvement (default 0.05)")
    bench.add_argument("--fail-on-regression", action="store_true", help="--compare: exit 1 on a regression")
    bench.set_defaults(fn=cmd_bench)

    prof = sub.add_parser("profile", help="run an op's or a model's workload under Nsight Compute (ncu) or "
                                          "Nsight Systems (nsys) and print a table per kernel")
    what = prof.add_mutually_exclusive_group(required=True)
    what.add_argument("--op", help="an op suite (conv2d, conv_bn_relu, ...)")
    what.add_argument("--model", help="a fastcnn.models name")
    prof.add_argument("--case", default=None, help="regex on the case group, e.g. 'resnet50.layer2'")
    prof.add_argument("--count", type=int, default=1, help="how many matching cases (default 1)")
    prof.add_argument("--backend", default="triton", help="contender to profile (triton auto cudnn compile)")
    prof.add_argument("--dtype", default="bf16", choices=["bf16", "fp16", "fp32"])
    prof.add_argument("--batch", type=int, default=32)
    prof.add_argument("--backward", action="store_true", help="op: forward+backward")
    prof.add_argument("--pass", dest="pass_", default="infer", choices=["infer", "train"], help="model pass")
    prof.add_argument("--tool", default="auto", choices=["auto", "ncu", "nsys"])
    prof.add_argument("--kernels", default=None, help="ncu: regex on kernel names to profile")
    prof.add_argument("--metrics", nargs="+", default=None, help="ncu: metrics (default: fastcnn's list)")
    prof.add_argument("--out", default="profile-report", help="folder for the Nsight report")
    prof.set_defaults(fn=cmd_profile)

    check = sub.add_parser("compile-check", help="compile every Triton kernel for a GPU architecture (no GPU "
                                                 "needed) and report shared memory, registers and spills")
    check.add_argument("--arch", type=int, default=90, help="compute capability, e.g. 90 (H100/H200), 80 (A100)")
    check.add_argument("--quick", action="store_true", help="a few layers covering every kernel variant")
    check.add_argument("--first-config", action="store_true",
                       help="only each kernel's first autotune configuration, as the GPU tests run "
                            "(FASTCNN_AUTOTUNE=0)")
    check.add_argument("--families", nargs="+", default=None,
                       help="workload families (conv2d batchnorm lrn attention transformer separable)")
    check.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="compiling processes (default: "
                                                                            "one per CPU)")
    check.add_argument("--json", default=None, help="write every compiled kernel's record here")
    check.add_argument("-v", "--verbose", action="store_true", help="print each workload as it compiles")
    check.set_defaults(fn=cmd_compile_check)

    args = parser.parse_args(argv)
    if args.command == "bench" and not args.compare and not _cuda_available():
        os.environ.setdefault("TRITON_INTERPRET", "1")  # before any kernel module is imported
    if args.command == "compile-check":
        # Both are read when the kernel modules are imported, which has not happened yet.
        os.environ.pop("TRITON_INTERPRET", None)
        if args.first_config:
            os.environ["FASTCNN_AUTOTUNE"] = "0"
    return args.fn(args)


if __name__ == "__main__":
    sys.exit(main())
