"""``ctxsim size``: the fewest devices (and the plans around them) that serve a model at a context."""

from __future__ import annotations

import argparse

from ctxsim.cli.common import format_table, human_bytes, human_seconds, parse_tokens, positive_int, print_json
from ctxsim.cli.timing import fraction, memory_fraction
from ctxsim.spec.dtypes import KV_DTYPES
from ctxsim.time.capacity import DEFAULT_MEMORY_FRACTION
from ctxsim.time.size import DEFAULT_CHUNK_SIZE, DEFAULT_MAX_GPUS, SizingResult, size


def positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid time '{text}': use seconds such as 0.05") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"invalid time {value:g}: it must be greater than 0")
    return value


def add_parsers(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "size",
        help="Search parallel plans and KV dtypes for the fewest devices that meet TTFT/TPOT targets.",
        description=(
            "Size a deployment: count every candidate plan per device, time those that fit in memory stage by "
            "stage, keep those that meet the targets, and print the Pareto set (devices, TTFT, TPOT), fewest "
            "devices first. Searches tp, pp, dp and cp in powers of two (cp in all_gather mode, for the "
            "prefill), ep 1 or the whole expert group, attention-DP for MLA models, LayerSplit when a plan "
            "does not fit without it, and every KV dtype that applies. When nothing qualifies, it says what "
            "is short and by how much, and exits with status 1."
        ),
    )
    parser.add_argument("--model", required=True, help="Preset name, ctxsim YAML path, or config.json path.")
    parser.add_argument("--context", required=True, type=parse_tokens, help="Context length N in tokens (128k, 1m; k = 1024).")
    parser.add_argument("--hardware", required=True, help="Hardware profile name or YAML path (see 'ctxsim hardware').")

    parser.add_argument("--target-ttft", type=positive_seconds, default=None, help="Maximum time to first token, seconds.")
    parser.add_argument("--target-tpot", type=positive_seconds, default=None, help="Maximum time per output token, seconds.")

    parser.add_argument(
        "--concurrency", type=positive_int, default=1, help="Sequences of this context served at once (default 1)."
    )
    parser.add_argument(
        "--max-gpus", type=positive_int, default=DEFAULT_MAX_GPUS, help=f"Largest deployment to consider (default {DEFAULT_MAX_GPUS})."
    )

    parser.add_argument(
        "--chunk-size", type=parse_tokens, default=DEFAULT_CHUNK_SIZE,
        help=f"Prefill chunk size in tokens (default {DEFAULT_CHUNK_SIZE}).",
    )
    parser.add_argument(
        "--kv-dtype", choices=KV_DTYPES, action="append", default=None,
        help=(
            "KV dtype to consider; repeat for several (default: every dtype the model and hardware support; "
            "nvfp4 only on hardware with FP4 units)."
        ),
    )
    parser.add_argument(
        "--memory-fraction", type=memory_fraction, default=DEFAULT_MEMORY_FRACTION,
        help=f"Share of device memory the engine may use (default {DEFAULT_MEMORY_FRACTION}).",
    )
    parser.add_argument(
        "--overlap", type=fraction, default=0.0, help="Fraction of communication hidden behind compute (default 0)."
    )

    parser.add_argument("--json", action="store_true", help="Print JSON (an object with a 'plans' list).")
    parser.set_defaults(func=run_size)


def format_sizing(result: SizingResult, chunk_size: int | None = None) -> str:
    """Format the Pareto set as a table, or the shortfall when no plan is feasible."""
    targets = []
    if result.target_ttft_s is not None:
        targets.append(f"TTFT <= {result.target_ttft_s:g} s")
    if result.target_tpot_s is not None:
        targets.append(f"TPOT <= {result.target_tpot_s:g} s")
    lines = [
        f"{result.model} on {result.hardware}: {_count(result.concurrency, 'sequence')} of {result.context:,} tokens"
        + (f", {', '.join(targets)}" if targets else "")
        + f"; {_count(len(result.evaluated), 'plan')} counted up to {_count(result.max_gpus, 'device')}, "
        f"{result.timed} fit and were timed",
    ]
    if not result.plans:
        lines.append("no plan meets the request:")
        lines += [f"  {line}" for line in result.shortfall]
        return "\n".join(lines)

    rows = []
    for rank, plan in enumerate(result.plans, start=1):
        rows.append(
            [
                str(rank),
                str(plan.gpus),
                _plan_text(plan.plan),
                plan.kv_dtype,
                human_seconds(plan.ttft_s),
                human_seconds(plan.tpot_s),
                f"{plan.tokens_per_s:,.1f}",
                f"{plan.tokens_per_s / plan.gpus:,.2f}",
                human_bytes(plan.memory.used_bytes),
                human_bytes(plan.memory.headroom_bytes),
            ]
        )
    header = ["#", "GPUs", "plan", "KV", "TTFT", "TPOT", "tokens/s", "tok/s/GPU", "mem/GPU", "headroom"]
    lines.append(format_table(rows, header, right_align_from=4))
    if any(plan.plan.cp > 1 for plan in result.plans):
        lines.append("cp: the cp ranks prefill each prompt together, then decode their shares as data-parallel replicas.")
    if any(plan.plan.layer_split > 1 for plan in result.plans):
        lines.append(
            "ls: LayerSplit; its decode step broadcasts each layer's whole cached history, hence the long TPOT "
            "(deployments use it for prefill and decode on other devices)."
        )
    chunks = f" in chunks of {chunk_size:,} tokens" if chunk_size else ""
    lines.append(
        f"TTFT: prefill of one prompt{chunks} through the pipeline; TPOT: one decode step of each replica's sequences; "
        "mem/GPU and headroom: the busiest device against the usable share. "
        "Times are estimates from the hardware profile, not measurements."
    )
    return "\n".join(lines)


def _count(n: int, word: str) -> str:
    return f"{n:,} {word}" + ("" if n == 1 else "s")


def _plan_text(plan) -> str:
    """Short plan text such as 'tp8 pp2 ep8 ls8'; 'tp1' for one device."""
    parts = [f"{name}{getattr(plan, name)}" for name in ("tp", "pp", "dp", "cp", "ep") if getattr(plan, name) > 1]
    if plan.attention_dp and plan.dp > 1:
        parts.append("attn-dp")
    if plan.layer_split > 1:
        parts.append(f"ls{plan.layer_split}")
    return " ".join(parts) or "tp1"


def run_size(args: argparse.Namespace) -> int:
    result = size(
        args.model,
        args.context,
        args.hardware,
        concurrency=args.concurrency,
        target_ttft_s=args.target_ttft,
        target_tpot_s=args.target_tpot,
        max_gpus=args.max_gpus,
        chunk_size=args.chunk_size,
        kv_dtypes=args.kv_dtype,
        memory_fraction=args.memory_fraction,
        overlap=args.overlap,
    )
    if args.json:
        # The search settings, so that a row can be reproduced with ctxsim estimate.
        settings = {"chunk_size": args.chunk_size, "memory_fraction": args.memory_fraction, "overlap": args.overlap}
        print_json({**result.to_dict(), **settings})
    else:
        print(format_sizing(result, args.chunk_size))
    # Status 1 when no plan meets the request, so scripts can tell a shortfall from a plan.
    return 0 if result.plans else 1
