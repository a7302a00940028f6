"""pytest-benchmark suites: GPU only, skipped cleanly without one.

    pytest benchmarks/ --benchmark-only --benchmark-json=benchmarks/results/<name>.json
    pytest benchmarks/ --benchmark-only --benchmark-save=base        # then, later:
    pytest benchmarks/ --benchmark-only --benchmark-compare=0001 --benchmark-compare-fail=median:5%

The cases come from the suite registry of ``fastcnn bench`` (fastcnn/bench/suites.py);
each test times one contender on one case, and ``group`` (one per op and layer,
dtype, batch and pass; one per model and pass) puts a case's contenders side by side.
Timing: ``benchmark._timer`` is a CUDA-event clock, so every round pytest-benchmark
reports is GPU time between two events (warm-up rounds first), not wall clock.
``extra_info`` carries FLOPs, bytes, TFLOP/s, GB/s (images/s for models), and the
speedup over cuDNN from CUDA-event medians (L2 flushed) measured in the same process."""
import gc

import pytest
import torch



def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="benchmarks need a CUDA GPU")
    for item in items:
        item.add_marker(skip)


def pytest_benchmark_update_machine_info(config, machine_info):
    """GPU name, clocks and library versions in every saved run (the date and the
    current clock are left out: pytest-benchmark compares machine_info between runs)."""
    if not torch.cuda.is_available():
        return
    from fastcnn.bench.runner import environment
    env = environment()
    for volatile in ("date", "sm_clock_mhz"):
        env.pop(volatile, None)
    machine_info["fastcnn"] = env


@pytest.fixture(autouse=True, scope="session")
def _cudnn_benchmark():
    torch.backends.cudnn.benchmark = True


_current = {"key": None, "fns": None, "baseline_ms": None}


def _prepare(case):
    """The case's callables (built once and shared by its contenders) and the
    baseline's CUDA-event median."""
    from fastcnn.bench.timing import median, time_cuda
    if _current["key"] != case.key():
        _current.update(key=None, fns=None, baseline_ms=None)
        gc.collect()
        torch.cuda.empty_cache()
        fns = case.make()
        _current.update(key=case.key(), fns=fns, baseline_ms=median(time_cuda(fns[case.baseline])))
    return _current["fns"], _current["baseline_ms"]


@pytest.fixture
def run_case(benchmark):
    def run(case, contender, rounds=20, warmup_rounds=3):
        from fastcnn.bench.timing import cuda_event_clock, median, time_cuda
        fns, baseline_ms = _prepare(case)
        if contender not in fns:  # e.g. an SDPA backend PyTorch cannot run on these inputs
            pytest.skip(f"{contender} cannot run {case.group} here")
        fn = fns[contender]
        ms = median(time_cuda(fn))
        benchmark.group = case.group
        benchmark._timer = cuda_event_clock  # GPU time between CUDA events, not wall clock
        benchmark.pedantic(fn, rounds=rounds, warmup_rounds=warmup_rounds, iterations=1)
        info = {"suite": case.suite, "contender": contender, "dtype": case.dtype, "batch": case.batch,
                "pass": case.pass_, "cuda_event_median_ms": ms, "baseline": case.baseline,
                "baseline_ms": baseline_ms, f"speedup_vs_{case.baseline}": baseline_ms / ms}
        if "in_target" in case.meta:  # among the cases an issue's target is stated on
            info["in_target"] = case.meta["in_target"]
        if case.flops:
            info.update(flops=case.flops, tflops=case.flops / ms / 1e9)
        if case.bytes:
            info.update(bytes=case.bytes, gbps=case.bytes / ms / 1e6)
        if case.items:
            info.update(images_per_s=case.items / ms * 1e3)
        benchmark.extra_info.update(info)
        return ms
    return run
