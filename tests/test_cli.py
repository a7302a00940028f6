"""The fastcnn command: info, and bench's no-GPU path (a CPU check through the
Triton interpreter, exit 0, no timings)."""
import os
import subprocess
import sys

import pytest
import torch

from fastcnn.cli import main


def test_info_lists_every_backend(capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    for backend in ("triton", "cuda", "cudnn", "reference"):
        assert f"  {backend} " in out
    if not torch.cuda.is_available():
        assert "cudnn      unavailable: no CUDA GPU" in out


def test_info_function_returns_reasons():
    import fastcnn
    status = fastcnn.info()["backends"]
    assert status["reference"] is None
    assert set(status) == {"triton", "cuda", "cudnn", "reference"}


@pytest.mark.skipif(torch.cuda.is_available(), reason="the no-GPU path")
def test_bench_without_gpu_runs_the_interpreter_check():
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    proc = subprocess.run([sys.executable, "-m", "fastcnn.cli", "bench"], env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "no CUDA GPU here, so nothing is timed" in proc.stdout
    assert proc.stdout.count(" ok") >= 4 and "FAIL" not in proc.stdout


DATA = os.path.join(os.path.dirname(__file__), "data")


def test_bench_compare_shows_regressions(capsys):
    old, new = os.path.join(DATA, "bench_report_old.json"), os.path.join(DATA, "bench_report_new.json")
    assert main(["bench", "--compare", old, new]) == 0
    out = capsys.readouterr().out
    assert "Regressions (more than 5%): 1" in out
    assert "conv2d|conv2d/resnet50.conv1/bf16/b32/fwd" in out
    assert main(["bench", "--compare", old, new, "--fail-on-regression"]) == 1
    assert main(["bench", "--compare", old, new, "--threshold", "0.5", "--fail-on-regression"]) == 0


def test_bench_compare_rejects_a_file_that_is_no_report(tmp_path):
    from fastcnn.bench.report import SchemaError
    bad = tmp_path / "bad.json"
    bad.write_text('{"rows": []}')
    with pytest.raises(SchemaError, match="schema must be"):
        main(["bench", "--compare", str(bad), os.path.join(DATA, "bench_report_new.json")])


def test_bench_list(capsys):
    assert main(["bench", "--list"]) == 0
    out = capsys.readouterr().out
    assert "conv2d" in out and "conv_bn_relu" in out and "vit_b_16" in out


def test_bench_options_make_the_config():
    import argparse
    from fastcnn.cli import bench_config
    args = argparse.Namespace(ops=["conv2d"], models=["resnet50"], networks=["vgg16"], dtypes=None, batch=[64],
                              model_batch=[128], backward=True, quick=True, contenders=["cudnn", "triton"])
    cfg = bench_config(args)
    assert cfg.dtypes == ("bf16",) and cfg.batches == (64,) and cfg.model_batches == (128,)
    assert cfg.networks == ["vgg16"] and cfg.backward and cfg.rep_ms < 100
    args.quick, args.dtypes, args.batch = False, None, None
    cfg = bench_config(args)
    assert cfg.dtypes == ("bf16", "fp32")
    assert cfg.batches is None and cfg.batch_list() == (32,)  # no --batch: each suite's default


@pytest.mark.skipif(torch.cuda.is_available(), reason="the no-GPU path")
def test_profile_without_gpu_says_so(capsys):
    assert main(["profile", "--op", "conv2d"]) == 1
    assert "no CUDA GPU here" in capsys.readouterr().out


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_bench_quick_end_to_end(tmp_path, capsys):
    from fastcnn.bench import report as rep
    out = tmp_path / "report"
    assert main(["bench", "--quick", "--networks", "resnet50", "--models", "resnet50", "--model-batch", "8",
                 "--out", str(out)]) == 0
    report = rep.load(out / "report.json")
    assert report["environment"]["gpu"] == torch.cuda.get_device_name()
    suites = {r["suite"] for r in report["results"]}
    assert {"conv2d", "conv_bn_relu"} <= suites
    for r in report["results"]:
        if r["suite"] == "conv2d":
            assert all("ms" in t for t in r["timings"].values()), r["timings"]
            assert r["derived"]["triton"]["tflops"] > 0
    assert (out / "report.md").exists() and (out / "speedup-conv2d.png").exists()
    assert "geometric-mean speedup" in capsys.readouterr().out
