"""fastcnn/ops/_dispatch.py: how algo="auto" chooses on CUDA, driven on the CPU. The
timing (CUDA events) is replaced by a table, so what is checked is the bookkeeping
around it: the fastest backend wins, the choice is cached in memory and on disk per
environment, a file another process wrote is kept, and a capture is never timed.
The real timed path runs in test_gpu.py::test_auto_picks_and_caches."""
import json
import warnings

import pytest
import torch

from fastcnn.ops import _dispatch
from fastcnn.ops._dispatch import AUTO_CACHE, OpDispatcher
from helpers import setting

ENV = "NVIDIA H200|torch x|triton y|fastcnn z"


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("FASTCNN_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv("FASTCNN_AUTOTUNE_CACHE", raising=False)
    AUTO_CACHE.clear()
    yield tmp_path
    AUTO_CACHE.clear()


@pytest.fixture
def timings(monkeypatch):
    """Milliseconds per backend; every timing is logged."""
    table, log = {"triton": 1.0, "cuda": 0.5, "cudnn": 2.0}, []

    def time_ms(fn, args):
        log.append(fn.__name__)
        return table[fn.__name__]
    monkeypatch.setattr(_dispatch, "_time_ms", time_ms)
    monkeypatch.setattr(_dispatch, "_capturing", lambda: False)
    return table, log


def _dispatcher(op="fastcnn.toy"):
    disp = OpDispatcher(op)
    for name in ("triton", "cuda", "cudnn", "reference"):
        def run(*args, name=name):
            return name
        run.__name__ = name
        disp.register(name, run)
    return disp


ARGS = (torch.empty(2, 3, 5, 7).to(memory_format=torch.channels_last), 3, "same")
TIMED = ["triton", "cuda", "cudnn"]


def _on_disk(cache_dir):
    return json.loads((cache_dir / "autotune.json").read_text())


def test_the_fastest_is_chosen_once_and_written_to_disk(cache_dir, timings):
    _, log = timings
    disp = _dispatcher()
    assert disp._fastest(TIMED, ARGS, ENV) == "cuda"
    assert sorted(log) == sorted(TIMED)
    assert disp._fastest(TIMED, ARGS, ENV) == "cuda"
    assert len(log) == 3, "a cached call is not timed again"
    key = f"fastcnn.toy|{_dispatch.signature(ARGS)}"
    assert _on_disk(cache_dir) == {ENV: {key: "cuda"}}
    # strides are part of the signature: the NCHW twin is timed on its own
    assert disp._fastest(TIMED, (ARGS[0].contiguous(), *ARGS[1:]), ENV) == "cuda"
    assert len(log) == 6


def test_a_new_process_reads_the_file_and_another_gpu_times_again(cache_dir, timings):
    table, log = timings
    _dispatcher()._fastest(TIMED, ARGS, ENV)
    AUTO_CACHE.clear()  # a new process: nothing in memory
    table["cuda"] = 9.0  # were it timed again, triton would win
    assert _dispatcher()._fastest(TIMED, ARGS, ENV) == "cuda"
    assert len(log) == 3
    other = "NVIDIA H100 80GB HBM3|torch x|triton y|fastcnn z"
    assert _dispatcher()._fastest(TIMED, ARGS, other) == "triton"
    assert set(_on_disk(cache_dir)) == {ENV, other}


def test_a_cached_backend_that_cannot_take_the_call_now_is_not_used(cache_dir, timings):
    _, log = timings
    disp = _dispatcher()
    disp._fastest(TIMED, ARGS, ENV)
    assert disp._fastest(["triton", "cudnn"], ARGS, ENV) == "triton"
    assert len(log) == 5


def test_choices_another_process_wrote_meanwhile_are_kept(cache_dir, timings):
    disp = _dispatcher()
    disp._fastest(TIMED, ARGS, ENV)  # reads the (absent) file, writes one entry
    theirs = _on_disk(cache_dir)
    theirs[ENV]["fastcnn.other|sig"] = "cudnn"
    theirs["another GPU"] = {"fastcnn.other|sig": "triton"}
    (cache_dir / "autotune.json").write_text(json.dumps(theirs))
    disp._fastest(TIMED, (torch.empty(1, 3, 5, 7), 3, "same"), ENV)
    mine = _on_disk(cache_dir)
    assert mine["another GPU"] == {"fastcnn.other|sig": "triton"}
    assert mine[ENV]["fastcnn.other|sig"] == "cudnn"
    assert len(mine[ENV]) == 3


@pytest.mark.parametrize("content", ["{not json", "[1, 2]", json.dumps({ENV: "not a table"})])
def test_a_damaged_file_is_replaced(cache_dir, timings, content):
    (cache_dir / "autotune.json").write_text(content)
    assert _dispatcher()._fastest(TIMED, ARGS, ENV) == "cuda"
    assert list(_on_disk(cache_dir)[ENV].values()) == ["cuda"]


def test_an_unwritable_cache_warns_and_keeps_the_choice_in_memory(cache_dir, timings, monkeypatch):
    _, log = timings
    (cache_dir / "sub").write_text("a file where the folder should be")
    monkeypatch.setenv("FASTCNN_CACHE_DIR", str(cache_dir / "sub"))
    disp = _dispatcher()
    with pytest.warns(UserWarning, match="cannot write the autotune cache"):
        assert disp._fastest(TIMED, ARGS, ENV) == "cuda"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # warned once, not per call
        assert disp._fastest(TIMED, (torch.empty(1, 3, 5, 7), 3, "same"), ENV) == "cuda"
        assert disp._fastest(TIMED, ARGS, ENV) == "cuda"
    assert len(log) == 6


def test_the_cache_can_stay_in_memory(cache_dir, timings, monkeypatch):
    monkeypatch.setenv("FASTCNN_AUTOTUNE_CACHE", "0")
    AUTO_CACHE.clear()
    _, log = timings
    disp = _dispatcher()
    assert disp._fastest(TIMED, ARGS, ENV) == "cuda"
    assert disp._fastest(TIMED, ARGS, ENV) == "cuda"
    assert len(log) == 3
    assert not (cache_dir / "autotune.json").exists()


def test_a_call_first_met_during_graph_capture_is_not_timed(cache_dir, timings, monkeypatch):
    _, log = timings
    monkeypatch.setattr(_dispatch, "_capturing", lambda: True)
    disp = _dispatcher()
    with pytest.warns(UserWarning, match="fastcnn.toy: algo='auto' met this call first during CUDA graph capture.*"
                                         "'cudnn'"):
        assert disp._fastest(TIMED, ARGS, ENV) == "cudnn"
    with pytest.warns(UserWarning, match="using 'cuda'"):
        assert disp._fastest(["triton", "cuda"], ARGS, ENV) == "cuda"
    assert log == [] and not (cache_dir / "autotune.json").exists()
    monkeypatch.setattr(_dispatch, "_capturing", lambda: False)
    assert disp._fastest(TIMED, ARGS, ENV) == "cuda"  # timed by the first eager call
    assert len(log) == 3
    monkeypatch.setattr(_dispatch, "_capturing", lambda: True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert disp._fastest(TIMED, ARGS, ENV) == "cuda", "a capture after warm-up uses the timed choice"


def test_cpu_calls_are_never_timed(timings):
    _, log = timings
    disp = _dispatcher()
    assert disp("auto", *ARGS) == "triton"  # the toy's backends give no reasons
    assert disp._auto(["cuda", "cudnn", "reference"], ARGS) == "reference"
    assert log == []


def test_a_backend_that_raises_while_timed_is_left_out(cache_dir, timings, monkeypatch):
    """Out of memory, a deterministic-mode refusal, a compile error: auto takes the
    fastest of the others (and says so) instead of failing the call."""
    table, _ = timings
    table["cuda"] = RuntimeError("CUDA out of memory")
    timed_ok = _dispatch._time_ms

    def time_ms(fn, args):
        t = timed_ok(fn, args)
        if isinstance(t, Exception):
            raise t
        return t
    monkeypatch.setattr(_dispatch, "_time_ms", time_ms)
    with pytest.warns(UserWarning, match=r"left out \['cuda'\].*out of memory"):
        assert _dispatcher()._fastest(TIMED, ARGS, ENV) == "triton"
    table.update(triton=RuntimeError("a"), cudnn=RuntimeError("b"))
    AUTO_CACHE.clear()
    with pytest.raises(RuntimeError), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _dispatcher()._fastest(TIMED, (ARGS[0].contiguous(), *ARGS[1:]), ENV)


def test_numerics_flags_are_part_of_the_signature():
    """A choice timed with TF32 on (or deterministic algorithms off) is not reused
    when the flag changes: the backends then compute, and run, differently."""
    cudnn = torch.backends.cudnn
    base = _dispatch.signature(ARGS)
    with setting(cudnn, allow_tf32=not cudnn.allow_tf32):
        tf32 = _dispatch.signature(ARGS)
        with setting(torch.backends.cuda.matmul, allow_tf32=not torch.backends.cuda.matmul.allow_tf32):
            matmul = _dispatch.signature(ARGS)
        with setting(cudnn, deterministic=not cudnn.deterministic):
            det = _dispatch.signature(ARGS)
    assert len({base, tf32, matmul, det}) == 4 and _dispatch.signature(ARGS) == base


def test_fallback_warnings_point_at_the_users_line():
    """A fallback warning names the line of user code that made the call (through a
    module's forward too), not fastcnn's or torch's internals, so the default filter
    shows it once per call site and a user can find it."""
    import fastcnn.nn as fnn
    from fastcnn import ops
    x, w = torch.randn(1, 2, 5, 5), torch.randn(3, 2, 3, 3)
    conv = fnn.Conv2d(2, 3, 3, algo="cudnn")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ops.conv2d(x, w, algo="cudnn")  # CPU tensors: cuDNN cannot take them
        conv(x)
    fallbacks = [c for c in caught if "cannot take this call" in str(c.message)]
    assert len(fallbacks) == 2 and all(c.filename == __file__ for c in fallbacks), \
        [(c.filename, c.lineno) for c in fallbacks]
