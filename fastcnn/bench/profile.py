"""``fastcnn profile``: run one op's or one model's workload under Nsight Compute
(``ncu``: the selected kernels, the metrics that matter) or Nsight Systems (``nsys``:
a kernel time summary), and print a table per kernel.

The workload (``python -m fastcnn.bench.profile --workload SPEC.json``) takes its
cases from the bench suites, warms each up (compilation, autotuning, the auto
choice) outside the capture range, then runs it once between
``cudaProfilerStart``/``Stop`` inside an NVTX range named after the case; fastcnn's
ops add their own NVTX ranges (op name and shapes)."""
import csv
import io
import json
import os
import re
import shutil
import subprocess
import sys

# Safe on Volta..Hopper (the SpeedOfLight and roofline sections use them).
NCU_METRICS = [
    "gpu__time_duration.sum",
    "sm__throughput.avg.pct_of_peak_sustained_elapsed",
    "dram__throughput.avg.pct_of_peak_sustained_elapsed",
    "dram__bytes.sum.per_second",
    "sm__warps_active.avg.pct_of_peak_sustained_active",
    "smsp__sass_thread_inst_executed_op_ffma_pred_on.sum",
    "smsp__sass_thread_inst_executed_op_fadd_pred_on.sum",
    "smsp__sass_thread_inst_executed_op_fmul_pred_on.sum",
]

_TIME_NS = {"nsecond": 1.0, "ns": 1.0, "usecond": 1e3, "us": 1e3, "msecond": 1e6, "ms": 1e6, "second": 1e9,
            "s": 1e9}
_RATE_GBS = {"byte/second": 1e-9, "Kbyte/second": 1e-6, "Mbyte/second": 1e-3, "Gbyte/second": 1.0,
             "Tbyte/second": 1e3, "byte/s": 1e-9, "KB/s": 1e-6, "MB/s": 1e-3, "GB/s": 1.0, "TB/s": 1e3}


def _number(text):
    text = (text or "").strip().replace(",", "")
    try:
        return float(text)
    except ValueError:
        return None


def _csv_from(text, must_have):
    """The CSV part of a tool's output: from the first line holding all of ``must_have``."""
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if all(f'"{m}"' in line or m in line.split(",") for m in must_have):
            return list(csv.DictReader(io.StringIO("\n".join(lines[i:]))))
    return []


def parse_ncu_csv(text) -> dict:
    """``ncu --import R --csv --page details`` output -> {kernel: summary}. Summary:
    launches, time_us (total), and duration-weighted means of the percentages, DRAM
    GB/s, and FP32 GFLOP/s from the SASS FFMA/FADD/FMUL counts."""
    rows = _csv_from(text, ["Metric Name", "Metric Value"])
    launches = {}
    for row in rows:
        name = row.get("Kernel Name") or row.get("Function Name") or "?"
        launch = launches.setdefault(row.get("ID", "0"), {"kernel": name})
        metric, unit, value = row["Metric Name"], row.get("Metric Unit", ""), _number(row["Metric Value"])
        if value is None:
            continue
        if metric == "gpu__time_duration.sum":
            value *= _TIME_NS.get(unit, 1.0)
        elif metric == "dram__bytes.sum.per_second":
            value *= _RATE_GBS.get(unit, 1.0)
        launch[metric] = value
    kernels = {}
    for launch in launches.values():
        k = kernels.setdefault(launch["kernel"], {"launches": 0, "time_ns": 0.0, "_w": {}, "fp32_flops": 0.0})
        t = launch.get("gpu__time_duration.sum", 0.0)
        k["launches"] += 1
        k["time_ns"] += t
        k["fp32_flops"] += (2 * launch.get("smsp__sass_thread_inst_executed_op_ffma_pred_on.sum", 0.0)
                            + launch.get("smsp__sass_thread_inst_executed_op_fadd_pred_on.sum", 0.0)
                            + launch.get("smsp__sass_thread_inst_executed_op_fmul_pred_on.sum", 0.0))
        for metric, field in (("sm__throughput.avg.pct_of_peak_sustained_elapsed", "sm_pct"),
                              ("dram__throughput.avg.pct_of_peak_sustained_elapsed", "dram_pct"),
                              ("dram__bytes.sum.per_second", "dram_gbs"),
                              ("sm__warps_active.avg.pct_of_peak_sustained_active", "occupancy_pct")):
            if metric in launch:
                acc = k["_w"].setdefault(field, [0.0, 0.0])
                acc[0] += launch[metric] * max(t, 1e-9)
                acc[1] += max(t, 1e-9)
    for k in kernels.values():
        for field, (num, den) in k.pop("_w").items():
            k[field] = num / den
        k["time_us"] = k.pop("time_ns") / 1e3
        k["fp32_gflops"] = k.pop("fp32_flops") / (k["time_us"] * 1e3) if k["time_us"] else None
    return kernels


