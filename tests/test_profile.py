"""``fastcnn profile``'s pure-Python parts on synthetic ncu output (FLOP counting,
the op-level rate, metric selection, argument errors), and scripts/gpu_session.sh's
plan (--dry-run) and stage bookkeeping. No GPU, no Nsight."""
import csv
import io
import json
import os
import subprocess

import pytest

from fastcnn.bench import profile as prof
from fastcnn.bench.registry import Case
from fastcnn.cli import main

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "scripts", "gpu_session.sh")
HEADER = ["ID", "Kernel Name", "Metric Name", "Metric Unit", "Metric Value"]


def ncu_csv(launches):
    """``ncu --csv --page details`` text for [(kernel, {metric: (unit, value)})], one ID per launch."""
    out = io.StringIO()
    out.write("==PROF== Connected to process 1 (synthetic)\n")
    w = csv.writer(out, quoting=csv.QUOTE_ALL, lineterminator="\n")
    w.writerow(HEADER)
    for i, (kernel, metrics) in enumerate(launches):
        for metric, (unit, value) in metrics.items():
            w.writerow([i, kernel, metric, unit, value])
    return out.getvalue()


M, N, K = 4096, 256, 2304  # a ResNet-50 layer3 3x3 conv as a GEMM, batch 32
GEMM_FLOPS = 2 * M * N * K


def igemm_launch(us, mma="gmma"):
    return ("_conv2d_igemm_fwd_kernel", {
        "gpu__time_duration.sum": ("usecond", us),
        "sm__ops_path_tensor_src_bf16_dst_fp32.sum": ("op", f"{GEMM_FLOPS:,}"),
        "smsp__sass_thread_inst_executed_op_ffma_pred_on.sum": ("inst", "0"),
        "smsp__sass_thread_inst_executed_op_fmul_pred_on.sum": ("inst", f"{M * N:,}"),  # the epilogue's scale
        prof.MMA_INSTRUCTIONS[mma]: ("inst", "1,152"),
    })


def test_tensor_core_flops_are_counted():
    kernels = prof.parse_ncu_csv(ncu_csv([igemm_launch(10.0), igemm_launch(10.0)]))
    k = kernels["_conv2d_igemm_fwd_kernel"]
    assert k["launches"] == 2 and k["time_us"] == pytest.approx(20.0)
    assert k["flops"]["tensor"] == pytest.approx(2 * GEMM_FLOPS)
    assert k["fp32_gflops"] == pytest.approx(2 * M * N / 20e3)  # the FP32 part alone: tiny
    assert k["tflops"] == pytest.approx((2 * GEMM_FLOPS + 2 * M * N) / 20e-6 / 1e12)
    assert k["tflops"] > 400 and k["mma"] == "gmma"
    row = prof.format_kernels(kernels, "ncu").splitlines()[2]
    assert row.split()[-3:] == [f"{k['tflops']:.2f}", "100", "gmma"]  # TFLOP/s, tensor %, MMA


def test_pre_hopper_mma_and_no_mma_are_named():
    hmma = prof.parse_ncu_csv(ncu_csv([igemm_launch(10.0, mma="hmma")]))
    assert hmma["_conv2d_igemm_fwd_kernel"]["mma"] == "hmma"
    scalar = prof.parse_ncu_csv(ncu_csv([("_bn_act_fwd_kernel", {"gpu__time_duration.sum": ("usecond", 5)})]))
    assert scalar["_bn_act_fwd_kernel"]["mma"] is None and scalar["_bn_act_fwd_kernel"]["tflops"] == 0


def test_half_and_double_scalar_flops_and_scaled_units():
    launch = {"gpu__time_duration.sum": ("msecond", "1"),
              "smsp__sass_thread_inst_executed_op_hfma_pred_on.sum": ("Minst", "2"),  # HFMA2: 2 lanes x 2
              "smsp__sass_thread_inst_executed_op_hadd_pred_on.sum": ("inst", "1,000"),
              "smsp__sass_thread_inst_executed_op_dfma_pred_on.sum": ("Kinst", "3"),
              "smsp__sass_thread_inst_executed_op_dmul_pred_on.sum": ("inst", "7"),
              "sm__ops_path_tensor_src_tf32_dst_fp32.sum": ("Gop", "1.5")}
    (k,) = prof.parse_ncu_csv(ncu_csv([("k", launch)])).values()
    assert k["time_us"] == pytest.approx(1000.0)
    assert k["flops"] == pytest.approx({"fp16": 4 * 2e6 + 2 * 1000, "fp64": 2 * 3e3 + 7, "fp32": 0,
                                        "tensor": 1.5e9})


