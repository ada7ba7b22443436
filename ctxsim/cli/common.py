"""Helpers shared by the CLI subcommands: argument types, output, and number formatting."""

from __future__ import annotations

import argparse
import json
import re
import sys
from typing import TYPE_CHECKING

from ctxsim.units import human_seconds  # noqa: F401 (re-exported for the CLI modules)

if TYPE_CHECKING:
    from ctxsim.spec.model import ModelSpec
    from ctxsim.spec.workload import Workload

_SUFFIX = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}


def parse_tokens(text: str) -> int:
    """Parse a token count such as ``4096``, ``128k``, ``1m`` or ``1g`` (k = 1024) into an int."""
    match = re.fullmatch(r"\s*(\d+)\s*([kKmMgG]?)\s*", text)
    if not match:
        raise argparse.ArgumentTypeError(
            f"invalid token count '{text}': use a positive integer or a k/m/g suffix such as 128k or 1m"
        )
    value = int(match.group(1)) * _SUFFIX[match.group(2).lower()]
    if value <= 0:
        raise argparse.ArgumentTypeError(f"invalid token count '{text}': it must be greater than 0")
    return value


def parse_non_negative_tokens(text: str) -> int:
    """Parse a token count like ``parse_tokens``, also accepting ``0`` (e.g. no cached prefix)."""
    return 0 if text.strip() == "0" else parse_tokens(text)


def build_workload(**fields: object) -> "Workload":
    """Validate CLI workload fields, raising SpecError with a one-line message."""
    from pydantic import ValidationError

    from ctxsim.spec.errors import SpecError, format_validation_error
    from ctxsim.spec.workload import Workload

    try:
        return Workload(**fields)
    except ValidationError as err:
        raise SpecError(format_validation_error(err, "workload")) from None


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid integer '{text}': use a whole number such as 8") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"invalid value {value}: it must be greater than 0")
    return value


def print_json(obj: object) -> None:
    json.dump(obj, sys.stdout, indent=2, sort_keys=False)
    sys.stdout.write("\n")


def _scaled(value: float, scales: tuple[tuple[str, float], ...], unit: str) -> str:
    """Format ``value`` with the largest prefix whose 3-significant-digit mantissa stays below 1000."""
    for i, (prefix, scale) in enumerate(scales):
        if abs(value) >= scale * 0.9995:
            mantissa = float(f"{value / scale:.3g}")
            if abs(mantissa) >= 1000 and i > 0:
                prefix, scale = scales[i - 1]
                mantissa = float(f"{value / scale:.3g}")
            return f"{mantissa:g} {prefix}{unit}"
    return f"{value:.3g} {unit}".rstrip()


_SI = (("E", 1e18), ("P", 1e15), ("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3))
_BINARY = (("Pi", 2.0**50), ("Ti", 2.0**40), ("Gi", 2.0**30), ("Mi", 2.0**20), ("Ki", 2.0**10))


def human_count(value: float, unit: str = "") -> str:
    """Format a count with SI prefixes and 3 significant digits: 1.23 G, 4.5 T."""
    return _scaled(value, _SI, unit)


def human_bytes(value: float) -> str:
    """Format bytes in binary units: KiB, MiB, GiB, TiB."""
    if abs(value) < 1024 * 0.9995:
        return f"{value:.0f} B"
    return _scaled(value, _BINARY, "B")


def format_table(
    rows: list[list[str]], header: list[str], right_align_from: int = 1, right_align_to: int | None = None
) -> str:
    """Format rows as a plain-text table.

    Columns from ``right_align_from`` up to ``right_align_to`` (exclusive; default the last) are
    right-aligned, the others left-aligned.
    """
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    stop = len(header) if right_align_to is None else right_align_to
    lines = []
    for row in [header, *rows]:
        cells = []
        for i, cell in enumerate(row):
            cell = str(cell)
            cells.append(cell.rjust(widths[i]) if right_align_from <= i < stop else cell.ljust(widths[i]))
        lines.append("  ".join(cells).rstrip())
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def note_context_limit(spec: "ModelSpec", context: int) -> None:
    """Write a note on stderr when ``context`` is above the model's max_context."""
    if spec.max_context is not None and context > spec.max_context:
        # The counts still follow the formulas, but the model was not built for this context.
        sys.stderr.write(
            f"note: context {context:,} is above {spec.name}'s max_context {spec.max_context:,}; "
            "the counts extrapolate past what the model supports\n"
        )
