"""Command-line flags of a ParallelPlan, shared by ``ctxsim estimate`` and ``ctxsim verify``."""

from __future__ import annotations

import argparse

from pydantic import ValidationError

from ctxsim.cli.common import positive_int
from ctxsim.spec import ParallelPlan, SpecError
from ctxsim.spec.errors import format_validation_error

# Flags that set a plan field, with the field name; --tp and --dp may come from another group.
PLAN_FLAGS = {
    "tp": "tp",
    "pp": "pp",
    "dp": "dp",
    "ep": "ep",
    "cp": "cp",
    "layer_split": "layer_split",
    "layer_split_scratch": "layer_split_scratch",
    "attention_dp": "attention_dp",
    "ep_mode": "ep_mode",
    "cp_mode": "cp_mode",
    "cp_sharding": "cp_sharding",
    "pp_layers": "pp_layers",
}


def layer_counts(text: str) -> tuple[int, ...]:
    """Parse '38,40' into (38, 40) for argparse."""
    try:
        values = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid layer counts '{text}': use numbers separated by commas, such as 38,40") from None
    if any(v <= 0 for v in values):
        raise argparse.ArgumentTypeError(f"invalid layer counts '{text}': every stage needs at least one layer")
    return values


def add_plan_arguments(parser: argparse.ArgumentParser, with_tp_dp: bool = True) -> None:
    """Add the plan flags; ``with_tp_dp`` False leaves --tp and --dp to a group that already has them."""
    group = parser.add_argument_group("parallel plan (per-device memory and traffic)")
    if with_tp_dp:
        group.add_argument("--tp", type=positive_int, default=None, help="Tensor parallel degree (default 1).")
        group.add_argument("--dp", type=positive_int, default=None, help="Data parallel degree (default 1).")
    group.add_argument("--pp", type=positive_int, default=None, help="Pipeline parallel degree: contiguous layer stages (default 1).")
    group.add_argument(
        "--pp-layers", type=layer_counts, default=None,
        help="Layers per pipeline stage, such as 38,40 (default: even split, first stages one more).",
    )
    group.add_argument(
        "--ep", type=positive_int, default=None,
        help="Expert parallel degree over the expert group: tp ranks, or tp x dp with --attention-dp (default 1).",
    )
    group.add_argument(
        "--attention-dp", action="store_true", default=None,
        help="dp ranks keep their own requests but share the MoE layers (attention data parallelism).",
    )
    group.add_argument(
        "--ep-mode", choices=("auto", "all_to_all", "all_gather"), default=None,
        help="How MoE tokens reach other dp ranks' experts (default auto: all_to_all when tp is 1 and ep spans the group).",
    )
    group.add_argument("--cp", type=positive_int, default=None, help="Context parallel degree for the prefill (default 1).")
    group.add_argument(
        "--cp-mode", choices=("ring", "all_gather"), default=None,
        help="ring: each rank keeps its tokens' KV; all_gather: every rank gathers and keeps all of it (default ring).",
    )
    group.add_argument(
        "--cp-sharding", choices=("contiguous", "zigzag"), default=None,
        help="Token blocks per cp rank: one contiguous block, or blocks i and 2cp-1-i (default zigzag).",
    )
    group.add_argument(
        "--layer-split", type=positive_int, default=None, metavar="G",
        help="LayerSplit group size: G ranks holding identical KV keep 1/G of the layers each (default 1).",
    )
    group.add_argument(
        "--layer-split-scratch", type=int, default=None, metavar="S",
        help="Scratch slots per rank for a broadcast layer's KV (default 1).",
    )


def wants_plan(args: argparse.Namespace, beyond_tp_dp: bool = False) -> bool:
    """Return whether any plan flag was given (``beyond_tp_dp``: any flag other than --tp and --dp)."""
    names = [n for n in PLAN_FLAGS if not (beyond_tp_dp and n in ("tp", "dp"))]
    return any(getattr(args, name, None) is not None for name in names)


def plan_from_args(args: argparse.Namespace) -> ParallelPlan:
    """Build the ParallelPlan of the given flags (unset flags keep their defaults); raises SpecError."""
    values = {field: getattr(args, flag) for flag, field in PLAN_FLAGS.items() if getattr(args, flag, None) is not None}
    try:
        return ParallelPlan(**values)
    except ValidationError as err:
        first = err.errors()[0]
        if not first.get("loc"):
            # A rule over several fields: its message already names the values and the fix.
            raise SpecError(f"plan: {first['msg'].removeprefix('Value error, ')}") from None
        raise SpecError(format_validation_error(err, "plan")) from None
