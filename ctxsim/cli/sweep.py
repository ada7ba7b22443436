"""``ctxsim sweep``: counts (and times) over a grid of models, plans, hardware, contexts and batches.

The table is ``ctxsim.sweep``'s DataFrame, written as CSV, JSON (one object per row) or Parquet.
``ctxsim plot`` takes the same grid flags.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path
from typing import Any

from ctxsim.cli.common import note_context_limit, positive_int
from ctxsim.cli.timing import fraction, memory_fraction
from ctxsim.spec.dtypes import KV_DTYPES
from ctxsim.spec.errors import SpecError
from ctxsim.sweep import DEFAULT_POINTS, context_grid, parse_token_count, write_atomically
from ctxsim.time.capacity import DEFAULT_MEMORY_FRACTION

FORMATS = (".csv", ".json", ".parquet")


def add_parsers(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "sweep",
        help="Tabulate counts (and times) over models x plans x hardware x contexts x batches.",
        description="One row per point; columns carry their units (_flops, _bytes, _s, _tokens).",
    )
    add_grid_arguments(parser)
    parser.add_argument(
        "--no-by-kind", dest="by_kind", action="store_false",
        help="Leave out the per-op-kind FLOPs, bytes and time columns.",
    )
    parser.add_argument(
        "--out", default=None,
        help="Output file: .csv, .json (one object per row) or .parquet (needs pyarrow). Default: CSV on stdout.",
    )
    parser.set_defaults(func=run_sweep)


def add_grid_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the grid and workload flags shared by ``ctxsim sweep`` and ``ctxsim plot``."""
    grid = parser.add_argument_group("grid")
    grid.add_argument("--models", required=True, help="Comma list of presets, ctxsim YAML or config.json paths.")
    grid.add_argument(
        "--context", required=True,
        help="Contexts in tokens (k = 1024, m = 1024^2): a range such as 1k..10m, or a list such as 4k,32k,128k.",
    )
    grid.add_argument(
        "--points", type=positive_int, default=None,
        help=f"Log-spaced points in a --context range (default {DEFAULT_POINTS}); repeats after rounding are dropped.",
    )
    grid.add_argument("--batch", default="1", help="Comma list of batch sizes in sequences (default 1).")
    grid.add_argument(
        "--plan", action="append", default=None,
        help="A parallel plan such as tp=8, tp=8,dp=2 or tp=8,pp=2; repeat for several. Counts become per device "
        "(the device that needs the most memory); times are the whole plan's.",
    )
    grid.add_argument("--hardware", default=None, help="Comma list of hardware profiles; adds estimated times.")
    grid.add_argument(
        "--overlap", type=fraction, default=0.0, help="Fraction of communication hidden behind compute, 0 to 1 (default 0)."
    )
    grid.add_argument(
        "--memory-fraction", type=memory_fraction, default=DEFAULT_MEMORY_FRACTION,
        help=f"Share of device memory usable for the memory_fits column (default {DEFAULT_MEMORY_FRACTION}).",
    )

    workload = parser.add_argument_group("workload")
    workload.add_argument("--phase", choices=("prefill", "decode", "both"), default="both", help="Phases to count (default both).")
    workload.add_argument("--kv-dtype", choices=KV_DTYPES, default=None, help="KV-cache dtype (default: each model's).")
    workload.add_argument("--kv-policy", choices=("need", "paged"), default="need", help="KV memory policy (default need).")
    workload.add_argument("--page-size", type=positive_int, default=64, help="Tokens per KV page for --kv-policy paged (default 64).")
    workload.add_argument(
        "--execution", choices=("gathered", "masked"), default="gathered",
        help="Sparse layers touch selected keys only (gathered) or compute dense scores plus a mask (default gathered).",
    )
    workload.add_argument("--mla-mode", choices=("auto", "expanded", "absorbed"), default="auto", help="MLA execution mode (default auto).")
    workload.add_argument("--chunk-size", default=None, help="Prefill chunk size in tokens (default: one chunk).")
    workload.add_argument("--cached-context", default="0", help="Tokens already cached before the prefill (default 0).")


def _split(text: str | None) -> list[str]:
    if text is None:
        return []
    parts = [part.strip() for part in text.split(",")]
    if not all(parts):
        raise SpecError(f"invalid list '{text}': separate names with single commas")
    return parts


def sweep_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """Arguments of ``ctxsim.sweep`` from the parsed grid and workload flags."""
    batches = []
    for part in _split(args.batch):
        if not part.isdigit() or int(part) < 1:
            raise SpecError(f"invalid batch '{part}' in --batch {args.batch}: use whole numbers of at least 1, such as 1,8,64")
        batches.append(int(part))
    cached = 0 if args.cached_context.strip() == "0" else parse_token_count(args.cached_context)
    return {
        "models": _split(args.models),
        "contexts": args.context,
        "points": args.points,
        "batches": batches,
        "plans": args.plan,
        "hardware": _split(args.hardware) or None,
        "overlap": args.overlap,
        "memory_fraction": args.memory_fraction,
        "phase": args.phase,
        "kv_dtype": args.kv_dtype,
        "kv_policy": args.kv_policy,
        "page_size": args.page_size,
        "execution": args.execution,
        "mla_mode": args.mla_mode,
        "chunk_size": None if args.chunk_size is None else parse_token_count(args.chunk_size),
        "cached_context": cached,
    }


def note_dropped_points(args: argparse.Namespace) -> None:
    """Tell on stderr when rounding a log-spaced range to whole tokens merged some points."""
    if ".." not in args.context:
        return
    requested = args.points or DEFAULT_POINTS
    distinct = context_grid(args.context, args.points).size
    if distinct < requested:
        sys.stderr.write(
            f"note: {requested} log-spaced points over {args.context} round to {distinct} distinct whole-token contexts\n"
        )


def note_context_limits(frame: Any) -> None:
    """Write a note on stderr for each swept model whose largest context is above its max_context."""
    from ctxsim.spec import load_model

    for name in frame["model"].unique():
        rows = frame["model"] == name
        note_context_limit(load_model(str(name)), int(frame.loc[rows, "context_tokens"].max()))


def check_output_path(path: str, formats: tuple[str, ...]) -> str:
    """Return the format (the suffix) of ``path``, or raise SpecError naming the ones allowed."""
    suffix = Path(path).suffix.lower()
    if suffix not in formats:
        raise SpecError(f"unknown output format '{suffix or path}': name the file with {', '.join(formats)}")
    if suffix == ".parquet" and importlib.util.find_spec("pyarrow") is None:
        raise SpecError("writing .parquet needs pyarrow, which is not installed: pip install pyarrow, or use .csv or .json")
    return suffix


def run_sweep(args: argparse.Namespace) -> int:
    from ctxsim.sweep import sweep

    suffix = None if args.out is None else check_output_path(args.out, FORMATS)
    kwargs = sweep_kwargs(args)
    note_dropped_points(args)
    frame = sweep(**kwargs, by_kind=args.by_kind)
    note_context_limits(frame)

    if args.out is None:
        frame.to_csv(sys.stdout, index=False)
        return 0
    if suffix == ".csv":
        write_atomically(args.out, lambda temp: frame.to_csv(temp, index=False))
    elif suffix == ".json":
        write_atomically(args.out, lambda temp: frame.to_json(temp, orient="records"))
    else:
        write_atomically(args.out, lambda temp: frame.to_parquet(temp, index=False))
    sys.stderr.write(f"wrote {len(frame):,} rows x {frame.shape[1]} columns to {args.out}\n")
    return 0