def parse_nsys_csv(text) -> dict:
    """``nsys stats -r cuda_gpu_kern_sum -f csv`` output -> {kernel: summary}."""
    kernels = {}
    for row in _csv_from(text, ["Name", "Instances"]):
        total = _number(row.get("Total Time (ns)"))
        if total is None:
            continue
        kernels[row["Name"]] = {"launches": int(_number(row.get("Instances")) or 0), "time_us": total / 1e3,
                                "time_pct": _number(row.get("Time (%)")),
                                "avg_us": (_number(row.get("Avg (ns)")) or 0) / 1e3}
    return kernels


def format_kernels(kernels, tool, op_flops=None) -> str:
    """The per-kernel table, slowest first, and the op-level FLOP/s when known."""
    total_us = sum(k["time_us"] for k in kernels.values())
    rows = sorted(kernels.items(), key=lambda kv: -kv[1]["time_us"])
    if tool == "ncu":
        header = f"{'kernel':<52}{'launch':>7}{'time us':>11}{'SM %':>7}{'DRAM GB/s':>11}{'DRAM %':>8}" \
                 f"{'occup %':>9}{'FP32 GFLOP/s':>14}"
    else:
        header = f"{'kernel':<52}{'launch':>7}{'time us':>11}{'time %':>8}{'avg us':>10}"
    lines = [header, "-" * len(header)]

    def f(v, spec):
        return format(v, spec) if v is not None else "-"
    for name, k in rows:
        short = name if len(name) <= 50 else name[:47] + "..."
        if tool == "ncu":
            lines.append(f"{short:<52}{k['launches']:>7}{k['time_us']:>11.1f}{f(k.get('sm_pct'), '.1f'):>7}"
                         f"{f(k.get('dram_gbs'), '.0f'):>11}{f(k.get('dram_pct'), '.1f'):>8}"
                         f"{f(k.get('occupancy_pct'), '.1f'):>9}{f(k.get('fp32_gflops'), '.0f'):>14}")
        else:
            lines.append(f"{short:<52}{k['launches']:>7}{k['time_us']:>11.1f}{f(k.get('time_pct'), '.1f'):>8}"
                         f"{f(k.get('avg_us'), '.1f'):>10}")
    lines.append(f"{'total':<52}{sum(k['launches'] for k in kernels.values()):>7}{total_us:>11.1f}")
    if op_flops and total_us:
        lines.append(f"achieved: {op_flops / (total_us * 1e-6) / 1e12:.1f} TFLOP/s "
                     f"({op_flops:.3g} FLOP of the profiled case(s) over the kernels' total time"
                     + (", which ncu serializes and runs at locked clocks)" if tool == "ncu" else ")"))
    return "\n".join(lines)


def find_tool(choice="auto"):
    """(tool name, path) for ``ncu``/``nsys``; ``auto`` prefers ncu. (None, None) when absent."""
    names = ["ncu", "nsys"] if choice == "auto" else [choice]
    for name in names:
        path = shutil.which(name)
        if path is None:
            for root in (os.environ.get("CUDA_HOME"), "/usr/local/cuda"):
                candidate = os.path.join(root, "bin", name) if root else None
                if candidate and os.path.exists(candidate):
                    path = candidate
                    break
        if path:
            return name, path
    return None, None


def tool_commands(tool, path, spec_path, out_prefix, kernels=None, metrics=None):
    """[(command, capture stdout?)]: the profiling run, then the one that prints CSV."""
    workload = [sys.executable, "-m", "fastcnn.bench.profile", "--workload", spec_path]
    if tool == "ncu":
        cmd = [path, "--profile-from-start", "off", "--target-processes", "all", "--nvtx",
               "--metrics", ",".join(metrics or NCU_METRICS), "-f", "-o", out_prefix]
        if kernels:
            cmd += ["--kernel-name", f"regex:{kernels}"]
        return [(cmd + workload, False),
                ([path, "--import", out_prefix + ".ncu-rep", "--csv", "--page", "details"], True)]
    cmd = [path, "profile", "--capture-range=cudaProfilerApi", "--capture-range-end=stop", "-t", "cuda,nvtx",
           "-f", "true", "-o", out_prefix]
    return [(cmd + workload, False),
            ([path, "stats", "-r", "cuda_gpu_kern_sum", "-f", "csv", out_prefix + ".nsys-rep"], True)]


