"""Server-side charts: plain data in, an inline SVG string out (no JavaScript, no library).

Each bar carries ``data-label``/``data-series``/``data-value`` attributes and a ``<title>``
(the browser's tooltip and what a screen reader announces), so the numbers stay readable
and testable without parsing geometry. All text is escaped here.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString, mark_safe

WIDTH = 720
HEIGHT = 220
LEFT = 40  # room for the y-axis numbers
BOTTOM = 24  # room for the x-axis labels
TOP = 10
MUTED = "#5b6575"
GRID = "#dde3ea"


@dataclass(frozen=True)
class Series:
    """One stacked layer: its key (for data attributes), label, colour and one value per bar."""

    key: str
    label: str
    color: str
    values: Sequence[int]


def nice_ceiling(value: float) -> float:
    """The smallest 1, 2 or 5 times a power of ten that is >= value (axis maximum)."""
    if value <= 0:
        return 1
    exp = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 5, 10):
        if step * exp >= value:
            return step * exp
    return 10 * exp  # pragma: no cover - the loop always returns


def _fmt(value: float) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _n(value: float) -> str:
    """A coordinate with one decimal at most (short SVG, same picture)."""
    return f"{value:.1f}".removesuffix(".0")


def _svg(title: str, body: str, width: int, height: int) -> SafeString:
    return format_html(
        # Sized by attributes and the stylesheet: the Content-Security-Policy refuses inline
        # style attributes.
        '<svg class="chart" viewBox="0 0 {w} {h}" width="{w}" role="img" '
        'xmlns="http://www.w3.org/2000/svg">'
        "<title>{t}</title>{b}</svg>",
        w=width,
        h=height,
        t=title,
        b=mark_safe(body),  # noqa: S308 - built from escaped parts below
    )


def _y_axis(maximum: float, width: int, height: int, percent: bool = False) -> str:
    plot_h = height - TOP - BOTTOM
    parts = []
    for fraction in (0, 0.5, 1):
        y = TOP + plot_h * (1 - fraction)
        value = maximum * fraction
        label = f"{value * 100:.0f}%" if percent else _fmt(value)
        parts.append(
            format_html(
                '<line x1="{x1}" x2="{x2}" y1="{y}" y2="{y}" stroke="{c}"/>'
                '<text x="{tx}" y="{ty}" text-anchor="end" fill="{m}">{label}</text>',
                x1=LEFT,
                x2=width,
                y=_n(y),
                c=GRID,
                tx=_n(LEFT - 4),
                ty=_n(y + 4),
                m=MUTED,
                label=label,
            )
        )
    return "".join(parts)


def _x_labels(labels: Sequence[str], slot: float, height: int, every: int) -> str:
    return "".join(
        format_html(
            '<text x="{x}" y="{y}" text-anchor="middle" fill="{m}">{label}</text>',
            x=_n(LEFT + slot * (i + 0.5)),
            y=height - 6,
            m=MUTED,
            label=label,
        )
        for i, label in enumerate(labels)
        if i % every == 0 or i == len(labels) - 1
    )


def _empty(title: str, message: str, width: int, height: int) -> SafeString:
    body = format_html(
        '<text x="{x}" y="{y}" text-anchor="middle" fill="{m}">{msg}</text>',
        x=width // 2,
        y=height // 2,
        m=MUTED,
        msg=message,
    )
    return _svg(title, body, width, height)


def stacked_bars(
    title: str,
    labels: Sequence[str],
    series: Sequence[Series],
    *,
    empty: str = "",
    width: int = WIDTH,
    height: int = HEIGHT,
    label_every: int = 5,
) -> SafeString:
    """Vertical bars, one per label, each a stack of the series' values (zeros drawn as nothing)."""
    totals = [sum(s.values[i] for s in series) for i in range(len(labels))]
    if not labels or not any(totals):
        return _empty(title, empty, width, height)
    maximum = nice_ceiling(max(totals))
    plot_h = height - TOP - BOTTOM
    slot = (width - LEFT) / len(labels)
    bar_w = max(1.0, slot * 0.7)
    parts = [_y_axis(maximum, width, height)]
    for i, label in enumerate(labels):
        x = LEFT + slot * i + (slot - bar_w) / 2
        base = TOP + plot_h
        for s in series:
            value = s.values[i]
            if not value:
                continue
            h = plot_h * value / maximum
            base -= h
            parts.append(
                format_html(
                    '<rect x="{x}" y="{y}" width="{w}" height="{h}" fill="{c}" '
                    'data-label="{label}" data-series="{key}" data-value="{v}">'
                    "<title>{label} · {name}: {v}</title></rect>",
                    x=_n(x),
                    y=_n(base),
                    w=_n(bar_w),
                    h=_n(h),
                    c=s.color,
                    label=label,
                    key=s.key,
                    name=s.label,
                    v=value,
                )
            )
    parts.append(_x_labels(labels, slot, height, label_every))
    return _svg(title, "".join(parts), width, height)


