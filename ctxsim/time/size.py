"""Deployment sizing: search parallel plans and KV dtypes for the fewest devices that meet targets.

For a model, a context N, a concurrency C and a hardware profile, every candidate plan is
counted per device (``ctxsim.counts.parallel``) and timed stage by stage (``time_plan``):

- TTFT: the prefill of one N-token prompt (one request at a time), in chunks of ``chunk_size``;
  under cp, one pass split over the cp ranks.
- TPOT: one decode step at context N of each replica's share of the C sequences.
- tokens/s: C / TPOT over the whole deployment.
- memory: on every device, weights + the prefill activation peak + the KV of its decode
  sequences must fit in memory_fraction x device memory.

A plan is feasible when it fits and meets every target given. The result lists the feasible
plans that no other feasible plan beats on devices, TTFT and TPOT at once (the Pareto set),
fewest devices first, then lowest TPOT and TTFT. When nothing is feasible, ``shortfall`` states
what is short and by how much.

Search space and pruning (``candidate_plans``):

- tp, pp, dp and cp in powers of two, tp x pp x dp x cp <= max_gpus; tp and pp must pass
  ``check_plan``; dp <= C, because more replicas than sequences stay idle.
- ep is 1 or the whole expert group (vLLM's default and its --enable-expert-parallel). Any ep
  between gives each rank the same expert weight bytes, because the rest of the group splits
  each expert's width.
- attention-DP (dp ranks share the MoE layers) for MLA models with dp > 1.
- cp in all_gather mode only, for the prefill (see ``decode_plan``), without attention-DP.
- LayerSplit G is 1, or the largest power of two that the ranks holding identical KV allow, tried
  only when G = 1 does not fit: G > 1 adds a broadcast and saves only memory.
- every KV dtype that applies to the model (nvfp4 where the device has FP4 units).

Memory is counted first, and only plans that fit are timed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

from pydantic import ValidationError

from ctxsim.counts.memory import check_kv_dtype
from ctxsim.counts.parallel import ParallelCounts, parallel_counts
from ctxsim.counts.report import CostReport
from ctxsim.spec.dtypes import KV_DTYPES
from ctxsim.spec.errors import SpecError, format_validation_error
from ctxsim.spec.hardware import HardwareProfile, load_hardware
from ctxsim.spec.layers import MLAAttention, MoEFFN
from ctxsim.spec.load import load_model
from ctxsim.spec.model import ModelSpec
from ctxsim.spec.plan import ParallelPlan, check_plan, kv_replica_ranks, stage_layer_counts
from ctxsim.spec.workload import Workload
from ctxsim.time.capacity import DEFAULT_MEMORY_FRACTION, Capacity
from ctxsim.time.stages import time_plan
from ctxsim.units import human_seconds

DeviceModel = Callable[..., CostReport]

# Prefill chunk size used when the caller gives none. Serving engines prefill long prompts in
# chunks of a few thousand tokens, because an unchunked 1M-token prefill needs terabytes of activations.
DEFAULT_CHUNK_SIZE = 8192
DEFAULT_MAX_GPUS = 64

SEARCHED = (
    "tp, pp, dp, cp (powers of two; cp all_gather for the prefill), ep (1 or the expert group), "
    "attention-DP (MLA), LayerSplit (1 or the largest group, when 1 does not fit), KV dtype"
)


@dataclass(frozen=True, slots=True)
class PlanResult:
    """One candidate deployment: its plan, KV dtype, times and the memory of its busiest device.

    ``ttft_s`` and ``tpot_s`` are NaN for a plan that does not fit in memory, which is not timed.
    """

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
        plan = self.plan.describe() if self.gpus > 1 else "tp 1"
        return f"{plan}, KV {self.kv_dtype}"

    def to_dict(self) -> dict[str, Any]:
        plan = self.plan
        return {
            "gpus": self.gpus,
            "tp": plan.tp,
            "pp": plan.pp,
            "dp": plan.dp,
            "cp": plan.cp,
            "ep": plan.ep,
            "attention_dp": plan.attention_dp,
            "layer_split": plan.layer_split,
            "kv_dtype": self.kv_dtype,
            "ttft_s": self.ttft_s,
            "tpot_s": self.tpot_s,
            "tokens_per_s": self.tokens_per_s,
            "tokens_per_s_per_device": self.tokens_per_s / self.gpus,
            "sequences_per_replica": self.memory.batch,
            "memory_used_bytes": self.memory.used_bytes,
            # Whole bytes: the usable share of memory is a fraction of the device's bytes.
            "memory_usable_bytes": math.floor(self.memory.usable_bytes),
            "memory_headroom_bytes": math.floor(self.memory.headroom_bytes),
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

    @property
    def timed(self) -> int:
        """Plans that fit in memory and were timed."""
        return sum(1 for r in self.evaluated if r.memory.fits)

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
            "timed": self.timed,
            "shortfall": self.shortfall,
            "searched": SEARCHED,
        }


# ---------------------------------------------------------------------------------------------
# Candidates


def _powers_of_two(limit: int) -> list[int]:
    out, value = [], 1
    while value <= limit:
        out.append(value)
        value *= 2
    return out


def _valid(spec: ModelSpec, plan: ParallelPlan) -> bool:
    try:
        check_plan(spec, plan)
    except SpecError:
        return False
    return True


def tp_candidates(spec: ModelSpec, max_gpus: int) -> list[int]:
    """Tensor-parallel degrees (powers of two up to ``max_gpus``) that shard every layer evenly."""
    return [tp for tp in _powers_of_two(max_gpus) if _valid(spec, ParallelPlan(tp=tp))]


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


def decode_plan(plan: ParallelPlan) -> ParallelPlan:
    """The plan that runs the decode of a searched plan: the same, except that cp ranks become dp replicas.

    cp splits one prompt's prefill. In all_gather mode every cp rank then keeps the prompt's
    whole KV, so each cp rank can decode a share of the sequences. NOTE: each sequence's KV is
    assumed to stay only on the rank that decodes it once its prefill ends.
    """
    if plan.cp == 1:
        return plan
    values = plan.model_dump()
    values.update(cp=1, dp=plan.dp * plan.cp, cp_mode="ring", cp_sharding="zigzag")
    return ParallelPlan(**values)


def _largest_layer_split(spec: ModelSpec, plan: ParallelPlan) -> int:
    """Largest power-of-two LayerSplit group that the decode plan's identical-KV ranks and its stages allow."""
    ranks = kv_replica_ranks(spec, decode_plan(plan))
    fewest = min(stage_layer_counts(spec.n_layer, plan))
    group = 1
    while ranks % (group * 2) == 0 and group * 2 <= fewest:
        group *= 2
    return group


