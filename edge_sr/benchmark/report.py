"""Markdown tables and PNG plots of ``bench`` results (matplotlib, extra ``bench``)."""

from __future__ import annotations

from pathlib import Path

from .runtimes import RUNTIMES


def markdown(results: list[dict]) -> str:
    """One table per model: latency, p90, ratio to ONNX Runtime fp32, GMAC/s, % of peak
    (and with ``--load N``: the median under load and the slowdown; with ``--rounds``:
    the range of the rounds' medians)."""
    out = []
    for res in results:
        h, w = res["input"][2:]
        n = res.get("load", 0)
        lcols = f" load {n} ms | slowdown |" if n else ""
        out += [f"### {res['model']} x{res['scale']}, {h}x{w} input, {res['gmac']:.2f} GMAC, "
                f"{res['target']} ({res['cpu']['cores']} cores, {res['cpu']['isa']}, "
                f"peak {res['peak_gflops']:.0f} GFLOP/s fp32{_int8_peak(res)})"
                + _rounds(res), "",
                "| runtime | median ms | p90 ms | vs ORT fp32 | GMAC/s | % of peak |"
                + lcols + " note |", "|---|---|---|---|---|---|---|" + ("---|---|" if n else "")]
        for name in RUNTIMES:
            r = res["runtimes"].get(name)
            if r is None:
                continue
            if "error" in r:
                out.append(f"| {name} | - | - | - | - | - |{' - | - |' if n else ''} "
                           f"{r['error']} |")
                continue
            ratio = f"{r['vs_onnxruntime_fp32']:.2f}x" if r.get("vs_onnxruntime_fp32") else "-"
            note = []
            if "tuning" in r:
                note.append(f"{r['tuning']} ({r['kernels_tuned']} kernels)")
            if "set5_drop" in r:
                note.append(f"Set5 int8 drop {r['set5_drop']:.3f} dB")
            if "rounds_ms" in r:
                note.append(f"rounds {min(r['rounds_ms']):.1f}-{max(r['rounds_ms']):.1f} ms")
            if "max_abs_diff" in r:
                note.append(f"max diff {r['max_abs_diff']:.1e} vs PyTorch")
            if r.get("portable_ops"):
                note.append(f"outside XNNPACK: {', '.join(r['portable_ops'])}")
            if r.get("default_precision", "f32") != "f32":
                note.append(f"f32 asked for (its default here: {r['default_precision']})")
            if "threads" in r:
                busy = r.get("loaded", {}).get("threads")
                note.append(f"{r['threads']} threads" + (f" ({busy} loaded)" if busy and
                                                          busy != r["threads"] else ""))
            out.append(f"| {name} | {r['median_ms']:.1f} | {r['p90_ms']:.1f} | {ratio} | "
                       f"{r['gmacs_per_s']:.1f} | {100 * r['peak_fraction']:.1f} |"
                       + (_loaded_cells(r) if n else "") + f" {'; '.join(note)} |")
        if res["target"] != "host":
            out.append("Measured on the device over RPC. On the emulated Pi (QEMU user-mode) "
                       "timings are ratios within the same emulator, not a Pi's milliseconds, "
                       "and the peak is a Cortex-A72's nominal one.")
        out.append("")
    return "\n".join(out)


def _rounds(res: dict) -> str:
    n = res.get("rounds", 1)
    return f", median of {n} alternated rounds" if n > 1 else ""


def _int8_peak(res: dict) -> str:
    top = res.get("cpu", {}).get("int8_peak_gops")
    return f", {top:.0f} GOP/s int8 (int8 rows against it)" if top else ""


def _loaded_cells(r: dict) -> str:
    loaded = r.get("loaded", {})
    if "slowdown" not in loaded:
        return f" - | {loaded.get('error', '-')} |"
    return f" {loaded['median_ms']:.1f} | {loaded['slowdown']:.2f}x |"


def plot_latency(results: list[dict], path: Path) -> Path:
    """Bar chart: median latency per runtime, one group per model (log scale)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 4.5))
    width = 0.8 / len(RUNTIMES)
    timed = False
    for i, name in enumerate(RUNTIMES):
        xs, ys = [], []
        for j, res in enumerate(results):
            r = res["runtimes"].get(name, {})
            if "median_ms" in r:
                xs.append(j + i * width)
                ys.append(r["median_ms"])
        ax.bar(xs, ys, width, label=name)
        timed = timed or bool(ys)
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(results))],
                  [r["model"] for r in results])
    if timed:  # a log axis needs a value; with every runtime failed the chart stays empty
        ax.set_yscale("log")
    ax.set_ylabel("median latency (ms, log)" if timed else "no runtime was timed")
    h, w = results[0]["input"][2:]
    ax.set_title(f"{h}x{w} input on {results[0]['target']}")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_pareto(points: list[dict], path: Path, xlabel: str = "TVM tuned latency (ms, log)",
                ylabel: str = "Set5 PSNR (dB)") -> Path:
    """PSNR vs latency, one panel per scale (PSNR compares only within one), each
    panel's frontier dashed. A point: ``{"label", "scale", "psnr", "latency_ms"}``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scales = sorted({p.get("scale", 0) for p in points})
    fig, axes = plt.subplots(1, len(scales), figsize=(5.5 * len(scales), 4.5), squeeze=False)
    for ax, scale in zip(axes[0], scales):
        group = [p for p in points if p.get("scale", 0) == scale]
        for p in group:
            ax.scatter(p["latency_ms"], p["psnr"])
            ax.annotate(p["label"], (p["latency_ms"], p["psnr"]), fontsize=7)
        front, best = [], float("-inf")
        for p in sorted(group, key=lambda p: p["latency_ms"]):
            if p["psnr"] > best:
                front.append(p)
                best = p["psnr"]
        ax.plot([p["latency_ms"] for p in front], [p["psnr"] for p in front], "k--", lw=0.8)
        ax.set_xscale("log")
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.set_title(f"x{scale}" if scale else "PSNR vs latency")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
