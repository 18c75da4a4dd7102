"""A segment's size over time as inline SVG drawn on the server: no chart library, nothing fetched from a CDN.

Points are placed by their time (not their rank), counts from 0 up; the axes carry dates and member counts, and a
single point is drawn as a point.
"""
import datetime as dt
import itertools

from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

WIDTH, HEIGHT = 640, 220
LEFT, RIGHT, TOP, BOTTOM = 60, 56, 12, 28  # margins: count labels on the left, room for half a date label at the ends
MAX_MARKERS = 100  # beyond this many points the line alone shows the shape; markers would overlap
TIME_TICKS = 5


def _count_ticks(top: int) -> list[int]:
    """0 up to at least `top` (and 1) in steps of 1, 2 or 5 times a power of ten, about four of them."""
    step, factors = 1, itertools.cycle((2, 2.5, 2))  # 1, 2, 5, 10, 20, 50, ...
    while step * 4 < top:
        step = int(step * next(factors))
    return list(range(0, max(-(-top // step) * step, step) + 1, step))


def _time_label(at: dt.datetime, span: dt.timedelta) -> str:
    """Dates; with the time of day too when the ticks are less than a day apart."""
    short = dt.timedelta(0) < span < dt.timedelta(days=TIME_TICKS - 1)
    return at.strftime("%Y-%m-%d %H:%M" if short else "%Y-%m-%d")


def _time_ticks(first: dt.datetime, span: dt.timedelta) -> list[tuple[dt.datetime, str]]:
    if not span:
        return [(first, _time_label(first, span))]
    ticks: dict[str, dt.datetime] = {}
    for i in range(TIME_TICKS):
        at = first + span * i / (TIME_TICKS - 1)
        ticks.setdefault(_time_label(at, span), at)
    return [(at, label) for label, at in ticks.items()]


def _coord(value: float) -> str:
    # As text: format_html escapes its arguments to strings before a format spec could apply.
    return f"{value:.1f}"


def size_chart_svg(points: list[tuple[dt.datetime, int]]) -> SafeString:
    """`points`: (time, members), oldest first. An empty string when there is none."""
    if not points:
        return SafeString("")
    points = [(timezone.localtime(at), n) for at, n in points]
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    counts = _count_ticks(max(n for _, n in points))
    first, span = points[0][0], points[-1][0] - points[0][0]

    def x(at: dt.datetime) -> float:
        return LEFT + (plot_w / 2 if not span else (at - first) / span * plot_w)

    def y(n: int) -> float:
        return TOP + plot_h - n / counts[-1] * plot_h

    grid = format_html_join("", '<line x1="{}" x2="{}" y1="{}" y2="{}" stroke="#ddd"/>'
                            '<text x="{}" y="{}" text-anchor="end" font-size="11">{}</text>',
                            ((LEFT, WIDTH - RIGHT, _coord(y(n)), _coord(y(n)), LEFT - 6, _coord(y(n) + 4), n)
                             for n in counts))
    dates = format_html_join("", '<line x1="{0}" x2="{0}" y1="{1}" y2="{2}" stroke="#999"/>'
                             '<text x="{0}" y="{3}" text-anchor="middle" font-size="11">{4}</text>',
                             ((_coord(x(at)), TOP + plot_h, TOP + plot_h + 4, HEIGHT - 8, label)
                              for at, label in _time_ticks(first, span)))
    line = format_html('<polyline fill="none" stroke="#417690" stroke-width="2" points="{}"/>',
                       " ".join(f"{_coord(x(at))},{_coord(y(n))}" for at, n in points)) if len(points) > 1 else ""
    marked = points if len(points) <= MAX_MARKERS else points[-1:]
    markers = format_html_join("", '<circle cx="{}" cy="{}" r="3.5" fill="#417690"><title>{}: {} members'
                               '</title></circle>',
                               ((_coord(x(at)), _coord(y(n)), at.strftime("%Y-%m-%d %H:%M"), n) for at, n in marked))
    return format_html(
        '<svg class="segment-size-chart" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {w} {h}" width="{w}" '
        'height="{h}" role="img" aria-label="segment size over time">{grid}'
        '<line x1="{left}" x2="{left}" y1="{top}" y2="{bottom}" stroke="#999"/>'
        '<line x1="{left}" x2="{right}" y1="{bottom}" y2="{bottom}" stroke="#999"/>{dates}{line}{markers}</svg>',
        w=WIDTH, h=HEIGHT, grid=grid, left=LEFT, right=WIDTH - RIGHT, top=TOP, bottom=TOP + plot_h, dates=dates,
        line=line, markers=markers)
