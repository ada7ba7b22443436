"""Deployment sizing: search parallel plans and KV dtypes for the fewest devices that meet targets.

For a model, a context N, a concurrency C and a hardware profile, every candidate plan is
counted per device and timed:

- TTFT: the chunked prefill of one N-token prompt (one request at a time).
- TPOT: one decode step at context N of the ceil(C / dp) sequences each replica runs.
- tokens/s: C / TPOT over the whole deployment.
- memory: weights + the prefill activation peak + ceil(C / dp) x KV per sequence must fit in
  memory_fraction x device memory.

A plan is feasible when it fits and meets every target given. The result lists the feasible
plans that no other feasible plan beats on devices, TTFT and TPOT at once (the Pareto set),
fewest devices first, then lowest TPOT and TTFT. When nothing is feasible, ``shortfall`` states
what is short and by how much.

Search space: tp in powers of two that shard the model (see ``ctxsim.time.placement``), dp in
powers of two up to C, and the KV dtypes that apply to the model. The per-device model is a
parameter, so a richer model of pp, ep, cp and layer_split can replace ``device_report``.
NOTE: pp, ep, cp and layer_split are not searched yet.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from pydantic import ValidationError

from ctxsim.counts.memory import check_kv_dtype
from ctxsim.counts.report import CostReport
from ctxsim.spec.dtypes import KV_DTYPES
from ctxsim.spec.errors import SpecError, format_validation_error
from ctxsim.spec.hardware import HardwareProfile, load_hardware
from ctxsim.spec.load import load_model
from ctxsim.spec.model import ModelSpec
from ctxsim.spec.plan import ParallelPlan
from ctxsim.spec.workload import Workload
from ctxsim.time.capacity import DEFAULT_MEMORY_FRACTION, Capacity
from ctxsim.time.phases import estimate_time
from ctxsim.time.placement import device_report, replica_batch, shard_model

DeviceModel = Callable[[ModelSpec, Workload, ParallelPlan], CostReport]

# Prefill chunk size used when the caller gives none. Serving engines prefill long prompts in
# chunks of a few thousand tokens, because an unchunked 1M-token prefill needs terabytes of activations.
DEFAULT_CHUNK_SIZE = 8192
DEFAULT_MAX_GPUS = 64


@dataclass(frozen=True, slots=True)
class PlanResult:
    """One candidate deployment: its plan, KV dtype, times and per-device memory."""

    plan: ParallelPlan
    kv_dtype: str
    ttft_s: float
    tpot_s: float
    concurrency: int
    memory: Capacity
    meets_ttft: bool
    meets_tpot: bool

    @property
    def gpus(self) -> int:
        return self.plan.world_size

    @property
    def tokens_per_s(self) -> float:
        return self.concurrency / self.tpot_s

    @property
    def feasible(self) -> bool:
        return self.memory.fits and self.meets_ttft and self.meets_tpot

    def describe(self) -> str:
        return f"tp={self.plan.tp} dp={self.plan.dp} kv {self.kv_dtype}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "gpus": self.gpus,
            "tp": self.plan.tp,
            "dp": self.plan.dp,
            "kv_dtype": self.kv_dtype,
            "ttft_s": self.ttft_s,
            "tpot_s": self.tpot_s,
            "tokens_per_s": self.tokens_per_s,
            "tokens_per_s_per_device": self.tokens_per_s / self.gpus,
            "sequences_per_replica": self.memory.batch,
            "memory_used_bytes": self.memory.used_bytes,
            "memory_usable_bytes": self.memory.usable_bytes,
            "memory_headroom_bytes": self.memory.headroom_bytes,
            "fits": self.memory.fits,
            "meets_ttft": self.meets_ttft,
            "meets_tpot": self.meets_tpot,
        }


@dataclass(slots=True)
class SizingResult:
    """Pareto set of feasible plans, best first, or the shortfall when there is none."""

    model: str
    hardware: str
    context: int
    concurrency: int
    target_ttft_s: float | None
    target_tpot_s: float | None
    max_gpus: int
    plans: list[PlanResult]
    evaluated: list[PlanResult] = field(default_factory=list)
    shortfall: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "hardware": self.hardware,
            "context": self.context,
            "concurrency": self.concurrency,
            "target_ttft_s": self.target_ttft_s,
            "target_tpot_s": self.target_tpot_s,
            "max_gpus": self.max_gpus,
            "plans": [p.to_dict() for p in self.plans],
            "evaluated": len(self.evaluated),
            "shortfall": self.shortfall,
            "searched": "tp (powers of two), dp (powers of two up to the concurrency), KV dtype; not pp, ep, cp, layer_split",
        }


# ---------------------------------------------------------------------------------------------
# Candidates


def _powers_of_two(limit: int) -> list[int]:
    out, value = [], 1
    while value <= limit:
        out.append(value)
        value *= 2
    return out


def tp_candidates(spec: ModelSpec, max_gpus: int) -> list[int]:
    """Tensor-parallel degrees (powers of two up to ``max_gpus``) that shard every layer evenly."""
    degrees = []
    for tp in _powers_of_two(max_gpus):
        try:
            shard_model(spec, tp)
        except SpecError:
            continue
        degrees.append(tp)
    return degrees


def kv_dtype_candidates(spec: ModelSpec, profile: HardwareProfile) -> list[str]:
    """KV dtypes that apply to every layer; nvfp4 only where the device has FP4 matrix units."""
    out = []
    for dtype in KV_DTYPES:
        if dtype == "nvfp4" and "fp4" not in profile.peak_flops:
            continue
        try:
            check_kv_dtype(spec, dtype)
        except SpecError:
            continue
        out.append(dtype)
    return out


# ---------------------------------------------------------------------------------------------
# Evaluation


def evaluate_plan(
    spec: ModelSpec,
    profile: HardwareProfile,
    plan: ParallelPlan,
    kv_dtype: str,
    context: int,
    concurrency: int,
    *,
    chunk_size: int,
    target_ttft_s: float | None = None,
    target_tpot_s: float | None = None,
    memory_fraction: float = DEFAULT_MEMORY_FRACTION,
    overlap: float = 0.0,
    per_device: DeviceModel = device_report,
) -> PlanResult:
    """Count, time and fit one plan (see the module docstring for what each number means)."""
    prefill = per_device(
        spec, Workload(phase="prefill", context=context, chunk_size=chunk_size, kv_dtype=kv_dtype), plan
    )
    decode = per_device(spec, Workload(phase="decode", context=context, batch=concurrency, kv_dtype=kv_dtype), plan)
    ttft = estimate_time(prefill, profile, overlap=overlap, model=spec).ttft_s
    tpot = estimate_time(decode, profile, overlap=overlap, model=spec).tpot_s
    memory = Capacity(
        memory_bytes=profile.memory_bytes,
        memory_fraction=memory_fraction,
        weights_bytes=decode.weights_bytes,
        activation_peak_bytes=prefill.activation_peak_bytes,
        reserve_bytes=0,
        kv_bytes_per_sequence=decode.kv_cache.bytes_per_sequence,
        batch=replica_batch(concurrency, plan.dp),
    )
    return PlanResult(
        plan=plan,
        kv_dtype=kv_dtype,
        ttft_s=ttft,
        tpot_s=tpot,
        concurrency=concurrency,
        memory=memory,
        meets_ttft=target_ttft_s is None or ttft <= target_ttft_s,
        meets_tpot=target_tpot_s is None or tpot <= target_tpot_s,
    )


def _dominates(a: PlanResult, b: PlanResult) -> bool:
    no_worse = a.gpus <= b.gpus and a.ttft_s <= b.ttft_s and a.tpot_s <= b.tpot_s
    better = a.gpus < b.gpus or a.ttft_s < b.ttft_s or a.tpot_s < b.tpot_s
    return no_worse and better


def pareto_front(results: list[PlanResult]) -> list[PlanResult]:
    """Plans that no other plan beats on devices, TTFT and TPOT; fewest devices first."""
    front = [r for r in results if not any(_dominates(other, r) for other in results)]
    return sorted(front, key=lambda r: (r.gpus, r.tpot_s, r.ttft_s, -r.memory.headroom_bytes))


# ---------------------------------------------------------------------------------------------
# Shortfall


def _gib(value: float) -> str:
    return f"{value / 2**30:,.1f} GiB"


def _memory_shortfall(results: list[PlanResult], context: int, concurrency: int, max_gpus: int) -> str:
    closest = max(results, key=lambda r: r.memory.headroom_bytes)
    memory = closest.memory
    return (
        f"memory: no plan of up to {max_gpus} devices holds {concurrency} sequence(s) of {context:,} tokens; "
        f"the closest ({closest.describe()}, {closest.gpus} devices) needs {_gib(memory.used_bytes)} per "
        f"device, {_gib(-memory.headroom_bytes)} more than the usable {_gib(memory.usable_bytes)} "
        f"({memory.memory_fraction:g} of {_gib(memory.memory_bytes)})"
    )


def _target_shortfall(fitting: list[PlanResult], metric: str, target: float) -> str | None:
    best = min(fitting, key=lambda r: getattr(r, f"{metric}_s"))
    value = getattr(best, f"{metric}_s")
    if value <= target:
        return None
    return (
        f"{metric.upper()}: the fastest plan that fits ({best.describe()}, {best.gpus} devices) takes {value:.4g} s, "
        f"{value - target:.4g} s over the target {target:g} s ({value / target:.2f}x)"
    )


def explain_shortfall(
    results: list[PlanResult],
    context: int,
    concurrency: int,
    max_gpus: int,
    target_ttft_s: float | None,
    target_tpot_s: float | None,
) -> list[str]:
    """Explain in one line per reason why no plan is feasible, with the gap to the closest plan."""
    if not results:
        return [f"no plan of up to {max_gpus} devices could be evaluated: raise --max-gpus or check the model"]
    fitting = [r for r in results if r.memory.fits]
    if not fitting:
        return [_memory_shortfall(results, context, concurrency, max_gpus)]
    lines = []
    for metric, target in (("ttft", target_ttft_s), ("tpot", target_tpot_s)):
        if target is not None:
            line = _target_shortfall(fitting, metric, target)
            if line:
                lines.append(line)
    if not lines:
        lines.append("no single plan meets the TTFT and TPOT targets together, although each one alone is met")
    return lines


# ---------------------------------------------------------------------------------------------
# Search


def size(
    model: ModelSpec | str,
    context: int,
    hardware: HardwareProfile | str,
    *,
    concurrency: int = 1,
    target_ttft_s: float | None = None,
    target_tpot_s: float | None = None,
    max_gpus: int = DEFAULT_MAX_GPUS,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    kv_dtypes: list[str] | None = None,
    memory_fraction: float = DEFAULT_MEMORY_FRACTION,
    overlap: float = 0.0,
    per_device: DeviceModel = device_report,
) -> SizingResult:
    """Search tp, dp and KV dtype for the fewest devices that serve ``concurrency`` sequences of ``context``."""
    spec = load_model(model) if isinstance(model, str) else model
    profile = load_hardware(hardware) if isinstance(hardware, str) else hardware
    if concurrency < 1 or max_gpus < 1:
        raise SpecError(f"concurrency {concurrency} and max_gpus {max_gpus} must be at least 1")
    try:
        Workload(context=context, chunk_size=chunk_size)
    except ValidationError as err:
        raise SpecError(format_validation_error(err, "size")) from None
    dtypes = kv_dtypes or kv_dtype_candidates(spec, profile)
    for dtype in dtypes:
        check_kv_dtype(spec, dtype)

    results: list[PlanResult] = []
    for tp in tp_candidates(spec, max_gpus):
        for dp in _powers_of_two(min(concurrency, max_gpus // tp)):
            plan = ParallelPlan(tp=tp, dp=dp)
            for dtype in dtypes:
                try:
                    result = evaluate_plan(
                        spec, profile, plan, dtype, context, concurrency,
                        chunk_size=chunk_size, target_ttft_s=target_ttft_s, target_tpot_s=target_tpot_s,
                        memory_fraction=memory_fraction, overlap=overlap, per_device=per_device,
                    )
                except SpecError:
                    # A tp group larger than one node on a device without scale-out cannot run.
                    continue
                results.append(result)

    feasible = [r for r in results if r.feasible]
    plans = pareto_front(feasible)
    shortfall = [] if plans else explain_shortfall(
        results, context, concurrency, max_gpus, target_ttft_s, target_tpot_s
    )
    return SizingResult(
        model=spec.name,
        hardware=profile.name,
        context=context,
        concurrency=concurrency,
        target_ttft_s=target_ttft_s,
        target_tpot_s=target_tpot_s,
        max_gpus=max_gpus,
        plans=plans,
        evaluated=results,
        shortfall=shortfall,
    )
