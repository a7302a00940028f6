"""``fastcnn profile``: run one op's or one model's workload under Nsight Compute
(``ncu``: the selected kernels, the metrics that matter) or Nsight Systems (``nsys``:
a kernel time summary), and print a table per kernel.

The workload (``python -m fastcnn.bench.profile --workload SPEC.json``) takes its
cases from the bench suites, warms each up (compilation, autotuning, the auto
choice) outside the capture range, then runs it once between
``cudaProfilerStart``/``Stop`` inside an NVTX range named after the case; fastcnn's
ops add their own NVTX ranges (op name and shapes)."""
import csv
import glob
import io
import json
import os
import re
import shutil
import subprocess
import sys

# Safe on Volta..Hopper (the SpeedOfLight and roofline sections use them).
CORE_METRICS = [
    "gpu__time_duration.sum",
    "sm__throughput.avg.pct_of_peak_sustained_elapsed",
    "dram__throughput.avg.pct_of_peak_sustained_elapsed",
    "dram__bytes.sum.per_second",
    "sm__warps_active.avg.pct_of_peak_sustained_active",
    "smsp__sass_thread_inst_executed_op_ffma_pred_on.sum",
    "smsp__sass_thread_inst_executed_op_fadd_pred_on.sum",
    "smsp__sass_thread_inst_executed_op_fmul_pred_on.sum",
]

# FLOPs per unit of each counter. The SASS counters count thread instructions: an
# FMA is 2 FLOPs, and on sm_70+ every half instruction is the packed x2 form (HADD2,
# HMUL2, HFMA2), so twice that (ncu's nvprof-compatible flop_count_hp counts 1/1/2,
# i.e. one lane). The tensor-path counters already count FLOPs (2*M*N*K for a GEMM,
# HMMA and Hopper's GMMA alike), one counter per source type; the fp16 ones are split
# by accumulator, so no product is counted twice.
SCALAR_FLOPS = {
    "fp32": {"smsp__sass_thread_inst_executed_op_ffma_pred_on.sum": 2,
             "smsp__sass_thread_inst_executed_op_fadd_pred_on.sum": 1,
             "smsp__sass_thread_inst_executed_op_fmul_pred_on.sum": 1},
    "fp16": {"smsp__sass_thread_inst_executed_op_hfma_pred_on.sum": 4,
             "smsp__sass_thread_inst_executed_op_hadd_pred_on.sum": 2,
             "smsp__sass_thread_inst_executed_op_hmul_pred_on.sum": 2},
    "fp64": {"smsp__sass_thread_inst_executed_op_dfma_pred_on.sum": 2,
             "smsp__sass_thread_inst_executed_op_dadd_pred_on.sum": 1,
             "smsp__sass_thread_inst_executed_op_dmul_pred_on.sum": 1},
}
TENSOR_FLOPS = [
    "sm__ops_path_tensor_src_bf16_dst_fp32.sum",
    "sm__ops_path_tensor_src_fp16_dst_fp32.sum",
    "sm__ops_path_tensor_src_fp16_dst_fp16.sum",
    "sm__ops_path_tensor_src_tf32_dst_fp32.sum",
    "sm__ops_path_tensor_src_fp64.sum",
]
# Which matrix instruction a kernel issued: on Hopper a matrix kernel that shows hmma
# but no gmma (wgmma) is on the slower, pre-Hopper path.
MMA_INSTRUCTIONS = {"gmma": "sm__inst_executed_pipe_tensor_op_gmma.sum",
                    "hmma": "sm__inst_executed_pipe_tensor_op_hmma.sum"}

# Not every chip or ncu version has these: profile() keeps those that
# `ncu --query-metrics` lists, since one unknown name fails the whole run.
OPTIONAL_METRICS = ([m for kind in ("fp16", "fp64") for m in SCALAR_FLOPS[kind]] + TENSOR_FLOPS
                    + list(MMA_INSTRUCTIONS.values()))
NCU_METRICS = CORE_METRICS + OPTIONAL_METRICS

_TIME_NS = {"nsecond": 1.0, "ns": 1.0, "usecond": 1e3, "us": 1e3, "msecond": 1e6, "ms": 1e6, "second": 1e9,
            "s": 1e9}
_RATE_GBS = {"byte/second": 1e-9, "Kbyte/second": 1e-6, "Mbyte/second": 1e-3, "Gbyte/second": 1.0,
             "Tbyte/second": 1e3, "byte/s": 1e-9, "KB/s": 1e-6, "MB/s": 1e-3, "GB/s": 1.0, "TB/s": 1e3}
_SI = {"K": 1e3, "M": 1e6, "G": 1e9, "T": 1e12}


class ProfileError(ValueError):
    """A ``fastcnn profile`` argument that selects nothing it can run."""


