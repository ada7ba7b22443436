"""Assemble the ops, KV memory, weights and activation peak of one workload into a CostReport.

Layers are grouped by layer kind (``ModelSpec.kind_counts``): each op record is one run of one
layer, with ``count`` = the number of layers of that kind. NOTE: multi-token-prediction (MTP)
layers are not counted, because speculative decoding is outside the workload model.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ctxsim.counts.arith import is_array, minimum
from ctxsim.counts.attention import attention_ops
from ctxsim.counts.conventions import ACTIVATION_BYTES
from ctxsim.counts.ffn import embed_op, ffn_ops, head_ops
from ctxsim.counts.keys import Span, decode_span, make_span
from ctxsim.counts.memory import check_kv_dtype, kv_memory
from ctxsim.counts.parallel import TRAFFIC_DEFINITION, parallel_counts
from ctxsim.counts.phase import PhaseRun
from ctxsim.counts.report import CostReport, Number, Op, _plain
from ctxsim.spec.errors import SpecError
from ctxsim.spec.load import load_model
from ctxsim.spec.model import ModelSpec
from ctxsim.spec.plan import ParallelPlan
from ctxsim.spec.workload import Workload


def _phase_run(spec: ModelSpec, workload: Workload, phase: str, span: Span, kv_dtype: str) -> PhaseRun:
    return PhaseRun(
        phase,
        workload.batch,
        span,
        spec.d_model,
        spec.weight_dtype,
        spec.expert_weight_dtype or spec.weight_dtype,
        kv_dtype,
        workload.execution,
        workload.mla_mode,
        spec.vocab_dtype,
    )


def model_ops(spec: ModelSpec, run: PhaseRun) -> list[Op]:
    """Build every op of one phase: embedding, each layer kind's ops, final norm and LM head."""
    ops = [embed_op(run)]
    for kind, count in spec.kind_counts.items():
        layer = spec.layer_kinds[kind]
        ops += attention_ops(layer, kind, count, run)
        ops += ffn_ops(layer, kind, count, run)
    ops += head_ops(run, spec.vocab_size)
    return ops


def _check_contexts(context: Number, workload: Workload) -> Number:
    """Validate an override of the context: an int, or an array of integer-valued contexts."""
    if is_array(context) or isinstance(context, (list, tuple)):
        values = np.asarray(context, dtype=np.float64)
        if values.ndim != 1 or values.size == 0:
            raise SpecError("context array must be one-dimensional and non-empty: pass e.g. np.array([1024, 4096])")
        if not np.all(values == np.floor(values)) or values.min() <= workload.cached_context:
            raise SpecError(
                f"context values must be whole numbers above cached_context {workload.cached_context}: "
                "fix the array"
            )
        return values
    if isinstance(context, bool) or not isinstance(context, (int, np.integer)):
        raise SpecError(f"invalid context {context!r}: use an int or a numpy array of ints")
    context = int(context)
    if context <= workload.cached_context:
        raise SpecError(f"context {context} must exceed cached_context {workload.cached_context}: raise context")
    return context


def activation_peak(spec: ModelSpec, workload: Workload, kv_dtype: str, context: Number, prefill: list[Op]) -> Number:
    """Activation bytes of the largest prefill chunk: the residual stream plus the largest op.

    The bound uses a chunk of min(chunk_size, new tokens) queries that ends at the context, which
    has at least as many queries and visible keys as any real chunk. Weights and the KV cache are
    not activations. NOTE: lifetimes are not tracked; the peak is the stream plus one op's inputs
    and outputs, and allocator overheads are left out.
    """
    new_tokens = context - workload.cached_context
    if workload.chunk_size is None and prefill:
        ops = prefill
        rows = workload.batch * new_tokens
    else:
        length = new_tokens if workload.chunk_size is None else minimum(workload.chunk_size, new_tokens)
        run = _phase_run(spec, workload, "prefill", make_span(context - length, context), kv_dtype)
        ops = model_ops(spec, run)
        rows = workload.batch * length

    largest: Number = 0
    for op in ops:
        act = op.activation_bytes
        largest = np.maximum(largest, act) if is_array(act) or is_array(largest) else max(largest, act)
    return rows * spec.d_model * ACTIVATION_BYTES + largest


