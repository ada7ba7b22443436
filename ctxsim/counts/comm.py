"""Collective ops of one device under a ParallelPlan: which collectives run, and their bytes.

Every collective is an ``Op`` of kind ``collective``, one record per layer kind (``count`` =
the stage's layers of that kind) or per model-level step. Its size is S, the NCCL-tests "total
array size" that ``ctxsim.time.collectives`` times: the buffer of an all-reduce or broadcast,
the gathered output of an all-gather, the input of a reduce-scatter, a rank's send buffer of an
all-to-all, and the message of a send. ``bytes_read`` and ``bytes_written`` follow the
collective (an all-gather reads S/n and writes S), so S = max(bytes_read, bytes_written).

Sizes use the counted dtypes: activations in bf16 (``ACTIVATION_BYTES``), logits in fp32, cached
K/V and index keys in their record layout, top-k indices in int32.

Ops (per layer run unless noted):

- ``comm.tp_all_reduce``: after attention and after the FFN, ``rows x d_model`` activations;
  once more after the vocab-parallel embedding on the first stage.
- ``comm.tp_all_gather``: the vocab-parallel LM head's fp32 logits, last stage, once.
- ``comm.pp_send``: the stage's output activations to the next stage, once per phase, plus the
  top-k indices when the next stage opens with an IndexShare layer that reuses them.
- ``comm.ep_dispatch`` / ``comm.ep_combine``: all-to-all of one row per (token, routed expert)
  pair, the way Megatron-LM's all-to-all dispatcher permutes tokens. NOTE: DeepEP sends one row
  per destination rank instead, which is fewer when a token picks two experts on one rank.
- ``comm.ep_all_gather`` / ``comm.ep_reduce_scatter``: the dense path, every rank gathers the
  expert group's tokens and reduce-scatters the expert outputs back (padded to the largest
  rank's rows, as equal-size NCCL buffers need).
- ``comm.cp_kv``: the K/V records and index keys of the prompt's new tokens, gathered from all
  cp ranks (all_gather mode) or passed around the ring (ring mode moves the same volume).
- ``comm.layer_split_broadcast``: the owner's cached history of each layer (records held before
  the forward pass, not the new chunk) broadcast to the other G - 1 ranks of the group.
"""

from __future__ import annotations

from dataclasses import dataclass

from ctxsim.counts.arith import minimum
from ctxsim.counts.conventions import ACTIVATION_BYTES, INDEX_BYTES, SCORE_BYTES
from ctxsim.counts.keys import Span
from ctxsim.counts.memory import window_tokens_needed
from ctxsim.counts.report import Op
from ctxsim.spec.layers import DSASelection, MoEFFN, WindowSelection
from ctxsim.spec.model import ModelSpec
from ctxsim.spec.plan import ParallelPlan

COLLECTIVE_OPS = (
    "comm.tp_all_reduce",
    "comm.tp_all_gather",
    "comm.pp_send",
    "comm.ep_dispatch",
    "comm.ep_combine",
    "comm.ep_all_gather",
    "comm.ep_reduce_scatter",
    "comm.cp_kv",
    "comm.layer_split_broadcast",
)


@dataclass(frozen=True, slots=True)
class CommContext:
    """What the collectives of one device in one phase depend on.

    ``span`` is the phase's queries of one sequence (all chunks); ``rows`` the query tokens this
    device computes over its batch; ``group_rows`` the largest ``rows`` among the dp ranks of its
    expert group (the padded all-gather size per rank).
    """

    spec: ModelSpec
    plan: ParallelPlan
    phase: str
    span: Span
    kv_dtype: str
    batch: int
    rows: int
    group_rows: int
    stage: int
    stage_layers: tuple[int, ...]
    holds_last_token: bool
    record_bytes: dict[str, int]  # layer kind -> this device's main record + index key, per token


def _op(name: str, phase: str, count: int, read: int, written: int, layer_kind: str | None) -> Op:
    return Op(name, "collective", phase, count, 0, 0, read, written, layer_kind)


