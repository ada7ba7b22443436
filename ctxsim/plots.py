"""Matplotlib figures for the common questions, drawn from a ``ctxsim.sweep`` DataFrame.

- ``flops``: FLOPs per token against context, one line per model (prefill mean per new token,
  and one decode step per output token).
- ``kv``: KV-cache memory per sequence against context, one line per model.
- ``time``: estimated prefill and decode time by op kind against context (needs hardware).
- ``memory``: memory per device (weights, KV cache, activation peak) for each plan and model,
  at one context.

Each function returns a ``matplotlib.figure.Figure`` on the Agg canvas. Figures are built
without pyplot, so drawing one changes no global matplotlib state. matplotlib is imported inside
the functions, so ``import ctxsim`` does not load it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from ctxsim.counts.report import OP_KINDS
from ctxsim.spec.errors import SpecError
from ctxsim.sweep import write_atomically

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure

GIB = 2.0**30
FORMATS = (".png", ".svg")
PHASE_TITLES = {"prefill": "prefill (TTFT)", "decode": "decode step (TPOT)"}


# ---------------------------------------------------------------------------------------------
# Shared pieces


def _figure(width: float, height: float, rows: int = 1, columns: int = 1) -> tuple[Figure, Any]:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(rows, columns, squeeze=False)
    return figure, axes


def _token_label(value: float, _position: Any = None) -> str:
    """Label a token count as the CLI writes it: 1k = 1024, 1m = 1024^2."""
    for suffix, scale in (("m", 1024**2), ("k", 1024)):
        if value >= scale:
            return f"{value / scale:g}{suffix}"
    return f"{value:g}"


def _context_axis(ax: Any) -> None:
    from matplotlib.ticker import FuncFormatter, LogLocator

    ax.set_xscale("log", base=2)
    ax.xaxis.set_major_locator(LogLocator(base=4))
    ax.xaxis.set_major_formatter(FuncFormatter(_token_label))
    ax.xaxis.set_minor_formatter(FuncFormatter(lambda *_: ""))
    ax.set_xlabel("context (tokens; k = 1024)")
    ax.grid(True, which="major", alpha=0.3)


def _require(frame: pd.DataFrame, columns: list[str], hint: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise SpecError(f"the sweep has no {', '.join(missing)} column: {hint}")


def _first_of_each(frame: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """Keep the rows of the first batch, plan and hardware; return them and what was kept (for the title)."""
    picked = []
    for column in ("batch", "plan", "hardware"):
        if column in frame.columns and frame[column].nunique() > 0:
            first = frame[column].iloc[0]
            frame = frame[frame[column] == first]
            if column != "batch" or first != 1:
                picked.append(f"{column} {first}")
    return frame, picked


def _title(text: str, picked: list[str]) -> str:
    return text + (f" ({', '.join(picked)})" if picked else "")


def _models(frame: pd.DataFrame) -> list[str]:
    return list(dict.fromkeys(str(m) for m in frame["model"]))


# ---------------------------------------------------------------------------------------------
# The plots


def flops_figure(frame: pd.DataFrame) -> Figure:
    """Plot FLOPs per token against context, one line per model, for each phase in the sweep."""
    phases = [p for p in ("prefill", "decode") if f"{p}_flops" in frame.columns]
    _require(frame, ["context_tokens"] + ([] if phases else ["decode_flops"]), "run the sweep with a phase")
    rows, picked = _first_of_each(frame)
    figure, axes = _figure(5.5 * len(phases), 4.2, 1, len(phases))
    for ax, phase in zip(axes[0], phases):
        for model in _models(rows):
            part = rows[rows["model"] == model]
            if phase == "prefill":
                per_token = part["prefill_flops"] / (part["batch"] * part["new_tokens"])
            else:
                per_token = part["decode_flops"] / part["batch"]
            ax.plot(part["context_tokens"], per_token, label=model)
        _context_axis(ax)
        ax.set_yscale("log")
        label = "FLOPs per new token (mean over the prefill)" if phase == "prefill" else "FLOPs per output token"
        ax.set_ylabel(label)
        ax.set_title(phase)
        ax.legend(fontsize="small")
    figure.suptitle(_title("FLOPs per token against context", picked))
    return figure


def kv_figure(frame: pd.DataFrame) -> Figure:
    """Plot KV-cache memory per sequence against context, one line per model."""
    _require(frame, ["context_tokens", "kv_bytes_per_sequence"], "run ctxsim.sweep to build the table")
    rows, picked = _first_of_each(frame)
    figure, axes = _figure(6.5, 4.5)
    ax = axes[0][0]
    for model in _models(rows):
        part = rows[rows["model"] == model]
        ax.plot(part["context_tokens"], part["kv_bytes_per_sequence"] / GIB, label=model)
    _context_axis(ax)
    ax.set_yscale("log")
    ax.set_ylabel("KV cache per sequence (GiB)")
    ax.legend(fontsize="small")
    ax.set_title(_title("KV-cache memory against context", picked))
    return figure


def _time_scale(seconds: float) -> tuple[float, str]:
    if seconds < 1e-3:
        return 1e6, "us"
    if seconds < 1.0:
        return 1e3, "ms"
    return 1.0, "s"


def time_figure(frame: pd.DataFrame) -> Figure:
    """Plot estimated time by op kind against context, stacked, one row of panels per model."""
    phases = [p for p in ("prefill", "decode") if any(c.startswith(f"{p}_") and c.endswith("_s") for c in frame.columns)]
    if not phases:
        raise SpecError("the sweep has no time columns: run it with hardware (--hardware h200)")
    rows, picked = _first_of_each(frame)
    models = _models(rows)
    figure, axes = _figure(5.5 * len(phases), 3.6 * len(models), len(models), len(phases))
    for r, model in enumerate(models):
        part = rows[rows["model"] == model]
        for c, phase in enumerate(phases):
            ax = axes[r][c]
            kinds = [k for k in OP_KINDS if f"{phase}_{k}_s" in part.columns and part[f"{phase}_{k}_s"].any()]
            total = sum(part[f"{phase}_{k}_s"] for k in kinds)
            scale, unit = _time_scale(float(total.max()) if len(total) else 0.0)
            ax.stackplot(part["context_tokens"], [part[f"{phase}_{k}_s"] * scale for k in kinds], labels=kinds)
            _context_axis(ax)
            ax.set_ylabel(f"time ({unit})")
            ax.set_title(f"{model}: {PHASE_TITLES[phase]}")
            ax.legend(fontsize="small", loc="upper left")
    figure.suptitle(_title("Estimated time by op kind against context", picked))
    return figure


def memory_figure(frame: pd.DataFrame) -> Figure:
    """Plot memory per device (weights, KV cache, activation peak) for each plan and model at one context."""
    _require(frame, ["weights_bytes", "kv_bytes_per_device", "activation_peak_bytes"], "run ctxsim.sweep to build the table")
    contexts = frame["context_tokens"].unique()
    if len(contexts) != 1:
        raise SpecError(
            f"the memory plot takes one context, but the sweep has {len(contexts)}: pass one, such as --context 128k"
        )
    rows = frame
    picked = [f"context {_token_label(float(contexts[0]))}"]
    for column in ("batch", "hardware"):
        if column in rows.columns:
            first = rows[column].iloc[0]
            rows = rows[rows[column] == first]
            picked.append(f"{column} {first}")

    labels = []
    for _, row in rows.iterrows():
        labels.append(f"{row['model']}\n{row['plan']}" if "plan" in rows.columns else str(row["model"]))
    parts = [("weights", rows["weights_bytes"]), ("KV cache", rows["kv_bytes_per_device"]),
             ("activation peak", rows["activation_peak_bytes"])]

    figure, axes = _figure(max(6.5, 1.2 * len(labels) + 2.0), 4.8)
    ax = axes[0][0]
    bottom = None
    positions = range(len(labels))
    for name, values in parts:
        gib = (values / GIB).to_numpy()
        ax.bar(positions, gib, bottom=bottom, label=name)
        bottom = gib if bottom is None else bottom + gib
    if "device_memory_bytes" in rows.columns:
        device_gib = float(rows["device_memory_bytes"].iloc[0]) / GIB
        ax.axhline(device_gib, color="black", linestyle="--", label=f"device memory ({device_gib:.0f} GiB)")
    ax.set_xticks(list(positions), labels, fontsize="small")
    ax.set_ylabel("memory per device (GiB)")
    ax.set_xlabel("model and plan" if "plan" in rows.columns else "model")
    ax.legend(fontsize="small")
    figure.suptitle("Memory per device\n" + ", ".join(picked))
    return figure


PLOTS: dict[str, Callable[[pd.DataFrame], Figure]] = {
    "flops": flops_figure,
    "kv": kv_figure,
    "time": time_figure,
    "memory": memory_figure,
}


def save_figure(figure: Figure, path: str | os.PathLike) -> None:
    """Write ``figure`` as PNG or SVG, chosen by the suffix, through a temp file and a rename."""
    suffix = Path(path).suffix.lower()
    if suffix not in FORMATS:
        raise SpecError(f"unknown figure format '{suffix or path}': name the file with .png or .svg")
    write_atomically(path, lambda temp: figure.savefig(temp, format=suffix[1:], dpi=150))