def test_op_rate_is_left_out_when_kernels_filters_the_profile():
    # The case has a GEMM and an epilogue kernel; --kernels igemm profiles the GEMM alone.
    gemm = prof.parse_ncu_csv(ncu_csv([igemm_launch(30.0)]))
    both = prof.parse_ncu_csv(ncu_csv([igemm_launch(30.0), ("_bias_act_kernel", {
        "gpu__time_duration.sum": ("usecond", 10.0)})]))
    op_flops = float(GEMM_FLOPS)
    full = prof.format_kernels(both, "ncu", op_flops)
    assert f"achieved: {op_flops / 40e-6 / 1e12:.1f} TFLOP/s" in full  # over every kernel's time
    partial = prof.format_kernels(gemm, "ncu", op_flops, every_kernel=False)
    assert f"{op_flops / 30e-6 / 1e12:.1f} TFLOP/s (" not in partial  # the old, overstated figure
    assert "not shown: --kernels" in partial
    assert "counted:" in partial  # what the counters saw is still a rate over the kernels profiled


def test_optional_metrics_follow_ncu_query():
    query = ("Device NVIDIA H200 (GH100)\n---\nMetric Name   Metric Type  Metric Unit  Metric Description\n"
             "sm__ops_path_tensor_src_bf16_dst_fp32   Counter  # of math ops ...\n"
             "sm__inst_executed_pipe_tensor_op_gmma   Counter  inst  # of warp instructions ...\n")
    kept = prof.available_metrics(query)
    assert set(prof.CORE_METRICS) <= set(kept)
    assert "sm__ops_path_tensor_src_bf16_dst_fp32.sum" in kept
    assert prof.MMA_INSTRUCTIONS["gmma"] in kept and prof.MMA_INSTRUCTIONS["hmma"] not in kept
    assert prof.available_metrics("") == prof.CORE_METRICS  # a failed query: the old, safe list


def test_ncu_command_leaves_clocks_alone():
    (run, _), _ = prof.tool_commands("ncu", "/x/ncu", "spec.json", "out/p", metrics=["a.sum", "b.sum"])
    assert run[run.index("--clock-control") + 1] == "none"
    assert run[run.index("--metrics") + 1] == "a.sum,b.sum"


def fake_case(group):
    return Case(suite="conv2d", name=group, group=group, flops=1.0,
                make=lambda: {"cudnn": lambda: None, "triton": lambda: None, "auto": lambda: None})


def test_unknown_backend_names_the_argument_and_the_choices():
    case = fake_case("conv2d/x/bf16/b32/fwd")
    with pytest.raises(prof.ProfileError, match=r"--backend 'trition' .*choose one of: auto, cudnn, triton"):
        prof.contender(case, case.make(), "trition")


def test_workload_with_unknown_backend_exits_cleanly(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(prof, "workload_cases", lambda spec: [fake_case("conv2d/x/bf16/b32/fwd")])
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"backend": "cuda", "result": str(tmp_path / "cases.json")}))
    assert prof._main(["--workload", str(spec)]) == 2
    assert "--backend 'cuda' is not a contender of conv2d/x/bf16/b32/fwd" in capsys.readouterr().err


def test_case_filter_that_matches_nothing_lists_the_cases():
    items = [fake_case("conv2d/a/bf16/b32/fwd"), fake_case("conv2d/b/bf16/b32/fwd")]
    assert [c.group for c in prof.select_cases(items, "b/bf16", count=5)] == ["conv2d/b/bf16/b32/fwd"]
    with pytest.raises(prof.ProfileError, match=r"--case 'zzz' matches none of the 2 cases") as e:
        prof.select_cases(items, "zzz", what="--op conv2d")
    assert "conv2d/a/bf16/b32/fwd\n  conv2d/b/bf16/b32/fwd" in str(e.value)


