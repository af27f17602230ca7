"""/admin/: today at a glance and the last 7 days as a chart."""
from __future__ import annotations

from .base import AdminPageHandler

CHART_DAYS = 7
# The chart's geometry (an inline SVG, no script): one group of bars per day.
CHART = {"width": 760, "height": 240, "top": 20, "bottom": 30, "left": 40, "right": 10}
SERIES = [("expected", "预约到访", "#0d6efd"), ("signed_in", "签到", "#198754"), ("people_passed", "通行人数", "#fd7e14")]


def chart(days) -> dict:
    """Bars and axis ticks for the last days' figures."""
    c = CHART
    peak = max([1] + [getattr(day, name) for day in days for name, _, _ in SERIES])
    step = max(1, -(-peak // 4))  # four gridlines at round numbers
    top = step * 4
    plot_h = c["height"] - c["top"] - c["bottom"]
    group_w = (c["width"] - c["left"] - c["right"]) / len(days)
    bar_w = group_w * 0.8 / len(SERIES)
    bars, labels = [], []
    for n, day in enumerate(days):
        x0 = c["left"] + n * group_w + group_w * 0.1
        labels.append({"x": x0 + group_w * 0.4, "text": day.label})
        for k, (name, title, color) in enumerate(SERIES):
            value = getattr(day, name)
            h = plot_h * value / top
            bars.append({"x": x0 + k * bar_w, "y": c["top"] + plot_h - h, "w": bar_w - 2, "h": h,
                         "color": color, "value": value, "title": f"{day.label} {title} {value}"})
    ticks = [{"y": c["top"] + plot_h - plot_h * v / top, "value": v} for v in range(0, top + 1, step)]
    return {**c, "bars": bars, "labels": labels, "ticks": ticks, "series": SERIES}


class HomeHandler(AdminPageHandler):
    """The admin's start page."""

    nav = "/admin/"

    async def get(self):
        today, days = await self.ctx.stats.days(CHART_DAYS)
        self.render_admin("admin/home.html", today=today, days=days, chart=chart(days))


default_handlers = [
    (r"/admin/?", HomeHandler),
]
