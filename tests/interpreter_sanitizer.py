"""A memory checker for Triton kernels run by Triton's interpreter: compute-sanitizer's
memcheck and racecheck, for CI, which has no GPU.

The interpreter runs a kernel's loads and stores on host addresses and checks none of
them: a load one element past a tensor reads whatever the host heap holds there, and
two programs of one launch that write the same address run one after the other, so
the last one wins every time. On a GPU the first is an illegal access (or a silent
read of another tensor) and the second a race whose winner changes from run to run.
This module wraps the interpreter's memory operations and, per launch, checks:

* bounds: every address a load, store or atomic touches with its mask on lies inside
  the extent of one of the launch's tensor arguments (from its first to its last
  element as a view: stricter than the allocation a GPU would fault on, so a kernel
  that reads past the end of a slice into its parent is caught too);
* alignment: the address is a multiple of the element size;
* races between programs: an address written by one program (non-atomically) and
  read, written or atomically updated by another. Atomics among themselves are fine,
  and so is what one program does to its own addresses, but for:
* reads of its own writes: a program that loads an address it stored, with no
  tl.debug_barrier() since. On a GPU the store may have come from another of the
  program's threads (the two tiles need not share a layout) and need not be visible;
  the interpreter runs a program as one thread, where it always is;
* the grid: no more blocks per axis than CUDA launches (65535 on y and z);
* reruns of autotuned kernels: the autotuner times every configuration on the real
  arguments, so a launch under ``triton.autotune`` must give the same result however
  often it runs. One that reads an address before writing it, or updates it
  atomically, fails unless that argument is in the autotuner's ``reset_to_zero`` or
  ``restore_value``. Under the interpreter each kernel has one configuration and is
  run once, so only this check shows what autotuning on a GPU would do.

A violation raises ``SanitizerError`` naming the kernel, the operation, the tensor
argument and the offending offsets, when the launch (or the bad access) happens.

``install()`` patches the interpreter of Triton 3.9 (CI's); with an interpreter whose
internals differ it warns and leaves it alone. Switch it off with
FASTCNN_SANITIZE=0.
"""
import contextlib
import functools
import warnings

import numpy as np
import torch

from fastcnn.bench.compile_check import grid_limit_error


class SanitizerError(AssertionError):
    """A Triton kernel did something a GPU would not do the same way every time."""


class _Buffer:
    """The byte range a tensor argument of a launch may be accessed in."""

    def __init__(self, name, tensor):
        self.name = name
        self.itemsize = tensor.element_size()
        self.start = tensor.data_ptr()
        if tensor.numel() == 0:
            self.end = self.start  # nothing may be touched
        else:
            last = sum((n - 1) * s for n, s in zip(tensor.shape, tensor.stride()) if n > 0)
            self.end = self.start + (last + 1) * self.itemsize
        self.desc = f"{name}: {tuple(tensor.shape)} stride {tuple(tensor.stride())} {tensor.dtype}"