def test_profile_command_rejects_bad_selections_before_needing_a_gpu(capsys):
    assert main(["profile", "--op", "conv2d", "--case", "no-such-layer"]) == 2
    err = capsys.readouterr().err
    assert "--case 'no-such-layer' matches none" in err and "conv2d/resnet50.layer3.0.conv2/bf16/b32/fwd" in err
    assert main(["profile", "--op", "no_such_suite"]) == 2
    assert "unknown suite 'no_such_suite'" in capsys.readouterr().err
    # which case has a backend is known only once its tensors exist (under the
    # profiler); one that no suite has fails here
    assert main(["profile", "--op", "conv2d", "--backend", "trition"]) == 2
    assert ("--backend 'trition' is not a contender of any suite; choose one of: auto, compile, cuda, cudnn, triton"
            in capsys.readouterr().err)


# --- scripts/gpu_session.sh ---------------------------------------------------------------

def session(*args, env=None, timeout=120):
    return subprocess.run(["bash", SCRIPT, *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})}, cwd=ROOT)


def plan_of(stage):
    """{stage name: (budget s, command)} from --dry-run."""
    proc = session("--dry-run", stage)
    assert proc.returncode == 0, proc.stderr
    rows = {}
    for line in proc.stdout.splitlines()[1:]:
        name, budget, _s, command = line.split(None, 3)
        rows[name] = (int(budget), command)
    return rows


@pytest.mark.parametrize("stage", ["all", "tests", "bench", "bench2"])
def test_every_stage_set_fits_one_device_call(stage):
    rows = plan_of(stage)
    assert rows and sum(b for b, _ in rows.values()) <= 580
    assert list(rows)[:2] == ["env", "install"]


def test_all_runs_the_benchmarks_and_the_profiler_and_a_bounded_quick_bench():
    rows = plan_of("all")
    assert {"tests-gpu", "tests-rest", "memcheck-ext", "racecheck-ext", "bench-quick", "benchmarks",
            "profile-conv2d", "profile-attention"} <= set(rows)
    quick = rows["bench-quick"][1]
    assert "FASTCNN_AUTOTUNE=0" in quick and "--quick" in quick  # no autotuning in 60 s
    assert "pytest" in rows["benchmarks"][1] and "--benchmark-json=" in rows["benchmarks"][1]
    assert "profile --op conv2d" in rows["profile-conv2d"][1] and "--tool ncu" in rows["profile-conv2d"][1]


def test_bench_runs_the_model_zoo():
    models = plan_of("bench")["bench-models"][1]
    assert "--models" not in models.split()  # alone it would mean "no models"


def test_bad_arguments_and_only(tmp_path):
    assert session("--bogus").returncode == 2
    proc = session("--dry-run", "all", "--only", "install,profile-*")
    assert [line.split()[0] for line in proc.stdout.splitlines()[1:]] == ["install", "profile-conv2d",
                                                                           "profile-attention"]


def test_stages_record_their_status_and_skip_when_time_is_up(tmp_path):
    out = tmp_path / "out"
    proc = session("all", "--only", "env,install", env={"OUT": str(out), "GPU_SESSION_SECONDS": "3"})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = [line.split("\t") for line in (out / "stages.tsv").read_text().splitlines()]
    assert rows[0] == ["stage", "rc", "seconds", "budget"]
    assert [r[:2] for r in rows[1:]] == [["env", "skipped"], ["install", "skipped"]]  # nothing ran
    assert "no time left" in (out / "summary.txt").read_text()
    assert (out / "results.tar.gz").exists()


def test_a_stage_that_runs_leaves_its_log_and_the_environment(tmp_path):
    out = tmp_path / "out"
    proc = session("all", "--only", "env", env={"OUT": str(out)})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (row,) = (out / "stages.tsv").read_text().splitlines()[1:]
    name, rc, seconds, budget = row.split("\t")
    assert name == "env" and rc.isdigit() and int(seconds) <= int(budget) == 10
    assert (out / "env.txt").read_text().startswith("date ")  # every result carries its date
    assert "./env.log" in subprocess.run(["tar", "tzf", str(out / "results.tar.gz")], capture_output=True,
                                         text=True).stdout
