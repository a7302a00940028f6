"""The interpreter's memory checker (interpreter_sanitizer.py, installed by conftest
without a GPU) and the NaN fill of uninitialized memory: each catches what it is
for, and lets correct launches through."""

import pytest
import torch
import triton
import triton.language as tl

import interpreter_sanitizer

pytestmark = pytest.mark.skipif(
    not interpreter_sanitizer.installed,
    reason="checks the CPU interpreter's sanitizer, which conftest installs without a GPU")


@triton.jit
def _copy_kernel(
    x_ptr,  # (n,) any stride
    y_ptr,  # (n,) contiguous
    n, sx,
    SHIFT: tl.constexpr, BLOCK: tl.constexpr,
):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    tl.store(y_ptr + offs, tl.load(x_ptr + (offs + SHIFT) * sx, mask=mask), mask=mask)


@triton.jit
def _every_program_writes_block0_kernel(
    x_ptr,  # (n,)
    y_ptr,  # (n,)
    n, BLOCK: tl.constexpr,
):
    offs = tl.arange(0, BLOCK)
    tl.store(y_ptr + offs, tl.load(x_ptr + offs, mask=offs < n), mask=offs < n)


@triton.jit
def _reads_neighbour_kernel(
    y_ptr,  # (n,) written by each program, then read by its right-hand neighbour
    n, BLOCK: tl.constexpr,
):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    tl.store(y_ptr + offs, offs.to(tl.float32), mask=offs < n)
    left = offs - BLOCK
    tl.load(y_ptr + left, mask=(left >= 0) & (left < n))


@triton.jit
def _sum_atomic_kernel(
    x_ptr,    # (n,)
    out_ptr,  # (1,) accumulated by every program
    n, BLOCK: tl.constexpr,
):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    tl.atomic_add(out_ptr, tl.sum(tl.load(x_ptr + offs, mask=offs < n, other=0.0)))


@triton.jit
def _store_then_reload_kernel(
    y_ptr,    # (BLOCK,) written, then read back reversed (another thread's element on a GPU)
    out_ptr,  # (BLOCK,)
    BARRIER: tl.constexpr, BLOCK: tl.constexpr,
):
    offs = tl.arange(0, BLOCK)
    tl.store(y_ptr + offs, offs.to(tl.float32))
    if BARRIER:
        tl.debug_barrier()
    tl.store(out_ptr + offs, tl.load(y_ptr + (BLOCK - 1 - offs)))


@triton.jit
def _add_one_in_place_kernel(
    x_ptr,  # (n,) read, then written: x += 1
    n, BLOCK: tl.constexpr,
):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    tl.store(x_ptr + offs, tl.load(x_ptr + offs, mask=offs < n) + 1.0, mask=offs < n)


@triton.jit
def _scratch_kernel(
    tmp_ptr,  # (n,) written, then read back by the same program: rerun-safe
    out_ptr,  # (n,)
    n, BLOCK: tl.constexpr,
):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    tl.store(tmp_ptr + offs, offs.to(tl.float32), mask=offs < n)
    tl.debug_barrier()
    tl.store(out_ptr + offs, tl.load(tmp_ptr + offs, mask=offs < n) * 2.0, mask=offs < n)


def _autotuned(kernel, **kwargs):
    return triton.autotune(configs=[triton.Config({"BLOCK": 4})], key=["n"], **kwargs)(kernel)


_add_one_autotuned = _autotuned(_add_one_in_place_kernel)
_add_one_restored = _autotuned(_add_one_in_place_kernel, restore_value=["x_ptr"])
_sum_atomic_autotuned = _autotuned(_sum_atomic_kernel)
_sum_atomic_reset = _autotuned(_sum_atomic_kernel, reset_to_zero=["out_ptr"])
_scratch_autotuned = _autotuned(_scratch_kernel)


def test_autotuned_kernels_must_give_the_same_result_when_rerun():
    """The autotuner times each configuration on the real arguments, so on a GPU an
    in-place or atomic update would be applied once per configuration tried."""
    grid = lambda meta: (triton.cdiv(13, meta["BLOCK"]),)  # noqa: E731
    x = torch.randn(13)
    _add_one_in_place_kernel[(4,)](x, 13, BLOCK=4)  # not autotuned: runs once, fine
    with pytest.raises(interpreter_sanitizer.SanitizerError, match=r"reads before writing x_ptr.*restore_value"):
        _add_one_autotuned[grid](x, 13)
    _add_one_restored[grid](x, 13)
    out = torch.zeros(1)
    with pytest.raises(interpreter_sanitizer.SanitizerError, match="updates atomically out_ptr.*reset_to_zero"):
        _sum_atomic_autotuned[grid](x, out, 13)
    _sum_atomic_reset[grid](x, out.zero_(), 13)
    torch.testing.assert_close(out[0], x.sum())
    y = torch.empty(13)
    _scratch_autotuned[grid](torch.empty(13), y, 13)  # writes before it reads: rerun-safe
    assert torch.equal(y, torch.arange(13.0) * 2)


