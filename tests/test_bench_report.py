"""fastcnn bench's report on recorded sample data (tests/data/, synthetic numbers in
the real schema): the JSON schema, derived figures, Markdown, compare, charts, the
suite registry and the runner (with a fake timer on the CPU), and the Nsight output
parsers. Nothing here times anything."""
import io
import json
import math
import os
import warnings

import pytest
import torch

from fastcnn.bench import peaks
from fastcnn.bench import report as rep
from fastcnn.bench import runner
from fastcnn.bench.registry import SUITES, BenchConfig, Case, Skip, cases, register_suite

DATA = os.path.join(os.path.dirname(__file__), "data")
NEW = os.path.join(DATA, "bench_report_new.json")
OLD = os.path.join(DATA, "bench_report_old.json")


def _new():
    return rep.derive(rep.load(NEW))


def test_samples_follow_the_schema():
    for path in (NEW, OLD):
        report = rep.load(path)
        assert report["schema"] == rep.SCHEMA
        assert report["environment"]["gpu"] == "NVIDIA H100 80GB HBM3"


@pytest.mark.parametrize("breakage, message", [
    (lambda r: r.update(schema="other/9"), "schema must be"),
    (lambda r: r.pop("skipped"), "missing key 'skipped'"),
    (lambda r: r["environment"].pop("gpu"), "environment lacks 'gpu'"),
    (lambda r: r["results"][0].pop("flops"), "lacks 'flops'"),
    (lambda r: r["results"][0]["timings"]["cudnn"].update(ms=-1.0), "timings['cudnn'].ms"),
    (lambda r: r["results"][0]["timings"]["cudnn"].update(raw_ms=[]), "raw_ms"),
    (lambda r: r["skipped"].append({"name": "x"}), "skipped[1]"),
])
def test_schema_rejects_broken_reports(breakage, message):
    report = json.load(open(NEW))
    breakage(report)
    with pytest.raises(rep.SchemaError, match=message.replace("[", r"\[").replace("(", r"\(")):
        rep.validate(report)


def test_derived_figures():
    report = _new()
    r = next(r for r in report["results"] if r["key"] == "conv2d|conv2d/vgg16.conv2_2/bf16/b32/fwd")
    ms = r["timings"]["triton"]["ms"]
    d = r["derived"]["triton"]
    assert d["tflops"] == pytest.approx(r["flops"] / ms / 1e9)
    assert d["gbps"] == pytest.approx(r["bytes"] / ms / 1e6)
    assert d["speedup"] == pytest.approx(r["timings"]["cudnn"]["ms"] / ms)
    assert r["derived"]["cudnn"]["speedup"] == pytest.approx(1.0)
    # VGG's 3x3 at 128 channels is compute-bound on an H100: % of 989 TFLOP/s
    assert d["bound"] == "compute" and d["pct_peak"] == pytest.approx(100 * d["tflops"] / 989.0)
    # fp32 runs at the TF32 rate (cuDNN's default flag)
    r32 = next(r for r in report["results"] if r["key"] == "conv2d|conv2d/vgg16.conv2_2/fp32/b32/fwd")
    assert r32["derived"]["cudnn"]["peak_tflops"] == 494.0
    # a 1x1 conv is memory-bound: % of 3.35 TB/s
    r1 = next(r for r in report["results"] if r["name"] == "resnet50.layer1.1.conv1" and r["dtype"] == "bf16")
    d1 = r1["derived"]["auto"]
    assert d1["bound"] == "memory" and d1["pct_peak"] == pytest.approx(d1["gbps"] / 3350 * 100)
    # models: images/s
    m = next(r for r in report["results"] if r["key"] == "models|models/resnet50/b128/infer")
    assert m["derived"]["compile"]["images_per_s"] == pytest.approx(128 / 11.9 * 1e3)
    # an errored contender has no derived figures
    fused = next(r for r in report["results"] if r["suite"] == "conv_bn_relu")
    assert "auto" not in fused["derived"] and "triton" in fused["derived"]


def test_a_case_names_its_own_peak():
    """Attention's fp32 runs at the FMA rate when the matmul TF32 flag is off, whatever
    cuDNN's convolution flag says: the case's meta "peak_dtype" wins."""
    big = dict(dtype="fp32", flops=10**13, bytes=10**6)  # compute-bound
    report = rep.derive(_report([_result("tf32", {"cudnn": 1.0}, **big),
                                 _result("fp32", {"cudnn": 1.0}, **big, meta={"peak_dtype": "fp32"})]))
    tf32, fp32 = (r["derived"]["cudnn"]["peak_tflops"] for r in report["results"])
    assert (tf32, fp32) == (494.0, 67.0)  # H100 SXM: dense TF32, fp32 FMA


def test_geometric_means():
    report = _new()
    rows = [r for r in report["results"] if r["suite"] == "conv2d"]
    speedups = [r["timings"]["cudnn"]["ms"] / r["timings"]["triton"]["ms"] for r in rows]
    expected = math.exp(sum(map(math.log, speedups)) / len(speedups))
    assert report["summary"]["conv2d"]["triton"]["geomean_speedup"] == pytest.approx(expected)
    assert report["summary"]["conv2d"]["triton"]["cases"] == len(rows)
    assert rep.geomean([2.0, 8.0]) == pytest.approx(4.0)
    assert rep.geomean([None, 0.0]) is None


def _result(key, timings, suite="s", baseline="cudnn", **fields):
    """A result of the schema with synthetic median times: {contender: ms or "error text"}."""
    return {"suite": suite, "name": key, "group": f"{suite}/{key}", "key": f"{suite}|{suite}/{key}", "dtype": "bf16",
            "batch": 32, "pass": "fwd", "flops": None, "bytes": None, "items": None, "baseline": baseline,
            "meta": {}, **fields,
            "timings": {c: {"ms": v, "raw_ms": [v]} if isinstance(v, float) else {"error": v}
                        for c, v in timings.items()}}


def _report(results, gpu="NVIDIA H100 80GB HBM3", **extra):
    return {"schema": rep.SCHEMA, "environment": {"gpu": gpu, "torch": "t", "triton": "t", "cuda_runtime": "c",
                                                  "date": "d"},
            "config": {}, "results": results, "skipped": [], "notes": [], **extra}


