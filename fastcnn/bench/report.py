"""The ``fastcnn bench`` report: JSON schema, derived figures, Markdown, compare.

Everything here works on plain dicts (the JSON), so reports from any machine can be
rebuilt, compared and charted anywhere, and the tests run on recorded samples.

Schema ``fastcnn-bench/1``::

    {"schema": "fastcnn-bench/1",
     "environment": {"gpu", "sm_clock_mhz", "sm_clock_max_mhz", "torch", "triton",
                     "cuda_runtime", "cudnn", "date", ...},
     "config": {...},                       # what was asked for
     "results": [{"suite", "name", "group", "key", "dtype", "batch", "pass",
                  "flops", "bytes", "items", "baseline", "meta",
                  "timings": {contender: {"ms": median, "raw_ms": [...]}
                                         | {"error": "..."}}}],
     "skipped": [{"suite", "name", "reason"}],
     "notes": [...]}

``derive`` adds, per result and contender, ``derived``: tflops, gbps, images_per_s,
pct_peak (of the roofline bound at the case's arithmetic intensity), bound, speedup
over the baseline; and ``summary``: geometric-mean speedups per suite and contender
(plus ``target_geomean_speedup`` over the cases whose meta has ``in_target`` true,
in suites that mark them: an issue's target may be stated on a subset of layers).
"""
import json
import math

from fastcnn.bench import peaks

SCHEMA = "fastcnn-bench/1"
RESULT_KEYS = ("suite", "name", "group", "key", "dtype", "batch", "pass", "flops", "bytes", "items",
               "baseline", "timings")


class SchemaError(ValueError):
    pass


def validate(report: dict) -> dict:
    """Raise SchemaError naming the first problem; return the report."""
    def need(cond, what):
        if not cond:
            raise SchemaError(f"fastcnn bench report: {what}")
    need(isinstance(report, dict), "not a JSON object")
    need(report.get("schema") == SCHEMA, f"schema must be {SCHEMA!r}, got {report.get('schema')!r}")
    for k in ("environment", "config", "results", "skipped", "notes"):
        need(k in report, f"missing key {k!r}")
    env = report["environment"]
    for k in ("gpu", "torch", "triton", "cuda_runtime", "date"):
        need(k in env, f"environment lacks {k!r}")
    need(isinstance(report["results"], list), "results must be a list")
    for i, r in enumerate(report["results"]):
        for k in RESULT_KEYS:
            need(k in r, f"results[{i}] lacks {k!r}")
        need(isinstance(r["timings"], dict), f"results[{i}].timings must be an object")
        for c, t in r["timings"].items():
            if "error" in t:
                continue
            need(isinstance(t.get("ms"), (int, float)) and t["ms"] > 0, f"results[{i}].timings[{c!r}].ms")
            need(isinstance(t.get("raw_ms"), list) and t["raw_ms"], f"results[{i}].timings[{c!r}].raw_ms")
    for i, s in enumerate(report["skipped"]):
        need({"suite", "name", "reason"} <= set(s), f"skipped[{i}] needs suite, name, reason")
    return report


def load(path) -> dict:
    with open(path) as f:
        return validate(json.load(f))


def geomean(values):
    values = [v for v in values if v is not None and v > 0 and math.isfinite(v)]
    return math.exp(sum(map(math.log, values)) / len(values)) if values else None


def derive(report: dict) -> dict:
    """Add the derived figures and the summary (in place; returns the report)."""
    env = report["environment"]
    matched, rates = peaks.peak_for(env.get("gpu"))
    env.setdefault("peak", {"matched": matched, "rates": rates, "note": peaks.NOTE})
    tf32 = env.get("allow_tf32_cudnn", True)
    for r in report["results"]:
        base = r["timings"].get(r["baseline"], {}).get("ms")
        r["derived"] = {}
        for c, t in r["timings"].items():
            if "error" in t:
                continue
            ms = t["ms"]
            d = {"speedup": (base / ms) if base else None}
            if r.get("flops"):
                d["tflops"] = r["flops"] / ms / 1e9
            if r.get("bytes"):
                d["gbps"] = r["bytes"] / ms / 1e6
            if r.get("items"):
                d["images_per_s"] = r["items"] / ms * 1e3
            d.update(_roofline(r, d, rates, tf32))
            r["derived"][c] = d
    summary, target = {}, {}
    for r in report["results"]:
        for c, d in r["derived"].items():
            summary.setdefault(r["suite"], {}).setdefault(c, []).append(d["speedup"])
            if "in_target" in r.get("meta", {}):
                target.setdefault(r["suite"], {}).setdefault(c, []).append(
                    d["speedup"] if r["meta"]["in_target"] else None)
    report["summary"] = {s: {c: _summary(v, target.get(s, {}).get(c)) for c, v in per.items()}
                         for s, per in summary.items()}
    return report


