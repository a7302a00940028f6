"""The ``fastcnn bench`` report: JSON schema, derived figures, Markdown, compare.

Everything here works on plain dicts (the JSON), so reports from any machine can be
rebuilt, compared and charted anywhere, and the tests run on recorded samples.

Schema ``fastcnn-bench/1``::

    {"schema": "fastcnn-bench/1",
     "environment": {"gpu", "sm_clock_mhz", "sm_clock_max_mhz", "torch", "triton",
                     "cuda_runtime", "cudnn", "date", ...},
     "config": {...},                       # what was asked for
     "results": [{"suite", "name", "group", "key", "dtype", "batch", "pass",
                  "flops", "bytes", "items", "baseline", "bound" (optional), "meta",
                  "timings": {contender: {"ms": median, "raw_ms": [...]}
                                         | {"error": "..."}}}],
     "skipped": [{"suite", "name", "reason"}],
     "notes": [...],
     "partial": {"reason", "cases_started", "cases_planned"}}   # only if the run was interrupted

``derive`` adds, per result and contender, ``derived``: tflops, gbps, images_per_s,
bound, pct_peak (of the DRAM bandwidth for a memory-bound case: one whose result says
``"bound": "memory"`` or that has bytes and no FLOPs; otherwise of the roofline bound at
the case's arithmetic intensity), speedup over the baseline; and ``summary``: per suite
and contender the geometric-mean speedup over the cases where both it and the baseline
were timed, with their count (plus ``target_geomean_speedup`` over the cases whose meta
has ``in_target`` true, in suites that mark them: an issue's target may be stated on a
subset of layers).
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


def memory_bound(result) -> bool:
    """Is this case's figure its bandwidth? Suites say so (Case.bound); a case with
    bytes and no FLOP count (reports from before that field) can be nothing else."""
    return result.get("bound") == "memory" or bool(result.get("bytes") and not result.get("flops"))


def by_suite(results) -> dict:
    """{suite: [result, ...]} in report order."""
    out = {}
    for r in results:
        out.setdefault(r["suite"], []).append(r)
    return out


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
    report["summary"] = {suite: _summary(rows) for suite, rows in by_suite(report["results"]).items()}
    return report


def _summary(rows):
    """Per contender: the geomean of its speedup over the baseline on the cases where
    both were timed (so each contender's mean says how many cases it covers), and,
    where the suite's cases say whether they are among the ones an issue's target is
    stated on (meta "in_target"), that over those too."""
    targeted = any("in_target" in r.get("meta", {}) for r in rows)
    out = {}
    for c in contenders_of(rows):
        both = [r for r in rows if (r["derived"].get(c) or {}).get("speedup")]
        out[c] = {"geomean_speedup": geomean(r["derived"][c]["speedup"] for r in both), "cases": len(both),
                  "suite_cases": len(rows)}
        if targeted:
            target = [r for r in both if r["meta"].get("in_target")]
            out[c]["target_geomean_speedup"] = geomean(r["derived"][c]["speedup"] for r in target)
            out[c]["target_cases"] = len(target)
    return out


def _roofline(r, d, rates, tf32):
    """% of the attainable peak: of the DRAM bandwidth for a memory-bound case, else at
    the case's arithmetic intensity the datasheet FLOP rate when compute-bound, the DRAM
    bandwidth when memory-bound."""
    if not rates:
        return {}
    if memory_bound(r):
        if not r.get("bytes"):
            return {}
        return {"bound": "memory", "pct_peak": 100 * d["gbps"] / (rates["dram_tbs"] * 1e3)}
    if not r.get("flops"):
        return {}
    dtype = (r.get("dtype") or "fp32").replace("amp-", "")
    # a case may name its own peak (attention's fp32 follows the matmul TF32 flag, not cuDNN's)
    peak_tflops = rates.get(r.get("meta", {}).get("peak_dtype") or peaks.compute_dtype(dtype, tf32))
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


# the timings entry of a case whose inputs failed to build (not a contender)
SETUP = "setup"


def contenders_of(results):
    seen = []
    for r in results:
        for c in r["timings"]:
            if c not in seen and c != SETUP:
                seen.append(c)
    return seen


def to_markdown(report: dict) -> str:
    """The report as Markdown: environment, then per suite a table with, per contender,
    time, the suite's rate (TFLOP/s and % of the roofline peak; GB/s and % of the DRAM
    bandwidth for memory-bound suites; images/s for models) and speedup over the
    baseline, and the geometric means with the number of cases each covers."""
    env = report["environment"]
    lines = ["# fastcnn bench", ""]
    if report.get("partial"):
        p = report["partial"]
        lines += [f"**Partial report**: the run stopped ({p['reason']}) in case {p['cases_started']} of "
                  f"{p['cases_planned']}; below is what was measured until then.", ""]
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
                     "written once). Memory-bound suites (normalizations, elementwise ops, depthwise convs) show "
                     "GB/s and % DRAM: of the DRAM bandwidth.")
    else:
        lines.append("Peak: this GPU is not in fastcnn/bench/peaks.py, so no % of peak.")
    lines.append("")
    for note in report.get("notes", []):
        lines.append(f"- {note}")
    for suite, rows in by_suite(report["results"]).items():
        lines += ["", f"## {suite}", ""] + _suite_table(rows)
        summary = report.get("summary", {}).get(suite, {})
        baseline = rows[0]["baseline"]
        means = [f"{c} x{s['geomean_speedup']:.3f} ({_cases(s['cases'], len(rows))})" for c, s in summary.items()
                 if c != baseline and s.get("geomean_speedup")]
        if means:
            lines += ["", f"Geometric-mean speedup over {baseline}, on the cases both ran: " + ", ".join(means) + "."]
        target = [f"{c} x{s['target_geomean_speedup']:.3f} ({_cases(s['target_cases'])})" for c, s in summary.items()
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


def _cases(n, of=None):
    return f"{n} case{'s' if n != 1 else ''}" + (f" of {of}" if of is not None and of != n else "")


def _suite_table(rows):
    """One suite's Markdown table: per contender ms, the suite's rates (img/s for
    models, with their TFLOP/s; GB/s for memory-bound suites, else TFLOP/s), the % of
    the peak that applies and the speedup over the baseline."""
    contenders = contenders_of(rows)
    baseline = rows[0]["baseline"]
    if any(r.get("items") for r in rows):
        cols = [("img/s", "images_per_s"), ("TFLOP/s", "tflops"), ("% peak", "pct_peak")]
    elif all(memory_bound(r) for r in rows):
        cols = [("GB/s", "gbps"), ("% DRAM", "pct_peak")]
    else:
        cols = [("TFLOP/s", "tflops"), ("% peak", "pct_peak")]
    header = ["case", "dtype", "batch", "pass"]
    for c in contenders:
        header += [f"{c} ms"] + [f"{c} {title}" for title, _ in cols] + ([f"{c} x{baseline}"] if c != baseline else [])
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        cells = [r["name"], str(r.get("dtype")), str(r.get("batch")), str(r.get("pass"))]
        for c in contenders:
            t = r["timings"].get(c) or r["timings"].get(SETUP, {})  # a case that failed to build: all errors
            d = r.get("derived", {}).get(c, {})
            if "ms" not in t:
                cells += ["error" if "error" in t else "-"] + ["-"] * len(cols) + (["-"] if c != baseline else [])
                continue
            cells.append(f"{t['ms']:.3f}")
            for title, value in cols:
                mem = title == "% peak" and d.get("bound") == "memory"
                cells.append(_fmt(d.get(value), ".1f") + (" (mem)" if mem else ""))
            if c != baseline:
                cells.append(_fmt(d.get("speedup"), ".2f"))
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def compare(old: dict, new: dict, threshold: float = 0.05) -> dict:
    """Match results by (key, contender) and classify each by new/old median time:
    ``regression`` when slower by more than ``threshold``, ``improvement`` when faster
    by more than it. A (key, contender) timed in ``old`` that errors in ``new`` (status
    ``error``) or is not in it (``missing``: the contender, or its whole case, is gone)
    is a regression too: a kernel that stopped running is the worst slowdown. Returns
    {"rows": [...], "regressions": [...], "improvements": [...], "only_new": [...]}."""
    def times(report):
        return {(r["key"], c): t["ms"] for r in report["results"] for c, t in r["timings"].items() if "ms" in t}
    a, b = times(old), times(new)
    errors = {(r["key"], c): t["error"] for r in new["results"] for c, t in r["timings"].items() if "error" in t}
    new_keys = {r["key"] for r in new["results"]}
    rows, lost = [], []
    for k, old_ms in a.items():
        if k in b:
            ratio = b[k] / old_ms
            status = "regression" if ratio > 1 + threshold else "improvement" if ratio < 1 / (1 + threshold) \
                else "same"
            rows.append({"key": k[0], "contender": k[1], "old_ms": old_ms, "new_ms": b[k], "ratio": ratio,
                         "status": status})
            continue
        error = errors.get(k) or errors.get((k[0], SETUP))
        why = error or ("contender not in the new report" if k[0] in new_keys else "case not in the new report")
        lost.append({"key": k[0], "contender": k[1], "old_ms": old_ms, "new_ms": None, "ratio": None,
                     "status": "error" if error else "missing", "why": why})
    return {"rows": rows, "threshold": threshold,
            "regressions": [r for r in rows if r["status"] == "regression"] + lost,
            "improvements": [r for r in rows if r["status"] == "improvement"],
            "only_new": sorted(f"{k} [{c}]" for k, c in b if (k, c) not in a),
            "partial": (old.get("partial"), new.get("partial")),
            "environments": (old["environment"], new["environment"])}


def format_compare(result: dict) -> str:
    (eo, en) = result["environments"]
    lines = [f"old: {eo.get('gpu')} torch {eo.get('torch')} triton {eo.get('triton')} {eo.get('date')}",
             f"new: {en.get('gpu')} torch {en.get('torch')} triton {en.get('triton')} {en.get('date')}"]
    if eo.get("gpu") != en.get("gpu"):
        lines.append("warning: the two reports come from different GPUs")
    for which, p in zip(("old", "new"), result.get("partial", (None, None))):
        if p:
            lines.append(f"warning: the {which} report is partial ({p['reason']})")
    t = result["threshold"]
    slower = [r for r in result["regressions"] if r["ratio"] is not None]
    lost = [r for r in result["regressions"] if r["ratio"] is None]
    for title, rows in (("Regressions", slower), ("Improvements", result["improvements"])):
        lines += ["", f"{title} (more than {t:.0%}): {len(rows)}"]
        if rows:
            lines.append(f"{'case':<58}{'contender':<12}{'old ms':>10}{'new ms':>10}{'new/old':>9}")
            for r in sorted(rows, key=lambda r: -abs(math.log(r["ratio"]))):
                lines.append(f"{r['key']:<58}{r['contender']:<12}{r['old_ms']:>10.3f}{r['new_ms']:>10.3f}"
                             f"{r['ratio']:>9.3f}")
    lines += ["", f"Regressions: errored or missing, timed in the old report: {len(lost)}"]
    for r in sorted(lost, key=lambda r: (r["key"], r["contender"])):
        lines.append(f"{r['key']:<58}{r['contender']:<12}{r['old_ms']:>10.3f}  {r['status']}: {r['why']}")
    same = len(result["rows"]) - len(slower) - len(result["improvements"])
    lines += ["", f"within {t:.0%}: {same} of {len(result['rows'])} matched timings"]
    if result["only_new"]:
        lines.append(f"only new: {len(result['only_new'])} (e.g. {result['only_new'][0]})")
    return "\n".join(lines)
