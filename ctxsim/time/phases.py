"""Phase times of a CostReport on a hardware profile: TTFT, TPOT and tokens per second.

Metrics (docs/methodology.md states them with the same words):

- **TTFT** (time to first token): the prefill phase of the workload on one device, all chunks of
  all ``batch`` prompts. The prefill ends with the LM head on each prompt's last position, which
  yields the first output token, so no decode step is added. Queueing, tokenization and network
  time are not included.
- **TPOT** (time per output token): one decode step of the whole batch at context N, the time
  between two output tokens of one request in steady state. With pipeline stages the batch
  runs as micro-batches and the slowest stage can set the pace (``ctxsim.time.stages``).
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
from ctxsim.spec.plan import ParallelPlan
from ctxsim.time.collectives import collective_op_time
from ctxsim.time.placement import collective_groups
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
    micro_batches: int = 1

    @property
    def stage_imbalance(self) -> Number | None:
        """Slowest stage over the mean stage time (None without pipeline stages)."""
        return stage_imbalance(self.stage_s) if len(self.stage_s) > 1 else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "time_s": _plain(self.time_s),
            "compute_s": _plain(self.compute_s),
            "communication_s": _plain(self.communication_s),
            "hidden_communication_s": _plain(self.hidden_s),
            "forward_passes": _plain(self.forwards),
            "by_bound_s": {k: _plain(v) for k, v in self.by_bound.items()},
            "stage_s": [_plain(s) for s in self.stage_s],
            "stage_imbalance": _plain(self.stage_imbalance),
            "micro_batches": self.micro_batches,
        }


@dataclass(frozen=True, slots=True)
class StageTime:
    """Time of one pipeline stage in each phase, and the device that sets it (the stage's slowest)."""

    stage: int
    layers: tuple[int, int]  # first and last main-stack layer of the stage
    prefill_rank: int | None = None
    prefill_s: Number | None = None
    decode_rank: int | None = None
    decode_s: Number | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "stage": self.stage,
            "layers": list(self.layers),
            "prefill_rank": self.prefill_rank,
            "prefill_s": _plain(self.prefill_s),
            "decode_rank": self.decode_rank,
            "decode_s": _plain(self.decode_s),
        }


@dataclass(slots=True)
class TimeReport:
    """Estimated times of one CostReport or one plan on one hardware profile (estimates, not measurements).

    ``batch`` is the sequences of the busiest data-parallel replica. With a plan timed per
    device (``ctxsim.time.time_plan``), ``ops`` contains the ops of each stage's slowest device,
    each with its ``stage``, and ``stages`` the time of every stage.
    """

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
    stages: list[StageTime] = field(default_factory=list)

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
            "stages": [s.to_dict() for s in self.stages],
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


def _slowest(values: Sequence[Number]) -> Number:
    slowest = values[0]
    for value in values[1:]:
        slowest = maximum(slowest, value)
    return slowest


def pipeline_prefill_s(stage_s: Sequence[Number], forwards: Number) -> Number:
    """Makespan of ``forwards`` equal chunks through the stages: fill the pipe, then drain at the slowest.

    The first chunk passes every stage; each later one leaves one slowest-stage chunk time after
    the one before. With pp equal stages of time t this is t (m + pp - 1) / m for m chunks,
    the stage time over 1 - bubble, where the bubble (pp - 1) / (m + pp - 1) is the idle share
    of the stage time slots.
    NOTE: chunks count as equal, although later chunks attend to more keys and take longer.
    """
    per_chunk = [s / forwards for s in stage_s]
    return sum(per_chunk) + (forwards - 1) * _slowest(per_chunk)


def pipeline_decode_s(stage_s: Sequence[Number], micro_batches: int) -> Number:
    """Time between two tokens of one sequence when ``micro_batches`` micro-batches cycle through the stages.

    A micro-batch cannot start its next step before its previous one has left the last stage,
    which takes the sum of the stage times. The slowest stage serves every micro-batch once per
    step, which takes ``micro_batches`` times its time. The larger of the two sets the pace.
    """
    return maximum(sum(stage_s), micro_batches * _slowest(stage_s))


