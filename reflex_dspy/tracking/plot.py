"""The score trajectory of a run as a small, dependency-free SVG line plot.

Why hand-written SVG: matplotlib is not a dependency (and is heavy to import), while the plot is
simple: train and val score per iteration on a fixed 0..1 scale, the baseline and the threshold
as dashed lines, the final test score as one point. MLflow shows SVG artifacts inline and the
dashboard can embed the same text.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any
from xml.sax.saxutils import escape, quoteattr

WIDTH, HEIGHT = 640, 360
LEFT, RIGHT, TOP, BOTTOM = 56, 170, 34, 46  # margins: the legend sits to the right of the plot
TRAIN, VAL, BASELINE, THRESHOLD, FINAL = "#1f77b4", "#ff7f0e", "#7f7f7f", "#2ca02c", "#d62728"


def _field(record: Any, name: str) -> Any:
    """Records may be `IterationRecord`s or their JSON dicts (the dashboard reads the layout)."""
    if isinstance(record, Mapping):
        return record.get(name)
    return getattr(record, name, None)


def _score(value: Any) -> float | None:
    """A plottable score, or None for a missing or non-finite one (drawn as a gap)."""
    if value is None or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return min(max(number, 0.0), 1.0) if math.isfinite(number) else None


def _fmt(value: float) -> str:
    return f"{value:.1f}"


def _series(points: list[tuple[int, float]], x, y, color: str, label: str, radius: int) -> list[str]:
    """A polyline through the measured points (an unmeasured iteration is skipped) and their markers."""
    coords = " ".join(f"{_fmt(x(i))},{_fmt(y(s))}" for i, s in points)
    parts = (
        [f'<polyline fill="none" stroke="{color}" stroke-width="2" points="{coords}"/>']
        if len(points) > 1
        else []
    )
    for iteration, score in points:
        parts.append(
            f'<circle cx="{_fmt(x(iteration))}" cy="{_fmt(y(score))}" r="{radius}" fill="{color}">'
            f"<title>{escape(label)} {iteration}: {score:.4f}</title></circle>"
        )
    return parts


PLOT_W, PLOT_H = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM


class _Scale:
    """Maps an iteration and a score to pixels; `x_max` leaves room for the "final" point."""

    def __init__(self, x_max: int) -> None:
        self.x_max = x_max

    def x(self, iteration: float) -> float:
        return LEFT + PLOT_W * iteration / self.x_max

    def y(self, score: float) -> float:
        return TOP + PLOT_H * (1.0 - score)


def _frame(scale: _Scale, last: int, has_final: bool) -> list[str]:
    """The header, the y grid with its labels, the x labels and both axes."""
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" '
        f'viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="11">',
        "<title>reflex score trajectory</title>",
        f'<rect x="0" y="0" width="{WIDTH}" height="{HEIGHT}" fill="white"/>',
        f'<text x="{LEFT}" y="20" font-size="13" font-weight="bold">Score by iteration</text>',
    ]
    for tick in (0.0, 0.25, 0.5, 0.75, 1.0):  # y grid and labels
        ty = _fmt(scale.y(tick))
        out.append(f'<line x1="{LEFT}" y1="{ty}" x2="{LEFT + PLOT_W}" y2="{ty}" stroke="#e5e5e5"/>')
        out.append(
            f'<text x="{LEFT - 6}" y="{ty}" text-anchor="end" dominant-baseline="middle">{tick:g}</text>'
        )
    step = max(1, math.ceil(scale.x_max / 12))  # at most ~12 x labels
    for tick in range(0, last + 1, step):
        out.append(f'<text x="{_fmt(scale.x(tick))}" y="{TOP + PLOT_H + 16}" text-anchor="middle">{tick}</text>')
    if has_final:
        out.append(
            f'<text x="{_fmt(scale.x(scale.x_max))}" y="{TOP + PLOT_H + 16}" text-anchor="middle">final</text>'
        )
    return out + [
        f'<line x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{TOP + PLOT_H}" stroke="black"/>',
        f'<line x1="{LEFT}" y1="{TOP + PLOT_H}" x2="{LEFT + PLOT_W}" y2="{TOP + PLOT_H}" stroke="black"/>',
        f'<text x="{LEFT + PLOT_W / 2:.1f}" y="{HEIGHT - 8}" text-anchor="middle">iteration</text>',
        f'<text x="14" y="{TOP + PLOT_H / 2:.1f}" text-anchor="middle" '
        f'transform="rotate(-90 14 {TOP + PLOT_H / 2:.1f})">score</text>',
    ]


def _reference_lines(scale: _Scale, baseline, threshold, legend: list[tuple[str, str, str]]) -> list[str]:
    """The dashed baseline and threshold lines (each added to `legend`)."""
    out = []
    for value, color, label in ((baseline, BASELINE, "baseline (test)"), (threshold, THRESHOLD, "threshold")):
        if value is not None:
            ly = _fmt(scale.y(value))
            out.append(
                f'<line x1="{LEFT}" y1="{ly}" x2="{LEFT + PLOT_W}" y2="{ly}" stroke="{color}" '
                f'stroke-width="1.5" stroke-dasharray="6 4">'
                f"<title>{escape(label)}: {value:.4f}</title></line>"
            )
            legend.append((color, "6 4", f"{label} {value:.3f}"))
    return out


def _final_marker(scale: _Scale, final: float) -> str:
    """The final test score as a diamond one step after the last iteration."""
    fx, fy = scale.x(scale.x_max), scale.y(final)
    return (
        f'<path d="M {_fmt(fx)} {_fmt(fy - 6)} L {_fmt(fx + 6)} {_fmt(fy)} L {_fmt(fx)} {_fmt(fy + 6)} '
        f'L {_fmt(fx - 6)} {_fmt(fy)} Z" fill="{FINAL}"><title>final (test): {final:.4f}</title></path>'
    )


def _legend(legend: list[tuple[str, str, str]]) -> list[str]:
    """One legend row per drawn element, right of the plot: a diamond for the final score, else a line."""
    out = []
    lx = LEFT + PLOT_W + 14
    for n, (color, dash, label) in enumerate(legend):
        ly = TOP + 8 + 18 * n
        if color == FINAL:
            out.append(
                f'<path d="M {lx + 11} {ly - 5} L {lx + 16} {ly} L {lx + 11} {ly + 5} L {lx + 6} {ly} Z" '
                f'fill="{color}"/>'
            )
        else:
            dash_attr = f" stroke-dasharray={quoteattr(dash)}" if dash else ""
            out.append(
                f'<line x1="{lx}" y1="{ly}" x2="{lx + 22}" y2="{ly}" stroke="{color}" '
                f'stroke-width="2"{dash_attr}/>'
            )
        out.append(f'<text x="{lx + 28}" y="{ly}" dominant-baseline="middle">{escape(label)}</text>')
    return out


def trajectory_svg(
    records: Iterable[Any],
    *,
    baseline: float | None = None,
    final: float | None = None,
    threshold: float | None = None,
) -> str:
    """Train and val score by iteration, with baseline/threshold lines and the final test score.

    `records` are iteration records (objects or dicts with `iteration`, `score`, `val_score`).
    The final score is drawn one step after the last iteration, labelled "final".
    """
    rows = sorted(
        (
            (int(_field(r, "iteration") or 0), _score(_field(r, "score")), _score(_field(r, "val_score")))
            for r in records
        ),
        key=lambda row: row[0],
    )
    baseline, final, threshold = _score(baseline), _score(final), _score(threshold)
    last = rows[-1][0] if rows else 0
    scale = _Scale(last + 1 if final is not None else max(last, 1))
    out = _frame(scale, last, final is not None)
    legend: list[tuple[str, str, str]] = []  # (color, dash, label)
    out += _reference_lines(scale, baseline, threshold, legend)
    val = [(i, v) for i, _, v in rows if v is not None]
    train = [(i, s) for i, s, _ in rows if s is not None]
    if val:  # drawn first with larger markers, so equal train points stay visible on top
        out += _series(val, scale.x, scale.y, VAL, "val", 4)
    if train:
        out += _series(train, scale.x, scale.y, TRAIN, "train", 3)
    legend += [(TRAIN, "", "train score")] if train else []
    legend += [(VAL, "", "val score")] if val else []
    if final is not None:
        out.append(_final_marker(scale, final))
        legend.append((FINAL, "", f"final (test) {final:.3f}"))
    if not rows:
        out.append(
            f'<text x="{LEFT + PLOT_W / 2:.1f}" y="{TOP + PLOT_H / 2:.1f}" text-anchor="middle" '
            'fill="#7f7f7f">no iterations yet</text>'
        )
    out += _legend(legend)
    out.append("</svg>")
    return "\n".join(out) + "\n"
