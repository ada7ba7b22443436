"""Per-device counts under a ParallelPlan: weights, KV cache, activations and collective traffic.

Every device of the plan gets a ``DeviceCounts``; devices with the same position in the layout
(same pipeline stage, cp rank, layer_split rank and batch) share their numbers. What each
parallel degree does to one device:

- tp: query heads, FFN columns, shared experts and the vocabulary (embedding and LM head, padded
  to a multiple of tp) are split. A GQA layer with tp > n_kv_head keeps one KV head per rank,
  each replicated tp / n_kv_head times. An MLA latent, the MLA down-projections, the DSA indexer
  and its index keys, the MoE router and the norms are replicated on every tp rank.
- pp: each stage holds and runs its own layers; the first stage also holds the embedding, the
  last stage the LM head (a copy of the embedding when they are tied and pp > 1).
- dp: requests are split, rank d holding batch // dp sequences plus one for d < batch % dp (so
  with batch < dp some ranks are idle). With attention_dp the dp ranks share the MoE layers (the
  expert group is tp x dp), otherwise each dp rank is a full replica.
- ep: each expert-group rank holds n_routed_experts / ep experts, each split moe_tp ways.
- cp: the prompt's new tokens are split into cp contiguous blocks, or 2cp zigzag blocks (rank i
  takes blocks i and 2cp - 1 - i). In ring mode each rank keeps only its tokens' KV; in
  all_gather mode every rank keeps all of it. cp applies to a single-pass prefill.
- layer_split G: among G ranks that would hold identical KV, each keeps the KV of a contiguous,
  balanced block of its stage's layers, plus ``layer_split_scratch`` slots sized for the largest
  layer's records of its batch, into which the owner of the running layer broadcasts. That is
  the budget of vllm-ascend's KVPP design document with its 2 slots; SGLang's CP LayerSplit
  keeps one transient slot.

MTP layers are not counted, as in ``estimate``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ctxsim.counts.arith import ceil_div
from ctxsim.counts.comm import CommContext, collective_ops, traffic_by_name
from ctxsim.counts.conventions import ACTIVATION_BYTES
from ctxsim.counts.keys import decode_span, make_span
from ctxsim.counts.memory import KV_COMPONENTS, window_tokens_needed, window_tokens_paged
from ctxsim.counts.report import KVMemory
from ctxsim.spec.dtypes import weight_bytes
from ctxsim.spec.layers import DenseFFN, GQAAttention, LayerSpec, MLAAttention, MoEFFN, MSASelection, WindowSelection
from ctxsim.spec.model import LayerRun, ModelSpec
from ctxsim.spec.plan import (
    ParallelPlan,
    balanced_blocks,
    check_plan,
    gcd_all,
    kv_replication,
    stage_layer_counts,
)
from ctxsim.spec.workload import Workload

PER_DEVICE_KV_COMPONENTS = (*KV_COMPONENTS, "scratch")

TRAFFIC_DEFINITION = (
    "S of each collective op (NCCL-tests total array size: all-reduce buffer, all-gather output, "
    "reduce-scatter input, all-to-all send buffer, broadcast buffer, sent message), summed over the "
    "layer runs of one phase: a whole prefill, or one decode step"
)

PIPELINE_BUBBLE_DEFINITION = (
    "share of stage time slots left idle while m equal prefill passes (chunks) fill and drain pp equal "
    "stages: (pp - 1) / (m + pp - 1)"
)


# ---------------------------------------------------------------------------------------------
# Where a device sits


@dataclass(frozen=True, slots=True)
class DeviceLayout:
    """A device's coordinates and what it holds: its stage's layers, the layers whose KV it
    keeps, its sequences and its share of the prompt's tokens."""

    rank: int
    tp_rank: int
    cp_rank: int
    pp_rank: int
    dp_rank: int
    ep_rank: int
    layer_split_rank: int
    stage_layers: tuple[int, ...]
    kv_layers: tuple[int, ...]
    batch: int
    token_blocks: tuple[tuple[int, int], ...]  # (first, last) 1-based positions of its new tokens

    @property
    def signature(self) -> tuple:
        """Everything the counts depend on: devices with equal signatures have equal counts."""
        return (self.pp_rank, self.cp_rank, self.layer_split_rank, self.batch)


def stage_layers(spec: ModelSpec, plan: ParallelPlan) -> list[tuple[int, ...]]:
    """Main-stack layer indices of each pipeline stage."""
    out, start = [], 0
    for size in stage_layer_counts(spec.n_layer, plan):
        out.append(tuple(range(start, start + size)))
        start += size
    return out


