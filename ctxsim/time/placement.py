"""A simple per-device model of tensor and data parallelism, for timing and sizing.

Until the counts model parallel plans, this module builds the CostReport of one device from a
sharded copy of the model. With tensor parallel degree ``tp`` every layer keeps 1/tp of its
query heads, KV heads, FFN columns and expert columns, and 1/tp of the vocabulary (the
vocab-parallel embedding and LM head). Counting that model gives one device's FLOPs, bytes,
weights and KV cache. What tp does not split stays whole, as in Megatron-style serving:

- KV heads are replicated when tp exceeds n_kv_head (each rank keeps one KV head).
- An MLA latent is one shared KV head, so every rank caches and reads the whole latent.
- MLA down-projections, the router, norms and residuals are replicated.
- The DSA indexer is replicated: every rank scores all keys and caches every index key.

Each layer adds two all-reduces of the activations (after attention and after the FFN), of
``rows x d_model x 2`` bytes. Data parallelism splits the requests: each of ``dp`` replicas
runs ceil(batch / dp) sequences on its own ``tp`` devices.
NOTE: pp, ep, cp and layer_split are not modelled here; ``device_report`` rejects them.
"""

from __future__ import annotations

import math
from typing import Any

from ctxsim.counts import estimate
from ctxsim.counts.conventions import ACTIVATION_BYTES
from ctxsim.counts.report import CostReport, Op
from ctxsim.spec.errors import SpecError
from ctxsim.spec.load import model_from_dict
from ctxsim.spec.model import ModelSpec
from ctxsim.spec.plan import ParallelPlan
from ctxsim.spec.workload import Workload


def _split_heads(kind: str, attention: dict[str, Any], tp: int) -> None:
    n_head = attention["n_head"]
    if n_head % tp:
        raise SpecError(f"tp {tp} does not divide n_head {n_head} of layer kind '{kind}': use a tp that divides it")
    attention["n_head"] = n_head // tp
    if attention["kind"] != "gqa":
        return
    n_kv = attention["n_kv_head"]
    if n_kv % tp and tp % n_kv:
        raise SpecError(
            f"tp {tp} and n_kv_head {n_kv} of layer kind '{kind}' do not divide one another: "
            "KV heads can be split or replicated only evenly"
        )
    attention["n_kv_head"] = max(1, n_kv // tp)


def _split_ffn(ffn: dict[str, Any], tp: int) -> None:
    # NOTE: a width that tp does not divide is rounded up, as engines pad it.
    if ffn["kind"] == "dense":
        ffn["intermediate_size"] = math.ceil(ffn["intermediate_size"] / tp)
        return
    ffn["moe_intermediate_size"] = math.ceil(ffn["moe_intermediate_size"] / tp)
    if ffn.get("shared_intermediate_size"):
        ffn["shared_intermediate_size"] = math.ceil(ffn["shared_intermediate_size"] / tp)


def shard_model(spec: ModelSpec, tp: int) -> ModelSpec:
    """Return the part of ``spec`` that one tensor-parallel rank stores and runs (see the module docstring)."""
    if tp == 1:
        return spec
    data = spec.model_dump(mode="json")
    data["vocab_size"] = math.ceil(spec.vocab_size / tp)
    for kind, layer in data["layer_kinds"].items():
        _split_heads(kind, layer["attention"], tp)
        selection = layer.get("selection") or {}
        if selection.get("kind") == "msa":
            # MSA has one index-query head per KV group, so it follows the local KV heads.
            selection["index_n_heads"] = layer["attention"]["n_kv_head"]
        _split_ffn(layer["ffn"], tp)
    return model_from_dict(data, source=f"{spec.name} sharded over tp={tp}")


def tp_all_reduce_ops(spec: ModelSpec, report: CostReport, tp: int) -> list[Op]:
    """Two all-reduces per layer of each phase's activations: after attention and after the FFN."""
    if tp == 1:
        return []
    workload = report.workload
    context = report.extras.get("context", workload.context)
    rows = {"prefill": workload.batch * (context - workload.cached_context), "decode": workload.batch}
    phases = {op.phase for op in report.ops}
    ops = []
    for phase in ("prefill", "decode"):
        if phase not in phases:
            continue
        size = rows[phase] * spec.d_model * ACTIVATION_BYTES
        for kind, count in spec.kind_counts.items():
            ops.append(Op("comm.tp_all_reduce", "collective", phase, 2 * count, 0, 0, size, size, kind))
    return ops


def replica_batch(batch: int, dp: int) -> int:
    """Sequences each data-parallel replica runs."""
    return math.ceil(batch / dp)


def device_report(spec: ModelSpec, workload: Workload, plan: ParallelPlan) -> CostReport:
    """CostReport of one device of ``plan``: sharded counts plus the tensor-parallel all-reduces.

    ``workload.batch`` is the whole deployment's batch; each replica runs ``replica_batch`` of it.
    """
    unsupported = [f"{name}={getattr(plan, name)}" for name in ("pp", "ep", "cp") if getattr(plan, name) > 1]
    if unsupported:
        raise SpecError(
            f"plan {', '.join(unsupported)} is not modelled yet: time and size support tp and dp; drop those flags"
        )
    local = workload.model_copy(update={"batch": replica_batch(workload.batch, plan.dp)})
    sharded = shard_model(spec, plan.tp)
    # The sharded model is counted as one device; the plan is attached afterwards so that
    # estimate() does not count the plan's devices again on an already sharded model.
    report = estimate(sharded, local)
    report.plan = plan
    report.model = spec.name
    report.ops = _insert_after_layers(report.ops, tp_all_reduce_ops(sharded, report, plan.tp))
    return report


def _insert_after_layers(ops: list[Op], extra: list[Op]) -> list[Op]:
    """Place each extra op after the last op of its phase and layer kind, so listings stay grouped."""
    out = list(ops)
    for op in extra:
        positions = [i for i, o in enumerate(out) if o.phase == op.phase and o.layer_kind == op.layer_kind]
        out.insert(positions[-1] + 1 if positions else len(out), op)
    return out