def _kind_counts(spec: ModelSpec, layers: tuple[int, ...]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for index in layers:
        kind = spec.layer_sequence[index]
        counts[kind] = counts.get(kind, 0) + 1
    return counts


def chunk_ends(span: Span) -> list[int]:
    """Last position of each forward pass of a span (one entry per chunk)."""
    ends = [span.cached + (j + 1) * span.chunk for j in range(span.n_chunks - 1)]
    return ends + [span.context]


def held_before_pass(selection, position: int) -> int:
    """Count the records a layer keeps once positions 1..``position`` are cached (window layers evict)."""
    if isinstance(selection, WindowSelection):
        return window_tokens_needed(selection, position)
    return position


def history_tokens(selection, span: Span) -> int:
    """Count the records a layer keeps before each forward pass of the span, summed over the passes."""
    starts = [span.cached] + chunk_ends(span)[:-1]
    return sum(held_before_pass(selection, start) for start in starts)


def _tp_ops(ctx: CommContext, kinds: dict[str, int]) -> list[Op]:
    plan, spec, phase = ctx.plan, ctx.spec, ctx.phase
    if plan.tp == 1:
        return []
    act = ctx.rows * spec.d_model * ACTIVATION_BYTES
    ops = []
    if ctx.stage == 0:
        ops.append(_op("comm.tp_all_reduce", phase, 1, act, act, None))
    for kind, count in kinds.items():
        ops.append(_op("comm.tp_all_reduce", phase, 2 * count, act, act, kind))
    if ctx.stage == plan.pp - 1 and ctx.holds_last_token:
        padded_vocab = -(-spec.vocab_size // plan.tp) * plan.tp
        logits = ctx.batch * padded_vocab * SCORE_BYTES
        ops.append(_op("comm.tp_all_gather", phase, 1, logits // plan.tp, logits, None))
    return ops


def _ep_ops(ctx: CommContext, kinds: dict[str, int]) -> list[Op]:
    plan, spec, phase = ctx.plan, ctx.spec, ctx.phase
    mode = plan.resolved_ep_mode
    ops = []
    for kind, count in kinds.items():
        ffn = spec.layer_kinds[kind].ffn
        if not isinstance(ffn, MoEFFN) or mode == "none":
            continue
        if mode == "all_to_all":
            rows = ctx.rows * ffn.experts_per_token * spec.d_model * ACTIVATION_BYTES
            ops.append(_op("comm.ep_dispatch", phase, count, rows, rows, kind))
            ops.append(_op("comm.ep_combine", phase, count, rows, rows, kind))
            continue
        gathered = plan.token_groups * ctx.group_rows * spec.d_model * ACTIVATION_BYTES
        share = gathered // plan.token_groups
        ops.append(_op("comm.ep_all_gather", phase, count, share, gathered, kind))
        ops.append(_op("comm.ep_reduce_scatter", phase, count, gathered, share, kind))
    return ops


def _first_dsa_shares(spec: ModelSpec, layers: tuple[int, ...]) -> DSASelection | None:
    """Return the selection of a stage's first DSA layer when it reuses an earlier layer's top-k, else None."""
    for index in layers:
        sel = spec.layer_kinds[spec.layer_sequence[index]].selection
        if isinstance(sel, DSASelection):
            return None if sel.owns_indexer else sel
    return None


def _pp_ops(ctx: CommContext, next_layers: tuple[int, ...] | None) -> list[Op]:
    if next_layers is None:
        return []
    spec = ctx.spec
    size = ctx.rows * spec.d_model * ACTIVATION_BYTES
    shared = _first_dsa_shares(spec, next_layers)
    if shared is not None:
        # The reused top-k slots: min(k, keys in view) int32 per query of each pass. A cp
        # prefill is one pass of this rank's share of the queries.
        ends = chunk_ends(ctx.span)
        if ctx.plan.cp > 1:
            slots = ctx.rows * minimum(shared.index_topk, ends[-1])
        else:
            starts = [ctx.span.cached] + ends[:-1]
            slots = ctx.batch * sum((e - s) * minimum(shared.index_topk, e) for s, e in zip(starts, ends))
        size += slots * INDEX_BYTES
    return [_op("comm.pp_send", ctx.phase, 1, size, 0, None)]


def _cp_ops(ctx: CommContext, kinds: dict[str, int]) -> list[Op]:
    plan = ctx.plan
    if plan.cp == 1:
        return []
    tokens = ctx.span.new_tokens
    ops = []
    for kind, count in kinds.items():
        gathered = tokens * ctx.batch * ctx.record_bytes[kind]
        ops.append(_op("comm.cp_kv", ctx.phase, count, gathered // plan.cp, gathered, kind))
    return ops


def _layer_split_ops(ctx: CommContext, kinds: dict[str, int]) -> list[Op]:
    plan, spec = ctx.plan, ctx.spec
    if plan.layer_split == 1:
        return []
    ops = []
    for kind, count in kinds.items():
        selection = spec.layer_kinds[kind].selection
        size = history_tokens(selection, ctx.span) * ctx.batch * ctx.record_bytes[kind]
        ops.append(_op("comm.layer_split_broadcast", ctx.phase, count, size, size, kind))
    return ops


def collective_ops(ctx: CommContext, next_layers: tuple[int, ...] | None) -> list[Op]:
    """Build every collective op of one device in one phase, in the order a layer runs them.

    ``next_layers`` is the next pipeline stage's layers (None on the last stage).
    """
    kinds = _kind_counts(ctx.spec, ctx.stage_layers)
    ops = _layer_split_ops(ctx, kinds) + _cp_ops(ctx, kinds) + _ep_ops(ctx, kinds) + _tp_ops(ctx, kinds)
    return ops + _pp_ops(ctx, next_layers)


def traffic_by_name(ops: list[Op]) -> dict[str, int]:
    """S summed over the runs of each collective op, by op name (zero-byte ops left out)."""
    out: dict[str, int] = {}
    for op in ops:
        size = max(op.bytes_read, op.bytes_written) * op.count
        if size:
            out[op.name] = out.get(op.name, 0) + size
    return out