def dp_batch(batch: int, plan: ParallelPlan, dp_rank: int) -> int:
    """Sequences of dp rank ``dp_rank``: batch // dp, plus one for the first batch % dp ranks."""
    base, extra = divmod(batch, plan.dp)
    return base + (1 if dp_rank < extra else 0)


def cp_token_blocks(plan: ParallelPlan, cached: int, context: int, cp_rank: int) -> tuple[tuple[int, int], ...]:
    """Positions (first, last) of the new tokens cp rank ``cp_rank`` computes (and, in ring mode, caches)."""
    tokens = context - cached
    if plan.cp == 1:
        return ((cached + 1, context),)
    if plan.cp_sharding == "contiguous":
        size = tokens // plan.cp
        start = cached + cp_rank * size
        return ((start + 1, start + size),)
    size = tokens // (2 * plan.cp)
    blocks = []
    for piece in (cp_rank, 2 * plan.cp - 1 - cp_rank):
        start = cached + piece * size
        blocks.append((start + 1, start + size))
    return tuple(blocks)


def layer_split_rank(spec: ModelSpec, plan: ParallelPlan, tp_rank: int, cp_rank: int) -> int:
    """Position of a device in its LayerSplit group (0 without LayerSplit).

    The ranks holding identical KV are the tp ranks sharing a KV head (consecutive tp ranks,
    ``copies`` of them) and, in all_gather mode, the cp ranks; G consecutive ones form a group.
    """
    if plan.layer_split == 1:
        return 0
    copies = gcd_all(list(kv_replication(spec, plan).values()))
    cp_index = cp_rank if plan.cp_mode == "all_gather" else 0
    return (cp_index * copies + tp_rank % copies) % plan.layer_split


def device_layout(spec: ModelSpec, plan: ParallelPlan, workload: Workload, rank: int, context: int) -> DeviceLayout:
    """Layout of global rank ``rank`` (see ``ParallelPlan.coordinates`` for the numbering)."""
    coords = plan.coordinates(rank)
    layers = stage_layers(spec, plan)[coords["pp"]]
    split = layer_split_rank(spec, plan, coords["tp"], coords["cp"])
    kv_layers = tuple(balanced_blocks(list(layers), plan.layer_split)[split]) if plan.layer_split > 1 else layers
    group_index = coords["tp"] + (coords["dp"] * plan.tp if plan.attention_dp else 0)
    return DeviceLayout(
        rank=rank,
        tp_rank=coords["tp"],
        cp_rank=coords["cp"],
        pp_rank=coords["pp"],
        dp_rank=coords["dp"],
        ep_rank=group_index // plan.moe_tp,
        layer_split_rank=split,
        stage_layers=layers,
        kv_layers=kv_layers,
        batch=dp_batch(workload.batch, plan, coords["dp"]),
        token_blocks=cp_token_blocks(plan, workload.cached_context, context, coords["cp"]),
    )


def holds_last_token(plan: ParallelPlan, layout: DeviceLayout, context: int) -> bool:
    """Return whether this device computes the prompt's last position, and so its logits."""
    return any(first <= context <= last for first, last in layout.token_blocks)


# ---------------------------------------------------------------------------------------------
# The tp-sharded layer and model