def test_each_geomean_covers_the_cases_it_shares_with_the_baseline():
    """triton ran all three cases, auto errored on the one where it would be slow, and
    the baseline errored on a fourth: each mean is over its own pairs, with the count."""
    report = rep.derive(_report([
        _result("a", {"cudnn": 2.0, "triton": 1.0, "auto": 1.0}),
        _result("b", {"cudnn": 2.0, "triton": 4.0, "auto": "RuntimeError: no kernel"}),
        _result("c", {"cudnn": 8.0, "triton": 2.0, "auto": 2.0}),
        _result("d", {"cudnn": "RuntimeError: no", "triton": 1.0, "auto": 1.0}),
    ]))
    s = report["summary"]["s"]
    assert s["triton"]["geomean_speedup"] == pytest.approx((2.0 * 0.5 * 4.0) ** (1 / 3)) and s["triton"]["cases"] == 3
    assert s["auto"]["geomean_speedup"] == pytest.approx((2.0 * 4.0) ** 0.5) and s["auto"]["cases"] == 2
    assert s["cudnn"]["cases"] == 3 and s["triton"]["suite_cases"] == 4
    md = rep.to_markdown(report)
    assert ("Geometric-mean speedup over cudnn, on the cases both ran: triton x1.587 (3 cases of 4), "
            "auto x2.828 (2 cases of 4).") in md


@pytest.mark.parametrize("name, row, bf16, fp32, dram_tbs", [
    ("NVIDIA H200", "H200", 989.0, 67.0, 4.8),
    ("NVIDIA H200 NVL", "H200 NVL", 835.0, 60.0, 4.8),
    ("NVIDIA GH200 480GB", "GH200", 989.0, 67.0, 4.0),
    ("NVIDIA GH200 144G HBM3e", "GH200 HBM3e", 989.0, 67.0, 4.9),
    ("NVIDIA H100 80GB HBM3", "H100", 989.0, 67.0, 3.35),
    ("NVIDIA H100 PCIe", "H100 PCIe", 756.0, 51.0, 2.0),
    ("NVIDIA H100 NVL", "H100 NVL", 835.0, 60.0, 3.9),
    ("NVIDIA H800", "H800", 989.0, 67.0, 3.35),
    ("NVIDIA H800 PCIe", "H800 PCIe", 756.0, 51.0, 2.0),
    ("NVIDIA A100-SXM4-40GB", "A100", 312.0, 19.5, 1.555),
    ("NVIDIA A100-PCIE-40GB", "A100", 312.0, 19.5, 1.555),
    ("NVIDIA A100-SXM4-80GB", "A100 80GB", 312.0, 19.5, 2.039),
    ("NVIDIA A100 80GB PCIe", "A100 80GB PCIe", 312.0, 19.5, 1.935),
    ("NVIDIA L40S", "L40S", 362.0, 91.6, 0.864),
])
def test_peak_table_matches_the_names_torch_reports(name, row, bf16, fp32, dram_tbs):
    matched, rates = peaks.peak_for(name)
    assert matched == row
    assert (rates["bf16"], rates["fp16"], rates["fp32"], rates["dram_tbs"]) == (bf16, bf16, fp32, dram_tbs)
    assert rates["tf32"] == pytest.approx(bf16 / 2, abs=2)  # TF32 runs at half the 16-bit rate


def test_peak_table_does_not_depend_on_row_order(monkeypatch):
    for table in (peaks.PEAKS, peaks.PEAKS[::-1]):
        monkeypatch.setattr(peaks, "PEAKS", table)
        assert peaks.peak_for("NVIDIA GH200 480GB")[0] == "GH200"
        assert peaks.peak_for("NVIDIA H200 NVL")[0] == "H200 NVL"
        assert peaks.peak_for("NVIDIA A100 80GB PCIe")[0] == "A100 80GB PCIe"
    # every row is reachable: its own words pick it, not a row with as many words
    for key, rates in peaks.PEAKS:
        assert peaks.peak_for("NVIDIA " + " ".join(key)) == (" ".join(key), rates)
    assert peaks.peak_for("Some Future GPU") == (None, None) and peaks.peak_for(None) == (None, None)
    assert peaks.peak_for("NVIDIA H1000")[0] is None  # whole words only
    assert peaks.compute_dtype("fp32", tf32=False) == "fp32"


def test_unknown_gpu_has_no_percent_of_peak():
    report = json.load(open(NEW))
    report["environment"]["gpu"] = "Some Future GPU"
    report = rep.derive(report)
    assert all("pct_peak" not in d for r in report["results"] for d in r["derived"].values())
    assert "not in fastcnn/bench/peaks.py" in rep.to_markdown(report)


def test_markdown_table():
    md = rep.to_markdown(_new())
    assert "GPU: **NVIDIA H100 80GB HBM3** (SM clock 1980 MHz of 1980)" in md
    assert "datasheet rates are leads" in md
    for heading in ("## conv2d", "## conv_bn_relu", "## models", "## Skipped"):
        assert heading in md
    assert "| case | dtype | batch | pass | cudnn ms | cudnn TFLOP/s | cudnn % peak | triton ms |" in md
    assert "compile img/s" in md
    assert "Geometric-mean speedup over cudnn, on the cases both ran: triton x0.969 (8 cases)" in md
    assert "models: vit_b_16: not registered" in md
    assert "auto: RuntimeError: CUDA out of memory" in md
    table = [line for line in md.splitlines() if line.startswith("| resnet50.conv1 | bf16")]
    assert len(table) == 1 and table[0].count("|") == 16
    # models: images/s and, as every table, TFLOP/s and % of peak
    assert "| cudnn ms | cudnn img/s | cudnn TFLOP/s | cudnn % peak |" in md