def _copy(x, y, shift=0, block=4):
    _copy_kernel[(triton.cdiv(y.numel(), block),)](x, y, y.numel(), x.stride(0), SHIFT=shift, BLOCK=block)


def test_correct_launches_pass():
    x = torch.randn(13)
    y = torch.empty(13)
    _copy(x, y)
    assert torch.equal(y, x)
    base = torch.randn(40)
    _copy(base[3:29:2], y)  # a strided view, read within its extent
    assert torch.equal(y, base[3:29:2])
    out = torch.zeros(1)
    _sum_atomic_kernel[(4,)](x, out, 13, BLOCK=4)  # atomics from every program: no race
    torch.testing.assert_close(out[0], x.sum())


def test_overlapping_arguments_are_one_buffer():
    # a launcher may pass a view of another argument as an unused pointer
    y = torch.empty(3, 5)
    _copy(torch.randn(15), y.view(-1))
    _copy_kernel[(4,)](torch.randn(15), y.view(-1), 15, 1, SHIFT=0, BLOCK=4)


@pytest.mark.parametrize("shift", [1, -1])
def test_out_of_bounds_load_is_caught(shift):
    with pytest.raises(Exception, match=r"load out of bounds: 1 address.*x_ptr: \(13,\)"):
        _copy(torch.randn(13), torch.empty(13), shift=shift)


def test_read_past_a_slice_is_caught():
    # the parent's memory is there (no GPU fault), but it is not the argument's
    base = torch.randn(20)
    with pytest.raises(Exception, match="load out of bounds"):
        _copy(base[:10], torch.empty(10), shift=1)


def test_store_into_an_empty_tensor_is_caught():
    with pytest.raises(Exception, match="store out of bounds"):
        _copy_kernel[(1,)](torch.randn(4), torch.empty(0), 4, 1, SHIFT=0, BLOCK=4)


def test_write_write_race_is_caught():
    with pytest.raises(interpreter_sanitizer.SanitizerError,
                       match=r"race between programs \(0, 0, 0\) and \(1, 0, 0\).*written by both"):
        _every_program_writes_block0_kernel[(2,)](torch.randn(8), torch.empty(8), 8, BLOCK=8)


def test_write_read_race_is_caught():
    with pytest.raises(interpreter_sanitizer.SanitizerError, match="written and read"):
        _reads_neighbour_kernel[(3,)](torch.empty(12), 12, BLOCK=4)


def test_reading_back_own_stores_needs_a_barrier():
    y, out = torch.empty(8), torch.empty(8)
    with pytest.raises(Exception, match="no tl.debug_barrier"):
        _store_then_reload_kernel[(1,)](y, out, BARRIER=False, BLOCK=8)
    _store_then_reload_kernel[(1,)](y, out, BARRIER=True, BLOCK=8)
    assert torch.equal(out, torch.arange(7, -1, -1, dtype=torch.float32))


def test_grid_past_cudas_limits_is_caught():
    with pytest.raises(interpreter_sanitizer.SanitizerError, match="axis 1 has 65536 > 65535"):
        _copy_kernel[(1, 65536)](torch.randn(4), torch.empty(4), 4, 1, SHIFT=0, BLOCK=4)


def test_disabled_lets_everything_through():
    with interpreter_sanitizer.disabled():
        _every_program_writes_block0_kernel[(2,)](torch.randn(8), torch.empty(8), 8, BLOCK=8)


def test_uninitialized_memory_is_nan():
    # conftest's fill: a kernel that skips part of an empty() output leaves NaN there
    y = torch.empty(13)
    _copy_kernel[(3,)](torch.randn(13), y, 12, 1, SHIFT=0, BLOCK=4)
    assert torch.isnan(y[12]) and not torch.isnan(y[:12]).any()
    assert torch.empty(2, dtype=torch.int32).eq(torch.iinfo(torch.int32).max).all()
