"""fastcnn compile-check: every Triton kernel compiles for sm_90 (H100/H200) without
a GPU, in the configuration the GPU tests run, and fits in its shared memory.

The interpreter that runs the other tests never lowers a kernel, so a program the
GPU compiler rejects (a helper missing its @triton.jit, say) passes there; this is
where CI sees it. The check runs in a subprocess: the kernels must be imported
without TRITON_INTERPRET=1, which conftest has set for this process."""
import importlib
import json
import os
import subprocess
import sys

import pytest

from fastcnn.bench import compile_check

KERNEL_MODULES = ("attention", "batchnorm", "bias_act", "conv2d_grouped", "conv2d_igemm", "layernorm", "lrn",
                  "separable")


def _launched_kernels():
    """Names of every kernel that a launcher starts (``*_kernel`` at module level)."""
    names = set()
    for mod in KERNEL_MODULES:
        module = importlib.import_module(f"fastcnn.triton_kernels.{mod}")
        names |= {f"{mod}.{n}" for n in vars(module) if n.startswith("_") and n.endswith("_kernel")}
    return names


@pytest.fixture(scope="module")
def quick_report(tmp_path_factory):
    path = tmp_path_factory.mktemp("compile") / "report.json"
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    proc = subprocess.run([sys.executable, "-m", "fastcnn.cli", "compile-check", "--quick", "--first-config",
                           "--arch", "90", "--json", str(path)], env=env, capture_output=True, text=True,
                          timeout=1500)
    assert path.exists(), proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc, json.loads(path.read_text())


def test_every_kernel_compiles_for_sm90(quick_report):
    proc, report = quick_report
    assert report["failures"] == [], "\n".join(report["failures"][:20])
    assert proc.returncode == 0, proc.stdout[-3000:]
    compiled = {r["kernel"] for r in report["records"]}
    missing = _launched_kernels() - compiled
    assert not missing, f"kernels no compile-check workload launches: {sorted(missing)}"


def test_records_carry_the_resources(quick_report):
    _, report = quick_report
    records = [r for r in report["records"] if not r["error"]]
    assert records and report["arch"] == 90 and report["max_shared_bytes"] == 227 * 1024
    assert all(0 <= r["shared"] <= report["max_shared_bytes"] for r in records)
    if compile_check.cuobjdump() is not None:
        assert all(0 < r["registers"] <= 255 and r["stack"] >= 0 for r in records)
    # In 16-bit dtypes the tensor-core kernels lower tl.dot to Hopper's wgmma.
    for kernel in ("attention._attention_forward_kernel", "attention._attention_dkdv_kernel",
                   "separable._separable_forward_kernel", "conv2d_igemm._forward_kernel",
                   "conv2d_igemm._input_grad_kernel", "conv2d_igemm._weight_grad_kernel"):
        kinds = {r["mma"] for r in records if r["kernel"] == kernel and r["workload"].endswith("/bf16")}
        assert kinds == {"wgmma"}, (kernel, kinds)


def _rec(kernel, launch, shared, error="", workload="w"):
    return {"kernel": kernel, "workload": workload, "launch": launch, "config": "c", "shared": shared,
            "registers": 32, "stack": 0, "mma": "", "hash": "", "seconds": 0.0, "error": error}


def test_failures_logic():
    limit = 1000
    records = [_rec("a", 1, 900), _rec("a", 1, 1200),          # one config fits: fine
               _rec("b", 2, 1100), _rec("b", 2, 1300),         # none fits: a failure
               _rec("c", 3, -1, error="CompilationError: x")]  # a compile error
    fails = compile_check.failures(records, [{"workload": "w", "error": "TypeError: y"}], limit)
    assert len(fails) == 3
    assert fails[0] == "w: TypeError: y"
    assert "c [c] for w: CompilationError: x" in fails
    assert any("b for w: no configuration fits in 1000 bytes" in f and "1100" in f for f in fails)
    report = {"records": records, "max_shared_bytes": limit}
    rows = {r["kernel"]: r for r in compile_check.summary(report)}
    assert rows["a"]["over_shared"] == 1 and rows["a"]["max_shared"] == 1200
    assert rows["c"]["errors"] == 1
    assert compile_check.spilling_launches(report) == []
    records[0]["stack"] = 16  # a's only fitting configuration now spills
    records += [_rec("d", 4, 10), _rec("d", 4, 20)]
    records[-2]["stack"] = 8  # d has a spill-free configuration
    (warning,) = compile_check.spilling_launches(report)
    assert warning.startswith("a for w: 1 configuration(s)") and "16-byte stack frame" in warning



def test_grid_limits():
    assert compile_check.grid_limit_error((2**31 - 1, 65535, 65535)) == ""
    assert compile_check.grid_limit_error((7,)) == ""
    assert "axis 1 has 65536 > 65535" in compile_check.grid_limit_error((1, 65536))
    assert "axis 0 has 2147483648" in compile_check.grid_limit_error((2**31, 1, 70000))
    assert "axis 2 has 70000" in compile_check.grid_limit_error((2**31, 1, 70000))


def test_quick_check_launches_past_the_y_axis_limit(quick_report):
    # attention's (batch, head) slices outnumber a y axis' 65535 blocks here, so the
    # empty failure list above means the kernels keep them off the y axis
    _, report = quick_report
    assert any(r["workload"].startswith("attention vit_b_32_batch8192/") and not r["error"]
               for r in report["records"])
