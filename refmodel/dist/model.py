"""One rank's part of a RefModel and its forward pass, with every collective of the plan.

A forward pass of one chunk on one rank, in dataflow order:

1. First stage: the vocab-parallel embedding (rows of the rank's vocabulary slice, zeros for the
   others) and ``comm.tp_all_reduce``. Later stages receive the activations (and, when the stage
   opens with an IndexShare layer, the reused top-k slots) from the previous stage.
2. Each layer of the stage: pre-norm attention on the rank's heads, ``comm.tp_all_reduce``,
   residual; pre-norm FFN, the MoE token path of the plan (``comm.ep_*``), ``comm.tp_all_reduce``,
   residual. Around attention, LayerSplit brings the layer's cached history from its owner
   (``comm.layer_split_broadcast``) and cp gathers the chunk's K/V and index keys
   (``comm.cp_kv``) into the cache before the core reads it.
3. Not the last stage: ``comm.pp_send`` to the next stage. Last stage: final norm and, on the rank
   holding the last position, the vocab-parallel LM head with ``comm.tp_all_gather`` of fp32 logits.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist

from ctxsim.counts.conventions import ACTIVATION_BYTES, INDEX_BYTES, SCORE_BYTES
from ctxsim.counts.parallel import DeviceLayout, balanced_blocks, dp_batch
from ctxsim.spec.layers import DenseFFN, DSASelection
from ctxsim.spec.plan import ParallelPlan
from refmodel.attention import LayerCache
from refmodel.basic import RunContext, rms_norm
from refmodel.cache import RecordStore
from refmodel.counter import Counter
from refmodel.dist.comm import Comm
from refmodel.dist.shard import MoEShard, shard_attention, shard_dense
from refmodel.model import RefModel


@dataclass
class Groups:
    """The process groups one rank takes part in, with their global ranks in group order."""

    tp: object
    cp: object
    cp_ranks: list[int]
    ep: object  # the dp ranks of the expert group that hold other tokens (same tp rank)
    layer_split: object
    layer_split_ranks: list[int]
    prev_stage: int | None
    next_stage: int | None


def _store_bytes(store: RecordStore) -> int:
    """Bytes of the records a store holds, its static per-tensor scales left out."""
    return store.allocated_bytes() - 4 * len(store.tensor_scales)


class GatheredStore:
    """A RecordStore whose appends first collect the chunk's records from every cp rank.

    Reads, eviction and everything else go to the wrapped store, which therefore holds the K/V
    of all cp ranks' tokens when the core runs. ``ring`` passes blocks around the cp ranks in
    cp - 1 steps; otherwise one all-gather collects them. Either way S is recorded as all the
    chunk's records in the cache layout.
    """

    def __init__(self, inner: RecordStore, comm: Comm, groups: Groups, plan: ParallelPlan, all_positions: torch.Tensor):
        self._inner = inner
        self._comm = comm
        self._groups = groups
        self._plan = plan
        self._all_positions = all_positions  # positions of every cp rank's block, in cp rank order

    def __getattr__(self, name):
        return getattr(self._inner, name)

    def _collect(self, value: torch.Tensor) -> torch.Tensor:
        if self._plan.cp_mode == "all_gather":
            size = dist.get_world_size(self._groups.cp)
            parts = [torch.empty_like(value) for _ in range(size)]
            dist.all_gather(parts, value.contiguous(), group=self._groups.cp)
            return torch.cat(parts, dim=1)
        ranks = self._groups.cp_ranks
        me = ranks.index(self._comm.rank)
        blocks = {me: value}
        current = value
        for step in range(1, len(ranks)):
            current = self._comm.ring_pass(current, ranks[(me + 1) % len(ranks)], ranks[(me - 1) % len(ranks)])
            blocks[(me - step) % len(ranks)] = current
        return torch.cat([blocks[i] for i in range(len(ranks))], dim=1)

    def evict(self, last_position: int) -> None:
        # The pass ends at the last position of any cp rank, not at this rank's own last query.
        self._inner.evict(int(self._all_positions.max()))

    def append(self, values: list[torch.Tensor], positions: torch.Tensor) -> None:
        gathered = [self._collect(v) for v in values]
        order = torch.argsort(self._all_positions)
        batch = values[0].shape[0]
        self._comm.record("comm.cp_kv", self._all_positions.numel() * batch * self._inner.record_bytes)
        self._inner.append([g[:, order] for g in gathered], self._all_positions[order])


class DistLayer:
    """One layer's shards on one rank: norms, attention module, FFN (dense MLP or MoE shard)."""

    def __init__(self, full_layer, layer_spec, plan: ParallelPlan, layout: DeviceLayout, d_model: int):
        self.spec = layer_spec
        self.attn_norm = full_layer.attn_norm
        self.ffn_norm = full_layer.ffn_norm
        self.attention, self.output_bias = shard_attention(full_layer.attention, layer_spec, plan, layout.tp_rank, d_model)
        if isinstance(layer_spec.ffn, DenseFFN):
            self.ffn = shard_dense(full_layer.ffn, layer_spec, plan, layout.tp_rank, d_model)
        else:
            group_index = layout.tp_rank + (layout.dp_rank * plan.tp if plan.attention_dp else 0)
            self.ffn = MoEShard(full_layer.ffn, layer_spec.ffn, plan, layout.ep_rank, group_index % plan.moe_tp, layout.tp_rank)

    def parameters(self):
        yield from self.attention.named_parameters(prefix="attention")
        yield from self.ffn.named_parameters(prefix="ffn")
        if self.output_bias is not None:
            yield "attention.output_bias", self.output_bias