def _number(text):
    text = (text or "").strip().replace(",", "")
    try:
        return float(text)
    except ValueError:
        return None


def _count(value, unit):
    """A counter in its base unit: ncu's auto units may print "1.5 Minst" or "2 Gop"."""
    unit = (unit or "").strip()
    return value * _SI[unit[0]] if unit[:1] in _SI and unit[1:] in ("inst", "op", "ops", "flop") else value


def _csv_from(text, must_have):
    """The CSV part of a tool's output: from the first line holding all of ``must_have``."""
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if all(f'"{m}"' in line or m in line.split(",") for m in must_have):
            return list(csv.DictReader(io.StringIO("\n".join(lines[i:]))))
    return []


def launch_flops(launch) -> dict:
    """{tensor, fp16, fp32, fp64: FLOPs} of one launch's counters (absent counters: 0)."""
    flops = {kind: sum(w * launch.get(m, 0.0) for m, w in weights.items()) for kind, weights in SCALAR_FLOPS.items()}
    flops["tensor"] = sum(launch.get(m, 0.0) for m in TENSOR_FLOPS)
    return flops


def parse_ncu_csv(text) -> dict:
    """``ncu --import R --csv --page details`` output -> {kernel: summary}. Summary:
    launches, time_us (total), duration-weighted means of the percentages and DRAM
    GB/s, the FLOPs the counters saw (``flops``: tensor path, fp16, fp32, fp64 scalar),
    their rate (``tflops``; ``fp32_gflops`` for the FP32 part alone) and the matrix
    instruction issued (``mma``: gmma, hmma or None)."""
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
        else:
            value = _count(value, unit)
        launch[metric] = value
    kernels = {}
    for launch in launches.values():
        k = kernels.setdefault(launch["kernel"], {"launches": 0, "time_ns": 0.0, "_w": {}, "_mma": {},
                                                  "flops": dict.fromkeys(("tensor", "fp16", "fp32", "fp64"), 0.0)})
        t = launch.get("gpu__time_duration.sum", 0.0)
        k["launches"] += 1
        k["time_ns"] += t
        for kind, n in launch_flops(launch).items():
            k["flops"][kind] += n
        for kind, metric in MMA_INSTRUCTIONS.items():
            k["_mma"][kind] = k["_mma"].get(kind, 0.0) + launch.get(metric, 0.0)
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
        k["mma"] = next((kind for kind, n in k.pop("_mma").items() if n > 0), None)  # gmma first
        ns = k["time_us"] * 1e3
        k["fp32_gflops"] = k["flops"]["fp32"] / ns if ns else None
        k["tflops"] = sum(k["flops"].values()) / ns / 1e3 if ns else None
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


def format_kernels(kernels, tool, op_flops=None, every_kernel=True) -> str:
    """The per-kernel table, slowest first, then the FLOP/s the counters saw and the
    op-level FLOP/s (the case's FLOPs over the kernels' total time).

    ``every_kernel=False`` (``--kernels``: only matching kernels were profiled) leaves
    the op-level rate out: the case's FLOPs over a subset's time would overstate it."""
    total_us = sum(k["time_us"] for k in kernels.values())
    rows = sorted(kernels.items(), key=lambda kv: -kv[1]["time_us"])
    if tool == "ncu":
        header = f"{'kernel':<52}{'launch':>7}{'time us':>11}{'SM %':>7}{'DRAM GB/s':>11}{'DRAM %':>8}" \
                 f"{'occup %':>9}{'TFLOP/s':>9}{'tensor %':>10}{'MMA':>6}"
    else:
        header = f"{'kernel':<52}{'launch':>7}{'time us':>11}{'time %':>8}{'avg us':>10}"
    lines = [header, "-" * len(header)]

    def f(v, spec):
        return format(v, spec) if v is not None else "-"

    def tensor_pct(k):
        counted = sum(k.get("flops", {}).values())
        return 100 * k["flops"]["tensor"] / counted if counted else None
    for name, k in rows:
        short = name if len(name) <= 50 else name[:47] + "..."
        if tool == "ncu":
            lines.append(f"{short:<52}{k['launches']:>7}{k['time_us']:>11.1f}{f(k.get('sm_pct'), '.1f'):>7}"
                         f"{f(k.get('dram_gbs'), '.0f'):>11}{f(k.get('dram_pct'), '.1f'):>8}"
                         f"{f(k.get('occupancy_pct'), '.1f'):>9}{f(k.get('tflops'), '.2f'):>9}"
                         f"{f(tensor_pct(k), '.0f'):>10}{k.get('mma') or '-':>6}")
        else:
            lines.append(f"{short:<52}{k['launches']:>7}{k['time_us']:>11.1f}{f(k.get('time_pct'), '.1f'):>8}"
                         f"{f(k.get('avg_us'), '.1f'):>10}")
    lines.append(f"{'total':<52}{sum(k['launches'] for k in kernels.values()):>7}{total_us:>11.1f}")
    counted = {kind: sum(k.get("flops", {}).get(kind, 0.0) for k in kernels.values())
               for kind in ("tensor", "fp16", "fp32", "fp64")}
    if tool == "ncu" and total_us and any(counted.values()):
        parts = ", ".join(f"{kind} {n / (total_us * 1e-6) / 1e12:.2f}" for kind, n in counted.items() if n)
        lines.append(f"counted: {sum(counted.values()) / (total_us * 1e-6) / 1e12:.1f} TFLOP/s by the hardware "
                     f"counters over the profiled kernels ({parts})")
    if op_flops and total_us and every_kernel:
        lines.append(f"achieved: {op_flops / (total_us * 1e-6) / 1e12:.1f} TFLOP/s "
                     f"({op_flops:.3g} FLOP of the profiled case(s) over the kernels' total time"
                     + (", which ncu serializes, each kernel on cold caches)" if tool == "ncu" else ")"))
    elif op_flops and total_us:
        lines.append("achieved: not shown: --kernels profiled only the kernels it names, and the case's "
                     f"{op_flops:.3g} FLOP over their time alone would overstate the op's rate")
    return "\n".join(lines)