def _local_kv_heads(att, tp: int) -> int:
    return max(1, att.n_kv_head // tp) if isinstance(att, GQAAttention) else 1


def shard_layer(layer: LayerSpec, plan: ParallelPlan) -> LayerSpec:
    """Cut a layer to the part one tp rank keeps: heads / tp, local KV heads, FFN widths split.

    Routed experts keep their count and top-k with width moe_intermediate_size / moe_tp; the
    shared experts become one expert of their total width / tp.
    """
    att = layer.attention.model_dump()
    att["n_head"] //= plan.tp
    if att["kind"] == "gqa":
        att["n_kv_head"] = _local_kv_heads(layer.attention, plan.tp)
    selection = layer.selection.model_dump()
    if isinstance(layer.selection, MSASelection):
        selection["index_n_heads"] = att["n_kv_head"]
    ffn = layer.ffn.model_dump()
    if isinstance(layer.ffn, DenseFFN):
        ffn["intermediate_size"] //= plan.tp
    else:
        shared = layer.ffn.n_shared_experts * layer.ffn.shared_width
        ffn["moe_intermediate_size"] //= plan.moe_tp
        ffn["n_shared_experts"] = 1 if shared else 0
        ffn["shared_intermediate_size"] = shared // plan.tp if shared else None
    return LayerSpec.model_validate({"attention": att, "selection": selection, "ffn": ffn})


def shard_spec(spec: ModelSpec, plan: ParallelPlan, layers: tuple[int, ...]) -> ModelSpec:
    """Build a ModelSpec of the layers one device runs, each sharded by ``shard_layer``.

    It is built without validation because a pipeline stage may open with an IndexShare layer
    whose indexer owner sits in an earlier stage.
    """
    runs: list[LayerRun] = []
    for index in layers:
        kind = spec.layer_sequence[index]
        if runs and runs[-1].kind == kind:
            runs[-1] = LayerRun(kind=kind, count=runs[-1].count + 1)
        else:
            runs.append(LayerRun(kind=kind, count=1))
    used = {run.kind for run in runs}
    kinds = {kind: shard_layer(layer, plan) for kind, layer in spec.layer_kinds.items() if kind in used}
    data = {name: getattr(spec, name) for name in type(spec).model_fields}
    data.update(
        name=f"{spec.name}@{plan.describe()}",
        vocab_size=ceil_div(spec.vocab_size, plan.tp),
        layer_kinds=kinds,
        layers=runs,
        n_mtp_layers=0,
        mtp_kind=None,
    )
    return ModelSpec.model_construct(**data)


def local_record_bytes(spec: ModelSpec, plan: ParallelPlan, kv_dtype: str) -> dict[str, tuple[int, int]]:
    """Per layer kind, the (main record, index key) bytes per token one tp rank caches."""
    out = {}
    for kind, layer in spec.layer_kinds.items():
        att = layer.attention
        if isinstance(att, GQAAttention):
            att = att.model_copy(update={"n_kv_head": _local_kv_heads(att, plan.tp)})
        out[kind] = (att.cache_record_bytes(kv_dtype), layer.index_record_bytes(kv_dtype))
    return out


# ---------------------------------------------------------------------------------------------
# Weights


def _attention_params(layer: LayerSpec, d_model: int, tp: int) -> int:
    att = layer.attention
    heads = att.n_head // tp
    if isinstance(att, GQAAttention):
        kv_heads = _local_kv_heads(att, tp)
        params = d_model * heads * att.head_dim + 2 * d_model * kv_heads * att.head_dim + heads * att.head_dim * d_model
        if att.qkv_bias:
            params += (heads + 2 * kv_heads) * att.head_dim
        if att.o_bias:
            params += d_model  # the output bias is added once after the all-reduce, so every rank keeps it
    else:
        assert isinstance(att, MLAAttention)
        if att.q_lora_rank is None:
            params = d_model * heads * att.qk_head_dim
        else:
            params = d_model * att.q_lora_rank + att.q_lora_rank * heads * att.qk_head_dim
        params += d_model * (att.kv_lora_rank + att.qk_rope_head_dim)
        params += att.kv_lora_rank * heads * (att.qk_nope_head_dim + att.v_head_dim)
        params += heads * att.v_head_dim * d_model
    sel = layer.selection
    if isinstance(sel, MSASelection):
        # One index-query head per KV group follows the local KV heads; the index key is shared.
        params += d_model * _local_kv_heads(att, tp) * sel.index_head_dim + d_model * sel.index_head_dim
    else:
        params += layer.indexer_params(d_model)  # the DSA indexer is replicated
    if isinstance(sel, WindowSelection) and sel.learned_sinks:
        params += heads
    return params


def _ffn_params(ffn, d_model: int, plan: ParallelPlan) -> tuple[int, int]:
    """(parameters in the weight dtype, routed-expert parameters) of one rank's FFN."""
    if isinstance(ffn, DenseFFN):
        return ffn.n_matrices * d_model * ffn.intermediate_size // plan.tp, 0
    assert isinstance(ffn, MoEFFN)
    shared = ffn.n_matrices * d_model * ffn.n_shared_experts * ffn.shared_width // plan.tp
    routed = ffn.n_routed_experts // plan.ep * ffn.n_matrices * d_model * (ffn.moe_intermediate_size // plan.moe_tp)
    return ffn.router_params(d_model) + shared, routed


def device_weight_bytes(spec: ModelSpec, plan: ParallelPlan, layout: DeviceLayout) -> int:
    """Bytes of the weights one device holds, norms excluded as in ``ModelSpec.weight_bytes``."""
    d = spec.d_model
    rest, routed = 0, 0
    for index in layout.stage_layers:
        layer = spec.layer_kinds[spec.layer_sequence[index]]
        rest += _attention_params(layer, d, plan.tp)
        dense, experts = _ffn_params(layer.ffn, d, plan)
        rest += dense
        routed += experts
    vocab_rows = ceil_div(spec.vocab_size, plan.tp)
    vocab = 0
    if layout.pp_rank == 0:
        vocab += vocab_rows * d
    if layout.pp_rank == plan.pp - 1 and (not spec.tie_word_embeddings or plan.pp > 1):
        vocab += vocab_rows * d
    return spec.stored_bytes(rest, routed, vocab)


# ---------------------------------------------------------------------------------------------
# KV cache


def _held_tokens(layer: LayerSpec, plan: ParallelPlan, layout: DeviceLayout, context: int, policy: str, page: int) -> int:
    """Main-cache records one device keeps for a layer of one sequence at ``context`` tokens."""
    sel = layer.selection
    if plan.cp > 1 and plan.cp_mode == "ring":
        if isinstance(sel, WindowSelection):
            # Kept positions: the last W, and the first S sinks that fall outside the window.
            low = max(1, context - sel.window + 1)
            kept = [(low, context), (1, min(sel.sink_tokens, low - 1))]
        else:
            kept = [(1, context)]
        held = sum(
            max(0, min(last, k_last) - max(first, k_first) + 1)
            for first, last in layout.token_blocks
            for k_first, k_last in kept
        )
        # NOTE: under the paged policy each ring rank pages its own records.
        return ceil_div(held, page) * page if policy == "paged" else held
    if isinstance(sel, WindowSelection):
        return window_tokens_paged(sel, context, page) if policy == "paged" else window_tokens_needed(sel, context)
    return ceil_div(context, page) * page if policy == "paged" else context


def _index_tokens(plan: ParallelPlan, layout: DeviceLayout, context: int, policy: str, page: int) -> int:
    if plan.cp > 1 and plan.cp_mode == "ring":
        held = sum(last - first + 1 for first, last in layout.token_blocks)
    else:
        held = context
    return ceil_div(held, page) * page if policy == "paged" else held


def device_kv(
    spec: ModelSpec, plan: ParallelPlan, layout: DeviceLayout, context: int, kv_dtype: str, policy: str, page: int
) -> KVMemory:
    """Count the KV bytes one device keeps, per sequence and for its batch, by component.

    ``scratch`` is LayerSplit's ``layer_split_scratch`` slots, each the largest layer of the
    stage (main record plus index key) at the records a layer keeps at ``context``.
    """
    records = local_record_bytes(spec, plan, kv_dtype)
    by_component = {name: 0 for name in PER_DEVICE_KV_COMPONENTS}
    for index in layout.kv_layers:
        kind = spec.layer_sequence[index]
        layer = spec.layer_kinds[kind]
        main, index_key = records[kind]
        component = "window" if isinstance(layer.selection, WindowSelection) else "main"
        by_component[component] += _held_tokens(layer, plan, layout, context, policy, page) * main
        if index_key:
            by_component["indexer"] += _index_tokens(plan, layout, context, policy, page) * index_key

    if plan.layer_split > 1:
        largest = 0
        for index in layout.stage_layers:
            kind = spec.layer_sequence[index]
            layer = spec.layer_kinds[kind]
            main, index_key = records[kind]
            size = _held_tokens(layer, plan, layout, context, policy, page) * main
            if index_key:
                size += _index_tokens(plan, layout, context, policy, page) * index_key
            largest = max(largest, size)
        by_component["scratch"] = plan.layer_split_scratch * largest

    per_sequence = sum(by_component.values())
    return KVMemory(per_sequence, by_component, policy, kv_dtype, per_sequence * layout.batch)


# ---------------------------------------------------------------------------------------------
# Collectives and activations


def _phase_span(workload: Workload, phase: str, context: int):
    if phase == "decode":
        return decode_span(context)
    return make_span(workload.cached_context, context, workload.chunk_size)


def _comm_context(
    spec: ModelSpec, plan: ParallelPlan, workload: Workload, layout: DeviceLayout, phase: str, context: int, kv_dtype: str
) -> CommContext:
    span = _phase_span(workload, phase, context)
    tokens = 1 if phase == "decode" else sum(last - first + 1 for first, last in layout.token_blocks)
    largest_batch = dp_batch(workload.batch, plan, 0)
    records = {kind: main + index for kind, (main, index) in local_record_bytes(spec, plan, kv_dtype).items()}
    return CommContext(
        spec=spec,
        plan=plan,
        phase=phase,
        span=span,
        kv_dtype=kv_dtype,
        batch=layout.batch,
        rows=layout.batch * tokens,
        group_rows=largest_batch * tokens,
        stage=layout.pp_rank,
        stage_layers=layout.stage_layers,
        holds_last_token=phase == "decode" or holds_last_token(plan, layout, context),
        record_bytes=records,
    )


def device_collectives(
    spec: ModelSpec, plan: ParallelPlan, workload: Workload, layout: DeviceLayout, phase: str, context: int, kv_dtype: str
):
    """Collective ops of one device in one phase (see ``ctxsim.counts.comm``)."""
    stages = stage_layers(spec, plan)
    next_layers = stages[layout.pp_rank + 1] if layout.pp_rank + 1 < plan.pp else None
    ctx = _comm_context(spec, plan, workload, layout, phase, context, kv_dtype)
    return collective_ops(ctx, next_layers)


def _pass_rows(plan: ParallelPlan, workload: Workload, layout: DeviceLayout, context: int) -> int:
    """Query tokens per sequence in the device's largest prefill pass."""
    tokens = sum(last - first + 1 for first, last in layout.token_blocks)
    if plan.cp > 1 or workload.chunk_size is None:
        return tokens
    return min(workload.chunk_size, tokens)


def _comm_buffer_bytes(spec: ModelSpec, plan: ParallelPlan, workload: Workload, layout: DeviceLayout, context: int, kv_dtype: str) -> int:
    """Return the largest buffer of other ranks' data that a device keeps during one op of a prefill pass.

    That is the gathered tokens of the dense MoE path, the received (token, expert) rows of an
    all-to-all dispatch, or one layer's gathered K/V under cp.
    """
    rows = _pass_rows(plan, workload, layout, context)
    act = spec.d_model * ACTIVATION_BYTES
    largest = 0
    mode = plan.resolved_ep_mode
    for layer in spec.layer_kinds.values():
        if not isinstance(layer.ffn, MoEFFN):
            continue
        if mode == "all_gather":
            largest = max(largest, plan.token_groups * dp_batch(workload.batch, plan, 0) * rows * act)
        elif mode == "all_to_all":
            largest = max(largest, layout.batch * rows * layer.ffn.experts_per_token * act)
    if plan.cp > 1:
        records = local_record_bytes(spec, plan, kv_dtype)
        tokens = context - workload.cached_context
        largest = max(largest, max(tokens * layout.batch * (m + i) for m, i in records.values()))
    return largest


def _local_prefill_workload(plan: ParallelPlan, workload: Workload, layout: DeviceLayout, context: int, kv_dtype: str) -> Workload:
    """Return the prefill one device runs: its batch, and under cp its share of the queries ending at ``context``."""
    update: dict[str, Any] = {"batch": layout.batch, "kv_dtype": kv_dtype, "phase": "prefill", "context": context}
    if plan.cp > 1:
        tokens = sum(last - first + 1 for first, last in layout.token_blocks)
        update.update(cached_context=context - tokens, chunk_size=None)
    return workload.model_copy(update=update)


def device_activation_bytes(
    spec: ModelSpec, plan: ParallelPlan, workload: Workload, layout: DeviceLayout, context: int, kv_dtype: str
) -> int:
    """Prefill activation peak of one device: ``estimate``'s bound on its sharded layers and its
    largest pass, plus the largest buffer of other ranks' data (``_comm_buffer_bytes``).

    NOTE: a cp rank's queries are bounded by one block that ends at the context, as the
    single-device bound does for a chunk.
    """
    from ctxsim.counts.estimate import activation_peak

    if layout.batch == 0:
        return _comm_buffer_bytes(spec, plan, workload, layout, context, kv_dtype)
    local = shard_spec(spec, plan, layout.stage_layers)
    local_workload = _local_prefill_workload(plan, workload, layout, context, kv_dtype)
    peak = activation_peak(local, local_workload, kv_dtype, context, [])
    return int(peak) + _comm_buffer_bytes(spec, plan, workload, layout, context, kv_dtype)


def attention_pairs(layout: DeviceLayout) -> int:
    """Causal (query, key) pairs of the device's prefill queries over its batch, before key selection."""
    pairs = sum(last * (last + 1) // 2 - (first - 1) * first // 2 for first, last in layout.token_blocks)
    return pairs * layout.batch


# ---------------------------------------------------------------------------------------------
# Assembly


@dataclass(slots=True)
class DeviceCounts:
    """Memory and traffic of one device; traffic is S per collective op, summed over the phase."""

    layout: DeviceLayout
    weights_bytes: int
    kv_cache: KVMemory
    activation_bytes: int
    traffic_bytes: dict[str, dict[str, int]]
    attention_pairs: int

    @property
    def rank(self) -> int:
        return self.layout.rank

    @property
    def kv_cache_bytes(self) -> int:
        return self.kv_cache.bytes_per_device

    @property
    def memory_bytes(self) -> int:
        """Weights, KV cache (with scratch) and the prefill activation peak together."""
        return self.weights_bytes + self.kv_cache_bytes + self.activation_bytes

    def to_dict(self) -> dict[str, Any]:
        layout = self.layout
        stage = layout.stage_layers
        return {
            "rank": layout.rank,
            "tp_rank": layout.tp_rank,
            "pp_rank": layout.pp_rank,
            "dp_rank": layout.dp_rank,
            "cp_rank": layout.cp_rank,
            "ep_rank": layout.ep_rank,
            "layer_split_rank": layout.layer_split_rank,
            "layers": [stage[0], stage[-1]],
            "kv_layers": len(layout.kv_layers),
            "batch": layout.batch,
            "weights_bytes": self.weights_bytes,
            "kv_cache_bytes": self.kv_cache_bytes,
            "kv_cache_by_component": {k: v * layout.batch for k, v in self.kv_cache.by_component.items()},
            "activation_bytes": self.activation_bytes,
            "traffic_bytes": self.traffic_bytes,
            "attention_pairs": self.attention_pairs,
        }


@dataclass(slots=True)
class ParallelCounts:
    """Per-device counts of one plan, and what they add up to."""

    plan: ParallelPlan
    devices: list[DeviceCounts]
    kv_replication: dict[str, int]
    index_key_replication: int | None
    prefill_passes: int | None
    layer_split_gain: float | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def traffic_bytes_per_step(self) -> dict[str, dict[str, int]]:
        """S of each collective op summed over all devices, by phase and op name."""
        out: dict[str, dict[str, int]] = {}
        for device in self.devices:
            for phase, ops in device.traffic_bytes.items():
                totals = out.setdefault(phase, {})
                for name, size in ops.items():
                    totals[name] = totals.get(name, 0) + size
        return out

    @property
    def pipeline_bubble(self) -> float | None:
        """Idle share of a pipelined prefill: (pp - 1) / (m + pp - 1) for m passes (None without pp or prefill)."""
        if self.plan.pp == 1 or self.prefill_passes is None:
            return None
        return (self.plan.pp - 1) / (self.prefill_passes + self.plan.pp - 1)

    @property
    def attention_imbalance(self) -> float | None:
        """Most prefill attention pairs on one cp rank over the mean of the cp ranks (1 = balanced)."""
        if self.plan.cp == 1 or self.prefill_passes is None:
            return None
        by_cp: dict[int, int] = {}
        for device in self.devices:
            by_cp[device.layout.cp_rank] = max(by_cp.get(device.layout.cp_rank, 0), device.attention_pairs)
        values = list(by_cp.values())
        return max(values) * len(values) / sum(values)

    def busiest(self) -> DeviceCounts:
        """Return the device that needs the most memory (weights, KV and activations)."""
        return max(self.devices, key=lambda d: d.memory_bytes)

    def to_dict(self) -> dict[str, Any]:
        return {
            "plan": self.plan.model_dump(mode="json"),
            "world_size": self.plan.world_size,
            "kv_replication": self.kv_replication,
            "index_key_replication": self.index_key_replication,
            "pipeline_bubble": None
            if self.pipeline_bubble is None
            else {"fraction": self.pipeline_bubble, "passes": self.prefill_passes, "definition": PIPELINE_BUBBLE_DEFINITION},
            "attention_imbalance": self.attention_imbalance,
            "layer_split_gain": self.layer_split_gain,
            "notes": self.notes,
        }


def _phases(workload: Workload) -> tuple[str, ...]:
    return ("prefill", "decode") if workload.phase == "both" else (workload.phase,)


def _device_counts(
    spec: ModelSpec, plan: ParallelPlan, workload: Workload, layout: DeviceLayout, context: int, kv_dtype: str
) -> DeviceCounts:
    traffic = {}
    for phase in _phases(workload):
        traffic[phase] = traffic_by_name(device_collectives(spec, plan, workload, layout, phase, context, kv_dtype))
    return DeviceCounts(
        layout=layout,
        weights_bytes=device_weight_bytes(spec, plan, layout),
        kv_cache=device_kv(spec, plan, layout, context, kv_dtype, workload.kv_policy, workload.page_size),
        activation_bytes=device_activation_bytes(spec, plan, workload, layout, context, kv_dtype),
        traffic_bytes=traffic,
        attention_pairs=attention_pairs(layout) if workload.phase != "decode" else layout.batch * context,
    )


def _notes(spec: ModelSpec, plan: ParallelPlan, replication: dict[str, int]) -> list[str]:
    """Describe each kind of KV replication in one line, naming the layer kinds it applies to."""
    by_text: dict[str, list[str]] = {}
    for kind, copies in replication.items():
        att = spec.layer_kinds[kind].attention
        if copies == 1:
            continue
        if isinstance(att, MLAAttention):
            text = f"the MLA latent is replicated on all {copies} tp ranks"
        else:
            text = f"tp {plan.tp} > n_kv_head {att.n_kv_head}, so each KV head is replicated {copies}x (one KV head per rank)"
        by_text.setdefault(text, []).append(kind)
    notes = []
    for text, kinds in by_text.items():
        label = "layer kind" if len(kinds) == 1 else "layer kinds"
        notes.append(f"{label} {', '.join(repr(k) for k in kinds)}: {text}")
    if plan.tp > 1 and any(layer.index_record_bytes("bf16") for layer in spec.layer_kinds.values()):
        notes.append(f"index keys are replicated on all {plan.tp} tp ranks")
    return notes


def parallel_counts(spec: ModelSpec, workload: Workload, plan: ParallelPlan, context: int | None = None) -> ParallelCounts:
    """Per-device weights, KV, activations and traffic of every device of ``plan``.

    Raises SpecError when the plan cannot run the model or the workload (``check_plan``).
    """
    context = workload.context if context is None else int(context)
    if context != workload.context:
        workload = workload.model_copy(update={"context": context})
    check_plan(spec, plan, workload)
    kv_dtype = workload.kv_dtype or spec.kv_dtype

    cache: dict[tuple, DeviceCounts] = {}
    devices = []
    for rank in range(plan.world_size):
        layout = device_layout(spec, plan, workload, rank, context)
        shared = cache.get(layout.signature)
        if shared is None:
            shared = cache[layout.signature] = _device_counts(spec, plan, workload, layout, context, kv_dtype)
        devices.append(DeviceCounts(layout, shared.weights_bytes, shared.kv_cache, shared.activation_bytes,
                                    shared.traffic_bytes, shared.attention_pairs))

    replication = kv_replication(spec, plan)
    has_index = any(layer.index_record_bytes("bf16") for layer in spec.layer_kinds.values())
    prefill_passes = None
    if workload.phase != "decode":
        prefill_passes = 1 if plan.cp > 1 else make_span(workload.cached_context, context, workload.chunk_size).n_chunks
    counts = ParallelCounts(
        plan=plan,
        devices=devices,
        kv_replication=replication,
        index_key_replication=plan.tp if has_index else None,
        prefill_passes=prefill_passes,
        notes=_notes(spec, plan, replication),
    )
    if plan.layer_split > 1:
        counts.layer_split_gain = layer_split_gain(spec, plan, workload, context, kv_dtype)
    return counts


def layer_split_gain(spec: ModelSpec, plan: ParallelPlan, workload: Workload, context: int, kv_dtype: str) -> float:
    """KV capacity multiplier of LayerSplit: the most KV bytes per token on one device of the
    same plan without LayerSplit, over the most with it."""
    without = plan.model_copy(update={"layer_split": 1})

    def largest(p: ParallelPlan) -> int:
        out = 0
        for rank in range(p.world_size):
            layout = device_layout(spec, p, workload, rank, context)
            kv = device_kv(spec, p, layout, context, kv_dtype, workload.kv_policy, workload.page_size)
            out = max(out, kv.bytes_per_sequence)
        return out

    return largest(without) / largest(plan)


# ---------------------------------------------------------------------------------------------
# One device's CostReport, for the time model


def _add_ops(into, more) -> None:
    """Add ``more``'s op fields into ``into`` (same ops in the same order); weights are read once."""
    for a, b in zip(into, more):
        assert (a.name, a.layer_kind) == (b.name, b.layer_kind)
        a.matmul_flops += b.matmul_flops
        a.other_flops += b.other_flops
        a.bytes_read += b.bytes_read - b.weight_bytes_read
        a.bytes_written += b.bytes_written
        a.kv_bytes_read += b.kv_bytes_read
        a.kv_bytes_written += b.kv_bytes_written


def _expert_parallel_scale(ops, spec: ModelSpec, plan: ParallelPlan, workload: Workload, layout: DeviceLayout, passes: list[int]) -> None:
    """Give ``moe.experts`` this rank's share: the expert group's (token, expert) pairs over ep,
    and the expected touched experts among its n_routed_experts / ep experts in each pass."""
    from ctxsim.counts.ffn import expected_experts

    if (plan.ep == 1 and plan.token_groups == 1) or layout.batch == 0:
        return
    group_batch = workload.batch if plan.token_groups > 1 else layout.batch
    scale_num, scale_den = group_batch, plan.ep * layout.batch

    def scaled(value):
        product = value * scale_num
        return product // scale_den if product % scale_den == 0 else product / scale_den

    expert_dtype = spec.expert_weight_dtype or spec.weight_dtype
    for op in ops:
        if op.name != "moe.experts":
            continue
        ffn = spec.layer_kinds[op.layer_kind].ffn
        width = ffn.moe_intermediate_size // plan.moe_tp
        expert_bytes = weight_bytes(ffn.n_matrices * spec.d_model * width, expert_dtype)
        weights = sum(
            round(expected_experts(ffn.n_routed_experts, ffn.experts_per_token, group_batch * rows) / plan.ep * expert_bytes)
            for rows in passes
        )
        op.matmul_flops = scaled(op.matmul_flops)
        op.other_flops = scaled(op.other_flops)
        op.bytes_read += weights - op.weight_bytes_read
        op.weight_bytes_read = weights


def device_report(
    spec: ModelSpec,
    workload: Workload,
    plan: ParallelPlan,
    rank: int | None = None,
    context: int | None = None,
    counts: ParallelCounts | None = None,
):
    """CostReport of one device of ``plan``: its compute ops, collectives, KV, weights and activations.

    ``workload.batch`` is the whole deployment's batch; the device runs its dp rank's share.
    ``rank`` defaults to the device that needs the most memory. ``counts`` is the plan's
    ``parallel_counts`` for the same workload and context, when the caller already has it
    (a caller that reports every stage then counts the devices once). The compute ops cover the
    device's pipeline stage only (the embedding on the first stage, the LM head on the last).
    Routed-expert FLOPs are the expert group's (token, expert) pairs over ep, which is a float
    when ep does not divide them. NOTE: a zigzag cp rank is counted as two prefill spans with
    their weights read once; the expected touched experts are those of the two spans.
    """
    from ctxsim.counts.estimate import estimate
    from ctxsim.counts.report import CostReport

    if counts is None:
        counts = parallel_counts(spec, workload, plan, context)
    context = workload.context if context is None else int(context)
    device = counts.busiest() if rank is None else counts.devices[rank]
    layout = device.layout
    kv_dtype = workload.kv_dtype or spec.kv_dtype
    local = shard_spec(spec, plan, layout.stage_layers)

    ops = []
    for phase in _phases(workload):
        base = workload.model_copy(update={"batch": layout.batch, "phase": phase, "context": context, "kv_dtype": kv_dtype})
        if phase == "prefill" and plan.cp > 1:
            parts = [
                estimate(local, base.model_copy(update={"cached_context": first - 1, "context": last, "chunk_size": None})).ops
                for first, last in layout.token_blocks
            ]
            phase_ops = parts[0]
            for more in parts[1:]:
                _add_ops(phase_ops, more)
            passes = [sum(last - first + 1 for first, last in layout.token_blocks)]
        else:
            phase_ops = estimate(local, base).ops
            span = _phase_span(workload, phase, context)
            passes = [span.chunk] * (span.n_chunks - 1) + [span.last_chunk]
        _expert_parallel_scale(phase_ops, spec, plan, workload, layout, passes)

        last_stage = layout.pp_rank == plan.pp - 1
        keep_head = last_stage and (phase == "decode" or holds_last_token(plan, layout, context))
        kept = []
        for op in phase_ops:
            if op.name == "embed" and layout.pp_rank != 0:
                continue
            if op.name == "final_norm" and not last_stage:
                continue
            if op.name == "lm_head" and not keep_head:
                continue
            kept.append(op)
        ops += kept + device_collectives(spec, plan, workload, layout, phase, context, kv_dtype)

    local_workload = workload.model_copy(update={"batch": layout.batch})
    report = CostReport(spec.name, local_workload, ops, device.kv_cache, device.weights_bytes, device.activation_bytes, plan)
    report.extras.update(context=context, rank=layout.rank, parallel=counts)
    return report