def horizontal_bars(
    title: str,
    items: Sequence[tuple[str, int, str]],
    *,
    color: str = "#2457c5",
    empty: str = "",
    width: int = WIDTH,
    label_width: int = 300,
    row: int = 22,
) -> SafeString:
    """One bar per (label, value, href) item, longest first as given; href may be ""."""
    height = max(row * len(items) + 8, 40)
    if not items:
        return _empty(title, empty, width, height)
    maximum = max(value for _label, value, _href in items) or 1
    room = width - label_width - 50
    parts = []
    for i, (label, value, href) in enumerate(items):
        y = 4 + i * row
        short = label if len(label) <= 40 else label[:39] + "…"
        text = format_html(
            '<text x="{x}" y="{y}" text-anchor="end" fill="currentColor">{t}</text>',
            x=_n(label_width - 6),
            y=_n(y + row * 0.65),
            t=short,
        )
        if href:
            text = format_html('<a href="{h}">{t}</a>', h=href, t=text)
        w = room * value / maximum
        parts.append(
            format_html(
                '{text}<rect x="{x}" y="{y}" width="{w}" height="{h}" fill="{c}" '
                'data-label="{label}" data-value="{v}"><title>{label}: {v}</title></rect>'
                '<text x="{tx}" y="{ty}" fill="{m}">{v}</text>',
                text=text,
                x=_n(label_width),
                y=_n(y + 3),
                w=_n(w),
                h=_n(row - 6),
                c=color,
                label=label,
                v=value,
                tx=_n(label_width + w + 4),
                ty=_n(y + row * 0.65),
                m=MUTED,
            )
        )
    return _svg(title, "".join(parts), width, height)


def rate_columns(
    title: str,
    labels: Sequence[str],
    rates: Sequence[float | None],
    notes: Sequence[str],
    *,
    color: str = "#1e7f4f",
    empty: str = "",
    width: int = WIDTH,
    height: int = HEIGHT,
) -> SafeString:
    """Columns from 0 to 100 %, one per label; None (nothing to measure) draws no column."""
    if not labels or all(rate is None for rate in rates):
        return _empty(title, empty, width, height)
    plot_h = height - TOP - BOTTOM
    slot = (width - LEFT) / len(labels)
    bar_w = slot * 0.6
    parts = [_y_axis(1.0, width, height, percent=True)]
    for i, (label, rate, note) in enumerate(zip(labels, rates, notes, strict=True)):
        if rate is None:
            continue
        h = plot_h * rate
        parts.append(
            format_html(
                '<rect x="{x}" y="{y}" width="{w}" height="{h}" fill="{c}" '
                'data-label="{label}" data-value="{v}"><title>{label}: {pct} ({note})</title>'
                '</rect><text x="{tx}" y="{ty}" text-anchor="middle" fill="{m}">{pct}</text>',
                x=_n(LEFT + slot * i + (slot - bar_w) / 2),
                y=_n(TOP + plot_h - h),
                w=_n(bar_w),
                h=_n(h),
                c=color,
                label=label,
                v=f"{rate:.4f}",
                pct=f"{rate * 100:.0f}%",
                note=note,
                tx=_n(LEFT + slot * (i + 0.5)),
                ty=_n(TOP + plot_h - h - 3 if h > 14 else TOP + plot_h - 3),
                m=MUTED,
            )
        )
    parts.append(_x_labels(labels, slot, height, 1))
    return _svg(title, "".join(parts), width, height)


def legend(series: Sequence[Series]) -> SafeString:
    """An HTML legend for stacked bars (HTML wraps long Japanese labels better than SVG)."""
    return format_html(
        '<ul class="legend">{}</ul>',
        format_html_join(
            "",
            '<li><svg class="swatch" viewBox="0 0 1 1" aria-hidden="true">'
            '<rect width="1" height="1" fill="{}"/></svg>{}</li>',
            ((s.color, s.label) for s in series),
        ),
    )
