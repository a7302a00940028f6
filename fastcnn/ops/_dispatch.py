"""Backend dispatch (DESIGN.md, "Backends and dispatch").

Each op has an ``OpDispatcher`` holding its backends in fallback order. A backend
declares, per call, the reasons it cannot take it (``not_supported_reasons``, as in
xformers); the dispatcher never runs a backend that gave a reason:

- ``algo="triton" | "cuda" | "cudnn" | "reference"``: that backend, or, when it
  cannot take the call, the next one in ``BACKENDS`` order that can (with a
  warning naming the reasons).
- ``algo="auto"``: on CPU tensors the Triton kernels under the interpreter when
  ``TRITON_INTERPRET=1``, else ``reference``. On CUDA, the fastest candidate,
  timed once per call signature (shapes, layouts, dtypes, arguments) and cached in
  memory and on disk, keyed by GPU name and library versions. A call first seen
  while a CUDA graph is being captured cannot be timed; it takes a fixed choice
  (``CAPTURE_ORDER``) and is timed on its first call outside a capture.
"""
import contextlib
import functools
import json
import os
import sys
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

import fastcnn
import fastcnn.triton_kernels
from fastcnn.triton_kernels._common import interpret_mode, interpreter_computes_bf16

BACKENDS = ("triton", "cuda", "cudnn", "reference")
ALGOS = ("auto",) + BACKENDS
# auto's choice for a call it has not timed, met during CUDA graph capture: the
# backends that launch without a search of their own first (cuDNN with benchmark
# mode off, fastcnn's CUDA kernels); Triton's autotuner would time its
# configurations, which a capture forbids as much as our own timing does.
CAPTURE_ORDER = ("cudnn", "cuda", "triton", "reference")


# Where fastcnn's and torch's frames live (and the stdlib wrappers between them), so
# a warning points at the user's line that made the call, not at this file.
_INTERNAL_DIRS = tuple(os.path.dirname(os.path.abspath(package.__file__)) + os.sep
                       for package in (fastcnn, fastcnn.triton_kernels, torch))
_INTERNAL_FILES = (contextlib.__file__, functools.__file__)


def user_stacklevel() -> int:
    """warnings.warn's stacklevel that names the first frame, from the caller of
    this function outwards, outside fastcnn, torch and contextlib/functools."""
    level, frame = 1, sys._getframe(1)
    while frame is not None and (frame.f_code.co_filename.startswith(_INTERNAL_DIRS)
                                 or frame.f_code.co_filename in _INTERNAL_FILES):
        frame, level = frame.f_back, level + 1
    return level


@dataclass(frozen=True)
class Backend:
    name: str
    run: Callable
    not_supported_reasons: Callable[..., list]


def _tensors(args):
    return [a for a in args if isinstance(a, torch.Tensor)]


def triton_reasons(*args, dtypes=(torch.float16, torch.bfloat16, torch.float32)) -> list:
    """Why the Triton kernels cannot run on these arguments (device and dtype)."""
    tensors = _tensors(args)
    reasons = []
    device = tensors[0].device
    dtype = tensors[0].dtype
    if device.type == "cpu":
        if not interpret_mode():
            reasons.append("CPU tensors (set TRITON_INTERPRET=1 to run the Triton kernels on the CPU)")
            return reasons
        dtypes = dtypes + (torch.float64,)
        if dtype == torch.bfloat16 and dtype in dtypes and not interpreter_computes_bf16():
            return reasons + ["this Triton interpreter computes bf16 wrong, on the raw bits "
                              "(triton_kernels._common.interpreter_computes_bf16)"]
    elif device.type != "cuda":
        reasons.append(f"device {device.type} is not supported by the Triton kernels")
    if dtype not in dtypes:
        reasons.append(f"dtype {dtype} is not supported by the Triton kernels here")
    return reasons


def cudnn_reasons(*args) -> list:
    """Why the ATen (cuDNN) path is not a separate backend for these arguments."""
    if _tensors(args)[0].device.type != "cuda":
        return ["cudnn runs on CUDA tensors only (CPU tensors use 'reference')"]
    if not torch.backends.cudnn.is_available():
        return ["cuDNN is not available in this PyTorch build"]
    return []


def no_reasons(*args) -> list:
    return []


_AUTOGRAD_KEYS = (torch._C.DispatchKey.AutogradFunctionality, torch._C.DispatchKey.AutogradOther,
                  torch._C.DispatchKey.AutogradNestedTensor, torch._C.DispatchKey.ADInplaceOrView)


