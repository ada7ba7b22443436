"""``ctxsim plot``: a PNG or SVG figure for one of the common questions, over a sweep grid."""

from __future__ import annotations

import argparse
import sys

from ctxsim.cli.sweep import add_grid_arguments, note_context_limits, note_dropped_points, sweep_kwargs

KINDS = {
    "flops": "FLOPs per token against context, per model",
    "kv": "KV-cache memory per sequence against context, per model",
    "time": "estimated time by op kind against context (needs --hardware)",
    "memory": "memory per device against plan at one context (use --plan)",
}


def add_parsers(subparsers: argparse._SubParsersAction) -> None:
    kinds = "; ".join(f"{name}: {text}" for name, text in KINDS.items())
    parser = subparsers.add_parser(
        "plot",
        help="Draw FLOPs, KV memory, time or per-device memory over a grid as PNG or SVG.",
        description=f"Figures with labelled axes and units. Kinds: {kinds}.",
    )
    parser.add_argument("kind", choices=tuple(KINDS), help="What to plot.")
    add_grid_arguments(parser)
    parser.add_argument("--out", required=True, help="Figure file, .png or .svg.")
    parser.set_defaults(func=run_plot)


def run_plot(args: argparse.Namespace) -> int:
    from ctxsim.plots import FORMATS, PLOTS, save_figure
    from ctxsim.spec.errors import SpecError
    from ctxsim.sweep import sweep

    if not args.out.lower().endswith(FORMATS):
        raise SpecError(f"unknown figure format of '{args.out}': name the file with .png or .svg")
    kwargs = sweep_kwargs(args)
    if args.kind == "time" and kwargs["hardware"] is None:
        raise SpecError("the time plot needs a hardware profile: add --hardware, such as --hardware h200")
    note_dropped_points(args)
    frame = sweep(**kwargs, by_kind=args.kind == "time")
    note_context_limits(frame)
    save_figure(PLOTS[args.kind](frame), args.out)
    sys.stderr.write(f"wrote the {args.kind} plot to {args.out}\n")
    return 0
