"""Per-device counts for the time model: a thin layer over ``ctxsim.counts.parallel``.

``ctxsim.counts.parallel`` is the one per-device model of every plan (tp, pp, ep, dp,
attention-DP, cp, LayerSplit). This module adds what timing needs on top of it:

- ``device_report``: one device's CostReport, with each collective listed after the ops of its
  layer kind so that op tables stay grouped;
- ``group_ranks`` and ``collective_groups``: the ranks each collective op runs over, which give
  its group size and how many of those ranks share a scale-up domain;
- ``traced_collectives``: the collectives of a tp/dp plan as polynomials, for the traced totals
  of ``ctxsim.sweep``.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

from ctxsim.counts import parallel
from ctxsim.counts.comm import collective_ops
from ctxsim.counts.report import CostReport, Op
from ctxsim.spec.model import ModelSpec
from ctxsim.spec.plan import ParallelPlan, check_plan, gcd_all
from ctxsim.spec.workload import Workload


def device_report(
    spec: ModelSpec,
    workload: Workload,
    plan: ParallelPlan,
    rank: int | None = None,
    context: int | None = None,
    counts: parallel.ParallelCounts | None = None,
) -> CostReport:
    """CostReport of one device of ``plan`` (``ctxsim.counts.parallel.device_report``).

    ``workload.batch`` is the whole deployment's batch. ``rank`` defaults to the device that
    needs the most memory. The ops are those of the device's pipeline stage plus its collectives.
    ``counts``, the plan's ``parallel_counts`` for this workload, saves counting every device again.
    """
    report = parallel.device_report(spec, workload, plan, rank, context, counts)
    report.ops = _group_by_layer(report.ops)
    return report


def _group_by_layer(ops: list[Op]) -> list[Op]:
    """Move each collective after the last compute op of its phase and layer kind."""
    out = [op for op in ops if op.kind != "collective"]
    for op in (op for op in ops if op.kind == "collective"):
        positions = [i for i, o in enumerate(out) if o.phase == op.phase and o.layer_kind == op.layer_kind]
        out.insert(positions[-1] + 1 if positions else len(out), op)
    return out


def shard_model(spec: ModelSpec, tp: int) -> ModelSpec:
    """Return the ModelSpec one tensor-parallel rank stores and runs (``ctxsim.counts.parallel.shard_spec``).

    Raises SpecError when tp does not shard every layer evenly.
    """
    if tp == 1:
        return spec
    plan = ParallelPlan(tp=tp)
    check_plan(spec, plan)
    return parallel.shard_spec(spec, plan, tuple(range(spec.n_layer)))


def replica_batch(batch: int, dp: int) -> int:
    """Sequences of the busiest data-parallel rank: ceil(batch / dp)."""
    return parallel.dp_batch(batch, ParallelPlan(dp=dp), 0)


# ---------------------------------------------------------------------------------------------
# Collective groups


def group_ranks(plan: ParallelPlan, counts: parallel.ParallelCounts, rank: int, op_name: str) -> list[int]:
    """Return the global ranks that run the collective ``op_name`` together with ``rank``.

    - tp ops: the rank's tp group.
    - ``comm.pp_send``: the rank and the same position in the next stage.
    - ``comm.cp_kv``: the cp ranks.
    - ``comm.ep_dispatch`` and ``comm.ep_combine`` (all-to-all): the expert group.
    - ``comm.ep_all_gather`` and ``comm.ep_reduce_scatter``: the dp ranks whose tokens the
      expert group shares (``plan.token_groups`` of them, not ``plan.ep``).
    - ``comm.layer_split_broadcast``: the rank's LayerSplit group.
    """
    coords = plan.coordinates(rank)
    group = op_name.removeprefix("comm.").split("_", 1)[0]
    if op_name == "comm.layer_split_broadcast":
        return _layer_split_ranks(plan, counts, rank)
    if group == "tp":
        return [plan.rank_of(**{**coords, "tp": t}) for t in range(plan.tp)]
    if group == "pp":
        following = min(coords["pp"] + 1, plan.pp - 1)
        return sorted({rank, plan.rank_of(**{**coords, "pp": following})})
    if group == "cp":
        return [plan.rank_of(**{**coords, "cp": c}) for c in range(plan.cp)]
    if group == "ep":
        tps = range(plan.tp) if op_name in ("comm.ep_dispatch", "comm.ep_combine") else [coords["tp"]]
        dps = range(plan.dp) if plan.attention_dp else [coords["dp"]]
        return sorted(plan.rank_of(**{**coords, "tp": t, "dp": d}) for t in tps for d in dps)
    if group == "dp":
        return [plan.rank_of(**{**coords, "dp": d}) for d in range(plan.dp)]
    return [rank]


def _layer_split_ranks(plan: ParallelPlan, counts: parallel.ParallelCounts, rank: int) -> list[int]:
    """Return the ranks of ``rank``'s LayerSplit group: G consecutive ranks among those keeping identical KV.

    The ranks keeping identical KV are the tp ranks that share a KV head (``copies`` consecutive
    tp ranks) and, in cp all_gather mode, every cp rank. ``ctxsim.counts.parallel`` numbers them
    ``cp_index * copies + tp % copies`` and groups G consecutive numbers.
    """
    copies = gcd_all(list(counts.kv_replication.values()))
    gathered = plan.cp_mode == "all_gather"

    def position(coords: dict[str, int]) -> tuple:
        index = (coords["cp"] if gathered else 0) * copies + coords["tp"] % copies
        head = coords["tp"] // copies
        return coords["pp"], coords["dp"], head, None if gathered else coords["cp"], index // plan.layer_split

    mine = position(plan.coordinates(rank))
    return [r for r in range(plan.world_size) if position(plan.coordinates(r)) == mine]


def ranks_per_domain(ranks: list[int], domain_size: int) -> int:
    """Count the most of ``ranks`` that share one scale-up domain, with domains of consecutive ranks.

    NOTE: devices are assumed to fill domains in rank order (tp fastest, then cp, pp and dp).
    """
    per_domain: dict[int, int] = {}
    for rank in ranks:
        per_domain[rank // domain_size] = per_domain.get(rank // domain_size, 0) + 1
    return max(per_domain.values())


def collective_groups(report: CostReport, domain_size: int) -> tuple[dict[str, int], dict[str, int]]:
    """Return the group size and the ranks per scale-up domain of each collective of a per-device report, by op name."""
    plan = report.plan
    counts = report.extras["parallel"]
    rank = report.extras["rank"]
    sizes: dict[str, int] = {}
    per_domain: dict[str, int] = {}
    for op in report.ops:
        if op.kind != "collective" or op.name in sizes:
            continue
        ranks = group_ranks(plan, counts, rank, op.name)
        sizes[op.name] = len(ranks)
        per_domain[op.name] = min(ranks_per_domain(ranks, domain_size), domain_size)
    return sizes, per_domain


# ---------------------------------------------------------------------------------------------
# Traced collectives of tp/dp plans, for ctxsim.sweep


def traced_collectives(spec: ModelSpec, plan: ParallelPlan, workload: Workload) -> Callable[..., list[Op]]:
    """Build the collectives of one device of a tp/dp plan from a run's phase, batch and rows.

    The returned function takes a PhaseRun (traced or real) and returns the ops of
    ``ctxsim.counts.comm`` for that phase. Those ops are linear in the device's batch and
    query rows for plans of tp and dp only, so their fields are read off three evaluations of
    the counted ops at (batch, rows) = (1, 1), (2, 1) and (1, 2), which keeps them integer
    polynomials under tracing.
    """
    if plan.pp > 1 or plan.cp > 1 or plan.layer_split > 1 or plan.token_groups > 1:
        raise ValueError(f"traced collectives cover tp and dp plans only, got {plan.describe()}")
    layout = parallel.device_layout(spec, plan, workload, 0, workload.context)
    kv_dtype = workload.kv_dtype or spec.kv_dtype
    fields = ("bytes_read", "bytes_written")
    by_phase = {}
    for phase in ("prefill", "decode"):
        base = parallel._comm_context(spec, plan, workload, layout, phase, workload.context, kv_dtype)
        samples = []
        for batch, rows in ((1, 1), (2, 1), (1, 2)):
            context = dataclasses.replace(base, batch=batch, rows=rows, group_rows=rows, holds_last_token=True)
            samples.append(collective_ops(context, None))
        coefficients = []
        for one, more_batch, more_rows in zip(*samples):
            per_field = {}
            for name in fields:
                by_batch = getattr(more_batch, name) - getattr(one, name)
                by_rows = getattr(more_rows, name) - getattr(one, name)
                per_field[name] = (getattr(one, name) - by_batch - by_rows, by_batch, by_rows)
            coefficients.append((one, per_field))
        by_phase[phase] = coefficients

    def build(run) -> list[Op]:
        ops = []
        for template, per_field in by_phase[run.phase]:
            values = {name: c0 + cb * run.batch + cr * run.rows for name, (c0, cb, cr) in per_field.items()}
            ops.append(dataclasses.replace(template, phase=run.phase, **values))
        return ops

    return build
