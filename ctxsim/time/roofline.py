"""Roofline time of one op: the slower of its compute and its memory traffic, plus launch overhead.

For an op of kind K and compute dtype D, one run takes

    compute_s = matmul_flops / (peak[D] * eff_compute[K]) + other_flops / (vector_peak * eff_compute[K])
    memory_s  = (bytes_read + bytes_written) / (memory_bandwidth * eff_memory[K])
    time_s    = max(compute_s, memory_s) + launches * launch_overhead_s

Matmul FLOPs run on the matrix units at the dtype's dense peak; non-matmul FLOPs (softmax, norms,
top-k) run on the vector units at the FP32 vector peak.
NOTE: the two compute parts are added, not overlapped, although fused kernels such as
FlashAttention-3 overlap softmax with matmuls; this overstates compute time for those kernels.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ctxsim.counts.arith import maximum
from ctxsim.counts.report import Number, Op, _plain
from ctxsim.spec.hardware import HardwareProfile

# Names of the term that sets an op's time. "balanced" means compute and memory time are equal,
# so the op sits on the ridge point. "launch" means the launch overhead exceeds both. Collectives
# are "communication".
BOUNDS = ("compute", "memory", "balanced", "launch", "communication")

# Relative difference below which compute and memory time count as equal.
BALANCE_RTOL = 1e-9


@dataclass(frozen=True, slots=True)
class OpTime:
    """Time of one op record: per run (one layer) and in total over its ``count`` runs."""

    name: str
    kind: str
    phase: str
    layer_kind: str | None
    count: int
    compute_s: Number
    memory_s: Number
    communication_s: Number
    launch_s: Number
    time_s: Number
    bound: Any  # one of BOUNDS, or an array of them for array counts
    stage: int | None = None  # pipeline stage of the device, when a plan is timed stage by stage

    @property
    def total_s(self) -> Number:
        """Time of all ``count`` runs."""
        return self.time_s * self.count

    def to_dict(self) -> dict[str, Any]:
        bound = self.bound.tolist() if isinstance(self.bound, np.ndarray) else self.bound
        return {
            "name": self.name,
            "kind": self.kind,
            "phase": self.phase,
            "layer_kind": self.layer_kind,
            "count": self.count,
            "bound": bound,
            "time_s": _plain(self.time_s),
            "total_s": _plain(self.total_s),
            "compute_s": _plain(self.compute_s),
            "memory_s": _plain(self.memory_s),
            "communication_s": _plain(self.communication_s),
            "launch_s": _plain(self.launch_s),
            "stage": self.stage,
        }


def classify_bound(compute_s: Number, memory_s: Number, launch_s: Number) -> Any:
    """Name the term that sets an op's time: compute, memory, balanced (equal), or launch."""
    if any(isinstance(x, np.ndarray) for x in (compute_s, memory_s, launch_s)):
        c, m, lau = np.broadcast_arrays(*(np.asarray(x, dtype=np.float64) for x in (compute_s, memory_s, launch_s)))
        out = np.where(c > m, "compute", "memory").astype(object)
        out[np.isclose(c, m, rtol=BALANCE_RTOL, atol=0.0)] = "balanced"
        out[lau > np.maximum(c, m)] = "launch"
        return out
    if launch_s > max(compute_s, memory_s):
        return "launch"
    if abs(compute_s - memory_s) <= BALANCE_RTOL * max(compute_s, memory_s):
        return "balanced"
    return "compute" if compute_s > memory_s else "memory"


def compute_time_s(op: Op, profile: HardwareProfile, launches: Number = 1) -> Number:
    """Compute time of one run: matmul FLOPs on the matrix units, the rest on the vector units.

    A profile with a fitted efficiency curve for the op (by name and phase, else by name, else
    by kind) takes the
    efficiency at the FLOPs of one launch (the run's FLOPs over ``launches``).
    """
    eff = profile.compute_efficiency(op.kind, op.flops / launches, op.name, op.phase)
    matmul_rate = profile.peak_flops_for(op.dtype) * eff
    vector_rate = profile.vector_flops_per_s * eff
    return op.matmul_flops / matmul_rate + op.other_flops / vector_rate


def memory_time_s(op: Op, profile: HardwareProfile, launches: Number = 1) -> Number:
    """Memory time of one run: bytes read plus written over the kind's share of the bandwidth.

    A fitted efficiency curve is read at the bytes of one launch, as in ``compute_time_s``.
    """
    eff = profile.memory_efficiency(op.kind, (op.bytes_read + op.bytes_written) / launches, op.name, op.phase)
    return (op.bytes_read + op.bytes_written) / (profile.memory_bandwidth_bytes_per_s * eff)


def op_time(op: Op, profile: HardwareProfile, launches: Number = 1) -> OpTime:
    """Roofline time of one compute op (any kind but 'collective').

    ``launches`` is the number of kernel launches per run: one per forward pass, so a prefill in
    n chunks launches each op n times.
    """
    if op.kind == "collective":
        raise ValueError(f"op '{op.name}' is a collective: time it with ctxsim.time.collectives.collective_op_time")
    compute_s = compute_time_s(op, profile, launches)
    memory_s = memory_time_s(op, profile, launches)
    launch_s = launches * profile.launch_overhead_s
    return OpTime(
        name=op.name,
        kind=op.kind,
        phase=op.phase,
        layer_kind=op.layer_kind,
        count=op.count,
        compute_s=compute_s,
        memory_s=memory_s,
        communication_s=0.0,
        launch_s=launch_s,
        time_s=maximum(compute_s, memory_s) + launch_s,
        bound=classify_bound(compute_s, memory_s, launch_s),
    )
