"""Op records and the CostReport that collects them.

Every number is either an exact Python int (single estimates) or a float64 numpy array (vectorised
over context lengths); the arithmetic is the same for both.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Union

import numpy as np

Number = Union[int, float, np.ndarray]

# Kinds of op, used by the time model to pick an efficiency.
OP_KINDS = ("gemm", "attention", "gather", "select", "elementwise", "memory", "collective")
PHASES = ("prefill", "decode")


@dataclass(slots=True)
class Op:
    """One operation of one layer kind in one phase.

    Counts are per run of the op (one layer), for the whole batch and the whole phase: a prefill op
    covers all chunks of all sequences; a decode op covers one step of every sequence in the batch.
    ``count`` is how many times the op runs (the number of layers of ``layer_kind``).
    """

    name: str
    kind: str
    phase: str
    count: int
    matmul_flops: Number = 0
    other_flops: Number = 0
    bytes_read: Number = 0
    bytes_written: Number = 0
    layer_kind: str | None = None
    dtype: str = "bf16"
    # Parts of bytes_read and bytes_written, for the time model and for tests; both are included
    # in the totals above.
    weight_bytes_read: Number = 0
    kv_bytes_read: Number = 0
    kv_bytes_written: Number = 0

    @property
    def flops(self) -> Number:
        """All FLOPs of one run: matmul plus non-matmul work."""
        return self.matmul_flops + self.other_flops

    @property
    def total_flops(self) -> Number:
        return self.flops * self.count

    @property
    def total_matmul_flops(self) -> Number:
        return self.matmul_flops * self.count

    @property
    def total_bytes_read(self) -> Number:
        return self.bytes_read * self.count

    @property
    def total_bytes_written(self) -> Number:
        return self.bytes_written * self.count

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "phase": self.phase,
            "layer_kind": self.layer_kind,
            "count": self.count,
            "dtype": self.dtype,
            "flops": _plain(self.flops),
            "matmul_flops": _plain(self.matmul_flops),
            "other_flops": _plain(self.other_flops),
            "bytes_read": _plain(self.bytes_read),
            "bytes_written": _plain(self.bytes_written),
            "weight_bytes_read": _plain(self.weight_bytes_read),
            "kv_bytes_read": _plain(self.kv_bytes_read),
            "kv_bytes_written": _plain(self.kv_bytes_written),
            "total_flops": _plain(self.total_flops),
            "total_bytes_read": _plain(self.total_bytes_read),
            "total_bytes_written": _plain(self.total_bytes_written),
        }

    @property
    def activation_bytes(self) -> Number:
        """Bytes of activations this op reads and writes: everything but weights and the KV cache."""
        return self.bytes_read - self.weight_bytes_read - self.kv_bytes_read + self.bytes_written - self.kv_bytes_written


def _plain(value: Number) -> Any:
    """Convert a count to a JSON-ready value (int stays int; arrays become lists)."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value


@dataclass(slots=True)
class KVMemory:
    """KV-cache memory of one sequence (all layers), by component, plus the per-device total."""

    bytes_per_sequence: Number
    by_component: dict[str, Number] = field(default_factory=dict)
    policy: str = "need"
    kv_dtype: str = "bf16"
    bytes_per_device: Number = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "bytes_per_sequence": _plain(self.bytes_per_sequence),
            "by_component": {k: _plain(v) for k, v in self.by_component.items()},
            "policy": self.policy,
            "kv_dtype": self.kv_dtype,
            "bytes_per_device": _plain(self.bytes_per_device),
        }


@dataclass(slots=True)
class CostReport:
    """What one workload costs on one model (and plan): ops, KV memory, weights, activations."""

    model: str
    workload: Any
    ops: list[Op]
    kv_cache: KVMemory
    weights_bytes: int
    activation_peak_bytes: Number = 0
    plan: Any = None
    extras: dict[str, Any] = field(default_factory=dict)

    def phase_ops(self, phase: str) -> list[Op]:
        return [op for op in self.ops if op.phase == phase]

    def total(self, phase: str, quantity: str = "flops") -> Number:
        """Sum ``total_<quantity>`` over the ops of one phase (quantity: flops, matmul_flops, bytes_read, bytes_written)."""
        attr = f"total_{quantity}"
        return sum((getattr(op, attr) for op in self.ops if op.phase == phase), 0)

    def by_name(self, phase: str, quantity: str = "flops") -> dict[str, Number]:
        """Totals per op name within one phase, summed over layer kinds."""
        out: dict[str, Number] = {}
        attr = f"total_{quantity}"
        for op in self.ops:
            if op.phase == phase:
                out[op.name] = out.get(op.name, 0) + getattr(op, attr)
        return out

    def by_kind(self, phase: str, quantity: str = "flops") -> dict[str, Number]:
        """Totals per op kind (gemm, attention, ...) within one phase."""
        out: dict[str, Number] = {}
        attr = f"total_{quantity}"
        for op in self.ops:
            if op.phase == phase:
                out[op.kind] = out.get(op.kind, 0) + getattr(op, attr)
        return out