def candidate_plans(spec: ModelSpec, context: int, concurrency: int, max_gpus: int) -> Iterator[ParallelPlan]:
    """Plans of the search space without LayerSplit (see the module docstring), fewest devices first."""
    moe = [layer.ffn for layer in spec.layer_kinds.values() if isinstance(layer.ffn, MoEFFN)]
    mla = any(isinstance(layer.attention, MLAAttention) for layer in spec.layer_kinds.values())
    plans = []
    for tp in tp_candidates(spec, max_gpus):
        for pp in _powers_of_two(min(spec.n_layer, max_gpus // tp)):
            for cp in _powers_of_two(max_gpus // (tp * pp)):
                if context % (2 * cp) and cp > 1:
                    continue
                for dp in _powers_of_two(min(concurrency, max_gpus // (tp * pp * cp))):
                    shared = [False, True] if mla and moe and dp > 1 and cp == 1 else [False]
                    for attention_dp in shared:
                        group = tp * (dp if attention_dp else 1)
                        for ep in sorted({1, group} if moe else {1}):
                            values = dict(tp=tp, pp=pp, dp=dp, cp=cp, ep=ep, attention_dp=attention_dp)
                            if cp > 1:
                                values["cp_mode"] = "all_gather"
                            try:
                                plan = ParallelPlan(**values)
                            except ValidationError:
                                continue
                            if _valid(spec, plan):
                                plans.append(plan)
    yield from sorted(plans, key=lambda p: (p.world_size, p.pp, p.cp, p.dp, p.attention_dp, p.ep))


# ---------------------------------------------------------------------------------------------
# Evaluation


def _workloads(plan: ParallelPlan, kv_dtype: str, context: int, concurrency: int, chunk_size: int) -> tuple[Workload, Workload]:
    prefill = Workload(
        phase="prefill", context=context, chunk_size=None if plan.cp > 1 else chunk_size, kv_dtype=kv_dtype
    )
    decode = Workload(phase="decode", context=context, batch=concurrency, kv_dtype=kv_dtype)
    return prefill, decode


def plan_memory(
    spec: ModelSpec,
    profile: HardwareProfile,
    plan: ParallelPlan,
    kv_dtype: str,
    context: int,
    concurrency: int,
    *,
    chunk_size: int,
    memory_fraction: float = DEFAULT_MEMORY_FRACTION,
) -> Capacity:
    """Memory of the busiest device of a searched plan: weights, prefill activation peak and decode KV.

    Every replica prefills one prompt at a time, so each device counts the activation peak of
    its place in the prefilling replica (dp rank 0). Under cp the prompt's all-gathered KV is
    held during the prefill and counts with the activation peak.
    """
    prefill, decode = _workloads(plan, kv_dtype, context, concurrency, chunk_size)
    serving = decode_plan(plan)
    decoding: ParallelCounts = parallel_counts(spec, decode, serving)
    prefilling: ParallelCounts = parallel_counts(spec, prefill, plan)
    best: Capacity | None = None
    for device in decoding.devices:
        coords = serving.coordinates(device.rank)
        cp_rank = coords["dp"] % plan.cp
        source = prefilling.devices[plan.rank_of(tp=coords["tp"], cp=cp_rank, pp=coords["pp"], dp=0)]
        activation = source.activation_bytes + (source.kv_cache_bytes if plan.cp > 1 else 0)
        capacity = Capacity(
            memory_bytes=profile.memory_bytes,
            memory_fraction=memory_fraction,
            weights_bytes=device.weights_bytes,
            activation_peak_bytes=activation,
            reserve_bytes=0,
            kv_bytes_per_sequence=device.kv_cache.bytes_per_sequence,
            batch=device.layout.batch,
        )
        if best is None or capacity.used_bytes > best.used_bytes:
            best = capacity
    assert best is not None
    return best


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
    per_device: DeviceModel | None = None,
    memory: Capacity | None = None,
) -> PlanResult:
    """Count, fit and (when it fits) time one plan (see the module docstring for what each number means)."""
    if memory is None:
        memory = plan_memory(
            spec, profile, plan, kv_dtype, context, concurrency, chunk_size=chunk_size, memory_fraction=memory_fraction
        )
    ttft = tpot = math.nan
    if memory.fits:
        prefill, decode = _workloads(plan, kv_dtype, context, concurrency, chunk_size)
        ttft = time_plan(spec, prefill, plan, profile, overlap=overlap, per_device=per_device).ttft_s
        tpot = time_plan(spec, decode, decode_plan(plan), profile, overlap=overlap, per_device=per_device).tpot_s
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


def _devices(n: int) -> str:
    return f"{n} device" + ("" if n == 1 else "s")


def _memory_shortfall(results: list[PlanResult], context: int, concurrency: int, max_gpus: int) -> str:
    closest = max(results, key=lambda r: r.memory.headroom_bytes)
    memory = closest.memory
    sequences = f"{concurrency} sequence" if concurrency == 1 else f"{concurrency} sequences"
    return (
        f"memory: no plan of up to {_devices(max_gpus)} holds {sequences} of {context:,} tokens; "
        f"the closest ({closest.describe()}, {_devices(closest.gpus)}) needs {_gib(memory.used_bytes)} on its busiest "
        f"device, {_gib(-memory.headroom_bytes)} more than the usable {_gib(memory.usable_bytes)} "
        f"({memory.memory_fraction:g} of {_gib(memory.memory_bytes)}); allow more devices or pick a smaller KV dtype"
    )


def _target_shortfall(fitting: list[PlanResult], metric: str, target: float) -> str | None:
    best = min(fitting, key=lambda r: getattr(r, f"{metric}_s"))
    value = getattr(best, f"{metric}_s")
    if value <= target:
        return None
    return (
        f"{metric.upper()}: the fastest plan that fits ({best.describe()}, {_devices(best.gpus)}) takes "
        f"{human_seconds(value)}, {human_seconds(value - target)} over the target {human_seconds(target)} "
        f"({value / target:.3g}x); "
        "allow more devices or relax the target"
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
        return [f"no plan of up to {_devices(max_gpus)} could be evaluated: raise --max-gpus or check the model"]
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
    per_device: DeviceModel | None = None,
) -> SizingResult:
    """Search plans and KV dtypes for the fewest devices that serve ``concurrency`` sequences of ``context``.

    ``per_device(spec, workload, plan, rank=r)`` builds the report of rank r that is timed
    (default: ``ctxsim.time.device_report``).
    """
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

    options = dict(
        chunk_size=chunk_size, target_ttft_s=target_ttft_s, target_tpot_s=target_tpot_s,
        memory_fraction=memory_fraction, overlap=overlap, per_device=per_device,
    )
    usable = profile.memory_bytes * memory_fraction
    # Smallest KV first: when a dtype does not fit, the larger ones are skipped.
    # NOTE: this assumes that a larger KV record never needs less memory (KV and KV buffers grow with it).
    dtypes = sorted(dtypes, key=spec.kv_bytes_per_token)
    all_weights = parallel_counts(spec, Workload(context=1, phase="decode"), ParallelPlan()).devices[0].weights_bytes
    results: list[PlanResult] = []
    too_large: list[ParallelPlan] = []
    for plan in candidate_plans(spec, context, concurrency, max_gpus):
        # A replica's tp x pp devices share the weights, so one of them keeps at least this much.
        if all_weights / (plan.tp * plan.pp) > usable:
            too_large.append(plan)
            continue
        for dtype in dtypes:
            fitted = _evaluate_with_layer_split(spec, profile, plan, dtype, context, concurrency, options, results)
            if not fitted:
                break
    if too_large and not any(r.memory.fits for r in results):
        # Nothing fits: count the plans skipped above too, so that the shortfall names the closest one.
        for plan in too_large:
            _evaluate_with_layer_split(spec, profile, plan, dtypes[0], context, concurrency, options, results)

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


def _evaluate(
    spec: ModelSpec, profile: HardwareProfile, plan: ParallelPlan, dtype: str, context: int, concurrency: int,
    options: dict[str, Any],
) -> PlanResult | None:
    """Evaluate one candidate; None when it cannot run (a group beyond one node without scale-out)."""
    try:
        return evaluate_plan(spec, profile, plan, dtype, context, concurrency, **options)
    except SpecError:
        return None


def _evaluate_with_layer_split(
    spec: ModelSpec, profile: HardwareProfile, plan: ParallelPlan, dtype: str, context: int, concurrency: int,
    options: dict[str, Any], results: list[PlanResult],
) -> bool:
    """Evaluate a candidate, and its largest LayerSplit when it does not fit; return whether one fits.

    LayerSplit is tried only when the weights and activations alone fit, because it shrinks the
    KV cache and nothing else.
    """
    result = _evaluate(spec, profile, plan, dtype, context, concurrency, options)
    if result is None:
        return False
    results.append(result)
    memory = result.memory
    if memory.fits:
        return True
    split = _largest_layer_split(spec, plan)
    if split == 1 or memory.weights_bytes + memory.activation_peak_bytes > memory.usable_bytes:
        return False
    split_plan = ParallelPlan(**{**plan.model_dump(), "layer_split": split})
    more = _evaluate(spec, profile, split_plan, dtype, context, concurrency, options)
    if more is None:
        return False
    results.append(more)
    return more.memory.fits
