"""Phase times of a CostReport on a hardware profile: TTFT, TPOT and tokens per second.

Metrics (docs/methodology.md states them with the same words):

- **TTFT** (time to first token): the prefill phase of the workload on one device, all chunks of
  all ``batch`` prompts. The prefill ends with the LM head on each prompt's last position, which
  yields the first output token, so no decode step is added. Queueing, tokenization and network
  time are not included.
- **TPOT** (time per output token): one decode step of the whole batch at context N, the time
  between two output tokens of one request in steady state.
- **Inter-token latency** is what a client observes between tokens. It equals TPOT while no
  prefill shares the step; ctxsim does not model the spikes that a mixed prefill adds.
- **tokens_per_s**: decode output tokens per second of the deployment, ``total_batch / TPOT``,
  where ``total_batch`` sequences are spread over the data-parallel replicas and each replica
  runs at most ``batch`` of them; **tokens_per_s_per_device** divides it by the number of devices.

Communication overlap: ``overlap`` in [0, 1] is the fraction of the communication time hidden
behind compute, up to the compute time: phase time = compute + communication - overlap x
min(compute, communication). 0 (the default) runs them back to back; 1 hides all it can.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

from ctxsim.counts.arith import ceil_div, maximum, minimum
from ctxsim.counts.report import CostReport, Number, _plain
from ctxsim.spec.hardware import HardwareProfile, load_hardware
from ctxsim.spec.model import ModelSpec
from ctxsim.time.collectives import collective_op_time
from ctxsim.time.roofline import BOUNDS, OpTime, op_time


def overlapped_s(compute_s: Number, communication_s: Number, overlap: float) -> Number:
    """Wall time of compute and communication when ``overlap`` of the communication is hidden."""
    return compute_s + communication_s - overlap * minimum(compute_s, communication_s)


@dataclass(slots=True)
class PhaseTime:
    """Time of one phase on one device, with its parts."""

    phase: str
    time_s: Number
    compute_s: Number
    communication_s: Number
    hidden_s: Number
    forwards: Number
    by_bound: dict[str, Number] = field(default_factory=dict)
    stage_s: list[Number] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "time_s": _plain(self.time_s),
            "compute_s": _plain(self.compute_s),
            "communication_s": _plain(self.communication_s),
            "hidden_communication_s": _plain(self.hidden_s),
            "forward_passes": _plain(self.forwards),
            "by_bound_s": {k: _plain(v) for k, v in self.by_bound.items()},
            "stage_s": [_plain(s) for s in self.stage_s],
        }


@dataclass(slots=True)
class TimeReport:
    """Estimated times of one CostReport on one hardware profile (an estimate, not a measurement)."""

    hardware: str
    confidence: str
    provenance: str
    batch: int
    total_batch: int
    n_devices: int
    overlap: float
    ops: list[OpTime]
    prefill: PhaseTime | None
    decode: PhaseTime | None

    @property
    def ttft_s(self) -> Number | None:
        """Time to first token: the whole prefill phase (see the module docstring)."""
        return None if self.prefill is None else self.prefill.time_s

    @property
    def tpot_s(self) -> Number | None:
        """Time per output token: one decode step of the batch at context N."""
        return None if self.decode is None else self.decode.time_s

    @property
    def tokens_per_s(self) -> Number | None:
        """Decode output tokens per second of all replicas together."""
        return None if self.decode is None else self.total_batch / self.decode.time_s

    @property
    def tokens_per_s_per_device(self) -> Number | None:
        tokens = self.tokens_per_s
        return None if tokens is None else tokens / self.n_devices

    def phase_ops(self, phase: str) -> list[OpTime]:
        return [t for t in self.ops if t.phase == phase]

    def to_dict(self) -> dict[str, Any]:
        return {
            "hardware": self.hardware,
            "confidence": self.confidence,
            "provenance": self.provenance,
            "batch_per_replica": self.batch,
            "total_batch": self.total_batch,
            "n_devices": self.n_devices,
            "overlap": self.overlap,
            "ttft_s": _plain(self.ttft_s),
            "tpot_s": _plain(self.tpot_s),
            "tokens_per_s": _plain(self.tokens_per_s),
            "tokens_per_s_per_device": _plain(self.tokens_per_s_per_device),
            "prefill": None if self.prefill is None else self.prefill.to_dict(),
            "decode": None if self.decode is None else self.decode.to_dict(),
            "ops": [t.to_dict() for t in self.ops],
        }


# ---------------------------------------------------------------------------------------------
# Pipeline stages


def split_stages(layer_sequence: Sequence[str], pp: int) -> list[dict[str, int]]:
    """Layers of each kind in each of ``pp`` contiguous pipeline stages.

    Stages get n_layer // pp layers each and the first n_layer % pp stages one more.
    """
    n_layer = len(layer_sequence)
    if not 1 <= pp <= n_layer:
        raise ValueError(f"pp {pp} must be between 1 and the number of layers {n_layer}")
    base, extra = divmod(n_layer, pp)
    stages: list[dict[str, int]] = []
    start = 0
    for stage in range(pp):
        size = base + (1 if stage < extra else 0)
        counts: dict[str, int] = {}
        for kind in layer_sequence[start : start + size]:
            counts[kind] = counts.get(kind, 0) + 1
        stages.append(counts)
        start += size
    return stages


def _stage_totals(times: list[OpTime], stages: list[dict[str, int]]) -> list[Number]:
    """Time of each stage: layer ops by the stage's layer counts; model-level ops at the ends.

    NOTE: ops without a layer kind go to the first stage when named 'embed' and to the last
    stage otherwise (final norm, LM head).
    """
    totals: list[Number] = [0.0] * len(stages)
    for t in times:
        if t.layer_kind is None:
            totals[0 if t.name == "embed" else -1] += t.total_s
            continue
        for i, stage in enumerate(stages):
            totals[i] += t.time_s * stage.get(t.layer_kind, 0)
    return totals


def pipeline_prefill_s(stage_s: Sequence[Number], forwards: Number) -> Number:
    """Makespan of ``forwards`` equal chunks through the stages: fill the pipe, then drain at the slowest."""
    per_chunk = [s / forwards for s in stage_s]
    slowest = per_chunk[0]
    for s in per_chunk[1:]:
        slowest = maximum(slowest, s)
    return sum(per_chunk) + (forwards - 1) * slowest


def stage_imbalance(stage_s: Sequence[Number]) -> Number:
    """Slowest stage over the mean stage time; 1 is perfectly balanced."""
    slowest = stage_s[0]
    for s in stage_s[1:]:
        slowest = maximum(slowest, s)
    return slowest * len(stage_s) / sum(stage_s)


# ---------------------------------------------------------------------------------------------
# The report


def _forwards(report: CostReport) -> Number:
    """Forward passes of the prefill: one per chunk."""
    workload = report.workload
    context = report.extras.get("context", workload.context)
    if workload.chunk_size is None:
        return 1
    return ceil_div(context - workload.cached_context, workload.chunk_size)


def _group_sizes(plan: Any) -> dict[str, int]:
    if plan is None:
        return {}
    return {g: int(getattr(plan, g, 1)) for g in ("tp", "pp", "ep", "dp", "cp", "layer_split")}


def _phase_time(
    phase: str, times: list[OpTime], forwards: Number, overlap: float, stages: list[dict[str, int]] | None
) -> PhaseTime:
    compute = sum((t.total_s for t in times if t.bound != "communication"), 0.0)
    communication = sum((t.total_s for t in times if t.bound == "communication"), 0.0)
    by_bound: dict[str, Number] = {}
    for t in times:
        if not isinstance(t.bound, np.ndarray):
            by_bound[t.bound] = by_bound.get(t.bound, 0.0) + t.total_s
    by_bound = {b: by_bound[b] for b in BOUNDS if b in by_bound}
    hidden = overlap * minimum(compute, communication)

    if not stages or len(stages) == 1:
        total = overlapped_s(compute, communication, overlap)
        return PhaseTime(phase, total, compute, communication, hidden, forwards, by_bound)

    # NOTE: with pipeline stages, overlap is applied to each stage's compute and communication as a
    # whole, and a decode step passes every stage once (no micro-batches in flight).
    compute_stages = _stage_totals([t for t in times if t.bound != "communication"], stages)
    comm_stages = _stage_totals([t for t in times if t.bound == "communication"], stages)
    stage_s = [overlapped_s(c, m, overlap) for c, m in zip(compute_stages, comm_stages)]
    total = pipeline_prefill_s(stage_s, forwards) if phase == "prefill" else sum(stage_s)
    return PhaseTime(phase, total, compute, communication, hidden, forwards, by_bound, stage_s)


def estimate_time(
    report: CostReport,
    hardware: HardwareProfile | str,
    *,
    n_devices: int | None = None,
    total_batch: int | None = None,
    overlap: float = 0.0,
    group_sizes: Mapping[str, int] | None = None,
    ranks_per_node: Mapping[str, int] | None = None,
    model: ModelSpec | None = None,
) -> TimeReport:
    """Time every op of ``report`` on ``hardware`` and sum them into TTFT and TPOT.

    ``report`` contains the ops of one device and one replica's batch. ``n_devices`` (default: the
    plan's world size) and ``total_batch`` (default: the batch times the plan's dp) only scale
    tokens per second.
    ``group_sizes`` maps a parallel group (tp, pp, ep, dp, cp, layer_split) to its size for the
    collective ops; by default it comes from ``report.plan``. ``ranks_per_node`` gives how many
    of a group's ranks share a scale-up domain, when not ``min(size, domain)``. With a plan of
    pp > 1, pass ``model`` so that the layers can be split into stages; the prefill then runs as
    a pipeline of its chunks and the slowest stage sets the pace.
    """
    profile = load_hardware(hardware) if isinstance(hardware, str) else hardware
    if not 0.0 <= overlap <= 1.0:
        raise ValueError(f"overlap {overlap} must be between 0 and 1: it is the fraction of communication hidden")
    groups = dict(_group_sizes(report.plan)) if group_sizes is None else dict(group_sizes)
    pp = groups.get("pp", 1)
    stages = None
    if pp > 1:
        if model is None:
            raise ValueError(f"a plan with pp={pp} needs the ModelSpec to split layers into stages: pass model=")
        stages = split_stages(model.layer_sequence, pp)
    plan = report.plan
    if n_devices is None:
        n_devices = int(plan.world_size) if plan is not None and hasattr(plan, "world_size") else 1
    if total_batch is None:
        replicas = int(getattr(plan, "dp", 1)) if plan is not None else 1
        total_batch = replicas * report.workload.batch

    forwards = _forwards(report)
    times: list[OpTime] = []
    for op in report.ops:
        launches = forwards if op.phase == "prefill" else 1
        if op.kind == "collective":
            times.append(collective_op_time(op, profile, groups, launches, ranks_per_node))
        else:
            times.append(op_time(op, profile, launches))

    phases = {}
    for phase in ("prefill", "decode"):
        phase_times = [t for t in times if t.phase == phase]
        if phase_times:
            phases[phase] = _phase_time(phase, phase_times, forwards if phase == "prefill" else 1, overlap, stages)

    return TimeReport(
        hardware=profile.name,
        confidence=profile.confidence,
        provenance=f"{profile.provenance.kind} {profile.provenance.date}",
        batch=report.workload.batch,
        total_batch=total_batch,
        n_devices=n_devices,
        overlap=overlap,
        ops=times,
        prefill=phases.get("prefill"),
        decode=phases.get("decode"),
    )