class DistModel:
    """The stage of a RefModel that one rank holds, sharded per ``plan``."""

    def __init__(self, full: RefModel, plan: ParallelPlan, layout: DeviceLayout, comm: Comm, groups: Groups, batch_sizes: list[int]):
        spec = full.spec
        self.spec = spec
        self.plan = plan
        self.layout = layout
        self.comm = comm
        self.groups = groups
        self.batch_sizes = batch_sizes  # sequences of every dp rank
        self.counter = Counter(enabled=False)

        self.vocab_rows = -(-spec.vocab_size // plan.tp)
        first_row = layout.tp_rank * self.vocab_rows
        self.embedding = self._vocab_slice(full.embedding, first_row) if layout.pp_rank == 0 else None
        self.head = None
        if layout.pp_rank == plan.pp - 1:
            head = full.embedding if full.lm_head is None else full.lm_head
            self.head = self._vocab_slice(head, first_row)
            if full.lm_head is None and plan.pp == 1:
                self.head = self.embedding  # tied and on one stage: one tensor
        self.final_norm = full.final_norm
        self.layers = {
            index: DistLayer(full.layers[index], spec.layer_kinds[spec.layer_sequence[index]], plan, layout, spec.d_model)
            for index in layout.stage_layers
        }
        owners = balanced_blocks(list(layout.stage_layers), plan.layer_split)
        self.owner_of = {index: g for g, block in enumerate(owners) for index in block}
        self.scratch_slot_bytes = 0
        # Whether any layer reuses an earlier layer's top-k (IndexShare), so owners must publish theirs.
        self.shares_indices = any(
            isinstance(layer.selection, DSASelection) and not layer.selection.owns_indexer
            for layer in spec.layer_kinds.values()
        )

    def _vocab_slice(self, table: torch.Tensor, first_row: int) -> torch.Tensor:
        rows = table.detach()[first_row : first_row + self.vocab_rows]
        if rows.shape[0] < self.vocab_rows:  # the last rank's padding rows
            rows = torch.cat((rows, rows.new_zeros(self.vocab_rows - rows.shape[0], rows.shape[1])))
        return rows.clone()

    # --- weights and caches --------------------------------------------------------------

    def named_weights(self):
        """(name, tensor) of every weight this rank holds; a tied head on one stage is listed once."""
        if self.embedding is not None:
            yield "embedding", self.embedding
        if self.head is not None and self.head is not self.embedding:
            yield "lm_head", self.head
        for index, layer in self.layers.items():
            for name, param in layer.parameters():
                yield f"layers.{index}.{name}", param

    def make_caches(self, batch: int, capacity: int, kv_dtype: str) -> dict[int, LayerCache]:
        """Empty caches of the layers whose KV this rank keeps."""
        return {index: self.layers[index].attention.make_cache(batch, capacity, kv_dtype) for index in self.layout.kv_layers}

    # --- one forward pass ----------------------------------------------------------------

    def _embed(self, tokens: torch.Tensor) -> torch.Tensor:
        ids = tokens - self.layout.tp_rank * self.vocab_rows
        inside = (ids >= 0) & (ids < self.vocab_rows)
        x = self.embedding[ids.clamp(0, self.vocab_rows - 1)] * inside.unsqueeze(-1)
        if self.plan.tp > 1:
            x = self.comm.all_reduce(x, self.groups.tp, "comm.tp_all_reduce", ACTIVATION_BYTES)
        return x

    def _receive_stage_input(self, ctx: RunContext, batch: int, n_new: int, dtype) -> torch.Tensor:
        src = self.groups.prev_stage
        x = self.comm.recv(torch.empty(batch, n_new, self.spec.d_model, dtype=dtype), src)
        if self._opens_with_shared_dsa(self.layout.stage_layers):
            shape = self.comm.recv(torch.empty(3, dtype=torch.int64), src)
            ctx.owner_indices = self.comm.recv(torch.empty(*shape.tolist(), dtype=torch.int64), src)
        return x

    def _send_stage_output(self, ctx: RunContext, x: torch.Tensor, next_layers) -> None:
        dst = self.groups.next_stage
        self.comm.send(x, dst, "comm.pp_send", x.numel() * ACTIVATION_BYTES)
        if self._opens_with_shared_dsa(next_layers):
            slots = ctx.owner_indices.to(torch.int64)
            shape = torch.tensor(slots.shape, dtype=torch.int64)
            self.comm.send(shape, dst, "meta", shape.numel() * 8)
            self.comm.send(slots, dst, "comm.pp_send", slots.numel() * INDEX_BYTES)

    def _opens_with_shared_dsa(self, layers) -> bool:
        for index in layers:
            sel = self.spec.layer_kinds[self.spec.layer_sequence[index]].selection
            if isinstance(sel, DSASelection):
                return not sel.owns_indexer
        return False

    def forward(self, ctx: RunContext, tokens: torch.Tensor, caches: dict[int, LayerCache], next_layers, cp_positions, logits: bool):
        """Run one chunk ``tokens`` ``[B, C]`` at ``ctx.positions``; return (hidden, logits) on the
        last stage and (None, None) elsewhere. ``cp_positions`` are every cp rank's positions of this
        pass, in cp rank order, when the pass is split over cp (else None)."""
        batch, n_new = tokens.shape
        ctx.owner_indices = None
        ctx.share_indices = self.shares_indices
        if self.layout.pp_rank == 0:
            x = self._embed(tokens)
        else:
            x = self._receive_stage_input(ctx, batch, n_new, self.final_norm.dtype)

        for index in self.layout.stage_layers:
            x = self._layer(ctx, index, x, caches, cp_positions)

        if self.layout.pp_rank < self.plan.pp - 1:
            self._send_stage_output(ctx, x, next_layers)
            return None, None
        hidden = rms_norm(self.counter, x, self.final_norm)
        out = None
        if logits:
            local = hidden[:, -1] @ self.head.T  # [B, vocab rows of this rank]
            if self.plan.tp > 1:
                local = self.comm.all_gather(local, self.groups.tp, "comm.tp_all_gather", SCORE_BYTES, dim=-1)
            out = local[:, : self.spec.vocab_size]
        return hidden, out

    # --- one layer -------------------------------------------------------------------------

    def _layer(self, ctx: RunContext, index: int, x: torch.Tensor, caches, cp_positions) -> torch.Tensor:
        layer = self.layers[index]
        cache = self._layer_cache(index, caches, x.shape[0])
        if cp_positions is not None:
            cache = LayerCache(
                GatheredStore(cache.main, self.comm, self.groups, self.plan, cp_positions),
                None if cache.index is None else GatheredStore(cache.index, self.comm, self.groups, self.plan, cp_positions),
            )

        h = rms_norm(self.counter, x, layer.attn_norm)
        y = layer.attention(ctx, h, cache)
        if self.plan.tp > 1:
            y = self.comm.all_reduce(y, self.groups.tp, "comm.tp_all_reduce", ACTIVATION_BYTES)
        if layer.output_bias is not None:
            y = y + layer.output_bias
        x = x + y
        if index not in caches:
            self.scratch_slot_bytes = max(self.scratch_slot_bytes, self._cache_bytes(cache))

        h = rms_norm(self.counter, x, layer.ffn_norm)
        if isinstance(layer.ffn, MoEShard):
            y = self._moe(layer.ffn, h)
        else:
            y = layer.ffn(self.counter, h)
        if self.plan.tp > 1:
            y = self.comm.all_reduce(y, self.groups.tp, "comm.tp_all_reduce", ACTIVATION_BYTES)
        return x + y

    @staticmethod
    def _cache_bytes(cache: LayerCache) -> int:
        main = cache.main._inner if isinstance(cache.main, GatheredStore) else cache.main
        index = cache.index._inner if isinstance(cache.index, GatheredStore) else cache.index
        return _store_bytes(main) + (0 if index is None else _store_bytes(index))

    def _layer_cache(self, index: int, caches: dict[int, LayerCache], batch: int) -> LayerCache:
        """The layer's own cache, or (LayerSplit) a scratch copy of the owner's cached history."""
        if self.plan.layer_split == 1:
            return caches[index]
        src = self.groups.layer_split_ranks[self.owner_of[index]]
        own = caches.get(index)
        template = own if own is not None else self.layers[index].attention.make_cache(batch, self._capacity, self._kv_dtype)
        for store in (template.main, template.index):
            if store is not None:
                self._broadcast_store(store, src, own is not None)
        return template

    def _broadcast_store(self, store: RecordStore, src: int, is_owner: bool) -> None:
        """Copy the owner's held records of ``store`` into the receivers' empty store of the same layout."""
        count = torch.tensor([store.n_tokens if is_owner else 0], dtype=torch.int64)
        count = self.comm.broadcast_bytes(count, src, self.groups.layer_split, "meta", 8)
        n = int(count[0])
        if n == 0:
            return
        positions = store.positions if is_owner else torch.zeros(n, dtype=torch.long)
        positions = self.comm.broadcast_bytes(positions, src, self.groups.layer_split, "meta", n * 8)
        for f, parts in enumerate(store.parts):
            for i, part in enumerate(parts):
                if is_owner:
                    held = part[:, :n] if store.window is None else part
                else:
                    held = torch.empty(part.shape[0], n, *part.shape[2:], dtype=part.dtype)
                received = self.comm.broadcast_bytes(
                    held.contiguous(), src, self.groups.layer_split, "comm.layer_split_broadcast", held.numel() * held.element_size()
                )
                if is_owner:
                    continue
                if store.window is None:
                    part[:, :n] = received
                else:
                    parts[i] = received
        if not is_owner:
            store.positions = positions.clone()

    def set_run(self, capacity: int, kv_dtype: str) -> None:
        """Capacity and KV dtype of the scratch caches of this run."""
        self._capacity = capacity
        self._kv_dtype = kv_dtype

    # --- MoE token paths -------------------------------------------------------------------

    def _moe(self, moe: MoEShard, h: torch.Tensor) -> torch.Tensor:
        shape = h.shape
        flat = h.reshape(-1, shape[-1])
        mode = self.plan.resolved_ep_mode
        if mode == "none":
            top, gates = moe.route(flat)
            out = moe.shared(flat) + moe.local_experts(flat, top, gates)
        elif mode == "all_gather":
            out = self._moe_all_gather(moe, flat)
        else:
            out = self._moe_all_to_all(moe, flat)
        return out.view(shape)

    def _moe_all_gather(self, moe: MoEShard, flat: torch.Tensor) -> torch.Tensor:
        """Gather the dp ranks' tokens (padded to the largest), run local experts, reduce-scatter back."""
        per_sequence = flat.shape[0] // self.layout.batch
        rows = [b * per_sequence for b in self.batch_sizes]
        padded = max(rows)
        mine = torch.cat((flat, flat.new_zeros(padded - flat.shape[0], flat.shape[1])))
        gathered = self.comm.all_gather(mine, self.groups.ep, "comm.ep_all_gather", ACTIVATION_BYTES)
        valid = torch.cat([torch.arange(padded) < r for r in rows])
        tokens = gathered[valid]
        top, gates = moe.route(tokens)
        partial = gathered.new_zeros(gathered.shape)
        partial[valid] = moe.local_experts(tokens, top, gates)
        back = self.comm.reduce_scatter(partial, self.groups.ep, "comm.ep_reduce_scatter", ACTIVATION_BYTES)
        return back[: flat.shape[0]] + moe.shared(flat)

    def _moe_all_to_all(self, moe: MoEShard, flat: torch.Tensor) -> torch.Tensor:
        """Send one row per (token, expert) pair to the expert's rank, run the experts, send the outputs back."""
        top, gates = moe.route(flat)
        k = top.shape[1]
        token_ids = torch.arange(flat.shape[0]).repeat_interleave(k)
        experts = top.reshape(-1)
        order = torch.argsort(experts, stable=True)  # grouped by destination rank, then by expert
        token_ids, experts = token_ids[order], experts[order]
        slots = order % k
        ranks = experts // moe.n_local
        n_ranks = self.plan.ep
        send_counts = [int((ranks == r).sum()) for r in range(n_ranks)]
        per_expert = torch.bincount(experts, minlength=moe.ffn.n_routed_experts).view(n_ranks, moe.n_local)

        row_bytes = flat.shape[1] * ACTIVATION_BYTES
        received, recv_counts = self.comm.all_to_all(flat[token_ids], send_counts, self.groups.ep, "comm.ep_dispatch", row_bytes)
        # How many of each source's rows go to each of this rank's experts (bookkeeping).
        counts_in = torch.empty_like(per_expert)
        dist.all_to_all_single(counts_in, per_expert, group=self.groups.ep)
        self.comm.meta(2 * per_expert.numel() * 8)

        outputs = torch.empty_like(received)
        start = 0
        for source in range(n_ranks):
            for local_index in range(moe.n_local):
                n = int(counts_in[source, local_index])
                if n:
                    outputs[start : start + n] = moe.expert(local_index, received[start : start + n])
                start += n
        returned, _ = self.comm.all_to_all(outputs, recv_counts, self.groups.ep, "comm.ep_combine", row_bytes)

        out = moe.shared(flat)
        out.index_add_(0, token_ids, returned * gates[token_ids, slots].unsqueeze(-1))
        return out


def pass_positions(plan: ParallelPlan, layout_blocks_by_cp: list[tuple[tuple[int, int], ...]]) -> torch.Tensor:
    """Every cp rank's positions of a split prefill pass, concatenated in cp rank order."""
    ranges = [torch.arange(first, last + 1) for blocks in layout_blocks_by_cp for first, last in blocks]
    return torch.cat(ranges)


def batch_sizes(batch: int, plan: ParallelPlan) -> list[int]:
    return [dp_batch(batch, plan, d) for d in range(plan.dp)]
