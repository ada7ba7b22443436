"""``ctxsim estimate``: FLOPs, bytes and KV memory of one model at one context length, op by op."""

from __future__ import annotations

import argparse

from ctxsim.cli import plan_args, timing
from ctxsim.cli.per_device import format_per_device
from ctxsim.cli.common import (
    build_workload,
    format_table,
    human_bytes,
    human_count,
    note_context_limit,
    parse_non_negative_tokens,
    parse_tokens,
    positive_int,
    print_json,
)
from ctxsim.counts import estimate, report_to_dict
from ctxsim.counts.report import CostReport, Op
from ctxsim.spec import SpecError, Workload, load_model
from ctxsim.spec.dtypes import KV_DTYPES


def add_parsers(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "estimate",
        help="Count FLOPs, bytes and KV memory of a model at a context length, op by op.",
        description="Exact, hardware-free counts for one model, workload and context length.",
    )

    parser.add_argument("--model", required=True, help="Preset name, ctxsim YAML path, or config.json path.")
    parser.add_argument("--context", required=True, type=parse_tokens, help="Context length N in tokens (128k, 1m; k = 1024).")
    parser.add_argument("--batch", type=positive_int, default=1, help="Sequences processed together (default 1).")
    parser.add_argument("--phase", choices=("prefill", "decode", "both"), default="both", help="Phase to count (default both).")

    parser.add_argument("--kv-dtype", choices=KV_DTYPES, default=None, help="KV-cache dtype (default: the model's).")
    parser.add_argument(
        "--kv-policy", choices=("need", "paged"), default="need",
        help="'need': what the architecture needs; 'paged': what a paged engine reserves (default need).",
    )
    parser.add_argument("--page-size", type=positive_int, default=64, help="Tokens per KV page for --kv-policy paged (default 64).")

    parser.add_argument(
        "--execution", choices=("gathered", "masked"), default="gathered",
        help="Sparse layers touch selected keys only (gathered) or compute dense scores plus a mask (default gathered).",
    )
    parser.add_argument(
        "--mla-mode", choices=("auto", "expanded", "absorbed"), default="auto",
        help="MLA execution mode (default auto: expanded for dense prefill, absorbed for decode and DSA).",
    )
    parser.add_argument("--chunk-size", type=parse_tokens, default=None, help="Prefill chunk size in tokens (default: one chunk).")
    parser.add_argument(
        "--cached-context", type=parse_non_negative_tokens, default=0,
        help="Tokens already cached before the prefill (prefix hit; default 0).",
    )

    timing.add_arguments(parser)
    plan_args.add_plan_arguments(parser, with_tp_dp=False)
    parser.add_argument("--json", action="store_true", help="Print JSON instead of tables.")
    parser.set_defaults(func=run_estimate)


def _workload(args: argparse.Namespace) -> Workload:
    return build_workload(
        phase=args.phase,
        context=args.context,
        batch=args.batch,
        chunk_size=args.chunk_size,
        cached_context=args.cached_context,
        kv_dtype=args.kv_dtype,
        kv_policy=args.kv_policy,
        page_size=args.page_size,
        execution=args.execution,
        mla_mode=args.mla_mode,
    )


def run_estimate(args: argparse.Namespace) -> int:
    spec = load_model(args.model)
    note_context_limit(spec, args.context)
    if args.hardware is not None:
        return timing.run_timed(args, spec, _workload(args), format_report)
    if args.gpus is not None:
        raise SpecError("--gpus needs --hardware, whose scale-up domain it fills: name a profile from 'ctxsim hardware'")
    if plan_args.wants_plan(args):
        # A plan without hardware: counts plus the per-device section, no times.
        report = estimate(spec, _workload(args), plan_args.plan_from_args(args))
        print_json(report_to_dict(report)) if args.json else print(format_report(report))
        return 0
    report = estimate(spec, _workload(args))
    if args.json:
        print_json(report_to_dict(report))
        return 0
    print(format_report(report))
    return 0


# ---------------------------------------------------------------------------------------------
# Text output


def _op_rows(ops: list[Op]) -> list[list[str]]:
    rows = []
    previous_group = None
    for op in ops:
        group = op.layer_kind or "model"
        label = ""
        if group != previous_group:
            label = f"{group} x{op.count}" if op.layer_kind else group
            previous_group = group
        rows.append(
            [
                label,
                op.name,
                op.kind,
                human_count(op.total_flops, "FLOP"),
                human_count(op.total_matmul_flops, "FLOP"),
                human_bytes(op.total_bytes_read),
                human_bytes(op.total_bytes_written),
            ]
        )
    return rows


def _phase_table(report: CostReport, phase: str) -> str:
    ops = report.phase_ops(phase)
    rows = _op_rows(ops)
    rows.append(
        [
            "total",
            "",
            "",
            human_count(report.total(phase, "flops"), "FLOP"),
            human_count(report.total(phase, "matmul_flops"), "FLOP"),
            human_bytes(report.total(phase, "bytes_read")),
            human_bytes(report.total(phase, "bytes_written")),
        ]
    )
    header = ["layers", "op", "kind", "FLOPs", "matmul FLOPs", "read", "written"]
    return format_table(rows, header, right_align_from=3)


def format_report(report: CostReport) -> str:
    """Format the text output of ``ctxsim estimate``: one op table per phase, then memory."""
    workload = report.workload
    context = report.extras.get("context", workload.context)
    has_mla = any(op.name == "attn.kv_down" for op in report.ops)
    mla = f", MLA mode {workload.mla_mode}" if has_mla else ""
    rank = report.extras.get("rank")
    scope = "" if rank is None else f", device rank {rank} (the plan's device that needs the most memory)"
    lines = [
        f"{report.model}{scope}: context {context:,} tokens, batch {workload.batch}, execution {workload.execution}"
        f"{mla}; ops summed over the layers of each kind"
    ]
    if report.phase_ops("prefill"):
        chunks = f" in chunks of {workload.chunk_size:,}" if workload.chunk_size else ""
        cached = f" after {workload.cached_context:,} cached" if workload.cached_context else ""
        lines += ["", f"prefill of {workload.new_tokens:,} tokens{cached}{chunks}:", _phase_table(report, "prefill")]
    if report.phase_ops("decode"):
        lines += ["", f"decode step at context {context:,} (batch {workload.batch}):", _phase_table(report, "decode")]
        step_flops = report.total("decode", "flops")
        step_read = report.total("decode", "bytes_read")
        lines.append(
            f"per token: {human_count(step_flops / workload.batch, 'FLOP')}, {human_bytes(step_read / workload.batch)} read"
        )

    kv = report.kv_cache
    nonzero = {name: value for name, value in kv.by_component.items() if value}
    parts = ""
    if len(nonzero) > 1:
        parts = " (" + ", ".join(f"{name} {human_bytes(value)}" for name, value in nonzero.items()) + ")"
    policy = f"in pages of {workload.page_size} tokens" if kv.policy == "paged" else "exact size"
    lines += [
        "",
        f"KV cache ({kv.kv_dtype}, {policy}): {human_bytes(kv.bytes_per_sequence)} per sequence"
        f"{parts}; {human_bytes(kv.bytes_per_device)} for the batch",
        f"weights: {human_bytes(report.weights_bytes)}; prefill activation peak: "
        f"{human_bytes(report.activation_peak_bytes)}",
    ]
    parallel = report.extras.get("parallel")
    if parallel is not None:
        lines.append(format_per_device(parallel))
    return "\n".join(lines)