class _Launch:
    """What one kernel launch has done so far: its buffers and every program's accesses."""

    def __init__(self, kernel, grid, buffers, autotuner=None):
        self.kernel = kernel
        self.grid = grid
        self.buffers = buffers
        # the autotuner this launch runs under, if any: the arguments it resets or restores
        self.autotuned = autotuner is not None
        self.rerun_safe = set(autotuner.reset_to_zero) | set(autotuner.restore_value) if autotuner else set()
        # arguments may overlap (views of one tensor): check against their union
        merged = []
        for b in sorted((b for b in buffers if b.end > b.start), key=lambda b: b.start):
            if merged and b.start <= merged[-1][1]:
                merged[-1][1] = max(merged[-1][1], b.end)
            else:
                merged.append([b.start, b.end])
        self.starts = np.array([m[0] for m in merged], dtype=np.int64)
        self.ends = np.array([m[1] for m in merged], dtype=np.int64)
        self.program = 0
        self.ops = 0  # memory operations so far, in the order the interpreter ran them
        # per kind: lists of (unique addresses, program, operation number) chunks
        self.accesses = {"load": [], "store": [], "atomic": []}
        # what the running program has stored since it started or last passed a barrier
        self.stored_since_barrier = []

    def start_program(self, program):
        self.program = program
        self.stored_since_barrier = []

    def fail(self, message):
        raise SanitizerError(f"{self.kernel} (grid {self.grid}, program {self.program}): {message}")

    def check(self, kind, addresses, itemsize):
        """Bounds, alignment and read-back of the active ``addresses`` (int64 byte
        addresses) of one memory operation; recorded for check_races."""
        if addresses.size == 0:
            return
        addresses = np.unique(addresses)
        misaligned = addresses % itemsize != 0
        if misaligned.any():
            self.fail(f"{kind} of {itemsize}-byte elements at misaligned address "
                      f"{hex(int(addresses[misaligned][0]))}")
        # the buffer each address would belong to: the last one starting at or before it
        which = np.searchsorted(self.starts, addresses, side="right") - 1
        inside = (which >= 0) & (addresses + itemsize <= self.ends[np.maximum(which, 0)]) \
            if self.starts.size else np.zeros(addresses.shape, dtype=bool)
        if not inside.all():
            bad = addresses[~inside]
            self.fail(f"{kind} out of bounds: {bad.size} address(es), "
                      f"{self._locate(int(bad[0]), itemsize)}")
        if kind == "load" and self.stored_since_barrier:
            if np.isin(addresses, np.concatenate(self.stored_since_barrier)).any():
                self.fail("loads an address it stored with no tl.debug_barrier() in between: on a GPU "
                          "another thread of the program may have stored it, and its store need not be "
                          "visible yet")
        elif kind == "store":
            self.stored_since_barrier.append(addresses)
        self.ops += 1
        self.accesses[kind].append((addresses, self.program, self.ops))

    def _locate(self, address, itemsize):
        """Words for where an address lies relative to the nearest buffer."""
        nearest = min(self.buffers, key=lambda b: min(abs(address - b.start), abs(address - b.end)),
                      default=None)
        if nearest is None:
            return f"at {hex(address)}, and the launch has no tensor arguments"
        offset = (address - nearest.start) // itemsize
        extent = (nearest.end - nearest.start) // nearest.itemsize
        return (f"first at element offset {offset} of {nearest.desc} "
                f"(whose elements span offsets 0..{extent - 1})")

    def check_races(self):
        """Addresses written by one program and touched by another."""
        stores = self._gather("store")
        if stores is None:
            return
        s_addr, s_prog, first = _sort_by_address(stores[0], stores[1])
        twice = (s_addr[1:] == s_addr[:-1]) & (s_prog[1:] != s_prog[:-1])
        if twice.any():
            i = int(np.argmax(twice))
            self._race("written", int(s_addr[i]), int(s_prog[i]), int(s_prog[i + 1]))
        # each address is now written by one program: who touches it otherwise?
        s_addr, s_prog = s_addr[first], s_prog[first]
        for kind, verb in (("load", "read"), ("atomic", "atomically updated")):
            other = self._gather(kind)
            if other is None:
                continue
            o_addr, o_prog, _ = other
            at = np.searchsorted(s_addr, o_addr).clip(max=s_addr.size - 1)
            clash = (s_addr[at] == o_addr) & (s_prog[at] != o_prog)
            if clash.any():
                i = int(np.argmax(clash))
                self._race(f"written and {verb}", int(o_addr[i]), int(s_prog[at[i]]), int(o_prog[i]))

    def check_rerun(self):
        """An autotuned launch must not depend on what it wrote before: no atomic
        update and no read of an address before its first write in the launch,
        outside the arguments its autotuner resets or restores."""
        if not self.autotuned:
            return
        unsafe = [b for b in self.buffers if b.name not in self.rerun_safe and b.end > b.start]
        atomics = self._gather("atomic")
        if atomics is not None:
            self._rerun_hazard(unsafe, atomics[0], "updates atomically")
        stores, loads = self._gather("store"), self._gather("load")
        if stores is None or loads is None:
            return
        s_addr, first_store = _first_by_address(stores[0], stores[2])
        l_addr, first_load = _first_by_address(loads[0], loads[2])
        at = np.searchsorted(s_addr, l_addr).clip(max=s_addr.size - 1)
        read_first = (s_addr[at] == l_addr) & (first_load < first_store[at])
        self._rerun_hazard(unsafe, l_addr[read_first], "reads before writing")

    def _rerun_hazard(self, buffers, addresses, what):
        for b in buffers:
            if ((addresses >= b.start) & (addresses < b.end)).any():
                raise SanitizerError(
                    f"{self.kernel} (grid {self.grid}) {what} {b.desc}, and is autotuned: the autotuner runs "
                    f"each configuration on the real arguments while timing, so on a GPU the result would "
                    f"depend on how many ran. Add '{b.name}' to its reset_to_zero or restore_value.")

    def _gather(self, kind):
        """(addresses, program, operation number) of every access of ``kind``, or None."""
        chunks = self.accesses[kind]
        if not chunks:
            return None
        addr = np.concatenate([c[0] for c in chunks])
        prog = np.concatenate([np.full(c[0].size, c[1], dtype=np.int64) for c in chunks])
        return addr, prog, np.concatenate([np.full(c[0].size, c[2], dtype=np.int64) for c in chunks])

    def _race(self, what, address, p, q):
        buffer = next(b for b in self.buffers if b.start <= address < b.end)
        offset = (address - buffer.start) // buffer.itemsize
        raise SanitizerError(
            f"{self.kernel} (grid {self.grid}): race between programs {self._coords(p)} and "
            f"{self._coords(q)}: element offset {offset} of {buffer.desc} is {what} by both")

    def _coords(self, program):
        nx, ny, _ = self.grid
        return (program % nx, program // nx % ny, program // (nx * ny))


def _sort_by_address(addresses, keys):
    """(addresses, keys) sorted by address, then key, and the mask of each address's
    first entry (its smallest key)."""
    order = np.lexsort((keys, addresses))
    addresses, keys = addresses[order], keys[order]
    first = np.ones(addresses.size, dtype=bool)
    first[1:] = addresses[1:] != addresses[:-1]
    return addresses, keys, first


def _first_by_address(addresses, ops):
    """(sorted unique addresses, the first operation number touching each)."""
    addresses, ops, first = _sort_by_address(addresses, ops)
    return addresses[first], ops[first]


_launch = None  # the launch being interpreted (the interpreter runs one at a time)
_autotuner = None  # the triton.autotune wrapper whose run() is on the stack, if any
_enabled = True
_logs = []  # lists that record() hands out
installed = False  # install() has patched the interpreter


def _tensor_arguments(names, args, kwargs):
    """(name, tensor) for every tensor among a launch's host arguments."""
    def walk(name, value):
        if isinstance(value, torch.Tensor):
            yield name, value
        elif hasattr(value, "base") and isinstance(getattr(value, "base"), torch.Tensor):
            yield name, value.base  # TensorWrapper, TensorDescriptor
        elif isinstance(value, tuple):
            for i, v in enumerate(value):
                yield from walk(f"{name}[{i}]", v)

    for i, value in enumerate(args):
        yield from walk(names[i] if i < len(names) else f"argument {i}", value)
    for key, value in kwargs.items():
        yield from walk(key, value)


def _active(ptrs, mask):
    addresses = ptrs.data.astype(np.int64, copy=False)
    if mask is None:
        return addresses.ravel()
    return addresses[np.broadcast_to(mask.data, addresses.shape)]


def _itemsize(interp, ptrs):
    return np.dtype(interp._get_np_dtype(ptrs.get_element_ty())).itemsize


def install():
    """Patch Triton's interpreter (a no-op, with a warning, where it cannot)."""
    from triton.runtime import interpreter as interp
    builder_cls, executor = interp.InterpreterBuilder, interp.GridExecutor
    needed = [(builder_cls, m) for m in ("create_masked_load", "create_masked_store", "create_atomic_rmw",
                                         "create_atomic_cas", "set_grid_idx", "create_barrier")]
    needed += [(executor, "__call__"), (executor, "_init_args_hst"), (interp, "_get_np_dtype")]
    missing = [name for owner, name in needed if not hasattr(owner, name)]
    if missing:
        warnings.warn(f"interpreter sanitizer not installed: this Triton's interpreter lacks {missing}")
        return
    if getattr(executor, "_fastcnn_sanitized", False):
        return  # already installed

    def _start(executor_self, grid):
        global _launch
        _launch = _Launch(getattr(executor_self.fn, "__name__", "kernel"), grid,
                          getattr(executor_self, "_fastcnn_buffers", []), _autotuner)
        for log in _logs:
            log.append(_launch)

    def memory_op(kind, method, ptr_index, mask_index):
        @functools.wraps(method)
        def wrapper(self, *args):
            if _launch is not None:
                ptrs = args[ptr_index]
                mask = args[mask_index] if mask_index is not None else None
                _launch.check(kind, _active(ptrs, mask), _itemsize(interp, ptrs))
            return method(self, *args)
        return wrapper

    # argument positions after self, as the interpreter's builder declares them
    builder_cls.create_masked_load = memory_op("load", builder_cls.create_masked_load, 0, 1)
    builder_cls.create_masked_store = memory_op("store", builder_cls.create_masked_store, 0, 2)
    builder_cls.create_atomic_rmw = memory_op("atomic", builder_cls.create_atomic_rmw, 1, 3)
    builder_cls.create_atomic_cas = memory_op("atomic", builder_cls.create_atomic_cas, 0, None)

    set_grid_idx = builder_cls.set_grid_idx

    @functools.wraps(set_grid_idx)
    def set_grid_idx_tracked(self, x, y, z):
        set_grid_idx(self, x, y, z)
        if _launch is not None:
            nx, ny, _ = self.grid_dim
            _launch.start_program(x + nx * (y + ny * z))
    builder_cls.set_grid_idx = set_grid_idx_tracked

    create_barrier = builder_cls.create_barrier

    @functools.wraps(create_barrier)
    def barrier_tracked(self):
        if _launch is not None:
            _launch.stored_since_barrier = []
        return create_barrier(self)
    builder_cls.create_barrier = barrier_tracked

    init_args = executor._init_args_hst

    @functools.wraps(init_args)
    def init_args_recorded(self, args_dev, kwargs):
        args_hst, kwargs_hst = init_args(self, args_dev, kwargs)
        self._fastcnn_buffers = [_Buffer(n, t) for n, t in _tensor_arguments(self.arg_names, args_hst, kwargs_hst)]
        return args_hst, kwargs_hst
    executor._init_args_hst = init_args_recorded

    call = executor.__call__

    @functools.wraps(call)
    def call_checked(self, *args, **kwargs):
        global _launch
        if not _enabled or _launch is not None:  # the interpreter runs one launch at a time
            return call(self, *args, **kwargs)

        def grid_recorder(meta):
            # called by the interpreter once the arguments are on the host: the launch
            # starts here, with the buffers _init_args_hst recorded
            g = self._fastcnn_grid(meta) if callable(self._fastcnn_grid) else self._fastcnn_grid
            g = tuple(g) + (1,) * (3 - len(g))
            _start(self, g)
            if grid_limit_error(g):
                _launch.fail(grid_limit_error(g))
            return g

        self._fastcnn_grid, self.grid = self.grid, grid_recorder
        try:
            call(self, *args, **kwargs)
            if _launch is not None:
                _launch.check_races()
                _launch.check_rerun()
        finally:
            self.grid = self._fastcnn_grid
            _launch = None

    executor.__call__ = call_checked

    from triton.runtime.autotuner import Autotuner
    autotuner_run = Autotuner.run

    @functools.wraps(autotuner_run)
    def run_tracked(self, *args, **kwargs):
        global _autotuner
        saved, _autotuner = _autotuner, self
        try:
            return autotuner_run(self, *args, **kwargs)
        finally:
            _autotuner = saved
    Autotuner.run = run_tracked
    executor._fastcnn_sanitized = True
    global installed
    installed = True


@contextlib.contextmanager
def disabled():
    """Launch kernels without checks inside the block."""
    global _enabled
    saved, _enabled = _enabled, False
    try:
        yield
    finally:
        _enabled = saved


@contextlib.contextmanager
def record():
    """Collect the checked launches of the block (their ``kernel`` and ``buffers``:
    name, ``start`` and ``end`` byte addresses), e.g. to show that a kernel was handed
    a tensor as it was and not a copy."""
    log = []
    _logs.append(log)
    try:
        yield log
    finally:
        _logs.remove(log)
