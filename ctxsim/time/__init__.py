"""Estimated times from exact counts: roofline op times, collectives, TTFT/TPOT, and capacity.

``estimate_time(report, hardware)`` turns a CostReport into a TimeReport, and ``time_plan``
times every pipeline stage of a ParallelPlan from the per-device counts of
``ctxsim.counts.parallel``; ``capacity_from_report``, ``max_context_for`` and
``max_context_for_plan`` compute what fits in device memory; ``size`` searches deployments.
Every time is an estimate that carries the hardware profile (and its confidence) it came from.
"""

from ctxsim.time.capacity import (
    DEFAULT_MEMORY_FRACTION,
    Capacity,
    capacity_from_report,
    kv_budget_bytes,
    max_context,
    max_context_for,
    max_context_for_plan,
    max_sequences,
    plan_max_sequences,
)
from ctxsim.time.collectives import COLLECTIVES, collective_op_time, collective_time_s, parse_collective, ring_time_s
from ctxsim.time.phases import (
    PhaseTime,
    StageTime,
    TimeReport,
    estimate_time,
    pipeline_decode_s,
    pipeline_prefill_s,
    split_stages,
    stage_imbalance,
)
from ctxsim.time.placement import device_report, shard_model
from ctxsim.time.roofline import BOUNDS, OpTime, classify_bound, op_time
from ctxsim.time.size import PlanResult, SizingResult, size
from ctxsim.time.stages import time_device, time_plan

__all__ = [
    "BOUNDS",
    "COLLECTIVES",
    "DEFAULT_MEMORY_FRACTION",
    "Capacity",
    "OpTime",
    "PhaseTime",
    "PlanResult",
    "SizingResult",
    "StageTime",
    "TimeReport",
    "capacity_from_report",
    "classify_bound",
    "collective_op_time",
    "collective_time_s",
    "device_report",
    "estimate_time",
    "kv_budget_bytes",
    "max_context",
    "max_context_for",
    "max_context_for_plan",
    "max_sequences",
    "op_time",
    "parse_collective",
    "pipeline_decode_s",
    "pipeline_prefill_s",
    "plan_max_sequences",
    "ring_time_s",
    "shard_model",
    "size",
    "split_stages",
    "stage_imbalance",
    "time_device",
    "time_plan",
]