def _summary(speedups, target_speedups=None):
    """Geomean speedup of a suite's cases; where its cases say whether they are among
    the ones an issue's target is stated on (meta "in_target"), that of those too."""
    out = {"geomean_speedup": geomean(speedups), "cases": len([x for x in speedups if x])}
    if target_speedups is not None:
        out["target_geomean_speedup"] = geomean(target_speedups)
        out["target_cases"] = len([x for x in target_speedups if x])
    return out


def _roofline(r, d, rates, tf32):
    """% of the attainable peak at this case's arithmetic intensity: the datasheet
    FLOP rate when compute-bound, the DRAM bandwidth when memory-bound."""
    if not rates or not r.get("flops"):
        return {}
    dtype = (r.get("dtype") or "fp32").replace("amp-", "")
    peak_tflops = rates.get(peaks.compute_dtype(dtype, tf32))
    if not peak_tflops:
        return {}
    out = {"peak_tflops": peak_tflops}
    if r.get("bytes"):
        intensity = r["flops"] / r["bytes"]
        ridge = peak_tflops * 1e12 / (rates["dram_tbs"] * 1e12)
        out["intensity"] = intensity
        out["bound"] = "compute" if intensity >= ridge else "memory"
        if out["bound"] == "memory":
            out["pct_peak"] = 100 * d["gbps"] / (rates["dram_tbs"] * 1e3)
            return out
    out.setdefault("bound", "compute")
    out["pct_peak"] = 100 * d["tflops"] / peak_tflops
    return out


def _fmt(v, spec):
    return "-" if v is None else format(v, spec)


def contenders_of(results):
    seen = []
    for r in results:
        for c in r["timings"]:
            if c not in seen:
                seen.append(c)
    return seen


def to_markdown(report: dict) -> str:
    """The report as Markdown: environment, then per suite a table with, per contender,
    time, TFLOP/s or GB/s (images/s for models), % of peak and speedup over the
    baseline, and the geometric means."""
    env = report["environment"]
    lines = ["# fastcnn bench", ""]
    lines.append(f"GPU: **{env.get('gpu') or 'none'}**"
                 + (f" (SM clock {env['sm_clock_mhz']} MHz" + (f" of {env['sm_clock_max_mhz']}" if env.get(
                     'sm_clock_max_mhz') else "") + ")" if env.get("sm_clock_mhz") else "")
                 + f" | torch {env.get('torch')} | triton {env.get('triton')} | CUDA {env.get('cuda_runtime')}"
                 + f" | cuDNN {env.get('cudnn', '-')} | {env.get('date')}")
    lines.append("")
    peak = env.get("peak") or {}
    if peak.get("rates"):
        rates = peak["rates"]
        lines.append(f"Peak ({peak['matched']} datasheet): bf16 {rates['bf16']:g} TFLOP/s, tf32 {rates['tf32']:g}, "
                     f"DRAM {rates['dram_tbs']:g} TB/s. {peak.get('note', peaks.NOTE)}")
        lines.append("")
        lines.append("% peak: of the datasheet FLOP rate (fp32 at the TF32 rate when PyTorch allows TF32), or, "
                     "where marked (mem), of the DRAM bandwidth: whichever bounds the case at its arithmetic "
                     "intensity (FLOPs per byte of compulsory traffic: inputs and weights read once, output "
                     "written once).")
    else:
        lines.append("Peak: this GPU is not in fastcnn/bench/peaks.py, so no % of peak.")
    lines.append("")
    for note in report.get("notes", []):
        lines.append(f"- {note}")
    suites = []
    for r in report["results"]:
        if r["suite"] not in suites:
            suites.append(r["suite"])
    for suite in suites:
        rows = [r for r in report["results"] if r["suite"] == suite]
        contenders = contenders_of(rows)
        is_model = any(r.get("items") for r in rows)
        rate = "img/s" if is_model else "TFLOP/s"
        baseline = rows[0]["baseline"]
        lines += ["", f"## {suite}", ""]
        header = ["case", "dtype", "batch", "pass"]
        for c in contenders:
            header += [f"{c} ms", f"{c} {rate}"] + ([f"{c} % peak"] if not is_model else []) + \
                      ([f"{c} x{baseline}"] if c != baseline else [])
        lines.append("| " + " | ".join(header) + " |")
        lines.append("|" + "---|" * len(header))
        for r in rows:
            cells = [r["name"], str(r.get("dtype")), str(r.get("batch")), str(r.get("pass"))]
            for c in contenders:
                t, d = r["timings"].get(c, {}), r.get("derived", {}).get(c, {})
                if "ms" not in t:
                    cells += ["error" if "error" in t else "-", "-"] + (["-"] if not is_model else []) + \
                             (["-"] if c != baseline else [])
                    continue
                value = d.get("images_per_s") if is_model else d.get("tflops")
                if not is_model and value is None and d.get("gbps") is not None:
                    value = d["gbps"]
                cells += [f"{t['ms']:.3f}", _fmt(value, ".1f")]
                if not is_model:
                    cells.append(_fmt(d.get("pct_peak"), ".1f") + (" (mem)" if d.get("bound") == "memory" else ""))
                if c != baseline:
                    cells.append(_fmt(d.get("speedup"), ".2f"))
            lines.append("| " + " | ".join(cells) + " |")
        summary = report.get("summary", {}).get(suite, {})
        means = [f"{c} x{s['geomean_speedup']:.3f}" for c, s in summary.items()
                 if c != baseline and s.get("geomean_speedup")]
        if means:
            lines += ["", f"Geometric-mean speedup over {baseline}: " + ", ".join(means) + "."]
        target = [f"{c} x{s['target_geomean_speedup']:.3f}" for c, s in summary.items()
                  if c != baseline and s.get("target_geomean_speedup")]
        if target:
            lines += ["", "On the cases the target is stated on: " + ", ".join(target) + "."]
        errors = [(r["name"], c, t["error"]) for r in rows for c, t in r["timings"].items() if "error" in t]
        for name, c, err in errors:
            lines.append(f"- {name} / {c}: {err}")
    if report.get("skipped"):
        lines += ["", "## Skipped", ""]
        lines += [f"- {s['suite']}: {s['name']}: {s['reason']}" for s in report["skipped"]]
    return "\n".join(lines) + "\n"