def test_a_case_that_failed_to_build_is_errors_not_a_contender():
    report = rep.derive(_report([_result("ok", {"cudnn": 1.0, "triton": 0.5}),
                                 _result("oom", {"setup": "OutOfMemoryError: CUDA out of memory"})]))
    assert rep.contenders_of(report["results"]) == ["cudnn", "triton"]
    assert set(report["summary"]["s"]) == {"cudnn", "triton"}
    md = rep.to_markdown(report)
    row = next(line for line in md.splitlines() if line.startswith("| oom |"))
    assert row.count("error") == 2 and "setup ms" not in md


def test_memory_bound_suites_show_bandwidth_and_percent_of_dram():
    """LRN has bytes and no FLOPs, depthwise has both but is memory-bound by nature:
    both read GB/s and % of the H100's 3.35 TB/s under their own headers; a compute
    suite keeps TFLOP/s and % of the FLOP peak."""
    report = rep.derive(_report([
        _result("lrn1", {"cudnn": 0.1, "triton": 0.05}, suite="lrn", bytes=1.675e8),  # 1675 GB/s at 0.1 ms
        _result("dw1", {"cudnn": 0.1, "triton": 0.08}, suite="depthwise", bytes=2.0e8, flops=1.0e9,
                bound="memory"),
        _result("vgg", {"cudnn": 1.0, "triton": 0.5}, suite="conv2d", bytes=2.0e8, flops=4.945e11),
    ]))
    lrn, dw, conv = report["results"]
    assert lrn["derived"]["cudnn"]["gbps"] == pytest.approx(1675.0)
    assert lrn["derived"]["cudnn"]["pct_peak"] == pytest.approx(50.0)
    assert lrn["derived"]["triton"]["pct_peak"] == pytest.approx(100.0)
    assert lrn["derived"]["triton"]["bound"] == "memory"
    # depthwise: 5 FLOP/byte is memory-bound anyway, but its % is of DRAM by declaration, not by the roofline
    dwt = dw["derived"]["triton"]
    assert dwt["pct_peak"] == pytest.approx(2500 / 3350 * 100) and "peak_tflops" not in dwt
    assert conv["derived"]["cudnn"]["pct_peak"] == pytest.approx(50.0)
    assert conv["derived"]["cudnn"]["bound"] == "compute"
    md = rep.to_markdown(report)
    assert "| case | dtype | batch | pass | cudnn ms | cudnn GB/s | cudnn % DRAM | triton ms | triton GB/s |" in md
    assert "| lrn1 | bf16 | 32 | fwd | 0.100 | 1675.0 | 50.0 | 0.050 | 3350.0 | 100.0 | 2.00 |" in md
    assert "| dw1 | bf16 | 32 | fwd | 0.100 | 2000.0 | 59.7 | 0.080 | 2500.0 | 74.6 | 1.25 |" in md
    assert "| vgg | bf16 | 32 | fwd | 1.000 | 494.5 | 50.0 | 0.500 | 989.0 | 100.0 | 2.00 |" in md
    assert md.count("cudnn TFLOP/s") == 1  # the conv2d table only
    # the charts: a roofline only where there are FLOPs
    import tempfile
    with tempfile.TemporaryDirectory() as d:
        names = sorted(os.path.basename(p) for p in runner.write_report(report, d)["charts"])
    assert names == ["roofline-conv2d.png", "roofline-depthwise.png", "speedup-conv2d.png", "speedup-depthwise.png",
                     "speedup-lrn.png"]


def test_an_interrupted_run_writes_a_partial_report(tmp_path):
    """Ctrl-C in the third case: the first two and the third's finished contender are
    written, as JSON and Markdown marked partial, and the interrupt goes on."""
    def make(n):
        return lambda: {"cudnn": lambda: n, "triton": lambda: n}
    items = [Case(suite="s", name=f"c{n}", group=f"s/c{n}", bytes=1e6, make=make(n)) for n in range(5)]
    timed = []

    def timer(fn):
        if len(timed) == 5:
            raise KeyboardInterrupt
        timed.append(fn())
        return [1.0]
    name = "toy_interrupted_for_test"
    register_suite(name)(lambda config: items)
    env = {"gpu": "NVIDIA H100 80GB HBM3", "torch": "t", "triton": "t", "cuda_runtime": None, "date": "d"}
    try:
        with pytest.raises(KeyboardInterrupt):
            runner.run(BenchConfig(device="cpu"), op_suites=[name], model_suites=[], timer=timer,
                       progress=runner.Progress(5, io.StringIO()), env=env, out=str(tmp_path))
    finally:
        SUITES.pop(name)
    report = rep.load(tmp_path / "report.json")
    assert report["partial"] == {"reason": "KeyboardInterrupt", "cases_started": 3, "cases_planned": 5}
    assert [(r["name"], sorted(r["timings"])) for r in report["results"]] == [
        ("c0", ["cudnn", "triton"]), ("c1", ["cudnn", "triton"]), ("c2", ["cudnn"])]
    assert report["summary"]["s"]["triton"]["cases"] == 2
    md = open(tmp_path / "report.md").read()
    assert md.startswith("# fastcnn bench\n\n**Partial report**: the run stopped (KeyboardInterrupt) in case 3 of 5")
    # an exception that escapes a suite (here: its listing) is written too, and re-raised
    name = "toy_broken_for_test"

    def broken(config):
        raise RuntimeError("suite bug")
        yield
    register_suite(name)(broken)
    try:
        with pytest.raises(RuntimeError, match="suite bug"):
            runner.run(BenchConfig(device="cpu"), op_suites=[name], model_suites=[], timer=timer, env=env,
                       out=str(tmp_path / "broken"))
    finally:
        SUITES.pop(name)
    assert rep.load(tmp_path / "broken" / "report.json")["partial"]["reason"] == "RuntimeError: suite bug"


