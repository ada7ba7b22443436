"""Time a whole ParallelPlan: each pipeline stage's slowest device, combined through the pipeline.

Every device of a stage runs the same layers; devices differ in their batch (dp ranks) and
their share of the prompt (cp ranks). A stage's time in a phase is that of its slowest device:
the dp rank with the most sequences (rank 0, which gets ceil(batch / dp)), and under cp the
slowest cp rank. Devices of one stage are timed from their own per-device report
(``ctxsim.time.device_report``), collectives over their own groups.

- **TTFT** with pp stages: the prefill's m passes (chunks, or one pass under cp) run through
  the stages as a pipeline (``pipeline_prefill_s``). The first pass crosses every stage, and
  each later one leaves one slowest-stage pass time after the one before. For equal stages that
  is the stage time over 1 - bubble, with bubble = (pp - 1) / (m + pp - 1).
- **TPOT** with pp stages: a replica's b sequences run as M = min(pp, b) micro-batches of
  ceil(b / M) sequences in flight, as vLLM's pipeline-parallel engine keeps one scheduled batch
  per stage. Between two tokens of one sequence, its micro-batch crosses every stage and the
  slowest stage serves all M micro-batches: TPOT = max(sum of stage times, M x slowest stage),
  ``pipeline_decode_s``, with stage times at the micro-batch size. The slowest stage sets the
  pace once M x slowest exceeds the sum; with one micro-batch TPOT is the sum.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable

from ctxsim.counts.parallel import ParallelCounts, dp_batch, parallel_counts, stage_layers
from ctxsim.counts.report import CostReport, Number
from ctxsim.spec.hardware import HardwareProfile, load_hardware
from ctxsim.spec.model import ModelSpec
from ctxsim.spec.plan import ParallelPlan
from ctxsim.spec.workload import Workload
from ctxsim.time.phases import (
    BOUNDS,
    PhaseTime,
    StageTime,
    TimeReport,
    _forwards,
    _phase_time,
    _plan_group_sizes,
    check_overlap,
    is_device_report,
    pipeline_decode_s,
    pipeline_prefill_s,
    provenance,
    time_ops,
)
from ctxsim.time.placement import collective_groups, device_report

DeviceModel = Callable[..., CostReport]


def _phases(workload: Workload) -> tuple[str, ...]:
    return ("prefill", "decode") if workload.phase == "both" else (workload.phase,)


def micro_batches(plan: ParallelPlan, replica_batch: int) -> int:
    """Decode micro-batches in flight through the stages: min(pp, sequences of the replica)."""
    return max(1, min(plan.pp, replica_batch))


def _time_device(report: CostReport, profile: HardwareProfile, overlap: float) -> tuple[list, dict[str, PhaseTime]]:
    """Op times and phase times of one per-device report."""
    if is_device_report(report):
        groups, per_node = collective_groups(report, profile.scale_up.domain_size)
    else:
        groups, per_node = _plan_group_sizes(report.plan), None
    times = time_ops(report, profile, groups, per_node)
    phases = {}
    for phase in ("prefill", "decode"):
        phase_times = [t for t in times if t.phase == phase]
        if phase_times:
            forwards = _forwards(report) if phase == "prefill" else 1
            phases[phase] = _phase_time(phase, phase_times, forwards, overlap)
    return times, phases


def time_device(report: CostReport, hardware: HardwareProfile | str, *, overlap: float = 0.0) -> TimeReport:
    """Time one device's report on its own: its ops and collectives, with no pipeline around it.

    For a device of a pipeline stage this is the stage's time, not TTFT or TPOT of the plan.
    """
    profile = load_hardware(hardware) if isinstance(hardware, str) else hardware
    check_overlap(overlap)
    times, phases = _time_device(report, profile, overlap)
    return TimeReport(
        hardware=profile.name,
        confidence=profile.confidence,
        provenance=provenance(profile),
        batch=report.workload.batch,
        total_batch=report.workload.batch,
        n_devices=1,
        overlap=overlap,
        ops=times,
        prefill=phases.get("prefill"),
        decode=phases.get("decode"),
    )


def _combine(phase: str, stage_parts: list[PhaseTime], pp: int, micro: int) -> PhaseTime:
    """Phase time of the plan from each stage's slowest device (see the module docstring)."""
    stage_s = [part.time_s for part in stage_parts]
    forwards = stage_parts[0].forwards
    if phase == "prefill":
        total = pipeline_prefill_s(stage_s, forwards)
    else:
        total = pipeline_decode_s(stage_s, micro)
    by_bound: dict[str, Number] = {}
    for part in stage_parts:
        for bound, seconds in part.by_bound.items():
            by_bound[bound] = by_bound.get(bound, 0.0) + seconds
    return PhaseTime(
        phase=phase,
        time_s=total,
        compute_s=sum(part.compute_s for part in stage_parts),
        communication_s=sum(part.communication_s for part in stage_parts),
        hidden_s=sum(part.hidden_s for part in stage_parts),
        forwards=forwards,
        by_bound={b: by_bound[b] for b in BOUNDS if b in by_bound},
        stage_s=stage_s if pp > 1 else [],
        micro_batches=micro if phase == "decode" else 1,
    )


