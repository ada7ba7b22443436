"""Estimated times from exact counts: roofline op times, collectives, TTFT/TPOT, and capacity.

``estimate_time(report, hardware)`` turns a CostReport into a TimeReport; ``capacity_from_report``
and ``max_context_for`` compute what fits in device memory; ``size`` searches deployments. Every time is an estimate that carries
the hardware profile (and its confidence) it came from.
"""

from ctxsim.time.capacity import (
    DEFAULT_MEMORY_FRACTION,
    Capacity,
    capacity_from_report,
    kv_budget_bytes,
    max_context,
    max_context_for,
    max_sequences,
)
from ctxsim.time.collectives import COLLECTIVES, collective_op_time, collective_time_s, parse_collective, ring_time_s
from ctxsim.time.phases import (
    PhaseTime,
    TimeReport,
    estimate_time,
    pipeline_prefill_s,
    split_stages,
    stage_imbalance,
)
from ctxsim.time.placement import device_report, shard_model
from ctxsim.time.roofline import BOUNDS, OpTime, classify_bound, op_time
from ctxsim.time.size import PlanResult, SizingResult, size

__all__ = [
    "BOUNDS",
    "COLLECTIVES",
    "DEFAULT_MEMORY_FRACTION",
    "Capacity",
    "OpTime",
    "PhaseTime",
    "PlanResult",
    "SizingResult",
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
    "max_sequences",
    "op_time",
    "parse_collective",
    "pipeline_prefill_s",
    "ring_time_s",
    "shard_model",
    "size",
    "split_stages",
    "stage_imbalance",
]