def test_compare_finds_the_regression_and_the_improvement():
    result = rep.compare(rep.load(OLD), rep.load(NEW), threshold=0.05)
    assert [(r["key"], r["contender"]) for r in result["regressions"]] == [
        ("conv2d|conv2d/resnet50.conv1/bf16/b32/fwd", "triton")]
    assert result["regressions"][0]["ratio"] == pytest.approx(1.25, rel=1e-3)
    assert [(r["key"], r["contender"]) for r in result["improvements"]] == [
        ("conv2d|conv2d/vgg16.conv2_2/fp32/b32/fwd", "auto")]
    assert any("conv_bn_relu" in k for k in result["only_new"])
    text = rep.format_compare(result)
    assert "Regressions (more than 5%): 1" in text and "1.250" in text
    assert "Regressions: errored or missing, timed in the old report: 0" in text
    # at a 30 % threshold the 25 % change is no regression
    assert rep.compare(rep.load(OLD), rep.load(NEW), threshold=0.3)["regressions"] == []
    # a report against itself: nothing moves
    same = rep.compare(rep.load(NEW), rep.load(NEW))
    assert not same["regressions"] and not same["improvements"] and len(same["rows"]) > 20


def test_compare_counts_errored_and_missing_contenders_as_regressions():
    old = _report([_result("a", {"cudnn": 1.0, "triton": 1.0, "auto": 1.0}),
                   _result("b", {"cudnn": 1.0, "triton": 2.0}),
                   _result("c", {"cudnn": 1.0, "triton": 1.0}),
                   _result("d", {"cudnn": 1.0, "triton": "RuntimeError: never ran"})])
    new = _report([_result("a", {"cudnn": 1.0, "triton": "RuntimeError: illegal memory access"}),  # auto gone
                   _result("b", {"cudnn": 1.0, "triton": 2.01}),
                   _result("d", {"cudnn": 1.0, "triton": "RuntimeError: still not"})],  # c gone
                  partial={"reason": "KeyboardInterrupt", "cases_started": 3, "cases_planned": 4})
    new["results"].append({**_result("e", {}), "timings": {"setup": {"error": "OutOfMemoryError: big"}}})
    old["results"].append(_result("e", {"cudnn": 1.0}))
    result = rep.compare(old, new)
    lost = {(r["key"], r["contender"]): (r["status"], r["why"]) for r in result["regressions"]}
    assert lost == {("s|s/a", "triton"): ("error", "RuntimeError: illegal memory access"),
                    ("s|s/a", "auto"): ("missing", "contender not in the new report"),
                    ("s|s/c", "cudnn"): ("missing", "case not in the new report"),
                    ("s|s/c", "triton"): ("missing", "case not in the new report"),
                    ("s|s/e", "cudnn"): ("error", "OutOfMemoryError: big")}
    assert not result["improvements"] and len(result["rows"]) == 4  # a/cudnn, b x2, d/cudnn; d/triton never ran
    text = rep.format_compare(result)
    assert "Regressions (more than 5%): 0" in text
    assert "Regressions: errored or missing, timed in the old report: 5" in text
    assert "error: RuntimeError: illegal memory access" in text and "the new report is partial" in text
    from fastcnn.cli import main
    import tempfile
    with tempfile.TemporaryDirectory() as d:
        paths = []
        for name, r in (("old", old), ("new", new)):
            paths.append(os.path.join(d, f"{name}.json"))
            json.dump(r, open(paths[-1], "w"))
        assert main(["bench", "--compare", *paths]) == 0
        assert main(["bench", "--compare", *paths, "--fail-on-regression"]) == 1
        assert main(["bench", "--compare", paths[0], paths[0], "--fail-on-regression"]) == 0


def test_compare_warns_about_different_gpus():
    old = rep.load(OLD)
    old["environment"]["gpu"] = "NVIDIA H200"
    assert "different GPUs" in rep.format_compare(rep.compare(old, rep.load(NEW)))


