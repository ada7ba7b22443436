"""Charts as data: one description renders as Vega-Lite on the page and as a matplotlib PNG.

The browser draws the Vega-Lite chart, which keeps the server side cheap. The PNG is drawn only
when the user clicks its download button. It uses matplotlib's object API without pyplot state,
so it is safe on the download thread.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter


# Tick values of a log context axis: 1K to 10M tokens.
DECADES = [1e3, 1e4, 1e5, 1e6, 1e7]

# Byte axes use binary units, as the numbers beside the charts do (GiB, not decimal G).
_BINARY_UNITS = [(2**40, "TiB"), (2**30, "GiB"), (2**20, "MiB"), (2**10, "KiB")]
_BINARY_LABEL = " : ".join(
    f"datum.value >= {size} ? format(datum.value / {size}, '.3~') + ' {unit}'" for size, unit in _BINARY_UNITS
) + " : format(datum.value, '.3~') + ' B'"


def _y_axis(y_title: str) -> dict:
    """Vega-Lite axis of a y quantity: binary units for bytes, SI prefixes otherwise."""
    return {"labelExpr": _BINARY_LABEL} if y_title == "bytes" else {"format": "~s"}


def binary_bytes(value: float) -> str:
    """Format a byte count for a PNG axis in the same binary units."""
    for size, unit in _BINARY_UNITS:
        if abs(value) >= size:
            return f"{value / size:.3g} {unit}"
    return f"{value:.3g} B"


def _color(data: pd.DataFrame, field_name: str) -> dict:
    """Vega-Lite colour encoding; more than 10 series take a 20-colour scheme so none repeat."""
    encoding = {"field": field_name, "type": "nominal", "title": None}
    if data[field_name].nunique() > 10:
        encoding["scale"] = {"scheme": "tableau20"}
    return encoding


def _png_colors(n: int) -> list:
    """Colours of ``n`` PNG series: matplotlib's 10-colour cycle, or tab20 beyond 10 series."""
    if n <= 10:
        return [f"C{i}" for i in range(n)]
    cmap = matplotlib.colormaps["tab20"]
    return [cmap(i % 20) for i in range(n)]


def _y_formatter(y_title: str) -> FuncFormatter:
    if y_title == "bytes":
        return FuncFormatter(lambda v, _: binary_bytes(v))
    return FuncFormatter(lambda v, _: f"{v:.3g}")


@dataclass(frozen=True)
class Marker:
    """A line at ``x`` with a label: vertical on a line chart (the chosen context, a crossover),
    horizontal on a bar chart (a memory limit)."""

    x: float
    label: str
    dashed: bool = True


@dataclass
class LineChart:
    """Lines of ``y`` against ``x``, one per value of ``color``, on log axes by default.

    ``x_ticks`` defaults to the decades of a context axis (1K to 10M); None lets Vega-Lite pick.
    """

    data: pd.DataFrame
    x: str
    y: str
    color: str
    title: str
    x_title: str
    y_title: str
    log_x: bool = True
    log_y: bool = True
    markers: list[Marker] = field(default_factory=list)
    x_ticks: list[float] | None = field(default_factory=lambda: list(DECADES))
    points: bool = False  # draw points instead of lines (a scatter such as the Pareto chart)
    diagonal: bool = False  # add the line y = x (predicted against measured)

    def vega(self) -> dict:
        x_scale = {"type": "log"} if self.log_x else {}
        y_scale = {"type": "log"} if self.log_y else {"zero": False}
        x_axis = {"format": "~s"}
        if self.x_ticks:
            x_axis["values"] = self.x_ticks
        lines = {
            "mark": {"type": "point", "filled": True, "size": 60, "tooltip": {"content": "data"}}
            if self.points
            else {"type": "line", "tooltip": True},
            "encoding": {
                "x": {"field": self.x, "type": "quantitative", "scale": x_scale, "title": self.x_title, "axis": x_axis},
                "y": {
                    "field": self.y, "type": "quantitative", "scale": y_scale, "title": self.y_title,
                    "axis": _y_axis(self.y_title),
                },
                "color": _color(self.data, self.color),
            },
        }
        layers = [lines]
        if self.diagonal:
            low, high = self._diagonal_ends()
            layers.append(
                {
                    "data": {"values": [{self.x: low, self.y: low}, {self.x: high, self.y: high}]},
                    "mark": {"type": "line", "color": "gray", "strokeDash": [2, 2]},
                    "encoding": {
                        "x": {"field": self.x, "type": "quantitative"},
                        "y": {"field": self.y, "type": "quantitative"},
                    },
                }
            )
        if self.markers:
            values = [{"x": m.x, "label": m.label} for m in self.markers]
            layers.append(
                {
                    "data": {"values": values},
                    "mark": {"type": "rule", "strokeDash": [4, 3], "color": "gray"},
                    "encoding": {"x": {"field": "x", "type": "quantitative"}, "tooltip": [{"field": "label"}]},
                }
            )
        return {"title": self.title, "layer": layers, "height": 280}

    def png(self) -> bytes:
        fig = Figure(figsize=(7, 3.6), dpi=120)
        ax = fig.add_subplot()
        groups = list(self.data.groupby(self.color, sort=False))
        for (name, group), colour in zip(groups, _png_colors(len(groups))):
            if self.points:
                ax.scatter(group[self.x], group[self.y], label=str(name), s=18, color=colour)
            else:
                ax.plot(group[self.x], group[self.y], label=str(name), color=colour)
        for marker in self.markers:
            ax.axvline(marker.x, color="gray", linestyle="--" if marker.dashed else "-", linewidth=0.8)
        if self.diagonal:
            low, high = self._diagonal_ends()
            ax.plot([low, high], [low, high], color="gray", linestyle=":", linewidth=0.8)
        if self.log_x:
            ax.set_xscale("log")
        if self.log_y:
            ax.set_yscale("log")
        if self.y_title == "bytes":
            ax.yaxis.set_major_formatter(_y_formatter(self.y_title))
        ax.set_xlabel(self.x_title)
        ax.set_ylabel(self.y_title)
        ax.set_title(self.title)
        ax.legend(fontsize="small")
        ax.grid(True, which="major", alpha=0.3)
        return _to_png(fig)

    def _diagonal_ends(self) -> tuple[float, float]:
        values = pd.concat([self.data[self.x], self.data[self.y]])
        return float(values.min()), float(values.max())


