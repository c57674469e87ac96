"""Line charts as server-rendered SVG: they render offline, inside Airflow's UI, with nothing to load.

One chart per quantity, one colour per line (a node's GPU, a node), axes with units, the minimum and
maximum written on the axis, and each point's value in its hover title. Every label is escaped.
"""

from __future__ import annotations

from datetime import datetime, timezone
from html import escape
from typing import Any

WIDTH, HEIGHT, LEFT, BOTTOM, TOP, RIGHT = 640, 180, 48, 28, 12, 120
COLOURS = ("#0b6bcb", "#d64545", "#2f9e44", "#e8890c", "#7048e8", "#0c8599", "#c2255c", "#5c940d")
LEGEND_CHARS = 19  # what fits in the legend's column at its font size
MAX_POINTS_DRAWN = 400  # a week-long series is thinned for drawing, not for keeping


def line_chart(
    title: str,
    unit: str,
    lines: dict[str, list[tuple[float, float]]],
    fixed_max: float | None = None,
    by_step: bool = False,
) -> str:
    """``lines``: label -> [(epoch seconds, value)], or [(step, value)] with ``by_step`` (training
    curves: the y axis then spans the values, not zero to the top). Empty lines are left out."""
    drawn = {label: points for label, points in lines.items() if points}
    if not drawn:
        return f'<p class="muted">{escape(title)}: no samples yet</p>'
    times = [t for points in drawn.values() for t, _ in points]
    values = [v for points in drawn.values() for _, v in points]
    start, end = min(times), max(times)
    if by_step:
        low, high = min(values), max(values)
        if high == low:  # one value (a test accuracy at the end): from zero to it, or to 1 for a zero
            low, high = min(0.0, low), max(0.0, high) or 1.0
    else:
        low, high = 0.0, fixed_max if fixed_max is not None else max(max(values), 1e-9)
    x_text = _step if by_step else _clock
    x_unit = "(step)" if by_step else "UTC"
    unit_text = f" ({escape(unit)})" if unit else ""

    def _where(t: float) -> str:
        return f"step {_step(t)}" if by_step else f"{_clock(t)} UTC"

    span_t = max(end - start, 1.0)
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def x(t: float) -> float:
        return LEFT + (t - start) / span_t * plot_w

    def y(v: float) -> float:
        return TOP + plot_h - (min(max(v, low), high) - low) / (high - low or 1) * plot_h

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" role="img" aria-label="{escape(title)}">',
        f"<title>{escape(title)}</title>",
        f'<text x="{LEFT}" y="{TOP - 2}" font-size="12" font-weight="600">{escape(title)}{unit_text}</text>',
        f'<line x1="{LEFT}" y1="{TOP + plot_h}" x2="{LEFT + plot_w}" y2="{TOP + plot_h}" stroke="#9aa5b1"/>',
        f'<line x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{TOP + plot_h}" stroke="#9aa5b1"/>',
        f'<text x="{LEFT - 4}" y="{TOP + 8}" font-size="10" text-anchor="end">{_number(high)}</text>',
        f'<text x="{LEFT - 4}" y="{TOP + plot_h}" font-size="10" text-anchor="end">{_number(low)}</text>',
        f'<text x="{LEFT}" y="{HEIGHT - 8}" font-size="10">{escape(x_text(start))}</text>',
        f'<text x="{LEFT + plot_w}" y="{HEIGHT - 8}" font-size="10" text-anchor="end">{escape(x_text(end))} {x_unit}</text>',
    ]
    for index, (label, points) in enumerate(sorted(drawn.items())):
        colour = COLOURS[index % len(COLOURS)]
        step = max(1, len(points) // MAX_POINTS_DRAWN)
        shown = points[::step]
        if shown[-1] != points[-1]:
            shown.append(points[-1])
        path = " ".join(f"{x(t):.1f},{y(v):.1f}" for t, v in shown)
        parts.append(f'<polyline fill="none" stroke="{colour}" stroke-width="1.5" points="{path}"/>')
        for t, v in shown:
            parts.append(
                f'<circle cx="{x(t):.1f}" cy="{y(v):.1f}" r="2" fill="{colour}">'
                f"<title>{escape(label)}: {_number(v)} {escape(unit)} at {escape(_where(t))}</title></circle>"
            )
        legend_y = TOP + 12 + index * 14
        value = _number(points[-1][1])
        short = _short(label, LEGEND_CHARS - len(value) - 2) if len(drawn) > 1 else "last"  # one line: the title says what
        parts.append(
            f'<text x="{LEFT + plot_w + 8}" y="{legend_y}" font-size="11" fill="{colour}"><title>{escape(label)}</title>'
            f"{escape(short)}: {value}</text>"
        )
    parts.append("</svg>")
    return "".join(parts)


def resource_charts(series: list[dict[str, Any]]) -> str:
    """GPU utilisation and memory per GPU, CPU and memory per node, the job folder's disk use per node."""
    gpu: dict[str, list[tuple[float, float]]] = {}
    gpu_mem: dict[str, list[tuple[float, float]]] = {}
    cpu: dict[str, list[tuple[float, float]]] = {}
    mem: dict[str, list[tuple[float, float]]] = {}
    disk: dict[str, list[tuple[float, float]]] = {}
    for document in series:
        node = str(document.get("node") or "?")
        for point in document.get("points") or []:
            t = point.get("t")
            if not isinstance(t, (int, float)):
                continue
            for index, value in enumerate(point.get("gpu") or []):
                if isinstance(value, (int, float)):
                    gpu.setdefault(f"{node} GPU {index}", []).append((t, value))
            for index, value in enumerate(point.get("gpuMem") or []):
                if isinstance(value, (int, float)):
                    gpu_mem.setdefault(f"{node} GPU {index}", []).append((t, value))
            for name, into in (("cpu", cpu), ("mem", mem)):
                if isinstance(point.get(name), (int, float)):
                    into.setdefault(node, []).append((t, point[name]))
            if isinstance(point.get("disk"), (int, float)):
                disk.setdefault(node, []).append((t, point["disk"]))
    charts = [
        line_chart("GPU utilization", "%", gpu, 100.0) if gpu else '<p class="muted">no GPU samples (nvidia-smi found no GPU)</p>',
        line_chart("GPU memory", "% used", gpu_mem, 100.0) if gpu_mem else "",
        line_chart("CPU", "% busy", cpu, 100.0),
        line_chart("Memory", "% used", mem, 100.0),
        line_chart("Job folder", *_in_bytes(disk)),
    ]
    return "".join(f"<div>{chart}</div>" for chart in charts if chart)


def training_charts(scalars: dict[str, dict[str, list[Any]]]) -> str:
    """One chart per TensorBoard tag, one line per run (the folder its event file is in), step on the x axis."""
    if not scalars:
        return (
            '<p class="muted">no TensorBoard scalars yet: a job that writes event files under an output directory gets its curves here</p>'
        )
    charts = []
    for tag in sorted(scalars):
        lines = {run: [(float(p[0]), float(p[1])) for p in points] for run, points in scalars[tag].items()}
        charts.append(f"<div>{line_chart(tag, '', lines, by_step=True)}</div>")
    return "".join(charts)


BYTE_UNITS = (("bytes", 1.0), ("KiB", 2.0**10), ("MiB", 2.0**20), ("GiB", 2.0**30), ("TiB", 2.0**40))


def byte_unit(amount: float) -> tuple[str, float]:
    """(unit, its size): the largest unit in which ``amount`` is at least one."""
    return [unit for unit in BYTE_UNITS if amount >= unit[1]][-1] if amount >= 1 else BYTE_UNITS[0]


def _in_bytes(lines: dict[str, list[tuple[float, float]]]) -> tuple[str, dict[str, list[tuple[float, float]]]]:
    """(unit, lines in it): the unit of the biggest value."""
    unit, scale = byte_unit(max((v for points in lines.values() for _, v in points), default=0.0))
    return unit, {label: [(t, v / scale) for t, v in points] for label, points in lines.items()}


def _number(value: float) -> str:
    """Four significant digits: a loss of 0.0234 reads as such, a step count as a whole number."""
    if value == int(value) and abs(value) < 1e7:
        return f"{int(value)}"
    return f"{value:.4g}"


def _short(label: str, room: int) -> str:
    """A legend fits beside the plot: a run's last folder (``MODEL/tb/train`` → ``train``), cut from the left
    where it must be, as the end tells lines apart (``…al-0 GPU 1``); the whole label is its hover title."""
    room = max(room, 6)
    if len(label) <= room:
        return label
    tail = label.rstrip("/").rsplit("/", 1)[-1] or label
    return tail if len(tail) <= room else "…" + tail[-(room - 1) :]


def _step(value: float) -> str:
    return f"{int(value)}"


def _clock(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, timezone.utc).strftime("%H:%M:%S")
