"""Check a multi-rank run against ``ctxsim.counts.parallel`` and against the single-process run.

Per rank, exactly: the weight bytes, the KV bytes (with LayerSplit scratch) and S of every
collective op in every phase. An all-to-all's S is counted at the tokens' home rank: what it
sends in ``comm.ep_dispatch`` and what comes back to it in ``comm.ep_combine``. The other side
of each (rows received for dispatch, rows sent for combine) depends on the router, so it is
checked summed over the ranks, where it equals the home side exactly.

Outputs: the final hidden states of every counted position and the logits of every sequence
must equal the single-process RefModel's to ``OUTPUT_TOLERANCE`` (both run in float64; only the
order of sums differs).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ctxsim.counts.parallel import parallel_counts
from ctxsim.spec.model import ModelSpec
from ctxsim.spec.plan import ParallelPlan
from ctxsim.spec.workload import Workload

OUTPUT_TOLERANCE = 1e-9
HOME_SIDE = {"comm.ep_dispatch": "sent", "comm.ep_combine": "received"}
OTHER_SIDE = {"comm.ep_dispatch": "received", "comm.ep_combine": "sent"}


@dataclass(frozen=True)
class DistRow:
    """One compared number of one rank (``rank`` None for a sum over the ranks)."""

    rank: int | None
    phase: str
    item: str
    analytic: float
    measured: float
    exact: bool = True

    @property
    def ok(self) -> bool:
        if self.exact:
            return self.analytic == self.measured
        return self.measured <= self.analytic

    def to_dict(self) -> dict:
        return {
            "rank": self.rank, "phase": self.phase, "item": self.item,
            "analytic": self.analytic, "measured": self.measured, "ok": self.ok,
        }


def _traffic_rows(rank: int, analytic: dict, measured: dict) -> list[DistRow]:
    rows = []
    for phase in sorted(set(analytic) | set(measured)):
        expected = analytic.get(phase, {})
        recorded = {name: entry for name, entry in measured.get(phase, {}).items() if name != "meta"}
        for name in sorted(set(expected) | set(recorded)):
            entry = recorded.get(name, {})
            value = entry.get(HOME_SIDE.get(name, "size"), 0)
            rows.append(DistRow(rank, phase, name, expected.get(name, 0), value))
    return rows


def _routed_sums(analytic_devices, reports) -> list[DistRow]:
    rows = []
    phases = {phase for device in analytic_devices for phase in device.traffic_bytes}
    for phase in sorted(phases):
        for name, side in OTHER_SIDE.items():
            expected = sum(device.traffic_bytes[phase].get(name, 0) for device in analytic_devices)
            measured = sum(r["traffic"].get(phase, {}).get(name, {}).get(side, 0) for r in reports)
            if expected or measured:
                rows.append(DistRow(None, phase, f"{name} ({side}, sum over ranks)", expected, measured))
    return rows


def compare_counts(spec: ModelSpec, workload: Workload, plan: ParallelPlan, reports: list[dict]) -> list[DistRow]:
    """Rows comparing every rank's weights, KV and traffic with ``parallel_counts``."""
    counts = parallel_counts(spec, workload, plan)
    rows = []
    for device, report in zip(counts.devices, reports):
        rank = device.rank
        rows.append(DistRow(rank, "memory", "weights_bytes", device.weights_bytes, report["weights_bytes"]))
        rows.append(DistRow(rank, "memory", "kv_cache_bytes", device.kv_cache_bytes, report["kv_cache_bytes"]))
        rows += _traffic_rows(rank, device.traffic_bytes, report["traffic"])
    return rows + _routed_sums(counts.devices, reports)


def compare_outputs(reference: dict, reports: list[dict]) -> list[DistRow]:
    """Rows of the largest difference of hidden states and logits from the single-process run, per phase.

    ``reference`` maps a phase to (hidden ``[B, T, d]`` of the counted positions, logits
    ``[B, vocab]``, first counted position).
    """
    rows = []
    for phase, (ref_hidden, ref_logits, first_position) in reference.items():
        hidden_diff, logits_diff, with_logits = 0.0, 0.0, 0
        for report in reports:
            out = report["outputs"].get(phase)
            if out is None:
                continue
            sequences = out["sequences"]
            expected = ref_hidden[sequences][:, out["positions"] - first_position]
            hidden_diff = max(hidden_diff, float((out["hidden"] - expected).abs().max()))
            if out["logits"] is not None:
                logits_diff = max(logits_diff, float((out["logits"] - ref_logits[sequences]).abs().max()))
                with_logits += len(sequences)
        rows.append(DistRow(None, phase, "hidden max abs difference", OUTPUT_TOLERANCE, hidden_diff, exact=False))
        rows.append(DistRow(None, phase, "logits max abs difference", OUTPUT_TOLERANCE, logits_diff, exact=False))
        rows.append(DistRow(None, phase, "sequences with logits", ref_logits.shape[0], with_logits))
    return rows


def reference_outputs(spec: ModelSpec, workload: Workload, seed: int) -> dict:
    """Hidden states and logits of the single-process RefModel (float64) for each phase."""
    from refmodel.harness import count_workload
    from refmodel.model import RefModel

    model = RefModel(spec, dtype=torch.float64, seed=seed)
    report = count_workload(model, workload, seed=seed)
    out = {}
    for phase, (hidden, logits) in report.extras["outputs"].items():
        first = workload.cached_context + 1 if phase == "prefill" else workload.context
        out[phase] = (hidden, logits, first)
    return out