def compare(old: dict, new: dict, threshold: float = 0.05) -> dict:
    """Match results by (key, contender) and classify each by new/old median time:
    ``regression`` when slower by more than ``threshold``, ``improvement`` when faster
    by more than it. Returns {"rows": [...], "regressions": [...], "improvements": [...],
    "only_old": [...], "only_new": [...]}."""
    def index(report):
        out = {}
        for r in report["results"]:
            for c, t in r["timings"].items():
                if "ms" in t:
                    out[(r["key"], c)] = t["ms"]
        return out
    a, b = index(old), index(new)
    rows = []
    for k in [k for k in b if k in a]:
        ratio = b[k] / a[k]
        status = "regression" if ratio > 1 + threshold else "improvement" if ratio < 1 / (1 + threshold) else "same"
        rows.append({"key": k[0], "contender": k[1], "old_ms": a[k], "new_ms": b[k], "ratio": ratio,
                     "status": status})
    return {"rows": rows, "threshold": threshold,
            "regressions": [r for r in rows if r["status"] == "regression"],
            "improvements": [r for r in rows if r["status"] == "improvement"],
            "only_old": sorted(f"{k} [{c}]" for k, c in a if (k, c) not in b),
            "only_new": sorted(f"{k} [{c}]" for k, c in b if (k, c) not in a),
            "environments": (old["environment"], new["environment"])}


def format_compare(result: dict) -> str:
    (eo, en) = result["environments"]
    lines = [f"old: {eo.get('gpu')} torch {eo.get('torch')} triton {eo.get('triton')} {eo.get('date')}",
             f"new: {en.get('gpu')} torch {en.get('torch')} triton {en.get('triton')} {en.get('date')}"]
    if eo.get("gpu") != en.get("gpu"):
        lines.append("warning: the two reports come from different GPUs")
    t = result["threshold"]
    for title, rows in (("Regressions", result["regressions"]), ("Improvements", result["improvements"])):
        lines += ["", f"{title} (more than {t:.0%}): {len(rows)}"]
        if rows:
            lines.append(f"{'case':<58}{'contender':<12}{'old ms':>10}{'new ms':>10}{'new/old':>9}")
            for r in sorted(rows, key=lambda r: -abs(math.log(r["ratio"]))):
                lines.append(f"{r['key']:<58}{r['contender']:<12}{r['old_ms']:>10.3f}{r['new_ms']:>10.3f}"
                             f"{r['ratio']:>9.3f}")
    same = len(result["rows"]) - len(result["regressions"]) - len(result["improvements"])
    lines += ["", f"within {t:.0%}: {same} of {len(result['rows'])} matched timings"]
    for what in ("only_old", "only_new"):
        if result[what]:
            lines.append(f"{what.replace('_', ' ')}: {len(result[what])} (e.g. {result[what][0]})")
    return "\n".join(lines)