def estimate(
    model: ModelSpec | str,
    workload: Workload,
    plan: Any = None,
    *,
    context: Number | None = None,
) -> CostReport:
    """Count the ops, KV memory, weights and prefill activation peak of ``workload`` on ``model``.

    ``model`` is a ModelSpec or a preset name or path. ``context`` overrides
    ``workload.context``; a numpy array of contexts gives float64 arrays in every count, equal
    to the int results to about 1e-15 relative. Single estimates are exact Python ints.
    ``plan`` is stored on the report. The ops and ``kv_cache`` stay those of the whole model on
    one device; with a ``ParallelPlan`` and an int context, ``extras["parallel"]`` also holds the
    per-device weights, KV, activations and collective traffic (``ctxsim.counts.parallel``), and
    an invalid plan raises SpecError.
    """
    spec = model if isinstance(model, ModelSpec) else load_model(model)
    n = workload.context if context is None else _check_contexts(context, workload)
    kv_dtype = workload.kv_dtype or spec.kv_dtype
    check_kv_dtype(spec, kv_dtype)

    prefill: list[Op] = []
    decode: list[Op] = []
    if workload.phase in ("prefill", "both"):
        span = make_span(workload.cached_context, n, workload.chunk_size)
        prefill = model_ops(spec, _phase_run(spec, workload, "prefill", span, kv_dtype))
    if workload.phase in ("decode", "both"):
        decode = model_ops(spec, _phase_run(spec, workload, "decode", decode_span(n), kv_dtype))

    kv = kv_memory(spec, n, kv_dtype, workload.kv_policy, workload.page_size, workload.batch)
    peak = activation_peak(spec, workload, kv_dtype, n, prefill)
    report = CostReport(spec.name, workload, prefill + decode, kv, spec.weight_bytes(), peak, plan)
    report.extras["context"] = n
    if isinstance(plan, ParallelPlan):
        if is_array(n):
            raise SpecError("per-device counts take one context: pass an int context with a ParallelPlan")
        report.extras["parallel"] = parallel_counts(spec, workload, plan, n)
    return report


# ---------------------------------------------------------------------------------------------
# JSON view


def _phase_summary(report: CostReport, phase: str) -> dict[str, Any]:
    return {
        "flops": report.total(phase, "flops"),
        "matmul_flops": report.total(phase, "matmul_flops"),
        "bytes_read": report.total(phase, "bytes_read"),
        "bytes_written": report.total(phase, "bytes_written"),
    }


def report_to_dict(report: CostReport) -> dict[str, Any]:
    """Convert a report to the JSON object of ``ctxsim estimate --json`` (keys in docs/methodology.md).

    ``decode.flops_per_token`` and ``decode.bytes_read_per_token`` are one decode step divided
    by the batch. FLOPs divide exactly, but bytes may give a fraction because the batch shares
    its weight reads.
    """
    workload = report.workload
    rank = report.extras.get("rank")
    out: dict[str, Any] = {
        "model": report.model,
        # "model": the whole model on one device; "device": one device of the plan (rank "device_rank").
        "scope": "model" if rank is None else "device",
        "device_rank": rank,
        "context": _plain(report.extras.get("context", workload.context)),
        "batch": workload.batch,
        "cached_context": workload.cached_context,
        "chunk_size": workload.chunk_size,
        "execution": workload.execution,
        "mla_mode": workload.mla_mode,
        "kv_cache": report.kv_cache.to_dict(),
        "weights_bytes": report.weights_bytes,
        "activation_peak_bytes": _plain(report.activation_peak_bytes),
    }
    phases = {op.phase for op in report.ops}
    if "prefill" in phases:
        out["prefill"] = {k: _plain(v) for k, v in _phase_summary(report, "prefill").items()}
    if "decode" in phases:
        step = _phase_summary(report, "decode")
        batch = workload.batch
        per_token = {
            "flops_per_token": step["flops"] // batch,
            "matmul_flops_per_token": step["matmul_flops"] // batch,
            "bytes_read_per_token": step["bytes_read"] / batch,
        }
        out["decode"] = {k: _plain(v) for k, v in {**step, **per_token}.items()}
    out["ops"] = [op.to_dict() for op in report.ops]
    parallel = report.extras.get("parallel")
    if parallel is not None:
        out["parallel"] = parallel.to_dict()
        out["per_device"] = [device.to_dict() for device in parallel.devices]
        out["traffic"] = {"bytes_per_step": parallel.traffic_bytes_per_step, "definition": TRAFFIC_DEFINITION}
    return out
