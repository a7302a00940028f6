"""Runs suites into a report and writes the report folder (``fastcnn bench``)."""
import dataclasses
import datetime
import json
import math
import os
import subprocess
import sys
import time

from fastcnn.bench import report as rep
from fastcnn.bench.registry import BenchConfig, Skip, cases


def sm_clocks():
    """(current, max) SM clock in MHz from nvidia-smi, or (None, None)."""
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=clocks.sm,clocks.max.sm", "--format=csv,noheader,nounits",
                              "-i", os.environ.get("CUDA_VISIBLE_DEVICES", "0").split(",")[0]],
                             capture_output=True, text=True, timeout=10)
        cur, mx = out.stdout.strip().splitlines()[0].split(",")
        return int(cur), int(mx)
    except Exception:  # noqa: BLE001 - no nvidia-smi, MIG, odd output: the clock is optional
        return None, None


class ClockSampler:
    """The SM clock the kernels ran at: read while a timed loop runs (an idle GPU reports
    its idle clock), keeping the highest reading. nvidia-smi takes ~0.1 s, so reads
    are at least ``every`` seconds apart and cost a few % of a run at most."""

    def __init__(self, read=lambda: sm_clocks()[0], every=2.0):
        self.read, self.every = read, every
        self.last, self.max_mhz = -math.inf, None

    def __call__(self):
        now = time.monotonic()
        if now - self.last < self.every:
            return
        self.last = now
        mhz = self.read()
        if mhz:
            self.max_mhz = max(self.max_mhz or 0, mhz)


def environment() -> dict:
    """Versions, GPU and its max SM clock; ``sm_clock_mhz`` (the clock under load) is
    filled in by ``run`` from its ClockSampler."""
    import torch
    from fastcnn._info import environment as env
    out = env()
    out["date"] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    out["allow_tf32_cudnn"] = torch.backends.cudnn.allow_tf32
    out["allow_tf32_matmul"] = torch.backends.cuda.matmul.allow_tf32
    out["python"] = sys.version.split()[0]
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        out["sm_count"] = props.multi_processor_count
        out["gpu_memory_gib"] = round(props.total_memory / 2 ** 30, 1)
        out["capability"] = f"{props.major}.{props.minor}"
        out["sm_clock_mhz"], out["sm_clock_max_mhz"] = None, sm_clocks()[1]
    return out


class Progress:
    """A one-line progress bar on a terminal, one line per case otherwise."""

    def __init__(self, total, stream=None, width=30):
        self.total, self.done, self.width = total, 0, width
        self.stream = stream or sys.stderr
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.start = time.perf_counter()

    def update(self, label):
        self.done += 1
        filled = int(self.width * self.done / max(1, self.total))
        elapsed = time.perf_counter() - self.start
        line = (f"[{'#' * filled}{'.' * (self.width - filled)}] {self.done}/{self.total} "
                f"{elapsed:6.0f}s  {label}")
        if self.tty:
            self.stream.write("\r\033[K" + line[:160])
            if self.done == self.total:
                self.stream.write("\n")
        else:
            self.stream.write(line + "\n")
        self.stream.flush()