def find_tool(choice="auto"):
    """(tool name, path) for ``ncu``/``nsys``; ``auto`` prefers ncu. (None, None) when absent."""
    names = ["ncu", "nsys"] if choice == "auto" else [choice]
    for name in names:
        path = shutil.which(name)
        if path is None:
            roots = [os.environ.get("CUDA_HOME"), "/usr/local/cuda"]
            roots += sorted(glob.glob(f"/opt/nvidia/nsight-{'compute' if name == 'ncu' else 'systems'}/*"),
                            reverse=True)  # the newest version first
            for root in filter(None, roots):
                for candidate in (os.path.join(root, "bin", name), os.path.join(root, name)):
                    if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
                        path = candidate
                        break
                if path:
                    break
        if path:
            return name, path
    return None, None


def available_metrics(query_output, wanted=None):
    """The metrics of ``wanted`` (default NCU_METRICS) that this GPU and ncu know, from
    ``ncu --query-metrics`` output (one base name per line, e.g. ``sm__ops_path_...``).
    The core metrics are kept whatever the query says; the optional ones only when
    listed, so an empty or failed query gives the core list."""
    known = {line.split()[0] for line in query_output.splitlines() if re.match(r"\w+__\w+\s", line)}
    wanted = NCU_METRICS if wanted is None else wanted
    return [m for m in wanted if m not in OPTIONAL_METRICS or m.split(".")[0] in known]


def tool_commands(tool, path, spec_path, out_prefix, kernels=None, metrics=None):
    """[(command, capture stdout?)]: the profiling run, then the one that prints CSV."""
    workload = [sys.executable, "-m", "fastcnn.bench.profile", "--workload", spec_path]
    if tool == "ncu":
        # --clock-control none: the card's own clocks, as fastcnn bench times it (ncu's
        # default locks them to base, which changes the GPU's settings).
        cmd = [path, "--profile-from-start", "off", "--target-processes", "all", "--nvtx", "--clock-control",
               "none", "--metrics", ",".join(metrics or NCU_METRICS), "-f", "-o", out_prefix]
        if kernels:
            cmd += ["--kernel-name", f"regex:{kernels}"]
        return [(cmd + workload, False),
                ([path, "--import", out_prefix + ".ncu-rep", "--csv", "--page", "details"], True)]
    cmd = [path, "profile", "--capture-range=cudaProfilerApi", "--capture-range-end=stop", "-t", "cuda,nvtx",
           "-f", "true", "-o", out_prefix]
    return [(cmd + workload, False),
            ([path, "stats", "-r", "cuda_gpu_kern_sum", "-f", "csv", out_prefix + ".nsys-rep"], True)]


def select_cases(items, case_regex=None, count=1, what="the suite"):
    """The first ``count`` cases whose group matches ``case_regex``; a regex that
    matches none is an error that lists the groups there are."""
    chosen = [c for c in items if not case_regex or re.search(case_regex, c.group)]
    if not chosen:
        groups = "\n  ".join(c.group for c in items) or "(none)"
        raise ProfileError(f"fastcnn profile: --case {case_regex!r} matches none of the {len(items)} cases of "
                           f"{what}; the cases are:\n  {groups}")
    return chosen[:count]


