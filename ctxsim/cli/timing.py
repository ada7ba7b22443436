"""The hardware part of ``ctxsim estimate``: times per op and per stage, memory fit and capacity.

``ctxsim estimate`` calls ``add_arguments`` for its flags and hands over to ``run_timed`` when a
hardware profile is given.
"""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any

from ctxsim.cli import plan_args
from ctxsim.cli.common import format_table, human_bytes, human_seconds, positive_int, print_json
from ctxsim.counts import report_to_dict
from ctxsim.counts.parallel import ParallelCounts
from ctxsim.spec import SpecError, Workload
from ctxsim.spec.hardware import load_hardware
from ctxsim.spec.model import ModelSpec
from ctxsim.spec.plan import ParallelPlan
from ctxsim.time import Capacity, TimeReport, capacity_from_report
from ctxsim.time.capacity import DEFAULT_MEMORY_FRACTION, max_context_for_plan, plan_max_sequences
from ctxsim.time.placement import device_report
from ctxsim.time.roofline import OpTime
from ctxsim.time.stages import time_plan


def fraction(text: str) -> float:
    """Parse a fraction in [0, 1] for argparse."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid fraction '{text}': use a number such as 0.9") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"invalid fraction {value:g}: use a value from 0 to 1")
    return value


def memory_fraction(text: str) -> float:
    """Parse a share of device memory in (0, 1] for argparse."""
    value = fraction(text)
    if value == 0.0:
        raise argparse.ArgumentTypeError("invalid memory fraction 0: use a value above 0 and at most 1, such as 0.9")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("hardware and plan (adds times, memory fit and capacity)")
    group.add_argument("--hardware", default=None, help="Hardware profile name or YAML path (see 'ctxsim hardware').")
    group.add_argument(
        "--gpus", type=positive_int, default=None,
        help="Devices in all (default tp x pp x dp x cp). Without --dp it sets dp to the devices over tp x pp x cp; "
        "without --tp and --dp, tp fills one scale-up domain first.",
    )
    group.add_argument("--tp", type=positive_int, default=None, help="Tensor parallel degree (default 1).")
    group.add_argument(
        "--dp", type=positive_int, default=None,
        help="Data parallel replicas; --batch is split across them (default 1).",
    )
    group.add_argument(
        "--overlap", type=fraction, default=0.0,
        help="Fraction of each device's communication time hidden behind its compute, 0 to 1; applies to "
        "every collective, LayerSplit broadcasts included (default 0).",
    )
    group.add_argument(
        "--memory-fraction", type=memory_fraction, default=DEFAULT_MEMORY_FRACTION,
        help=f"Share of device memory the engine may use (default {DEFAULT_MEMORY_FRACTION}).",
    )


def _degrees(tp: int, pp: int, dp: int, cp: int) -> str:
    """Text such as '--tp 8 x --dp 1', naming --pp and --cp only when they are above 1."""
    parts = [f"--tp {tp}"] + [f"--{name} {value}" for name, value in (("pp", pp), ("cp", cp)) if value > 1]
    return " x ".join(parts + [f"--dp {dp}"])


def resolve_plan(args: argparse.Namespace, domain_size: int | None) -> ParallelPlan:
    """Build the plan from the plan flags and --gpus.

    Rule: with --gpus and neither --tp nor --dp, tp fills one scale-up domain (within --gpus
    over pp x cp) and dp takes the rest; with --gpus and no --dp, dp = gpus / (tp x pp x cp);
    with both, tp x pp x dp x cp must equal --gpus. Raises SpecError otherwise.
    """
    tp, dp, gpus = args.tp, args.dp, args.gpus
    pp, cp = args.pp or 1, args.cp or 1
    if gpus is not None and dp is None:
        per_replica = pp * cp
        if tp is None:
            if gpus % per_replica:
                raise SpecError(f"--gpus {gpus} is not a multiple of --pp {pp} x --cp {cp} = {per_replica}: give --tp and --dp")
            tp = min(gpus // per_replica, domain_size or gpus)
            if gpus % (tp * per_replica):
                raise SpecError(f"--gpus {gpus} is not a multiple of the scale-up domain {tp}: give --tp and --dp")
        replica = tp * per_replica
        if gpus < replica:
            raise SpecError(f"--gpus {gpus} differs from {_degrees(tp, pp, 1, cp)} = {replica}: make them agree or drop --gpus")
        if gpus % replica:
            raise SpecError(
                f"--gpus {gpus} is not a multiple of {_degrees(tp, pp, 1, cp).removesuffix(' x --dp 1')} = {replica}, "
                "so it cannot set --dp: give a multiple or --dp"
            )
        dp = gpus // replica
    tp, dp = tp or 1, dp or 1
    if gpus is not None and gpus != tp * pp * dp * cp:
        raise SpecError(
            f"--gpus {gpus} differs from {_degrees(tp, pp, dp, cp)} = {tp * pp * dp * cp}: make them agree or drop --gpus"
        )
    args.tp, args.dp = tp, dp
    return plan_args.plan_from_args(args)


# ---------------------------------------------------------------------------------------------
# Output


def _merged(times: TimeReport, phase: str) -> list[OpTime]:
    """Op times of a phase with the stages of a pipeline added together, op by op.

    A merged op keeps the bound of the stage where it took longest.
    """
    merged: dict[tuple, OpTime] = {}
    longest: dict[tuple, float] = {}
    for t in times.phase_ops(phase):
        key = (t.name, t.layer_kind)
        if key not in merged:
            merged[key], longest[key] = dataclasses.replace(t, stage=None), t.total_s
            continue
        previous = merged[key]
        count = previous.count + t.count
        bound = t.bound if t.total_s > longest[key] else previous.bound
        longest[key] = max(longest[key], t.total_s)
        merged[key] = dataclasses.replace(previous, count=count, time_s=(previous.total_s + t.total_s) / count, bound=bound)
    return list(merged.values())


def _time_rows(ops: list[OpTime], op_total_s: float) -> list[list[str]]:
    rows = []
    previous_group = None
    for t in ops:
        group = t.layer_kind or "model"
        label = ""
        if group != previous_group:
            label = f"{group} x{t.count}" if t.layer_kind else group
            previous_group = group
        share = 100 * t.total_s / op_total_s if op_total_s else 0.0
        rows.append([label, t.name, t.kind, t.bound, human_seconds(t.total_s), f"{share:.1f}%"])
    return rows


def _phase_block(times: TimeReport, phase: str, title: str) -> list[str]:
    part = times.prefill if phase == "prefill" else times.decode
    header = ["layers", "op", "kind", "bound", "time", "share"]
    ops = _merged(times, phase)
    lines = ["", title, format_table(_time_rows(ops, part.compute_s + part.communication_s), header, right_align_from=4)]
    by_bound = ", ".join(f"{bound} {human_seconds(value)}" for bound, value in part.by_bound.items())
    lines.append(f"by bound: {by_bound}")
    if part.communication_s:
        lines.append(
            f"device ops {human_seconds(part.compute_s)}, communication {human_seconds(part.communication_s)}, "
            f"hidden by overlap {human_seconds(part.hidden_s)}"
        )
    return lines


def _plural(n: int, word: str) -> str:
    return f"{n:,} {word}" + ("" if n == 1 else "s")


def _stage_block(times: TimeReport, counts: ParallelCounts) -> list[str]:
    """Table of pipeline stages: layers, the slowest device and its time in each phase."""
    rows = []
    for stage in times.stages:
        rows.append(
            [
                str(stage.stage),
                f"{stage.layers[0]}-{stage.layers[1]}",
                "-" if stage.prefill_rank is None else str(stage.prefill_rank),
                "-" if stage.prefill_s is None else human_seconds(stage.prefill_s),
                "-" if stage.decode_rank is None else str(stage.decode_rank),
                "-" if stage.decode_s is None else human_seconds(stage.decode_s),
            ]
        )
    header = ["stage", "layers", "prefill rank", "prefill", "decode rank", "decode"]
    lines = ["", "stages (each timed on its slowest device):", format_table(rows, header, right_align_from=2)]
    for part in (times.prefill, times.decode):
        if part is not None and part.stage_imbalance is not None:
            lines.append(f"{part.phase} stage balance: slowest stage {part.stage_imbalance:.3f}x the mean")
    if times.prefill is not None and counts.pipeline_bubble is not None:
        lines.append(f"pipeline bubble (prefill): {counts.pipeline_bubble:.3f} of the stage time slots idle")
    return lines


def format_timing(
    times: TimeReport, capacity: Capacity, max_sequences: int, max_context: int, plan: ParallelPlan,
    profile_name: str, counts: ParallelCounts,
) -> str:
    """Format the time, memory and capacity sections that follow the counts."""
    lines = [
        "",
        f"time on {profile_name} x{times.n_devices} ({plan.describe()}; profile confidence "
        f"{times.confidence}, {times.provenance}); estimates, not measurements",
    ]
    summed = " summed over the stages" if plan.pp > 1 else ""
    if times.prefill is not None:
        passes = _plural(int(times.prefill.forwards), "forward pass").replace("passs", "passes")
        lines += _phase_block(times, "prefill", f"prefill ({passes}), op times of each stage's slowest device{summed}:")
    if times.decode is not None:
        micro = times.decode.micro_batches
        batch = f"{micro} micro-batches of the replica's {times.batch}" if micro > 1 else f"batch {times.batch} per replica"
        lines += _phase_block(times, "decode", f"decode step ({batch}), op times{summed}:")
    if plan.pp > 1 or plan.cp > 1:
        lines += _stage_block(times, counts)

    lines.append("")
    if times.ttft_s is not None:
        lines.append(f"TTFT {human_seconds(times.ttft_s)}: the whole prefill, ending with the first output token")
    if times.tpot_s is not None:
        lines.append(
            f"TPOT {human_seconds(times.tpot_s)}: one decode step at this context; "
            f"{times.tokens_per_s:,.1f} tokens/s in all, {times.tokens_per_s_per_device:,.2f} per device"
        )

    verdict = "fits" if capacity.fits else "does NOT fit"
    lines += [
        f"memory of the busiest device: weights {human_bytes(capacity.weights_bytes)} + activation peak "
        f"{human_bytes(capacity.activation_peak_bytes)} + KV {human_bytes(capacity.batch * capacity.kv_bytes_per_sequence)} "
        f"({_plural(capacity.batch, 'sequence')}) = {human_bytes(capacity.used_bytes)} of {human_bytes(capacity.usable_bytes)} usable "
        f"({capacity.memory_fraction:g} x {human_bytes(capacity.memory_bytes)}): {verdict}",
        f"capacity per replica: {_plural(max_sequences, 'sequence')} at this context; "
        f"max context {max_context:,} tokens at {_plural(capacity.batch, 'sequence')}",
    ]
    return "\n".join(lines)


def _timing_dict(
    times: TimeReport, capacity: Capacity, max_sequences: int, max_context: int, plan: ParallelPlan
) -> dict[str, Any]:
    memory = capacity.to_dict()
    return {
        "plan": {**plan.model_dump(mode="json"), "gpus": plan.world_size},
        "time": times.to_dict(),
        "memory": {
            key: memory[key]
            for key in ("memory_bytes", "memory_fraction", "usable_bytes", "weights_bytes", "activation_peak_bytes",
                        "kv_bytes_per_sequence", "batch", "used_bytes", "headroom_bytes", "fits")
        },
        "capacity": {
            "max_sequences": max_sequences,
            "max_context": max_context,
            "kv_budget_bytes": memory["kv_budget_bytes"],
        },
    }


def run_timed(args: argparse.Namespace, spec: ModelSpec, workload: Workload, format_report) -> int:
    """Count every device of the plan, time each stage on the hardware, and check memory and capacity."""
    profile = load_hardware(args.hardware)
    plan = resolve_plan(args, profile.scale_up.domain_size)
    # The device that needs the most memory: its counts are printed and its memory is checked.
    report = device_report(spec, workload, plan)
    counts = report.extras["parallel"]
    times = time_plan(spec, workload, plan, profile, overlap=args.overlap)
    capacity = capacity_from_report(report, profile, memory_fraction=args.memory_fraction)
    max_sequences = plan_max_sequences(counts, profile, memory_fraction=args.memory_fraction)
    max_context = max_context_for_plan(spec, workload, plan, profile, memory_fraction=args.memory_fraction)

    if args.json:
        out = report_to_dict(report)
        out.update(_timing_dict(times, capacity, max_sequences, max_context, plan))
        print_json(out)
        return 0
    print(format_report(report))
    print(format_timing(times, capacity, max_sequences, max_context, plan, profile.name, counts))
    if not capacity.fits and workload.chunk_size is None and workload.phase != "decode":
        print(
            f"(the prefill runs as one chunk of {workload.new_tokens:,} tokens; a chunk size such as "
            "--chunk-size 8k, which ctxsim size uses, lowers the activation peak)"
        )
    if spec.max_context is not None and max_context > spec.max_context:
        print(f"(memory allows {max_context:,} tokens, but {spec.name} supports up to {spec.max_context:,})")
    return 0