def run_cases(config: BenchConfig, items, timer=None, progress=None, results=None, clock=None) -> dict:
    """Time every case's contenders; a contender that fails is recorded with its error
    and the run goes on. ``timer(fn) -> [ms, ...]`` (default: CUDA events, reading
    ``clock`` while they run). Each result is appended to ``results`` (default: a new
    list) when its case starts, so a caller whose run is interrupted still holds what
    was measured."""
    if timer is None:
        from fastcnn.bench.timing import time_cuda

        def timer(fn):
            return time_cuda(fn, config.warmup_ms, config.rep_ms, while_busy=clock)
    todo = [c for c in items if not isinstance(c, Skip)]
    skipped = [dataclasses.asdict(s) for s in items if isinstance(s, Skip)]
    progress = progress or Progress(len(todo))
    results = [] if results is None else results
    for case in todo:
        timings = {}
        results.append({"suite": case.suite, "name": case.name, "group": case.group, "key": case.key(),
                        "dtype": case.dtype, "batch": case.batch, "pass": case.pass_, "flops": case.flops,
                        "bytes": case.bytes, "items": case.items, "baseline": case.baseline, "bound": case.bound,
                        "meta": case.meta, "timings": timings})
        try:
            fns = case.make()
        except Exception as e:  # noqa: BLE001 - e.g. out of memory at a large batch
            fns, timings[rep.SETUP] = {}, {"error": f"{type(e).__name__}: {e}"}
        for name, fn in fns.items():
            try:
                raw = [float(t) for t in timer(fn)]
                timings[name] = {"ms": _median(raw), "raw_ms": raw}
            except Exception as e:  # noqa: BLE001
                timings[name] = {"error": f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"}
        fns = None
        results[-1]["flops"] = case.flops  # model suites count their FLOPs in make()
        _free_memory(config)
        progress.update(f"{case.group}  {_best(results[-1])}")
    return {"schema": rep.SCHEMA, "results": results, "skipped": skipped}


def _median(values):
    import statistics
    return float(statistics.median(values))


def _best(result):
    t = result["timings"]
    base = t.get(result["baseline"], {}).get("ms")
    parts = []
    for c, v in t.items():
        if "ms" in v:
            parts.append(f"{c} {v['ms']:.3f}ms" + (f" x{base / v['ms']:.2f}" if base and c != result["baseline"]
                                                     else ""))
        else:
            parts.append(f"{c} error")
    return ", ".join(parts)


def _free_memory(config):
    if config.device != "cuda":
        return
    import gc
    import torch
    gc.collect()
    torch.cuda.empty_cache()


def run(config: BenchConfig, op_suites=None, model_suites=None, timer=None, progress=None, env=None,
        out=None) -> dict:
    """Run the op suites, then the model suites, and return the derived report.

    When the run is interrupted (Ctrl-C, or an exception that escapes a suite), what was
    measured so far is written to ``out`` (if given) as a report marked ``partial``, and
    the exception goes on."""
    if config.device == "cuda":
        import torch
        torch.backends.cudnn.benchmark = True
    items, results, clock = [], [], ClockSampler()
    try:
        if op_suites is None or op_suites:
            items += cases(config, op_suites, kind="op")
        if model_suites is None or model_suites:
            items += cases(config, model_suites, kind="model")
        report = run_cases(config, items, timer, progress, results, clock)
    except (KeyboardInterrupt, Exception) as e:
        if out is None:
            raise
        planned = sum(not isinstance(c, Skip) for c in items)
        report = {"schema": rep.SCHEMA, "results": [r for r in results if r["timings"]],
                  "skipped": [dataclasses.asdict(s) for s in items if isinstance(s, Skip)],
                  "partial": {"reason": f"{type(e).__name__}: {e}".rstrip(": "),
                              "cases_started": len(results), "cases_planned": planned}}
        paths = write_report(_finish(report, config, env, clock), out, charts=False)
        print(f"\nfastcnn bench: interrupted; the partial report is in {paths['markdown']} {paths['json']}",
              file=sys.stderr)
        raise
    return _finish(report, config, env, clock)


def _finish(report, config, env, clock):
    """The report's environment, config and notes around the results; derived."""
    report["environment"] = env if env is not None else environment()
    if clock.max_mhz is not None:
        report["environment"]["sm_clock_mhz"] = clock.max_mhz
    report["config"] = {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(config).items()}
    report["notes"] = ["Times are medians of CUDA-event timings after warm-up, with the L2 cache flushed "
                       "before every repetition; raw_ms holds every repetition.",
                       "The SM clock is the highest read while timed loops ran.",
                       "Model FLOPs are fastcnn.models.summary's: 2 x the multiply-adds of convolutions, "
                       "fully connected layers and multi-head attention (projections, q k^T, p v); "
                       "training steps count 3x the forward."]
    keys = ("schema", "partial", "environment", "config", "results", "skipped", "notes")
    report = {k: report[k] for k in keys if k in report}
    return rep.derive(rep.validate(report))


def write_report(report: dict, folder: str, charts: bool = True) -> dict:
    """report.json, report.md and the PNG charts; returns {what: path}."""
    os.makedirs(folder, exist_ok=True)
    paths = {"json": os.path.join(folder, "report.json"), "markdown": os.path.join(folder, "report.md")}
    with open(paths["json"], "w") as f:
        json.dump(report, f, indent=1)
    with open(paths["markdown"], "w") as f:
        f.write(rep.to_markdown(report))
    if charts:
        try:
            import matplotlib  # noqa: F401
        except ImportError:  # e.g. a GPU machine without a package registry
            print("fastcnn bench: matplotlib is not installed, so no charts (pip install matplotlib)")
            return paths
        from fastcnn.bench.charts import write_charts
        paths["charts"] = write_charts(report, folder)
    return paths
