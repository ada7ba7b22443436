"""Memory capacity: how many sequences fit at context N, and how long a context fits at C sequences.

Per device, the KV cache gets what is left of the usable memory:

    kv_budget = memory_bytes x memory_fraction - weights - activation_peak - reserve

``memory_fraction`` is the share of device memory the serving engine may use (vLLM's
``gpu_memory_utilization`` defaults to 0.9); ``reserve_bytes`` covers anything else kept aside
(CUDA graphs, communication buffers). The activation peak depends on the prefill chunk size, so
a chunked prefill can fit a longer context than an unchunked one. KV bytes per sequence come
from the CostReport under its policy: what the architecture needs, or what a paged engine
reserves.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

from ctxsim.counts.report import CostReport, Number, _plain
from ctxsim.spec.hardware import HardwareProfile, load_hardware

# Default share of device memory a serving engine may use (vLLM gpu_memory_utilization default).
DEFAULT_MEMORY_FRACTION = 0.9


def _check_fraction(memory_fraction: float) -> None:
    if not 0.0 < memory_fraction <= 1.0:
        raise ValueError(f"memory_fraction {memory_fraction} must be in (0, 1]: it is the share of device memory used")


def kv_budget_bytes(
    memory_bytes: int,
    memory_fraction: float,
    weights_bytes: Number,
    activation_peak_bytes: Number,
    reserve_bytes: Number = 0,
) -> Number:
    """Bytes left for the KV cache on one device; negative when weights and activations do not fit."""
    _check_fraction(memory_fraction)
    return memory_bytes * memory_fraction - weights_bytes - activation_peak_bytes - reserve_bytes


def max_sequences(budget_bytes: Number, kv_bytes_per_sequence: Number) -> int:
    """Whole sequences whose KV cache fits in ``budget_bytes``; 0 when the budget is negative."""
    if kv_bytes_per_sequence <= 0:
        raise ValueError(f"kv_bytes_per_sequence must be positive, got {kv_bytes_per_sequence}")
    if budget_bytes <= 0:
        return 0
    return int(math.floor(budget_bytes / kv_bytes_per_sequence))


def max_context(
    memory_at: Callable[[int], tuple[Number, Number]],
    concurrency: int,
    usable_bytes: float,
    weights_bytes: Number,
    reserve_bytes: Number = 0,
    max_tokens: int = 1 << 30,
) -> int:
    """Longest context N at which ``concurrency`` sequences fit, by bisection over N.

    ``memory_at(N)`` returns (KV bytes per sequence, activation peak bytes) at context N; both
    must be non-decreasing in N. N fits when weights + reserve + activation_peak(N) +
    concurrency x kv(N) <= usable_bytes. Returns 0 when not even N = 1 fits and ``max_tokens``
    when everything up to it fits.
    """
    if concurrency < 1:
        raise ValueError(f"concurrency must be at least 1, got {concurrency}")

    def fits(n: int) -> bool:
        kv, activation = memory_at(n)
        return weights_bytes + reserve_bytes + activation + concurrency * kv <= usable_bytes

    if not fits(1):
        return 0
    if fits(max_tokens):
        return max_tokens
    lo, hi = 1, max_tokens  # fits(lo) and not fits(hi)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if fits(mid):
            lo = mid
        else:
            hi = mid
    return lo


@dataclass(frozen=True, slots=True)
class Capacity:
    """Memory use of one device for a workload, and how many sequences fit."""

    memory_bytes: int
    memory_fraction: float
    weights_bytes: Number
    activation_peak_bytes: Number
    reserve_bytes: Number
    kv_bytes_per_sequence: Number
    batch: int

    @property
    def usable_bytes(self) -> float:
        return self.memory_bytes * self.memory_fraction

    @property
    def kv_budget_bytes(self) -> Number:
        return kv_budget_bytes(
            self.memory_bytes, self.memory_fraction, self.weights_bytes, self.activation_peak_bytes, self.reserve_bytes
        )

    @property
    def max_sequences(self) -> int:
        """Sequences of this context whose KV fits next to the weights and the activation peak."""
        return max_sequences(self.kv_budget_bytes, self.kv_bytes_per_sequence)

    @property
    def used_bytes(self) -> Number:
        """Weights, activation peak, reserve and the KV cache of ``batch`` sequences."""
        return self.weights_bytes + self.activation_peak_bytes + self.reserve_bytes + self.batch * self.kv_bytes_per_sequence

    @property
    def headroom_bytes(self) -> Number:
        """Usable bytes left after ``used_bytes``; negative when the workload does not fit."""
        return self.usable_bytes - self.used_bytes

    @property
    def fits(self) -> bool:
        return bool(self.headroom_bytes >= 0)

    def to_dict(self) -> dict[str, Any]:
        return {
            "memory_bytes": self.memory_bytes,
            "memory_fraction": self.memory_fraction,
            "usable_bytes": _plain(self.usable_bytes),
            "weights_bytes": _plain(self.weights_bytes),
            "activation_peak_bytes": _plain(self.activation_peak_bytes),
            "reserve_bytes": _plain(self.reserve_bytes),
            "kv_bytes_per_sequence": _plain(self.kv_bytes_per_sequence),
            "kv_budget_bytes": _plain(self.kv_budget_bytes),
            "batch": self.batch,
            "used_bytes": _plain(self.used_bytes),
            "headroom_bytes": _plain(self.headroom_bytes),
            "fits": self.fits,
            "max_sequences": self.max_sequences,
        }


def capacity_from_report(
    report: CostReport,
    hardware: HardwareProfile | str,
    *,
    memory_fraction: float = DEFAULT_MEMORY_FRACTION,
    reserve_bytes: int = 0,
) -> Capacity:
    """Capacity of one device for a single-context CostReport (its weights, activations and KV).

    The report's counts are taken as per device: ``weights_bytes``, ``activation_peak_bytes`` and
    ``kv_cache.bytes_per_sequence`` (one sequence, all layers, under the report's KV policy).
    """
    profile = load_hardware(hardware) if isinstance(hardware, str) else hardware
    _check_fraction(memory_fraction)
    return Capacity(
        memory_bytes=profile.memory_bytes,
        memory_fraction=memory_fraction,
        weights_bytes=report.weights_bytes,
        activation_peak_bytes=report.activation_peak_bytes,
        reserve_bytes=reserve_bytes,
        kv_bytes_per_sequence=report.kv_cache.bytes_per_sequence,
        batch=report.workload.batch,
    )


def max_context_for(
    model: Any,
    workload: Any,
    hardware: HardwareProfile | str,
    *,
    concurrency: int = 1,
    memory_fraction: float = DEFAULT_MEMORY_FRACTION,
    reserve_bytes: int = 0,
    max_tokens: int = 1 << 30,
) -> int:
    """Longest context at which ``concurrency`` sequences fit on one device, counted exactly.

    Each probe of the bisection counts the workload at that context with ``ctxsim.estimate``, so
    the KV policy, window layers and the prefill chunk size (through the activation peak) are
    all honoured. NOTE: the model's own max_context is not applied; compare against it.
    """
    from ctxsim.counts import estimate
    from ctxsim.spec.load import load_model

    profile = load_hardware(hardware) if isinstance(hardware, str) else hardware
    spec = load_model(model) if isinstance(model, str) else model
    probe = workload.model_copy(update={"phase": "prefill"})

    def memory_at(n_tokens: int) -> tuple[Number, Number]:
        cached = min(probe.cached_context, n_tokens - 1)
        report = estimate(spec, probe.model_copy(update={"context": n_tokens, "cached_context": cached}))
        return report.kv_cache.bytes_per_sequence, report.activation_peak_bytes

    usable = profile.memory_bytes * memory_fraction
    _check_fraction(memory_fraction)
    return max_context(memory_at, concurrency, usable, spec.weight_bytes(), reserve_bytes, max_tokens)


# ---------------------------------------------------------------------------------------------
# Every device of a plan


def device_capacity(device: Any, profile: HardwareProfile, memory_fraction: float, reserve_bytes: int = 0) -> Capacity:
    """Capacity of one device of a plan (a ``ctxsim.counts.parallel.DeviceCounts``) for its own batch."""
    return Capacity(
        memory_bytes=profile.memory_bytes,
        memory_fraction=memory_fraction,
        weights_bytes=device.weights_bytes,
        activation_peak_bytes=device.activation_bytes,
        reserve_bytes=reserve_bytes,
        kv_bytes_per_sequence=device.kv_cache.bytes_per_sequence,
        batch=device.layout.batch,
    )


def plan_max_sequences(
    counts: Any, hardware: HardwareProfile | str, *, memory_fraction: float = DEFAULT_MEMORY_FRACTION, reserve_bytes: int = 0
) -> int:
    """Sequences of this context each data-parallel replica can hold: the fewest over the plan's devices.

    ``counts`` is a ``ctxsim.counts.parallel.ParallelCounts``; each device's KV budget is divided
    by its own KV bytes per sequence, so the device with the least room sets the limit.
    """
    profile = load_hardware(hardware) if isinstance(hardware, str) else hardware
    _check_fraction(memory_fraction)
    limits = []
    for device in counts.devices:
        capacity = device_capacity(device, profile, memory_fraction, reserve_bytes)
        if capacity.kv_bytes_per_sequence > 0:
            limits.append(capacity.max_sequences)
        elif capacity.kv_budget_bytes < 0:
            # Keeps no KV at this context (a cp rank outside every window), but its weights do not fit.
            limits.append(0)
    if not limits:
        raise ValueError("no device of the plan keeps KV at this context, so the sequence count has no KV limit")
    return min(limits)


def max_context_for_plan(
    model: Any,
    workload: Any,
    plan: Any,
    hardware: HardwareProfile | str,
    *,
    memory_fraction: float = DEFAULT_MEMORY_FRACTION,
    reserve_bytes: int = 0,
    max_tokens: int = 1 << 30,
) -> int:
    """Longest context at which every device of ``plan`` holds its share of ``workload.batch`` sequences.

    Each probe counts the plan at that context (``ctxsim.counts.parallel.parallel_counts``) with
    a prefill of the workload, as ``max_context_for`` does on one device. A device fits when its
    weights, KV cache (with LayerSplit scratch), prefill activation peak and ``reserve_bytes``
    are within ``memory_fraction`` of its memory. Under cp the probed contexts are the cached
    prefix plus a multiple of the cp blocks (cp, or 2 cp for zigzag), because the new tokens must
    split evenly. Returns 0 when no probed context fits.
    """
    from ctxsim.counts.parallel import parallel_counts
    from ctxsim.spec.errors import SpecError
    from ctxsim.spec.load import load_model

    profile = load_hardware(hardware) if isinstance(hardware, str) else hardware
    spec = load_model(model) if isinstance(model, str) else model
    _check_fraction(memory_fraction)
    usable = profile.memory_bytes * memory_fraction
    probe = workload.model_copy(update={"phase": "prefill"})
    # Probe only new-token counts a cp prefill can split evenly: multiples of cp, or of 2 x cp for zigzag.
    step = 1
    if plan.cp > 1:
        step = plan.cp * 2 if plan.cp_sharding == "zigzag" else plan.cp
    base = probe.cached_context if plan.cp > 1 else 0

    def fits(k: int) -> bool:
        n_tokens = base + k * step
        cached = min(probe.cached_context, n_tokens - 1)
        try:
            counts = parallel_counts(spec, probe.model_copy(update={"context": n_tokens, "cached_context": cached}), plan)
        except SpecError:
            return False
        return all(d.memory_bytes + reserve_bytes <= usable for d in counts.devices)

    lo, hi = 1, max(1, (max_tokens - base) // step)
    if not fits(lo):
        return 0
    if fits(hi):
        return base + hi * step
    while hi - lo > 1:  # fits(lo) and not fits(hi)
        mid = (lo + hi) // 2
        if fits(mid):
            lo = mid
        else:
            hi = mid
    return base + lo * step
