"""GPU timing by CUDA events (DESIGN.md, "Benchmarks").

``time_cuda(fn)``: warm-up first (Triton compilation, autotuning, cuDNN's algorithm
search, the auto dispatcher's choice), then each repetition is bracketed by a pair of
CUDA events recorded on the current stream, with the L2 cache flushed between
repetitions so that no contender profits from the previous call's data. Returns every
per-repetition time in ms; the report keeps them all and uses the median.

``cuda_event_clock``: a clock for pytest-benchmark (``benchmark._timer``) that reads
GPU time: each reading records an event on the current stream, waits for it and adds
the time since the previous reading's event to a running total. The difference of two
readings around a call is therefore the GPU time between the two events, not wall
clock. ``elapsed_time`` is a float32 of milliseconds, so it is only ever asked for one
short delta at a time: measured from a single reference event, readings an hour in
would come in steps of 0.25 ms, longer than a whole small kernel."""
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
              flush_l2: bool = True, while_busy=None) -> list:
    """Per-repetition GPU times (ms) of ``fn()``, measured with CUDA events.

    ``while_busy()``, if given, is called once the timed repetitions are queued and
    before waiting for them: the GPU is running ``fn`` then (the runner reads the SM
    clock there, since an idle GPU reports its idle clock)."""
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
    if while_busy is not None:
        while_busy()
    torch.cuda.synchronize()
    return [s.elapsed_time(e) for s, e in zip(starts, ends)]


def median(values) -> float:
    return float(statistics.median(values))


_last_event = None
_total_s = 0.0


def cuda_event_clock() -> float:
    """Seconds of GPU time since the first reading (see the module docstring)."""
    import torch
    global _last_event, _total_s
    event = torch.cuda.Event(enable_timing=True)
    event.record()
    event.synchronize()
    if _last_event is not None:
        _total_s += _last_event.elapsed_time(event) / 1e3  # a short float32 delta into a Python float
    _last_event = event
    return _total_s