def workload_cases(spec):
    """The cases a profile spec selects (same suites as ``fastcnn bench``). Cheap: no
    tensors and no GPU, so a bad --op / --model / --case fails before any profiler starts."""
    from fastcnn.bench.registry import BenchConfig, Skip, cases
    from fastcnn.bench.suites import ALL_CONTENDERS
    if spec.get("backend", "triton") not in ALL_CONTENDERS:  # which case has it is known only once it runs
        raise ProfileError(f"fastcnn profile: --backend {spec['backend']!r} is not a contender of any suite; "
                           f"choose one of: {', '.join(ALL_CONTENDERS)}")
    config = BenchConfig(dtypes=(spec["dtype"],), batches=(spec["batch"],), backward=spec.get("backward", False),
                         models=[spec["model"]] if spec.get("model") else None, device=spec.get("device", "cuda"))
    if spec.get("model"):
        items = cases(config, ["models"])
        skips = [s for s in items if isinstance(s, Skip)]
        if skips:
            raise ProfileError(f"fastcnn profile: model {spec['model']!r}: {skips[0].reason}")
        items = [c for c in items if c.pass_ == spec.get("pass", "infer")]
        what = f"model {spec['model']!r} ({spec.get('pass', 'infer')})"
    else:
        try:
            items = [c for c in cases(config, [spec["op"]]) if not isinstance(c, Skip)]
        except ValueError as e:  # the registry's "unknown suite" names the known ones
            raise ProfileError(f"fastcnn profile: --op: {e}") from None
        what = f"--op {spec['op']} at {spec['dtype']}, batch {spec['batch']}"
    return select_cases(items, spec.get("case"), spec.get("count", 1), what)


def contender(case, fns, backend):
    """The callable ``--backend`` names among a case's contenders."""
    if backend not in fns:
        raise ProfileError(f"fastcnn profile: --backend {backend!r} is not a contender of {case.group}; "
                           f"choose one of: {', '.join(sorted(fns))}")
    return fns[backend]


def run_workload(spec) -> list:
    """Warm up every selected case, then run each once in the capture range."""
    import torch
    torch.backends.cudnn.benchmark = True
    prepared = []
    for case in workload_cases(spec):
        fn = contender(case, case.make(), spec["backend"])
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
    spec = {"op": args.op, "model": args.model, "case": args.case, "dtype": args.dtype, "batch": args.batch,
            "backend": args.backend, "count": args.count, "backward": args.backward, "pass": args.pass_}
    try:
        workload_cases(spec)  # a --case that matches nothing fails here, GPU or not
    except ProfileError as e:
        print(e, file=sys.stderr)
        return 2
    import torch
    if not torch.cuda.is_available():
        print("fastcnn profile: no CUDA GPU here; Nsight needs one. Nothing was profiled.")
        return 1
    tool, path = find_tool(args.tool)
    if tool is None:
        print(f"fastcnn profile: {'ncu or nsys' if args.tool == 'auto' else args.tool} not found on the PATH, "
              "in $CUDA_HOME/bin or /opt/nvidia; install Nsight Compute / Nsight Systems.")
        return 1
    os.makedirs(args.out, exist_ok=True)
    spec["result"] = os.path.join(args.out, "cases.json")
    spec_path = os.path.join(args.out, "spec.json")
    with open(spec_path, "w") as f:
        json.dump(spec, f)
    metrics = args.metrics
    if tool == "ncu" and not metrics:
        try:
            query = subprocess.run([path, "--query-metrics"], capture_output=True, text=True, timeout=120)
            listed = query.stdout if query.returncode == 0 else ""
        except subprocess.TimeoutExpired:
            listed = ""
        metrics = available_metrics(listed)
        missing = [m for m in NCU_METRICS if m not in metrics]
        if missing:
            print(f"fastcnn profile: `ncu --query-metrics` does not list {', '.join(missing)}; "
                  "profiling without them")
    prefix = os.path.join(args.out, "profile")
    (run_cmd, _), (csv_cmd, _) = tool_commands(tool, path, spec_path, prefix, args.kernels, metrics)
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
    print(format_kernels(kernels, tool, flops, every_kernel=not (tool == "ncu" and args.kernels)))
    print(f"report: {prefix}.{'ncu-rep' if tool == 'ncu' else 'nsys-rep'} (open it in the Nsight GUI), "
          f"table: {prefix}.csv")
    return 0


def _main(argv):
    if len(argv) == 2 and argv[0] == "--workload":
        with open(argv[1]) as f:
            spec = json.load(f)
        try:
            profiled = run_workload(spec)
        except ProfileError as e:
            print(e, file=sys.stderr)
            return 2
        with open(spec["result"], "w") as f:
            json.dump(profiled, f)
        return 0
    print("usage: python -m fastcnn.bench.profile --workload SPEC.json (see `fastcnn profile --help`)")
    return 2


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