def stage_imbalance(stage_s: Sequence[Number]) -> Number:
    """Slowest stage over the mean stage time; 1 is perfectly balanced."""
    return _slowest(stage_s) * len(stage_s) / sum(stage_s)


# ---------------------------------------------------------------------------------------------
# The report


def _forwards(report: CostReport) -> Number:
    """Forward passes of the prefill: one per chunk."""
    workload = report.workload
    context = report.extras.get("context", workload.context)
    if workload.chunk_size is None:
        return 1
    return ceil_div(context - workload.cached_context, workload.chunk_size)


def _plan_group_sizes(plan: Any) -> dict[str, int]:
    """Group size of each collective group from a plan's degrees, for reports that are not per device."""
    if plan is None:
        return {}
    sizes = {g: int(getattr(plan, g, 1)) for g in ("tp", "pp", "ep", "dp", "cp", "layer_split")}
    if isinstance(plan, ParallelPlan):
        # The all-gather token path runs over the dp ranks whose tokens the expert group shares.
        sizes["comm.ep_all_gather"] = sizes["comm.ep_reduce_scatter"] = plan.token_groups
    return sizes


def _by_bound(times: list[OpTime]) -> dict[str, Number]:
    """Time of the ops of each bound; an op whose bound varies over a context array counts per point."""
    by_bound: dict[str, Number] = {}
    for t in times:
        if isinstance(t.bound, np.ndarray):
            for bound in BOUNDS:
                mask = t.bound == bound
                if mask.any():
                    by_bound[bound] = by_bound.get(bound, 0.0) + np.where(mask, t.total_s, 0.0)
        else:
            by_bound[t.bound] = by_bound.get(t.bound, 0.0) + t.total_s
    return {b: by_bound[b] for b in BOUNDS if b in by_bound}


def _phase_time(
    phase: str, times: list[OpTime], forwards: Number, overlap: float, stages: list[dict[str, int]] | None = None
) -> PhaseTime:
    """Sum one device's op times of a phase, hiding ``overlap`` of the communication behind compute."""
    compute = sum((t.total_s for t in times if t.kind != "collective"), 0.0)
    communication = sum((t.total_s for t in times if t.kind == "collective"), 0.0)
    by_bound = _by_bound(times)
    hidden = overlap * minimum(compute, communication)

    if not stages or len(stages) == 1:
        total = overlapped_s(compute, communication, overlap)
        return PhaseTime(phase, total, compute, communication, hidden, forwards, by_bound)

    # NOTE: a whole-model report split into stages applies overlap to each stage's compute and
    # communication as a whole, and a decode step passes every stage once (no micro-batches).
    compute_stages = _stage_totals([t for t in times if t.kind != "collective"], stages)
    comm_stages = _stage_totals([t for t in times if t.kind == "collective"], stages)
    stage_s = [overlapped_s(c, m, overlap) for c, m in zip(compute_stages, comm_stages)]
    total = pipeline_prefill_s(stage_s, forwards) if phase == "prefill" else sum(stage_s)
    return PhaseTime(phase, total, compute, communication, hidden, forwards, by_bound, stage_s)


def check_overlap(overlap: float) -> None:
    if not 0.0 <= overlap <= 1.0:
        raise ValueError(f"overlap {overlap} must be between 0 and 1: it is the fraction of communication hidden")


def time_ops(
    report: CostReport,
    profile: HardwareProfile,
    group_sizes: Mapping[str, int],
    ranks_per_node: Mapping[str, int] | None = None,
) -> list[OpTime]:
    """Time every op of ``report``: compute ops on the roofline, collectives over their groups.

    A prefill in n chunks launches each op n times and sends each collective as n messages.
    """
    forwards = _forwards(report)
    times: list[OpTime] = []
    for op in report.ops:
        launches = forwards if op.phase == "prefill" else 1
        if op.kind == "collective":
            times.append(collective_op_time(op, profile, group_sizes, launches, ranks_per_node))
        else:
            times.append(op_time(op, profile, launches))
    return times