@dataclass
class BarChart:
    """Bars of ``y`` for each ``x``, one per ``color``, with optional horizontal limit lines.

    Stacked for the per-op breakdown and for device memory against its capacity (``limits``);
    side by side with ``stacked=False`` (efficiencies per op kind).
    """

    data: pd.DataFrame
    x: str
    y: str
    color: str
    title: str
    y_title: str
    limits: list[Marker] = field(default_factory=list)
    stacked: bool = True

    def vega(self) -> dict:
        bars = {
            "mark": {"type": "bar", "tooltip": True},
            "encoding": {
                "x": {"field": self.x, "type": "nominal", "title": None, "sort": None},
                "y": {
                    "field": self.y,
                    "type": "quantitative",
                    "title": self.y_title,
                    "stack": "zero" if self.stacked else None,
                    "axis": _y_axis(self.y_title),
                },
                "color": _color(self.data, self.color),
            },
        }
        if not self.stacked:
            bars["encoding"]["xOffset"] = {"field": self.color, "type": "nominal"}
        layers = [bars]
        if self.limits:
            values = [{"y": m.x, "label": m.label} for m in self.limits]
            layers.append(
                {
                    "data": {"values": values},
                    "mark": {"type": "rule", "strokeDash": [4, 3], "color": "firebrick"},
                    "encoding": {"y": {"field": "y", "type": "quantitative"}, "tooltip": [{"field": "label"}]},
                }
            )
        return {"title": self.title, "layer": layers, "height": 320}

    def png(self) -> bytes:
        fig = Figure(figsize=(7, 4), dpi=120)
        ax = fig.add_subplot()
        table = self.data.pivot_table(index=self.x, columns=self.color, values=self.y, aggfunc="sum", sort=False)
        positions = np.arange(len(table.index), dtype=float)
        width = 0.8 if self.stacked else 0.8 / max(len(table.columns), 1)
        bottom = np.zeros(len(table.index))
        colours = _png_colors(len(table.columns))
        for i, column in enumerate(table.columns):
            values = table[column].fillna(0.0).to_numpy()
            if self.stacked:
                ax.bar(positions, values, width, bottom=bottom, label=str(column), color=colours[i])
                bottom = bottom + values
            else:
                ax.bar(positions - 0.4 + width * (i + 0.5), values, width, label=str(column), color=colours[i])
        # Many bars (one per device) get upright labels, which would otherwise run together.
        ax.set_xticks(positions, [str(i) for i in table.index], rotation=90 if len(table.index) > 4 else 0)
        for limit in self.limits:
            ax.axhline(limit.x, color="firebrick", linestyle="--", linewidth=0.8)
            ax.annotate(limit.label, (0, limit.x), xycoords=("axes fraction", "data"), fontsize="x-small", va="bottom")
        ax.set_ylabel(self.y_title)
        ax.set_title(self.title)
        ax.yaxis.set_major_formatter(_y_formatter(self.y_title))
        ax.legend(fontsize="x-small", loc="upper left", bbox_to_anchor=(1.0, 1.0))
        fig.subplots_adjust(right=0.68)
        return _to_png(fig)


def _to_png(fig: Figure) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", bbox_inches="tight")
    return buffer.getvalue()
