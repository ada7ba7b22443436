"""The hardware part of ``ctxsim estimate``: plan flags, times per op, memory fit and capacity.

``ctxsim estimate`` calls ``add_arguments`` for its flags and hands over to ``run_timed`` when a
hardware profile or a plan flag is given.
"""

from __future__ import annotations

import argparse
from typing import Any

from ctxsim.cli.common import format_table, human_bytes, human_seconds, positive_int, print_json
from ctxsim.counts import report_to_dict
from ctxsim.counts.parallel import parallel_counts
from ctxsim.spec import SpecError, Workload
from ctxsim.spec.hardware import load_hardware
from ctxsim.spec.model import ModelSpec
from ctxsim.spec.plan import ParallelPlan
from ctxsim.time import Capacity, TimeReport, capacity_from_report, estimate_time, max_context_for
from ctxsim.time.capacity import DEFAULT_MEMORY_FRACTION
from ctxsim.time.placement import device_report, shard_model


def fraction(text: str) -> float:
    """Parse a fraction in [0, 1] for argparse."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid fraction '{text}': use a number such as 0.9") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"invalid fraction {value:g}: use a value from 0 to 1")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("hardware and plan (adds times, memory fit and capacity)")
    group.add_argument("--hardware", default=None, help="Hardware profile name or YAML path (see 'ctxsim hardware').")
    group.add_argument(
        "--gpus", type=positive_int, default=None,
        help="Devices in all (default tp x dp). Alone, it sets tp to fill one scale-up domain and dp for the rest.",
    )
    group.add_argument("--tp", type=positive_int, default=None, help="Tensor parallel degree (default 1).")
    group.add_argument(
        "--dp", type=positive_int, default=None,
        help="Data parallel replicas; --batch is split across them (default 1).",
    )
    group.add_argument(
        "--overlap", type=fraction, default=0.0,
        help="Fraction of communication time hidden behind compute, 0 to 1 (default 0).",
    )
    group.add_argument(
        "--memory-fraction", type=fraction, default=DEFAULT_MEMORY_FRACTION,
        help=f"Share of device memory the engine may use (default {DEFAULT_MEMORY_FRACTION}).",
    )


def wants_timing(args: argparse.Namespace) -> bool:
    return any(getattr(args, name) is not None for name in ("hardware", "gpus", "tp", "dp"))


def resolve_plan(args: argparse.Namespace, domain_size: int | None) -> ParallelPlan:
    """Build the plan from --tp, --dp and --gpus; --gpus alone fills domains with tp first."""
    tp, dp, gpus = args.tp, args.dp, args.gpus
    if gpus is not None and tp is None and dp is None:
        tp = min(gpus, domain_size or gpus)
        if gpus % tp:
            raise SpecError(f"--gpus {gpus} is not a multiple of the scale-up domain {tp}: give --tp and --dp")
        return ParallelPlan(tp=tp, dp=gpus // tp)
    tp, dp = tp or 1, dp or 1
    if gpus is not None and gpus != tp * dp:
        raise SpecError(f"--gpus {gpus} differs from --tp {tp} x --dp {dp} = {tp * dp}: make them agree or drop --gpus")
    return ParallelPlan(tp=tp, dp=dp)


# ---------------------------------------------------------------------------------------------
# Output


def _time_rows(times: TimeReport, phase: str) -> list[list[str]]:
    phase_total = times.prefill.time_s if phase == "prefill" else times.decode.time_s
    rows = []
    previous_group = None
    for t in times.phase_ops(phase):
        group = t.layer_kind or "model"
        label = ""
        if group != previous_group:
            label = f"{group} x{t.count}" if t.layer_kind else group
            previous_group = group
        share = 100 * t.total_s / phase_total if phase_total else 0.0
        rows.append([label, t.name, t.kind, t.bound, human_seconds(t.total_s), f"{share:.1f}%"])
    return rows


def _phase_block(times: TimeReport, phase: str, title: str) -> list[str]:
    part = times.prefill if phase == "prefill" else times.decode
    header = ["layers", "op", "kind", "bound", "time", "share"]
    lines = ["", title, format_table(_time_rows(times, phase), header, right_align_from=4)]
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


def format_timing(
    times: TimeReport, capacity: Capacity, max_context: int, plan: ParallelPlan, profile_name: str
) -> str:
    """Format the time, memory and capacity sections that follow the counts."""
    lines = [
        "",
        f"time on {profile_name} x{times.n_devices} (tp {plan.tp}, dp {plan.dp}; profile confidence "
        f"{times.confidence}, {times.provenance}); counts above are per device; estimates, not measurements",
    ]
    if times.prefill is not None:
        passes = _plural(int(times.prefill.forwards), "forward pass").replace("passs", "passes")
        lines += _phase_block(times, "prefill", f"prefill ({passes}):")
    if times.decode is not None:
        lines += _phase_block(times, "decode", f"decode step (batch {times.batch} per replica):")

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
        f"memory per device: weights {human_bytes(capacity.weights_bytes)} + activation peak "
        f"{human_bytes(capacity.activation_peak_bytes)} + KV {human_bytes(capacity.batch * capacity.kv_bytes_per_sequence)} "
        f"({_plural(capacity.batch, 'sequence')}) = {human_bytes(capacity.used_bytes)} of {human_bytes(capacity.usable_bytes)} usable "
        f"({capacity.memory_fraction:g} x {human_bytes(capacity.memory_bytes)}): {verdict}",
        f"capacity per replica: {_plural(capacity.max_sequences, 'sequence')} at this context; "
        f"max context {max_context:,} tokens at {_plural(capacity.batch, 'sequence')}",
    ]
    return "\n".join(lines)


def _timing_dict(times: TimeReport, capacity: Capacity, max_context: int, plan: ParallelPlan) -> dict[str, Any]:
    memory = capacity.to_dict()
    return {
        "plan": {"tp": plan.tp, "dp": plan.dp, "gpus": plan.world_size},
        "time": times.to_dict(),
        "memory": {
            key: memory[key]
            for key in ("memory_bytes", "memory_fraction", "usable_bytes", "weights_bytes", "activation_peak_bytes",
                        "kv_bytes_per_sequence", "batch", "used_bytes", "headroom_bytes", "fits")
        },
        "capacity": {
            "max_sequences": capacity.max_sequences,
            "max_context": max_context,
            "kv_budget_bytes": memory["kv_budget_bytes"],
        },
    }


def run_timed(args: argparse.Namespace, spec: ModelSpec, workload: Workload, format_report) -> int:
    """Count per device for the plan, time it on the hardware, and check memory and capacity."""
    if args.hardware is None:
        raise SpecError("--gpus, --tp and --dp need --hardware: name a profile from 'ctxsim hardware'")
    profile = load_hardware(args.hardware)
    plan = resolve_plan(args, profile.scale_up.domain_size)
    report = device_report(spec, workload, plan)
    # Every device's memory and traffic, for the per-device section and JSON.
    report.extras["parallel"] = parallel_counts(spec, workload, plan)
    times = estimate_time(report, profile, overlap=args.overlap, total_batch=workload.batch)
    capacity = capacity_from_report(report, profile, memory_fraction=args.memory_fraction)
    local = workload.model_copy(update={"batch": report.workload.batch})
    max_context = max_context_for(
        shard_model(spec, plan.tp), local, profile, concurrency=local.batch, memory_fraction=args.memory_fraction
    )

    if args.json:
        out = report_to_dict(report)
        out.update(_timing_dict(times, capacity, max_context, plan))
        print_json(out)
        return 0
    print(format_report(report))
    print(format_timing(times, capacity, max_context, plan, profile.name))
    return 0
