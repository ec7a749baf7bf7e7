"""The quality-per-budget section of docs/benchmarks.md, built from the per-run result files."""

from __future__ import annotations

import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any

from quality import DSPY, OPTIMIZERS, REFLEX
from report import _table, scatter_plot


def _sd(values: list[float]) -> float | None:
    return statistics.stdev(values) if len(values) > 1 else None


def _pm(mean: float, sd: float | None, fmt: str = "{:.3f}") -> str:
    return fmt.format(mean) + ("" if sd is None else f" ± {sd:.3f}")


def summarize(results: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    """Per (task, optimizer): means and sample standard deviations over the seeds that finished."""
    baseline = {(r["task"], r["seed"]): r["test"] for r in results if r["optimizer"] == "baseline" and "test" in r}
    runs: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    errors: dict[tuple[str, str], list[str]] = defaultdict(list)
    for r in results:
        if r["optimizer"] == "baseline":
            continue
        key = (r["task"], r["optimizer"])
        if "error" in r:
            errors[key].append(r["error"])
        elif (r["task"], r["seed"]) in baseline:
            runs[key].append(r)
    out = {}
    for key in set(runs) | set(errors):
        rs = runs.get(key, [])
        before = [baseline[(r["task"], r["seed"])] for r in rs]
        after = [r["test"] for r in rs]
        gains = [a - b for a, b in zip(after, before, strict=True)]
        out[key] = {
            "n": len(rs), "errors": errors.get(key, []), "seeds": sorted(r["seed"] for r in rs),
            **({
                "before": statistics.mean(before), "after": statistics.mean(after), "after_sd": _sd(after),
                "after_lo": min(after), "after_hi": max(after), "gain": statistics.mean(gains),
                "gain_sd": _sd(gains), "calls": statistics.mean(r["metric_calls"] for r in rs),
                "task_calls": statistics.mean(r["task_calls"] for r in rs),
                "tokens": statistics.mean(r["tokens"] for r in rs),
                "wall": statistics.mean(r["wall_s"] for r in rs),
                "failures": sum(r["test_failures"] for r in rs),
            } if rs else {}),
        }
    return out


def headline(summary: dict[tuple[str, str], dict[str, Any]], tasks: list[str]) -> list[str]:
    """Per task: the best reflex strategy's mean gain against the best DSPy optimizer's."""
    rows = []
    for task in tasks:
        best = {}
        for family, names in (("reflex", REFLEX), ("dspy", DSPY)):
            done = [(summary[(task, o)]["gain"], o) for o in names if summary.get((task, o), {}).get("n")]
            best[family] = max(done) if done else None
        if not best["reflex"] or not best["dspy"]:
            continue
        (rg, ro), (dg, do) = best["reflex"], best["dspy"]
        ratio = f"{rg / dg:.2f}x" if dg > 0 else ("—" if rg <= 0 else "∞ (DSPy gained nothing)")
        s_r, s_d = summary[(task, ro)], summary[(task, do)]
        rows.append([task, f"{s_r['before']:.3f}", f"{ro} {rg:+.3f} ({s_r['calls']:.0f} calls)",
                     f"{do} {dg:+.3f} ({s_d['calls']:.0f} calls)", ratio, str(min(s_r["n"], s_d["n"]))])
    return _table(["task", "test before", "best reflex: gain (metric calls)", "best DSPy: gain (metric calls)",
                   "reflex / DSPy gain (goal ≥ 1.2x)", "seeds"], rows) if rows else []


def section(results: list[dict[str, Any]], plots: Path, source: str) -> list[str]:
    tasks = [t for t in ("routing", "dates", "web_of_lies") if any(r["task"] == t for r in results)]
    lines = ["## Quality per budget", "", source, ""]
    if not tasks:
        return lines + ["No quality results yet: run `python bench/run.py --full`.", ""]
    summary = summarize(results)
    lines += ["### Headline", "", *headline(summary, tasks), "",
              "The best of 6 reflex strategies against the best of 4 DSPy optimizers, each chosen by mean test "
              "gain: a best-of-more pick favours reflex, so read the per-optimizer tables too. The ratio is "
              "taken at each optimizer's own calls (DSPy's auto='light' settings decide theirs).", ""]
    for task in tasks:
        lines += [f"### {task}", ""]
        if not any((task, opt) in summary for opt in OPTIMIZERS):
            lines += ["Only the baseline has been measured so far.", ""]
            continue
        rows, points = [], []
        base = None
        for opt in OPTIMIZERS:
            s = summary.get((task, opt))
            if s is None:
                continue
            if not s["n"]:
                rows.append([opt, "—", "—", "—", "—", "—", "—", "—", f"0 (failed: {s['errors'][0][:80]})"])
                continue
            base = s["before"]
            rows.append([opt, f"{s['before']:.3f}", _pm(s["after"], s["after_sd"]), _pm(s["gain"], s["gain_sd"], "{:+.3f}"),
                         f"{s['calls']:.0f}", f"{s['task_calls']:.0f}", f"{s['tokens'] / 1000:.1f}k",
                         f"{s['wall']:.0f} s", f"{s['n']}" + (f" ({len(s['errors'])} failed)" if s["errors"] else "")
                         + (f", {s['failures']} unparsed test answers" if s["failures"] else "")])
            color = "#1f77b4" if opt in REFLEX else "#d62728"
            label = opt if opt in REFLEX else {"BootstrapFewShotWithRandomSearch": "BFS-RS"}.get(opt, opt)
            points.append((label, s["calls"], s["after"], s["after_lo"], s["after_hi"], color))
        lines += _table(["optimizer", "test before", "test after (mean ± sd)", "gain", "metric calls",
                         "task-model calls", "LM tokens", "wall", "seeds"], rows)
        if points:
            (plots / f"quality-{task}.svg").write_text(scatter_plot(
                points, f"{task}: test score vs metric calls (blue: reflex, red: DSPy)", "search metric calls",
                "test score (bar: min–max over seeds)", hline=base))
            lines += ["", f"![{task}: score vs metric calls](benchmarks/quality-{task}.svg)"]
        lines.append("")
    return lines