@contextlib.contextmanager
def autograd_inside_op():
    """Autograd inside a custom op's implementation, for backends whose backward
    differentiates an ATen composite (SDPA, F.local_response_norm). torch.library
    runs an implementation with the Autograd dispatch keys excluded, where
    ``torch.enable_grad()`` alone records nothing; this lifts that exclusion."""
    exclude = torch._C._dispatch_tls_local_exclude_set()
    for key in _AUTOGRAD_KEYS:
        exclude = exclude.remove(key)
    with torch._C._ForceDispatchKeyGuard(torch._C._dispatch_tls_local_include_set(), exclude), torch.enable_grad():
        yield


def signature(args) -> str:
    """The part of a call that decides which backend is fastest: its tensors' dtypes,
    shapes and strides, its other arguments, and the flags that change what a backend
    computes (TF32 for matmuls and cuDNN, deterministic algorithms)."""
    parts = [f"tf32={int(torch.backends.cuda.matmul.allow_tf32)}{int(torch.backends.cudnn.allow_tf32)}"
             f" det={int(torch.are_deterministic_algorithms_enabled())}{int(torch.backends.cudnn.deterministic)}"]
    for a in args:
        if isinstance(a, torch.Tensor):
            parts.append(f"{a.dtype}{list(a.shape)}{list(a.stride())}")
        else:
            parts.append(repr(a))
    return "|".join(parts)


class _AutoCache:
    """The auto choice per (op, signature), in memory and in a JSON file per
    (GPU, library versions). Set FASTCNN_AUTOTUNE_CACHE=0 to keep it in memory only."""

    def __init__(self):
        self._lock = threading.Lock()
        self._choices = {}   # environment key -> {call key -> backend}
        self._path = None
        self._read = False

    @staticmethod
    @functools.cache  # asked on every auto call: built once per device
    def env_key(device_index: int) -> str:
        import triton
        import fastcnn
        return (f"{torch.cuda.get_device_name(device_index)}|torch {torch.__version__}|"
                f"triton {triton.__version__}|fastcnn {fastcnn.__version__}")

    def _load(self):
        if self._read:
            return
        self._read = True
        if os.environ.get("FASTCNN_AUTOTUNE_CACHE", "1") == "0":
            return
        root = Path(os.environ.get("FASTCNN_CACHE_DIR", Path.home() / ".cache" / "fastcnn"))
        self._path = root / "autotune.json"
        try:
            on_disk = json.loads(self._path.read_text())
        except (OSError, ValueError):
            return
        if isinstance(on_disk, dict):
            self._choices = {env: dict(c) for env, c in on_disk.items() if isinstance(c, dict)}

    def get(self, env, key):
        with self._lock:
            self._load()
            return self._choices.get(env, {}).get(key)

    def put(self, env, key, name):
        with self._lock:
            self._load()
            self._choices.setdefault(env, {})[key] = name
            if self._path is None:
                return
            try:
                self._path.parent.mkdir(parents=True, exist_ok=True)
                try:
                    everything = json.loads(self._path.read_text())  # other processes' choices too
                except (OSError, ValueError):
                    everything = {}
                if not isinstance(everything, dict):
                    everything = {}
                theirs = everything.get(env)
                everything[env] = {**(theirs if isinstance(theirs, dict) else {}), **self._choices[env]}
                tmp = self._path.with_suffix(f".tmp{os.getpid()}")
                tmp.write_text(json.dumps(everything, indent=1, sort_keys=True))
                os.replace(tmp, self._path)
            except OSError as e:  # a read-only home must not break a training run
                warnings.warn(f"fastcnn: cannot write the autotune cache {self._path}: {e}")
                self._path = None

    def clear(self):
        """Forget the choices in memory; the next call reads the file (and the
        FASTCNN_CACHE_DIR / FASTCNN_AUTOTUNE_CACHE settings) again."""
        with self._lock:
            self._choices, self._path, self._read = {}, None, False


AUTO_CACHE = _AutoCache()


