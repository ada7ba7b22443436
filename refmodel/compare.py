"""Line up an analytic CostReport with a counted one, op by op, and list every difference.

Ops are compared per (phase, op name, layer kind) on their totals over all layers of the kind:
matmul FLOPs, other FLOPs, bytes read and bytes written, each exactly. KV memory is compared per
component (bytes per sequence) and the weights in bytes.

MoE expert weights are the one quantity a real run cannot match: ctxsim.counts charges the
expected number of distinct experts a forward pass touches under uniform routing, a fraction,
while the run touches a whole number that depends on its router. For ``moe.experts`` bytes
read, the analytic side is therefore re-evaluated with the distinct experts the run actually
touched in each forward pass times the analytic bytes of one expert; everything else in that
op (input, routing, output) stays as the formula has it. FLOPs need no such rule: every token
runs exactly k experts.
"""

from __future__ import annotations

from dataclasses import dataclass

from ctxsim.counts.report import CostReport
from ctxsim.spec.dtypes import weight_bytes
from ctxsim.spec.layers import MoEFFN
from ctxsim.spec.model import ModelSpec

QUANTITIES = ("matmul_flops", "other_flops", "bytes_read", "bytes_written")


@dataclass(frozen=True)
class Row:
    """One compared number: analytic and counted values of one quantity of one op."""

    phase: str
    op: str
    layer_kind: str | None
    quantity: str
    analytic: int
    counted: int
    note: str = ""

    @property
    def difference(self) -> int:
        return self.counted - self.analytic

    @property
    def ok(self) -> bool:
        return self.difference == 0

    def to_dict(self) -> dict:
        return {
            "phase": self.phase,
            "op": self.op,
            "layer_kind": self.layer_kind,
            "quantity": self.quantity,
            "analytic": self.analytic,
            "counted": self.counted,
            "difference": self.difference,
            "note": self.note,
        }


def _totals(report: CostReport) -> dict[tuple, dict[str, int]]:
    out: dict[tuple, dict[str, int]] = {}
    for op in report.ops:
        key = (op.phase, op.name, op.layer_kind)
        sums = out.setdefault(key, {q: 0 for q in (*QUANTITIES, "weight_bytes_read")})
        for q in QUANTITIES:
            sums[q] += int(getattr(op, q) * op.count)
        sums["weight_bytes_read"] += int(op.weight_bytes_read * op.count)
    return out


def _experts_touched(counted: CostReport, spec: ModelSpec) -> dict[tuple[str, str], int]:
    """Distinct experts touched, summed over forward passes and layers, per (phase, layer kind)."""
    touched: dict[tuple[str, str], int] = {}
    for (phase, layer, name), tally in counted.extras.get("tallies", {}).items():
        if name == "moe.experts":
            key = (phase, spec.layer_sequence[layer])
            touched[key] = touched.get(key, 0) + tally.extras.get("experts_touched", 0)
    return touched


def _moe_bytes_read(spec: ModelSpec, kind: str, analytic: dict[str, int], touched: int) -> tuple[int, str]:
    ffn = spec.layer_kinds[kind].ffn
    assert isinstance(ffn, MoEFFN)
    expert_bytes = weight_bytes(ffn.expert_params(spec.d_model), spec.expert_weight_dtype or spec.weight_dtype)
    value = analytic["bytes_read"] - analytic["weight_bytes_read"] + touched * expert_bytes
    note = (
        f"expert weights for the {touched} experts the run touched (summed over passes and layers); "
        f"uniform-routing expectation {analytic['weight_bytes_read']} B"
    )
    return value, note


def compare_reports(analytic: CostReport, counted: CostReport, spec: ModelSpec) -> list[Row]:
    """Every compared quantity of every op, KV component and the weights, in analytic op order."""
    a_totals, c_totals = _totals(analytic), _totals(counted)
    touched = _experts_touched(counted, spec)
    zero = {q: 0 for q in (*QUANTITIES, "weight_bytes_read")}
    keys = list(a_totals) + [k for k in c_totals if k not in a_totals]
    rows = []
    for key in keys:
        phase, name, kind = key
        a, c = a_totals.get(key, zero), c_totals.get(key, zero)
        for q in QUANTITIES:
            value, note = a[q], ""
            if name == "moe.experts" and q == "bytes_read" and key in a_totals:
                value, note = _moe_bytes_read(spec, kind, a, touched.get((phase, kind), 0))
            rows.append(Row(phase, name, kind, q, value, c[q], note))

    a_kv, c_kv = analytic.kv_cache.by_component, counted.kv_cache.by_component
    for component in dict.fromkeys([*a_kv, *c_kv]):
        rows.append(Row("kv", f"kv.{component}", None, "bytes_per_sequence", int(a_kv.get(component, 0)), int(c_kv.get(component, 0))))
    rows.append(Row("weights", "weights", None, "bytes", int(analytic.weights_bytes), int(counted.weights_bytes)))
    return rows


def mismatches(rows: list[Row]) -> list[Row]:
    return [row for row in rows if not row.ok]
