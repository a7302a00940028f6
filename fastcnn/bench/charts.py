"""PNG charts of a derived report (matplotlib, Agg backend: no display needed):
speedup over the baseline per case, and each kernel's position on the roofline."""
import os


def _plt():
    import matplotlib
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt
    return plt


def speedup_chart(report, suite, rows, path):
    plt = _plt()
    from fastcnn.bench.report import contenders_of
    baseline = rows[0]["baseline"]
    contenders = [c for c in contenders_of(rows) if c != baseline]
    labels = [f"{r['name']} {r.get('dtype')} b{r.get('batch')} {r.get('pass')}" for r in rows]
    height = max(3.0, 0.22 * len(rows) * max(1, len(contenders)) + 1.5)
    fig, ax = plt.subplots(figsize=(10, min(height, 120)))
    bar = 0.8 / max(1, len(contenders))
    for i, c in enumerate(contenders):
        ys = [j + i * bar for j in range(len(rows))]
        xs = [(r.get("derived", {}).get(c) or {}).get("speedup") or 0 for r in rows]
        ax.barh(ys, xs, height=bar, label=c)
    ax.axvline(1.0, color="black", linewidth=0.8)
    ax.set_yticks([j + bar * (len(contenders) - 1) / 2 for j in range(len(rows))])
    ax.set_yticklabels(labels, fontsize=6)
    ax.invert_yaxis()
    ax.set_xlabel(f"speedup over {baseline} (higher is better)")
    ax.set_title(f"{suite}: speedup over {baseline}")
    ax.legend(loc="lower right", fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def roofline_chart(report, suite, rows, path):
    plt = _plt()
    import numpy as np
    from fastcnn.bench.report import contenders_of
    rates = ((report["environment"].get("peak") or {}).get("rates")) or None
    fig, ax = plt.subplots(figsize=(8, 6))
    points = False
    for c in contenders_of(rows):
        xs, ys = [], []
        for r in rows:
            d = (r.get("derived") or {}).get(c) or {}
            if d.get("tflops") and r.get("bytes"):
                xs.append(r["flops"] / r["bytes"])
                ys.append(d["tflops"])
        if xs:
            ax.scatter(xs, ys, s=14, label=c, alpha=0.8)
            points = True
    if rates:
        x = np.logspace(0, 4, 200)
        bw = rates["dram_tbs"]
        for name in ("bf16", "tf32"):
            ax.plot(x, np.minimum(rates[name], x * bw), linewidth=1, linestyle="--",
                    label=f"{name} roof ({rates[name]:g} TFLOP/s, {bw:g} TB/s)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("arithmetic intensity (FLOP / compulsory DRAM byte)")
    ax.set_ylabel("TFLOP/s")
    ax.set_title(f"{suite}: roofline" + ("" if rates else " (GPU not in the peak table: no roof)"))
    if points or rates:
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_charts(report, folder) -> list:
    """Write every chart of a derived report into ``folder``; return the paths."""
    from fastcnn.bench.report import by_suite
    os.makedirs(folder, exist_ok=True)
    paths = []
    for suite, rows in by_suite(report["results"]).items():
        timed = [r for r in rows if r.get("derived")]
        if not timed:
            continue
        p = os.path.join(folder, f"speedup-{suite}.png")
        speedup_chart(report, suite, timed, p)
        paths.append(p)
        if any(r.get("bytes") and r.get("flops") for r in timed):  # a roofline needs both
            p = os.path.join(folder, f"roofline-{suite}.png")
            roofline_chart(report, suite, timed, p)
            paths.append(p)
    return paths