def _time_ms(fn, args, reps=3):
    fn(*args)  # warm-up: compilation, autotuning, cuDNN's own search
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    times = []
    for _ in range(reps):
        start.record()
        fn(*args)
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return sorted(times)[len(times) // 2]


def _capturing() -> bool:
    return torch.cuda.is_current_stream_capturing()


class OpDispatcher:
    def __init__(self, op: str):
        self.op = op
        self.backends: dict[str, Backend] = {}

    def register(self, name, run, not_supported_reasons=no_reasons):
        assert name in BACKENDS, name
        self.backends[name] = Backend(name, run, not_supported_reasons)
        return run

    def reasons(self, name, args) -> list:
        backend = self.backends.get(name)
        if backend is None:
            return [f"{self.op} has no {name} backend"]
        return backend.not_supported_reasons(*args)

    def supported(self, args) -> list:
        return [n for n in BACKENDS if n in self.backends and not self.reasons(n, args)]

    def choose(self, algo, args) -> str:
        if algo not in ALGOS:
            raise ValueError(f"{self.op}: argument 'algo' must be one of {ALGOS}, got {algo!r}")
        candidates = self.supported(args)
        if algo == "auto":
            return self._auto(candidates, args)
        if algo in candidates:
            return algo
        fallback = next(n for n in BACKENDS[BACKENDS.index(algo):] + ("reference",) if n in candidates)
        reasons = "; ".join(self.reasons(algo, args))
        # Python's default warning filter shows each message once per call site.
        warnings.warn(f"{self.op}: algo={algo!r} cannot take this call ({reasons}); using {fallback!r}",
                      stacklevel=user_stacklevel())
        return fallback

    def _auto(self, candidates, args):
        device = _tensors(args)[0].device
        if device.type != "cuda":
            return "triton" if "triton" in candidates else "reference"
        timed = [n for n in candidates if n != "reference"] or candidates
        if len(timed) == 1:
            return timed[0]
        return self._fastest(timed, args, AUTO_CACHE.env_key(device.index))

    def _fastest(self, timed, args, env):
        """The fastest backend of ``timed`` for this call: cached, or timed now and cached."""
        key = f"{self.op}|{signature(args)}"
        choice = AUTO_CACHE.get(env, key)
        if choice in timed:
            return choice
        if _capturing():
            # Timing would synchronize an event (which invalidates the capture) and
            # record every candidate into the graph. Not cached: the first eager call
            # of this signature times it.
            choice = next(n for n in CAPTURE_ORDER if n in timed)
            warnings.warn(f"{self.op}: algo='auto' met this call first during CUDA graph capture, where it "
                          f"cannot time the backends; using {choice!r} (run the call once before capturing)",
                          stacklevel=user_stacklevel())
            return choice
        times, failed = {}, {}
        for n in timed:
            try:
                times[n] = _time_ms(self.backends[n].run, args)
            except Exception as e:  # noqa: BLE001 - out of memory, a deterministic-mode refusal, a compile error
                failed[n] = e
        if not times:
            raise next(iter(failed.values()))
        if failed:
            warnings.warn(f"{self.op}: algo='auto' left out {sorted(failed)} for this call, which raised while "
                          f"timed: " + "; ".join(f"{n}: {type(e).__name__}: {e}" for n, e in failed.items()),
                          stacklevel=user_stacklevel())
        choice = min(times, key=times.get)
        AUTO_CACHE.put(env, key, choice)
        return choice

    def __call__(self, algo, *args):
        tensors = _tensors(args)
        if not (tensors and tensors[0].is_cuda):
            return self.backends[self.choose(algo, args)].run(*args)
        # Triton launches on the current device, whatever device its tensors are on;
        # make theirs current (auto's timing and its cache key use it too).
        with torch.cuda.device(tensors[0].device):
            name = self.choose(algo, args)
            if not _nvtx_available():
                return self.backends[name].run(*args)
            # An NVTX range per call (op, backend that runs, shapes) for Nsight; CPU calls skip it.
            with torch.cuda.nvtx.range(nvtx_label(self.op, name, args)):
                return self.backends[name].run(*args)


_NVTX = None


def _nvtx_available() -> bool:
    """Whether this torch build has NVTX (checked once; a build without it raises)."""
    global _NVTX
    if _NVTX is None:
        try:
            torch.cuda.nvtx.range_push("fastcnn")
            torch.cuda.nvtx.range_pop()
            _NVTX = True
        except Exception:  # noqa: BLE001 - no NVTX: no ranges, nothing else changes
            _NVTX = False
    return _NVTX


def nvtx_label(op, backend, args) -> str:
    """'fastcnn.conv2d[triton] (32, 64, 56, 56) (64, 64, 3, 3)': the op, the backend
    that runs and the shapes of its tensor arguments."""
    shapes = " ".join(str(tuple(a.shape)) for a in args if isinstance(a, torch.Tensor))
    return f"{op}[{backend}] {shapes}"