def is_device_report(report: CostReport) -> bool:
    """Return whether ``report`` counts one device of a plan (``ctxsim.time.device_report``)."""
    return "rank" in report.extras and "parallel" in report.extras and isinstance(report.plan, ParallelPlan)


def deployment_workload(report: CostReport) -> Any:
    """Return the whole deployment's workload of a per-device report (its batch summed over the dp ranks)."""
    plan = report.plan
    counts = report.extras["parallel"]
    batch = sum(counts.devices[plan.rank_of(dp=d)].layout.batch for d in range(plan.dp))
    return report.workload.model_copy(update={"batch": batch, "context": report.extras["context"]})


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

    ``report`` contains the ops of one device and one replica's batch, for one context or a
    numpy array of contexts (``ctxsim.estimate(..., context=array)``), which gives array times.
    ``n_devices`` (default: the plan's world size) and ``total_batch`` (default: the batch times
    the plan's dp) only scale tokens per second.

    ``group_sizes`` maps a collective op name or its group (tp, pp, ep, dp, cp, layer_split) to
    the ranks it runs over, and ``ranks_per_node`` how many of them share a scale-up domain. By
    default a per-device report (``ctxsim.time.device_report``) takes both from its device's
    place in the plan, and any other report takes the plan's degrees and
    ``min(size, domain)``.

    With ``model``, a per-device report of a plan with pp > 1 or cp > 1 is timed as its whole
    plan (``time_plan``): every stage's slowest device, through the pipeline. A report of the
    whole model (``ctxsim.estimate``) with pp > 1 needs ``model`` to split its layers into
    stages; its prefill then runs as a pipeline of its chunks and a decode step passes every
    stage once.
    """
    profile = load_hardware(hardware) if isinstance(hardware, str) else hardware
    check_overlap(overlap)
    plan = report.plan
    per_device = is_device_report(report)
    pp = int(getattr(plan, "pp", 1)) if plan is not None else 1
    if per_device and (pp > 1 or plan.cp > 1):
        if model is not None:
            from ctxsim.time.stages import time_plan

            return time_plan(
                model, deployment_workload(report), plan, profile,
                overlap=overlap, n_devices=n_devices, total_batch=total_batch,
            )
        if pp > 1:
            raise ValueError(
                f"a plan with pp={pp} is timed stage by stage from the ModelSpec: pass model=, or time this "
                "device alone with ctxsim.time.time_device"
            )

    if group_sizes is not None:
        groups: Mapping[str, int] = group_sizes
    elif per_device:
        groups, default_per_node = collective_groups(report, profile.scale_up.domain_size)
        ranks_per_node = default_per_node if ranks_per_node is None else ranks_per_node
    else:
        groups = _plan_group_sizes(plan)
    stages = None
    if pp > 1 and not per_device:
        if model is None:
            raise ValueError(f"a plan with pp={pp} needs the ModelSpec to split layers into stages: pass model=")
        stages = split_stages(model.layer_sequence, pp)
    if n_devices is None:
        n_devices = int(plan.world_size) if plan is not None and hasattr(plan, "world_size") else 1
    if total_batch is None:
        replicas = int(getattr(plan, "dp", 1)) if plan is not None else 1
        total_batch = replicas * report.workload.batch

    times = time_ops(report, profile, groups, ranks_per_node)
    forwards = _forwards(report)
    phases = {}
    for phase in ("prefill", "decode"):
        phase_times = [t for t in times if t.phase == phase]
        if phase_times:
            phases[phase] = _phase_time(phase, phase_times, forwards if phase == "prefill" else 1, overlap, stages)

    return TimeReport(
        hardware=profile.name,
        confidence=profile.confidence,
        provenance=provenance(profile),
        batch=report.workload.batch,
        total_batch=total_batch,
        n_devices=n_devices,
        overlap=overlap,
        ops=times,
        prefill=phases.get("prefill"),
        decode=phases.get("decode"),
    )


def provenance(profile: HardwareProfile) -> str:
    return f"{profile.provenance.kind} {profile.provenance.date}"