def time_plan(
    spec: ModelSpec,
    workload: Workload,
    plan: ParallelPlan,
    hardware: HardwareProfile | str,
    *,
    overlap: float = 0.0,
    n_devices: int | None = None,
    total_batch: int | None = None,
    per_device: DeviceModel | None = None,
) -> TimeReport:
    """Time ``workload`` on every device of ``plan`` and combine the stages into TTFT and TPOT.

    ``workload.batch`` is the whole deployment's batch. ``per_device(spec, workload, plan,
    rank=r)`` builds the report of rank r (default: ``ctxsim.time.device_report``, with the
    plan's devices counted once per workload). ``n_devices`` (default: the world size) and
    ``total_batch`` (default: the workload's batch) only scale tokens per second. Raises
    SpecError when the plan cannot run the model or the workload.
    """
    profile = load_hardware(hardware) if isinstance(hardware, str) else hardware
    check_overlap(overlap)
    phases = _phases(workload)
    replica = dp_batch(workload.batch, plan, 0)
    micro = micro_batches(plan, replica) if "decode" in phases else 1
    workloads = {phase: workload for phase in phases}
    if micro > 1:
        # Decode stages are timed at the micro-batch size, on every dp rank alike.
        micro_size = math.ceil(replica / micro)
        workloads["decode"] = workload.model_copy(update={"phase": "decode", "batch": micro_size * plan.dp})
        if "prefill" in phases:
            workloads["prefill"] = workload.model_copy(update={"phase": "prefill"})

    timed: dict[tuple[int, int], tuple[list, dict[str, PhaseTime]]] = {}
    counted: dict[int, ParallelCounts] = {}

    def report_of(phase_workload: Workload, rank: int) -> CostReport:
        if per_device is not None:
            return per_device(spec, phase_workload, plan, rank=rank)
        key = id(phase_workload)
        if key not in counted:
            counted[key] = parallel_counts(spec, phase_workload, plan)
        return device_report(spec, phase_workload, plan, rank=rank, counts=counted[key])

    def device(phase: str, rank: int) -> tuple[list, dict[str, PhaseTime]]:
        key = (id(workloads[phase]), rank)
        if key not in timed:
            timed[key] = _time_device(report_of(workloads[phase], rank), profile, overlap)
        return timed[key]

    layers = stage_layers(spec, plan)
    stage_records = [StageTime(stage=s, layers=(layers[s][0], layers[s][-1])) for s in range(plan.pp)]
    ops = []
    results: dict[str, PhaseTime] = {}
    for phase in phases:
        parts = []
        for stage in range(plan.pp):
            candidates = [plan.rank_of(cp=c, pp=stage) for c in range(plan.cp if phase == "prefill" else 1)]
            rank = max(candidates, key=lambda r: float(device(phase, r)[1][phase].time_s))
            times, phase_times = device(phase, rank)
            parts.append(phase_times[phase])
            ops += [dataclasses.replace(t, stage=stage) for t in times if t.phase == phase]
            stage_records[stage] = dataclasses.replace(
                stage_records[stage], **{f"{phase}_rank": rank, f"{phase}_s": phase_times[phase].time_s}
            )
        results[phase] = _combine(phase, parts, plan.pp, micro)

    return TimeReport(
        hardware=profile.name,
        confidence=profile.confidence,
        provenance=provenance(profile),
        batch=replica,
        total_batch=workload.batch if total_batch is None else total_batch,
        n_devices=plan.world_size if n_devices is None else n_devices,
        overlap=overlap,
        ops=ops,
        prefill=results.get("prefill"),
        decode=results.get("decode"),
        stages=stage_records,
    )

