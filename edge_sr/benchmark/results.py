"""The published results: measured JSON in ``docs/results/``, rendered into ``docs/results.md``
and the README's tables.

Each file in ``docs/results/`` is one measurement as its command wrote it (``edge-sr zoo
--json``, ``edge-sr bench``'s ``bench.json``), wrapped with the machine it ran on, the date
and the commit. Refreshing a figure is replacing its file and rendering again; nothing is
appended by hand.
"""

from __future__ import annotations

import datetime as dt
import json
import platform
import re
import subprocess
from pathlib import Path

from ..zoo import format_zoo_summary
from .pareto import format_pareto, format_pruning, plot_zoo
from .peak import _cpuinfo, _field, cpu_peak
from .report import markdown
from .runtimes import RUNTIMES

ROOT = Path(__file__).resolve().parents[2]
RESULTS_DIR = ROOT / "docs" / "results"
KINDS = ("zoo", "bench", "pareto")
# README sections rendered from the results: <!-- results:NAME --> ... <!-- /results:NAME -->
MARK = re.compile(r"(<!-- results:(\w[\w-]*) -->\n).*?(<!-- /results:\2 -->)", re.S)


def host_machine() -> str:
    """This machine in words: CPU model, cores, vector ISA."""
    peak = cpu_peak()
    model = _field(_cpuinfo(), "model name") or platform.processor() or platform.machine()
    return f"host {platform.machine()}: {model}, {peak['cores']} cores, {peak['isa']}"


def git_commit() -> str:
    """The checkout's short commit, with ``+dirty`` when files differ from it."""
    try:
        sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, text=True,
                             capture_output=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=ROOT, text=True, capture_output=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return sha + ("+dirty" if dirty else "")


def add(name: str, kind: str, data, machine: str = "", note: str = "") -> Path:
    """Store one measurement as ``docs/results/NAME.json`` with machine, date and commit."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, not {kind!r}")
    record = {"kind": kind, "machine": machine or host_machine(),
              "date": dt.date.today().isoformat(), "commit": git_commit(), "note": note,
              "data": data}
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{name}.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(record, indent=1) + "\n")
    tmp.replace(path)
    return path


def load(folder: Path = RESULTS_DIR) -> dict[str, dict]:
    """Every stored measurement by name."""
    return {p.stem: json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))}


def provenance(rec: dict) -> str:
    """One line: where, when and at which commit a measurement was made."""
    note = f" {rec['note']}" if rec.get("note") else ""
    return f"*{rec['machine']}; {rec['date']}; commit {rec['commit']}.*{note}"


def bench_summary(results: list[dict]) -> str:
    """One compact table for all models: median ms and the ratio to ONNX Runtime fp32 per
    runtime; with ``--load N``, a second one of each runtime's slowdown under load."""
    names = [n for n in RUNTIMES if any("median_ms" in r["runtimes"].get(n, {})
                                        for r in results)]
    head = "| model | input | " + " | ".join(names) + " |"
    rule = "|---|---|" + "---|" * len(names)

    def row(res: dict, cell) -> str:
        h, w = res["input"][2:]
        cells = [cell(res["runtimes"].get(n, {})) for n in names]
        return f"| {res['model']} | {h}x{w} | " + " | ".join(cells) + " |"

    def quiet(r: dict) -> str:
        if "median_ms" not in r:
            return "-"
        ratio = r.get("vs_onnxruntime_fp32")
        return f"{r['median_ms']:.1f}" + (f" ({ratio:.2f}x)" if ratio else "")

    out = [f"Target {results[0]['target']}: median ms (ratio to onnxruntime_fp32).", "",
           head, rule, *[row(res, quiet) for res in results], ""]
    load = max((res.get("load", 0) for res in results), default=0)
    if load:
        def slow(r: dict) -> str:
            s = r.get("loaded", {}).get("slowdown")
            return f"{s:.2f}x" if s else "-"

        out += [f"Slowdown with {load} busy process{'es' if load > 1 else ''} "
                "(loaded median / quiet median, same invocation):", "",
                head, rule, *[row(res, slow) for res in results], ""]
    return "\n".join(out)


def _section(rec: dict, full: bool, name: str = "") -> str:
    if rec["kind"] == "zoo":
        body = format_zoo_summary(rec["data"])
    elif rec["kind"] == "pareto":
        body = format_pareto(rec["data"])
        pruning = format_pruning(rec["data"])
        if pruning:
            body += "\n\nThe SRResNet pruning study (residual blocks removed, fine-tuned):\n\n" \
                + pruning
        if full and name:  # docs/results.md sits beside docs/results/
            body += f"\n\n![{name}](results/{name}.png)"
    else:
        body = markdown(rec["data"]) if full else bench_summary(rec["data"])
    return f"{body.rstrip()}\n\n{provenance(rec)}\n"


def render_markdown(records: dict[str, dict]) -> str:
    """``docs/results.md``: every measurement, full tables."""
    out = ["# Results", "",
           "Generated by `python scripts/results.py render` from `docs/results/*.json`; "
           "refresh a figure by measuring again (`python scripts/results.py add ...`). "
           "Emulated-Pi timings are ratios within the emulator, not a Pi's milliseconds.", ""]
    for name, rec in records.items():
        out += [f"## {name}", "", _section(rec, full=True, name=name)]
    return "\n".join(out)


def render_readme(text: str, records: dict[str, dict]) -> str:
    """The README with each ``<!-- results:NAME -->`` section replaced by that result."""
    def fill(m: re.Match) -> str:
        rec = records.get(m.group(2))
        body = _section(rec, full=False) if rec else f"(no result named {m.group(2)})\n"
        return f"{m.group(1)}{body}{m.group(3)}"

    return MARK.sub(fill, text)


def render(readme: Path = ROOT / "README.md", out: Path = ROOT / "docs" / "results.md") -> None:
    """Write ``docs/results.md`` and refresh the README's result sections."""
    records = load()
    for name, rec in records.items():
        if rec["kind"] == "pareto":
            plot_zoo(rec["data"], RESULTS_DIR / f"{name}.png")
    out.write_text(render_markdown(records))
    readme.write_text(render_readme(readme.read_text(), records))