def workload_cases(spec):
    """The cases a profile spec selects (same suites as ``fastcnn bench``)."""
    from fastcnn.bench.registry import BenchConfig, Skip, cases
    config = BenchConfig(dtypes=(spec["dtype"],), batches=(spec["batch"],), backward=spec.get("backward", False),
                         models=[spec["model"]] if spec.get("model") else None, device=spec.get("device", "cuda"))
    if spec.get("model"):
        items = cases(config, ["models"])
        skips = [s for s in items if isinstance(s, Skip)]
        if skips:
            raise SystemExit(f"fastcnn profile: model {spec['model']!r}: {skips[0].reason}")
        items = [c for c in items if c.pass_ == spec.get("pass", "infer")]
    else:
        items = cases(config, [spec["op"]])
    if spec.get("case"):
        items = [c for c in items if re.search(spec["case"], c.group)]
    return items[: spec.get("count", 1)]


def run_workload(spec) -> list:
    """Warm up every selected case, then run each once in the capture range."""
    import torch
    torch.backends.cudnn.benchmark = True
    chosen = workload_cases(spec)
    prepared = []
    for case in chosen:
        fn = case.make()[spec["backend"]]
        for _ in range(3):
            fn()
        prepared.append((case, fn))
    torch.cuda.synchronize()
    torch.cuda.profiler.start()
    for case, fn in prepared:
        with torch.cuda.nvtx.range(f"case {case.group} [{spec['backend']}]"):
            fn()
    torch.cuda.synchronize()
    torch.cuda.profiler.stop()
    return [{"group": c.group, "flops": c.flops} for c, _ in prepared]


def profile(args) -> int:
    """The ``fastcnn profile`` command."""
    import torch
    if not torch.cuda.is_available():
        print("fastcnn profile: no CUDA GPU here; Nsight needs one. Nothing was profiled.")
        return 1
    tool, path = find_tool(args.tool)
    if tool is None:
        print(f"fastcnn profile: {'ncu or nsys' if args.tool == 'auto' else args.tool} not found on the PATH "
              "or in $CUDA_HOME/bin; install Nsight Compute / Nsight Systems.")
        return 1
    os.makedirs(args.out, exist_ok=True)
    spec = {"op": args.op, "model": args.model, "case": args.case, "dtype": args.dtype, "batch": args.batch,
            "backend": args.backend, "count": args.count, "backward": args.backward, "pass": args.pass_,
            "result": os.path.join(args.out, "cases.json")}
    spec_path = os.path.join(args.out, "spec.json")
    with open(spec_path, "w") as f:
        json.dump(spec, f)
    prefix = os.path.join(args.out, "profile")
    (run_cmd, _), (csv_cmd, _) = tool_commands(tool, path, spec_path, prefix, args.kernels, args.metrics)
    print("$ " + " ".join(run_cmd), flush=True)
    proc = subprocess.run(run_cmd)
    if proc.returncode != 0:
        print(f"fastcnn profile: {tool} exited with {proc.returncode}")
        return proc.returncode
    out = subprocess.run(csv_cmd, capture_output=True, text=True)
    if out.returncode != 0 and tool == "nsys":  # nsys before 2023 names the report gpukernsum
        csv_cmd = [c if c != "cuda_gpu_kern_sum" else "gpukernsum" for c in csv_cmd]
        out = subprocess.run(csv_cmd, capture_output=True, text=True)
    with open(prefix + ".csv", "w") as f:
        f.write(out.stdout)
    kernels = parse_ncu_csv(out.stdout) if tool == "ncu" else parse_nsys_csv(out.stdout)
    if not kernels:
        print(f"fastcnn profile: no kernels in {tool}'s report.\n{out.stdout[-2000:]}{out.stderr[-2000:]}")
        return 1
    try:
        with open(spec["result"]) as f:
            profiled = json.load(f)
    except (OSError, ValueError):
        profiled = []
    flops = sum(c["flops"] or 0 for c in profiled) or None
    for c in profiled:
        print(f"profiled: {c['group']} [{args.backend}]")
    print(format_kernels(kernels, tool, flops))
    print(f"report: {prefix}.{'ncu-rep' if tool == 'ncu' else 'nsys-rep'} (open it in the Nsight GUI), "
          f"table: {prefix}.csv")
    return 0


def _main(argv):
    if len(argv) == 2 and argv[0] == "--workload":
        with open(argv[1]) as f:
            spec = json.load(f)
        profiled = run_workload(spec)
        with open(spec["result"], "w") as f:
            json.dump(profiled, f)
        return 0
    print("usage: python -m fastcnn.bench.profile --workload SPEC.json (see `fastcnn profile --help`)")
    return 2


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
