"""GPU timing by CUDA events (DESIGN.md, "Benchmarks").

``time_cuda(fn)``: warm-up first (Triton compilation, autotuning, cuDNN's algorithm
search, the auto dispatcher's choice), then each repetition is bracketed by a pair of
CUDA events recorded on the current stream, with the L2 cache flushed between
repetitions so that no contender profits from the previous call's data. Returns every
per-repetition time in ms; the report keeps them all and uses the median.

``cuda_event_clock``: a clock for pytest-benchmark (``benchmark._timer``) that reads
GPU time: each reading records an event on the current stream, waits for it and
returns the seconds elapsed since a reference event. The difference of two readings
around a call is therefore the GPU time between the two events, not wall clock."""
import statistics

_FLUSH_BYTES = 256 * 1024 * 1024  # larger than any current L2 (H100: 50 MB)
_flush_buffer = None


def _flush_l2():
    import torch
    global _flush_buffer
    if _flush_buffer is None:
        _flush_buffer = torch.empty(_FLUSH_BYTES // 4, dtype=torch.int32, device="cuda")
    _flush_buffer.zero_()


def time_cuda(fn, warmup_ms: float = 25.0, rep_ms: float = 100.0, min_reps: int = 5, max_reps: int = 1000,
              flush_l2: bool = True) -> list:
    """Per-repetition GPU times (ms) of ``fn()``, measured with CUDA events."""
    import torch
    fn()  # first call: compilation, autotuning, algorithm search
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(3):
        fn()
    end.record()
    end.synchronize()
    estimate = max(start.elapsed_time(end) / 3, 1e-3)
    for _ in range(int(warmup_ms / estimate)):
        fn()
    reps = max(min_reps, min(max_reps, int(rep_ms / estimate)))
    starts = [torch.cuda.Event(enable_timing=True) for _ in range(reps)]
    ends = [torch.cuda.Event(enable_timing=True) for _ in range(reps)]
    for i in range(reps):
        if flush_l2:
            _flush_l2()
        starts[i].record()
        fn()
        ends[i].record()
    torch.cuda.synchronize()
    return [s.elapsed_time(e) for s, e in zip(starts, ends)]


def median(values) -> float:
    return float(statistics.median(values))


_reference = None


def cuda_event_clock() -> float:
    """Seconds of GPU time since a reference event (see the module docstring)."""
    import torch
    global _reference
    if _reference is None:
        _reference = torch.cuda.Event(enable_timing=True)
        _reference.record()
    event = torch.cuda.Event(enable_timing=True)
    event.record()
    event.synchronize()
    return _reference.elapsed_time(event) / 1e3
