"""Pure: small SVG pictures for the fleet view, drawn on the server (no chart library to ship):
counts as a stacked bar, and a pendant's battery and signal over time. Every picture carries a
<title> and a text equivalent for screen readers."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from html import escape


@dataclass(frozen=True)
class Sample:
    """One heartbeat's battery percent and signal in dBm (either may be unknown)."""

    at: datetime
    batt: int | None
    rssi: int | None


def stacked_bar(
    parts: Sequence[tuple[str, int, str]], *, title: str, width: int = 560, height: int = 28
) -> str:
    """A horizontal bar split by count: parts are (label, count, css class)."""
    total = sum(count for _, count, _ in parts)
    text = ", ".join(f"{label} {count}" for label, count, _ in parts)
    shapes = []
    if total == 0:
        shapes.append(f'<rect x="0" y="0" width="{width}" height="{height}" class="bar-empty"/>')
    x = 0.0
    for label, count, css in parts:
        if count == 0:
            continue
        w = width * count / total
        shapes.append(
            f'<rect x="{x:.1f}" y="0" width="{w:.1f}" height="{height}" class="{escape(css)}">'
            f"<title>{escape(label)}: {count}</title></rect>"
        )
        if w >= 28:
            shapes.append(
                f'<text x="{x + w / 2:.1f}" y="{height / 2 + 5:.1f}" text-anchor="middle" class="bar-label">'
                f"{count}</text>"
            )
        x += w
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" role="img" viewBox="0 0 {width} {height}" '
        f'width="{width}" height="{height}" aria-label="{escape(title)}: {escape(text)}">'
        f"<title>{escape(title)}</title>{''.join(shapes)}</svg>"
    )


def _scale(value: float, lo: float, hi: float, top: float, bottom: float) -> float:
    value = min(max(value, lo), hi)
    return bottom - (value - lo) / (hi - lo) * (bottom - top)


def _path(points: list[tuple[float, float | None]]) -> str:
    """An SVG path through the points; a gap where a value is unknown."""
    parts, pen_down = [], False
    for x, y in points:
        if y is None:
            pen_down = False
            continue
        parts.append(f"{'L' if pen_down else 'M'}{x:.1f},{y:.1f}")
        pen_down = True
    return " ".join(parts)


def battery_signal(
    samples: Sequence[Sample], *, start: datetime, end: datetime, width: int = 720, pane: int = 120
) -> str:
    """Two panes over the same time axis: battery percent (0..100) and signal (-120..-50 dBm)."""
    left, right, gap, bottom_axis = 44, 10, 26, 22
    height = pane * 2 + gap + bottom_axis
    span = max((end - start).total_seconds(), 1.0)

    def x_of(at: datetime) -> float:
        return left + (at - start).total_seconds() / span * (width - left - right)

    ordered = sorted(samples, key=lambda s: s.at)
    batt_top, batt_bottom = 6, pane
    sig_top, sig_bottom = pane + gap, pane * 2 + gap
    batt = [
        (x_of(s.at), _scale(s.batt, 0, 100, batt_top, batt_bottom) if s.batt is not None else None)
        for s in ordered
    ]
    sig = [
        (x_of(s.at), _scale(s.rssi, -120, -50, sig_top, sig_bottom) if s.rssi is not None else None)
        for s in ordered
    ]
    grid = []
    for pct in (0, 20, 50, 100):
        y = _scale(pct, 0, 100, batt_top, batt_bottom)
        grid.append(f'<line x1="{left}" x2="{width - right}" y1="{y:.1f}" y2="{y:.1f}" class="grid"/>')
        grid.append(f'<text x="{left - 4}" y="{y + 4:.1f}" text-anchor="end" class="axis">{pct}%</text>')
    for dbm in (-120, -105, -85, -50):
        y = _scale(dbm, -120, -50, sig_top, sig_bottom)
        grid.append(f'<line x1="{left}" x2="{width - right}" y1="{y:.1f}" y2="{y:.1f}" class="grid"/>')
        grid.append(f'<text x="{left - 4}" y="{y + 4:.1f}" text-anchor="end" class="axis">{dbm}</text>')
    ticks = []
    step = (
        timedelta(hours=6)
        if span > 86400
        else timedelta(hours=1)
        if span > 4 * 3600
        else timedelta(minutes=15)
    )
    tick = start.replace(minute=0, second=0, microsecond=0) + step
    while tick < end:
        x = x_of(tick)
        label = tick.strftime("%d %H:%M") if step >= timedelta(hours=6) else tick.strftime("%H:%M")
        ticks.append(f'<text x="{x:.1f}" y="{height - 6}" text-anchor="middle" class="axis">{label}</text>')
        tick += step
        if len(ticks) > 12:
            break
    known_batt = [s.batt for s in ordered if s.batt is not None]
    known_sig = [s.rssi for s in ordered if s.rssi is not None]
    summary = (
        f"{len(ordered)} heartbeats from {start:%Y-%m-%d %H:%M} to {end:%Y-%m-%d %H:%M} UTC; "
        + (f"battery {known_batt[0]}% to {known_batt[-1]}%; " if known_batt else "no battery readings; ")
        + (f"signal {min(known_sig)} to {max(known_sig)} dBm" if known_sig else "no signal readings")
    )
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" role="img" viewBox="0 0 {width} {height}" width="{width}" '
        f'height="{height}" aria-label="Battery and signal: {escape(summary)}" class="chart">'
        f"<title>Battery and signal over time</title><desc>{escape(summary)}</desc>"
        f'<text x="{left}" y="{batt_top + 10}" class="pane-title">Battery %</text>'
        f'<text x="{left}" y="{sig_top + 10}" class="pane-title">Signal dBm</text>'
        f"{''.join(grid)}{''.join(ticks)}"
        f'<path d="{_path(batt)}" class="line-battery" fill="none"/>'
        f'<path d="{_path(sig)}" class="line-signal" fill="none"/>'
        "</svg>"
    )