def test_charts_are_pngs(tmp_path):
    paths = runner.write_report(_new(), str(tmp_path))
    names = sorted(os.path.basename(p) for p in paths["charts"])
    assert names == ["roofline-conv2d.png", "roofline-conv_bn_relu.png", "speedup-conv2d.png",
                     "speedup-conv_bn_relu.png", "speedup-models.png"]
    for p in paths["charts"]:
        with open(p, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"
        assert os.path.getsize(p) > 5000
    import matplotlib
    assert matplotlib.get_backend().lower() == "agg"
    # the JSON written is the derived report, and it still validates
    written = rep.load(paths["json"])
    assert written["summary"]["models"]["auto"]["geomean_speedup"] > 1
    assert open(paths["markdown"]).read().startswith("# fastcnn bench")


def test_registry_adds_a_suite_in_a_few_lines():
    name = "toy_op_for_test"

    @register_suite(name, kind="op")
    def toy(config):
        for n in (1, 2):
            yield Case(suite=name, name=f"toy{n}", group=f"{name}/toy{n}", flops=1e9 * n, bytes=1e6,
                       make=lambda n=n: {"cudnn": lambda: None, "triton": lambda: None})
        yield Skip(name, "toy3", "needs a feature")
    try:
        with pytest.raises(ValueError, match="registered twice"):
            register_suite(name)(toy)
        items = cases(BenchConfig(), [name])
        assert [getattr(c, "group", None) for c in items] == [f"{name}/toy1", f"{name}/toy2", None]
        times = {"cudnn": [2.0, 2.2, 2.1], "triton": [1.0, 1.1, 0.9]}

        def timer(fn):
            return times["cudnn" if fn is timer.fns["cudnn"] else "triton"]
        original = items[0].make

        def make_and_remember(original=original):
            timer.fns = original()
            return timer.fns
        items[0].make = make_and_remember
        items[1].make = make_and_remember
        report = runner.run_cases(BenchConfig(device="cpu"), items, timer, runner.Progress(2, io.StringIO()))
        assert report["skipped"] == [{"suite": name, "name": "toy3", "reason": "needs a feature"}]
        r = report["results"][0]
        assert r["timings"]["cudnn"] == {"ms": 2.1, "raw_ms": [2.0, 2.2, 2.1]}
        assert r["key"] == f"{name}|{name}/toy1"
        with pytest.raises(ValueError, match="unknown suite"):
            cases(BenchConfig(), ["no_such_suite"])
    finally:
        SUITES.pop(name)


def test_runner_records_errors_and_goes_on():
    def boom():
        raise RuntimeError("kernel exploded\nsecond line")
    items = [Case(suite="s", name="a", group="s/a", make=lambda: {"cudnn": lambda: None, "triton": boom}),
             Case(suite="s", name="b", group="s/b", make=lambda: 1 / 0)]

    def timer(fn):
        fn()
        return [1.0]
    stream = io.StringIO()
    report = runner.run_cases(BenchConfig(device="cpu"), items, timer, runner.Progress(2, stream))
    a, b = report["results"]
    assert a["timings"]["triton"] == {"error": "RuntimeError: kernel exploded"}
    assert a["timings"]["cudnn"]["ms"] == 1.0
    assert b["timings"] == {"setup": {"error": "ZeroDivisionError: division by zero"}}
    assert "2/2" in stream.getvalue()


def test_runner_end_to_end_on_cpu_with_a_fake_timer(tmp_path, monkeypatch):
    """The real suites (conv2d on a tiny layer, the model zoo) build and run their
    callables on the CPU (Triton interpreter / reference backend); only the timer is fake."""
    import fastcnn.models
    from fastcnn.bench.layers import NETWORKS, ConvLayer
    monkeypatch.setitem(NETWORKS, "tiny", [ConvLayer("tiny.conv", 4, 8, 8, 16, 3, 3, 1, 1)])
    model = next((m for m in ("alexnet", "resnet50") if m in fastcnn.models.list_models()), None)
    calls = []

    def timer(fn):
        fn()
        calls.append(fn)
        return [1.0, 1.5, 2.0]
    env = {"gpu": None, "torch": "t", "triton": "t", "cuda_runtime": None, "date": "d"}
    cfg = BenchConfig(networks=["tiny"], dtypes=("fp32",), batches=(2,), device="cpu", backward=True)
    ops = runner.run(cfg, op_suites=["conv2d"], model_suites=[], timer=timer,
                     progress=runner.Progress(2, io.StringIO()), env=env)
    assert [r["group"] for r in ops["results"]] == ["conv2d/tiny.conv/fp32/b2/fwd", "conv2d/tiny.conv/fp32/b2/fwd+bwd"]
    assert ops["results"][1]["flops"] == 3 * ops["results"][0]["flops"] == 3 * 2 * 2 * 16 * 64 * 4 * 9
    assert ops["summary"]["conv2d"]["triton"]["geomean_speedup"] == pytest.approx(1.0)
    assert len(calls) == 6  # cudnn, triton, auto per case
    cfg = BenchConfig(batches=(1,), device="cpu", contenders=["cudnn"],
                      models=[m for m in (model, "no_such_model") if m])
    models = runner.run(cfg, op_suites=[], timer=timer, progress=runner.Progress(2, io.StringIO()), env=env)
    rep.validate(models)
    assert models["skipped"] == [{"suite": "models", "name": "no_such_model",
                                  "reason": "not registered in fastcnn.models "
                                            "(fastcnn.models.list_models() has the names)"}]
    if model:
        infer, train = models["results"]
        assert (infer["group"], train["group"]) == (f"models/{model}/b1/infer", f"models/{model}/b1/train")
        assert infer["flops"] > 1e8 and infer["items"] == 1 and train["flops"] == pytest.approx(3 * infer["flops"])
        assert infer["derived"]["cudnn"]["images_per_s"] == pytest.approx(1 / 1.5 * 1e3)
        assert len(calls) == 8
    paths = runner.write_report(models if model else ops, str(tmp_path), charts=True)
    assert os.path.exists(paths["markdown"])


@pytest.mark.parametrize("suite, table, rows", [
    ("depthwise", "DEPTHWISE", [("tiny.dw", 8, 7, 9, 8, 3, 3, 2, 1, 8)]),
    ("lrn", "LRN_LAYERS", [("tiny.lrn", 7, 5, 6, 5, 1e-4, 0.75, 2.0)]),
    ("conv_bn_relu", "RESNET50", [("tiny.conv", 4, 7, 9, 16, 3, 3, 1, 2, 1, 2)]),  # dilation 2
    ("conv_bn_act", "RESNET50", [("tiny.conv", 4, 7, 9, 16, 3, 3, 1, 2, 1, 2)]),
    ("bias_act", "BIAS_ACT_LAYERS", [("tiny.mlp", (3, 5, 16), "gelu")]),
    ("layer_norm", "LAYER_NORM_LAYERS", [("tiny.ln", (7, 24))]),
])
def test_op_suites_run_on_cpu(suite, table, rows, monkeypatch):
    """Each op suite's callables, every contender, forward and backward, on a tiny
    shape with the CPU's backends (a GPU session should not be where a suite's own
    code is first run), and the contenders' forward outputs agree."""
    from fastcnn.bench import layers
    from fastcnn.bench.layers import ConvLayer
    conv_table = table in ("DEPTHWISE", "RESNET50")
    monkeypatch.setattr(layers, table, [ConvLayer(*r) if conv_table else r for r in rows])
    cfg = BenchConfig(dtypes=("fp32",), batches=(2,), device="cpu", backward=True)
    items = list(cases(cfg, [suite]))
    assert {c.name for c in items} == {rows[0][0]}
    ran = []

    def timer(fn):
        fn()
        ran.append(fn)
        return [1.0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # algo="cuda" falls back on the CPU, with a warning
        report = runner.run_cases(cfg, items, timer, runner.Progress(len(items), io.StringIO()))
    for result in report["results"]:
        assert all("ms" in t for t in result["timings"].values()), result["timings"]
        assert set(result["timings"]) >= {"cudnn", "triton", "auto"}
    assert len(ran) == sum(len(r["timings"]) for r in report["results"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        outs = {c: fn() for c, fn in items[0].make().items()}  # items[0]: the forward (or inference) pass
    for c, out in outs.items():
        if out is not None:  # conv_bn_relu's step is a training step: no output
            torch.testing.assert_close(out, outs["cudnn"], rtol=1e-4, atol=1e-4, msg=c)


def test_memory_bound_op_suites_count_their_traffic():
    """bias_act and layer_norm: real ViT/ConvNeXt shapes, memory-bound, 2 tensors of
    traffic forward and 5 forward+backward; conv_bn_act counts the conv's FLOPs."""
    cfg = BenchConfig(dtypes=("bf16",), batches=(32,), device="cpu", backward=True)
    bias_act = {c.group: c for c in cases(cfg, ["bias_act"])}
    vit = bias_act["bias_act/vit_b_16.mlp.fc1/bf16/b32/fwd"]
    assert vit.bound == "memory" and vit.flops is None and vit.bytes == 32 * 197 * 3072 * 2 * 2
    assert bias_act["bias_act/vit_b_16.mlp.fc1/bf16/b32/fwd+bwd"].bytes == 32 * 197 * 3072 * 2 * 5
    assert "bias_act/convnext_tiny.stage1.pwconv1/bf16/b32/fwd" in bias_act
    norms = [c for c in cases(cfg, ["layer_norm"]) if c.pass_ == "fwd"]
    assert [(c.name, c.meta["shape"]) for c in norms][::2] == [("vit_b_16.ln", [197, 768]),
                                                              ("convnext_tiny.stage1.norm", [56, 56, 96]),
                                                              ("convnext_tiny.stage3.norm", [14, 14, 384])]
    (first, *_) = cases(cfg, ["conv_bn_act"])
    assert first.group == "conv_bn_act/resnet50.conv1/bf16/b32/infer" and first.bound is None
    assert first.flops == 2 * 32 * 64 * 112 * 112 * 3 * 7 * 7
    quick = BenchConfig(dtypes=("bf16",), quick=True, device="cpu")
    for suite, full, few in (("lrn", 4, 2), ("bias_act", 6, 2), ("layer_norm", 6, 2)):
        assert (len(cases(cfg, [suite])), len(cases(quick, [suite]))) == (2 * full, few)  # cfg: fwd and fwd+bwd


def test_conv_layers_carry_dilation():
    from fastcnn.bench.conv import conv_fn, layer_inputs
    from fastcnn.bench.layers import ConvLayer
    from fastcnn.bench.suites import conv_bytes
    layer = ConvLayer("dilated", 4, 9, 11, 8, 3, 3, 1, 2, dilation=2)
    assert layer.out_hw() == (9, 11) and ConvLayer("plain", 4, 9, 11, 8, 3, 3).out_hw() == (7, 9)
    assert layer.flops(2) == 2 * 2 * 8 * 9 * 11 * 4 * 9
    assert conv_bytes(layer, 2, "fp32") == (2 * 4 * 9 * 11 + 8 * 4 * 9 + 2 * 8 * 9 * 11) * 4
    x, w = layer_inputs(layer, 2, torch.float32, "cpu")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        outs = [conv_fn(c, layer)(x, w) for c in ("cudnn", "triton")]
    assert outs[0].shape == (2, 8, 9, 11)
    torch.testing.assert_close(outs[1], outs[0], rtol=1e-4, atol=1e-4)


def test_winograd_suite_on_cpu(monkeypatch):
    """The winograd suite takes the 3x3 stride-1 groups-1 convs of VGG-16 and ResNet-50
    and nothing else, times "cuda" (a fallback on the CPU) beside cuDNN, and its
    summary's target geomean covers the layers with >= 64 channels only."""
    from fastcnn.bench import layers
    from fastcnn.bench.layers import ConvLayer
    from fastcnn.bench.suites import WINOGRAD_CONTENDERS
    monkeypatch.setattr(layers, "VGG16", [ConvLayer("tiny.rgb", 3, 7, 9, 8, 3, 3, 1, 1),
                                          ConvLayer("tiny.wide", 64, 5, 3, 64, 3, 3, 1, 1)])
    monkeypatch.setattr(layers, "RESNET50", [ConvLayer("tiny.1x1", 8, 5, 5, 8, 1, 1),
                                             ConvLayer("tiny.strided", 8, 5, 5, 8, 3, 3, 2, 1),
                                             ConvLayer("tiny.grouped", 8, 5, 5, 8, 3, 3, 1, 1, 2)])
    cfg = BenchConfig(dtypes=("fp32",), batches=(2,), device="cpu", backward=True)
    items = list(cases(cfg, ["winograd"]))
    assert [(c.name, c.pass_, c.meta["in_target"]) for c in items] == [
        ("tiny.rgb", "fwd", False), ("tiny.rgb", "fwd+bwd", False),
        ("tiny.wide", "fwd", True), ("tiny.wide", "fwd+bwd", True)]
    times = {"cudnn": 2.0, "cuda": 1.0, "triton": 4.0, "auto": 2.0}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # algo="cuda" falls back on the CPU, with a warning
        for case in items:
            fns = case.make()
            assert set(fns) == set(WINOGRAD_CONTENDERS)
            for fn in fns.values():
                fn()
    report = {"results": [{"suite": "winograd", "meta": c.meta, "baseline": "cudnn",
                           "timings": {k: {"ms": v * (1 if c.meta["in_target"] else 4) if k == "cuda" else v}
                                       for k, v in times.items()}} for c in items],
              "environment": {"gpu": None}}
    summary = rep.derive(report)["summary"]["winograd"]["cuda"]
    assert summary["target_geomean_speedup"] == pytest.approx(2.0) and summary["target_cases"] == 2
    assert summary["geomean_speedup"] == pytest.approx(1.0) and summary["cases"] == 4
    assert "target_geomean_speedup" not in rep.derive(_new())["summary"]["conv2d"]["cudnn"]


def test_attention_suite_cases_and_callables_on_cpu(monkeypatch):
    """The attention suite's shapes (ViT and long sequences), FLOP counts, and its
    callables run (forward+backward) on a tiny shape with the CPU's backends."""
    from fastcnn.bench import attention as suite
    from fastcnn.triton_kernels.attention import flops
    cfg = BenchConfig(dtypes=("fp32",), backward=True, device="cpu")
    all_cases = list(cases(cfg, ["attention"]))
    groups = [c.group for c in all_cases]
    assert "attention/vit_b_16/fp32/b64/fwd" in groups and "attention/vit_l_16@384/fp32/b256/fwd+bwd" in groups
    assert "attention/seq16384_d128_causal/fp32/b1/fwd" in groups
    vit = all_cases[0]
    assert vit.flops == flops(64, 12, 197, 197, 64, False) == 4 * 64 * 12 * 197 * 197 * 64
    monkeypatch.setattr(suite, "VIT_SHAPES", [("tiny", 2, 32, 9)])
    monkeypatch.setattr(suite, "LONG_SEQUENCES", ())
    tiny = list(cases(BenchConfig(dtypes=("fp32",), batches=(2,), backward=True, device="cpu"), ["attention"]))
    assert [c.group for c in tiny] == ["attention/tiny/fp32/b2/fwd", "attention/tiny/fp32/b2/fwd+bwd"]
    for case in tiny:
        fns = case.make()
        assert {"cudnn", "triton", "auto"} <= set(fns)
        for fn in fns.values():
            fn()


def test_separable_suite_callables_agree_on_cpu(monkeypatch):
    from fastcnn.bench import separable as suite
    monkeypatch.setattr(suite, "MOBILENET_V1_SEPARABLE", [("tiny", 5, 7, 9, 2)])
    (case,) = cases(BenchConfig(dtypes=("fp32",), batches=(2,), device="cpu"), ["separable"])
    assert case.group == "separable/tiny/fp32/b2/fwd" and case.flops == 2 * 2 * 5 * 5 * 5 * (9 + 7)
    outs = {c: fn() for c, fn in case.make().items()}
    assert set(outs) == {"cudnn", "triton", "auto"}
    for out in outs.values():
        assert out.shape == (2, 7, 5, 5) and torch.allclose(out, outs["cudnn"], atol=1e-4)


def test_model_name_resolution():
    from fastcnn.bench.suites import resolve_model
    registered = ["vit_b16", "resnet50", "mobilenetv2"]
    assert resolve_model("vit_b_16", registered) == "vit_b16"
    assert resolve_model("mobilenet_v2", registered) == "mobilenetv2"
    assert resolve_model("resnet50", registered) == "resnet50"
    assert resolve_model("densenet121", registered) is None


def test_ncu_output_is_summarised_per_kernel():
    from fastcnn.bench.profile import format_kernels, parse_ncu_csv
    kernels = parse_ncu_csv(open(os.path.join(DATA, "ncu_sample.csv")).read())
    igemm, grouped = kernels["_conv2d_igemm_fwd_kernel"], kernels["_conv2d_grouped_fwd_kernel"]
    assert igemm["launches"] == 2 and igemm["time_us"] == pytest.approx(240.0)
    assert igemm["sm_pct"] == pytest.approx((71.2 * 120.5 + 72.8 * 119.5) / 240.0)
    assert igemm["dram_gbs"] == pytest.approx((670 * 120.5 + 730 * 119.5) / 240.0)  # Tbyte/s -> GB/s
    assert grouped["time_us"] == pytest.approx(45.0)  # "45,000" nsecond
    assert grouped["dram_gbs"] == pytest.approx(2010.5)
    assert grouped["fp32_gflops"] == pytest.approx((2 * 2e6 + 1000) / 45e3)
    assert grouped["occupancy_pct"] == pytest.approx(50.0)
    table = format_kernels(kernels, "ncu", op_flops=2.85e10)
    assert table.splitlines()[2].startswith("_conv2d_igemm_fwd_kernel")  # slowest first
    assert "achieved: 100.0 TFLOP/s" in table


def test_nsys_output_is_summarised_per_kernel():
    from fastcnn.bench.profile import format_kernels, parse_nsys_csv
    kernels = parse_nsys_csv(open(os.path.join(DATA, "nsys_sample.csv")).read())
    assert kernels["_bn_act_fwd_kernel"] == {"launches": 20, "time_us": 1500.0, "time_pct": 37.5, "avg_us": 75.0}
    assert "total" in format_kernels(kernels, "nsys")


def test_profile_commands():
    from fastcnn.bench.profile import NCU_METRICS, tool_commands
    (run, _), (show, capture) = tool_commands("ncu", "/x/ncu", "spec.json", "out/profile", kernels="igemm")
    assert run[:5] == ["/x/ncu", "--profile-from-start", "off", "--target-processes", "all"]
    assert ",".join(NCU_METRICS) in run and "regex:igemm" in run
    assert run[-4:-1] == ["-m", "fastcnn.bench.profile", "--workload"] and run[-1] == "spec.json"
    assert show == ["/x/ncu", "--import", "out/profile.ncu-rep", "--csv", "--page", "details"] and capture
    (run, _), (show, _) = tool_commands("nsys", "/x/nsys", "spec.json", "out/profile")
    assert "--capture-range=cudaProfilerApi" in run and show[-1] == "out/profile.nsys-rep"


def test_nvtx_label():
    import torch
    from fastcnn.ops._dispatch import nvtx_label
    label = nvtx_label("fastcnn.conv2d", "triton", (torch.empty(2, 3, 8, 8), torch.empty(4, 3, 3, 3), None, [1, 1]))
    assert label == "fastcnn.conv2d[triton] (2, 3, 8, 8) (4, 3, 3, 3)"


def test_sample_has_every_raw_timing():
    report = json.load(open(NEW))
    for r in report["results"]:
        for t in r["timings"].values():
            if "ms" in t:
                assert sorted(t["raw_ms"])[len(t["raw_ms"]) // 2] == pytest.approx(t["ms"])


class _FakeEvent:
    """Stands in for torch.cuda.Event: a recorded event reads a fake GPU clock."""
    clock = [0.0]

    def __init__(self, enable_timing=False):
        self.t = None

    def record(self):
        self.t = self.clock[0]

    def synchronize(self):
        pass

    def elapsed_time(self, end):
        return end.t - self.t


def test_time_cuda_warms_up_and_times_each_repetition(monkeypatch):
    import torch
    from fastcnn.bench import timing
    monkeypatch.setattr(torch.cuda, "Event", _FakeEvent)
    monkeypatch.setattr(torch.cuda, "synchronize", lambda: None)
    calls = []

    def fn():  # each call takes 0.5 ms of "GPU time"
        calls.append(1)
        _FakeEvent.clock[0] += 0.5
    times = timing.time_cuda(fn, warmup_ms=5, rep_ms=10, flush_l2=False)
    assert times == [0.5] * 20  # rep_ms / estimate repetitions, each bracketed by its own events
    assert len(calls) == 1 + 3 + 10 + 20  # first call, estimate, warm-up, timed
    assert len(timing.time_cuda(fn, warmup_ms=0, rep_ms=0.1, min_reps=5, flush_l2=False)) == 5


class _Float32Event(_FakeEvent):
    """elapsed_time as CUDA returns it: a float32 of milliseconds."""

    def elapsed_time(self, end):
        import numpy as np
        return float(np.float32(end.t - self.t))


def test_cuda_event_clock_keeps_precision_over_long_runs(monkeypatch):
    import torch
    from fastcnn.bench import timing
    monkeypatch.setattr(torch.cuda, "Event", _Float32Event)
    monkeypatch.setattr(timing, "_last_event", None)
    monkeypatch.setattr(timing, "_total_s", 0.0)
    _FakeEvent.clock[0] = 0.0
    start = timing.cuda_event_clock()
    _FakeEvent.clock[0] += 2.5  # 2.5 ms of kernels
    assert timing.cuda_event_clock() - start == pytest.approx(2.5e-3)
    _FakeEvent.clock[0] += 3.6e6  # an hour in, a float32 of ms steps by 0.25 ms
    before = timing.cuda_event_clock()
    _FakeEvent.clock[0] += 0.01  # a 10 us kernel
    assert timing.cuda_event_clock() - before == pytest.approx(1e-5, rel=1e-4)


def test_time_cuda_reads_the_clock_while_the_timed_loop_runs(monkeypatch):
    import torch
    from fastcnn.bench import timing
    monkeypatch.setattr(torch.cuda, "Event", _FakeEvent)
    log = []
    monkeypatch.setattr(torch.cuda, "synchronize", lambda: log.append("sync"))

    def fn():
        log.append("fn")
        _FakeEvent.clock[0] += 1.0
    timing.time_cuda(fn, warmup_ms=0, rep_ms=5, flush_l2=False, while_busy=lambda: log.append("clock"))
    assert log.count("clock") == 1
    assert log[-2:] == ["clock", "sync"] and log[-7:-2] == ["fn"] * 5  # after the 5 timed calls are queued


def test_clock_sampler_keeps_the_highest_reading_and_spaces_reads(monkeypatch):
    readings = iter([1410, None, 1980, 1755])
    now = [0.0]
    monkeypatch.setattr(runner.time, "monotonic", lambda: now[0])
    clock = runner.ClockSampler(read=lambda: next(readings), every=2.0)
    for t in (0.0, 1.0, 2.5, 5.0, 7.0):  # the read at 1.0 s is skipped: too soon
        now[0] = t
        clock()
    assert clock.max_mhz == 1980
    env = {"gpu": None, "torch": "t", "triton": "t", "cuda_runtime": None, "date": "d", "sm_clock_max_mhz": 1980}
    report = runner._finish({"schema": rep.SCHEMA, "results": [], "skipped": []}, BenchConfig(), env, clock)
    assert report["environment"]["sm_clock_mhz"] == 1980


def test_model_flops_count_fused_and_plain_convolutions():
    import torch
    import fastcnn.nn as fnn
    from fastcnn.bench.suites import count_flops
    plain = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.BatchNorm2d(8), torch.nn.ReLU(),
                                torch.nn.Flatten(), torch.nn.Linear(8 * 6 * 6, 10)).eval()
    fused = torch.nn.Sequential(fnn.ConvBNReLU(3, 8, 3, padding=1, algo="reference"), torch.nn.Flatten(),
                                torch.nn.Linear(8 * 6 * 6, 10)).eval()
    x = torch.randn(2, 3, 6, 6)
    expected = 2 * (2 * 8 * 36 * 27) + 2 * (2 * 10 * 288)
    assert count_flops(plain, x) == expected
    assert count_flops(fused, x) == expected


def test_model_flops_of_a_fused_zoo_model():
    """ResNet-50's blocks hand their convolutions to one fused op: still 2 x 4.09 GMACs
    per image (torchvision's figure)."""
    import torch
    import fastcnn.models as M
    from fastcnn.bench.suites import count_flops
    flops = count_flops(M.create("resnet50", algo="reference"), torch.randn(1, 3, 224, 224))
    assert abs(flops / 8.18e9 - 1) < 0.005, flops


def test_model_flops_count_multihead_attention():
    import torch
    import fastcnn.nn as fnn
    from fastcnn.bench.suites import count_flops

    class Block(torch.nn.Module):
        def __init__(self, attn):
            super().__init__()
            self.attn = attn

        def forward(self, x):
            return self.attn(x, x, x, need_weights=False)[0]
    b, l, e = 2, 5, 8
    expected = 2 * e * e * 3 * b * l + 4 * b * l * l * e + 2 * b * l * e * e  # qkv, attention, out_proj
    for attn in (torch.nn.MultiheadAttention(e, 2, batch_first=True),
                 fnn.MultiheadSelfAttention(e, 2, batch_first=True, algo="reference")):
        assert count_flops(Block(attn).eval(), torch.randn(b, l, e)) == expected


@pytest.mark.filterwarnings("ignore:.*cannot take this call")  # 'cudnn' on CPU tensors runs the reference
def test_model_training_step_of_models_with_auxiliary_heads():
    """GoogLeNet and Inception-v3 return (logits, aux...) in training mode: the model
    suite's step takes the loss of each (it raised on the tuple)."""
    import torch
    from fastcnn.bench.registry import BenchConfig, cases
    config = BenchConfig(ops=[], models=["googlenet"], model_batches=(2,), device="cpu", contenders=["cudnn"])
    (train,) = [c for c in cases(config, ["models"]) if c.pass_ == "train"]
    step = train.make()["cudnn"]
    step()
    assert train.flops == pytest.approx(3 * 2 * 2 * 1.5e9, rel=0.1)  # 1.50 GMACs per image (torchvision)
