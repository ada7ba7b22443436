"""Attention modules built from a LayerSpec: GQA (MHA, GQA, MQA) and MLA, with any key selection.

What each variant changes relative to plain multi-head attention:
- GQA/MQA: G < H key/value heads, each shared by H / G query heads.
- Sliding window: each query attends its last W keys (plus sink keys); the cache holds only those.
- MLA (DeepSeek-V2): one cached latent of kv_lora_rank values plus a shared rope key of
  qk_rope_head_dim values. Expanded mode up-projects the latents of the attended keys into
  per-head K and V; absorbed mode folds the key up-projection into the query and the value
  up-projection into the output, attending the latent directly as one shared KV head.
- DSA: a lightning indexer picks the top-k keys; IndexShare layers reuse the indices of the most
  recent indexer-owner layer.
- MSA: an index branch picks top-k blocks per KV group; the core attends the picked blocks.

Prefill writes a chunk's K/V into the cache first and then attends what the cache holds, so a
decode step reads exactly the values a prefill row reads.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ctxsim.counts.conventions import ACTIVATION_BYTES, INDEX_BYTES
from ctxsim.spec.dtypes import weight_bytes
from ctxsim.spec.layers import (
    DenseSelection,
    DSASelection,
    GQAAttention,
    LayerSpec,
    MLAAttention,
    MSASelection,
    WindowSelection,
)
from refmodel.basic import RunContext, init_vector, init_weight, ones, query_tiles, rms_norm, rope
from refmodel.cache import FieldLayout, RecordStore, index_fields, main_fields
from refmodel.core import attend
from refmodel.counter import activation_bytes, einsum, linear
from refmodel.selection import DSAIndexer, MSAIndexer, TileSelection, causal_mask, slots_to_mask, window_mask


@dataclass
class LayerCache:
    """The caches of one layer: main K/V (or MLA latent) records and, for indexer owners, index keys."""

    main: RecordStore
    index: RecordStore | None = None


class SelectionPlan:
    """Selection of one layer for one chunk: it hands out a TileSelection per tile of queries."""

    def __init__(self, module: "AttentionBase", ctx: RunContext, key_positions: torch.Tensor, index_chunk=None):
        self.module = module
        self.ctx = ctx
        self.key_positions = key_positions
        self.index_chunk = index_chunk
        self.owner_slots: list[torch.Tensor] = []

    @property
    def gathers(self) -> bool:
        """Whether the core gathers selected keys (sparse layers in gathered execution)."""
        return self.module.is_sparse and self.ctx.execution == "gathered"

    def tile(self, tile: slice) -> TileSelection:
        sel = self.module.sel
        q_pos = self.ctx.positions[tile]
        k_pos = self.key_positions
        counter = self.ctx.counter
        if isinstance(sel, DenseSelection):
            return TileSelection(mask=causal_mask(q_pos, k_pos)[None, None])
        if isinstance(sel, WindowSelection):
            return TileSelection(mask=window_mask(q_pos, k_pos, sel.window, sel.sink_tokens)[None, None])
        if isinstance(sel, DSASelection):
            if sel.owns_indexer:
                slots = self.module.indexer.select(counter, self.index_chunk, tile, q_pos)
                if self.ctx.share_indices:
                    self.owner_slots.append(slots[:, 0].to(torch.int32))
            else:
                slots = self.ctx.owner_indices[:, tile].unsqueeze(1).long()
            picked = slots
        else:
            picked = self.module.indexer.select(counter, self.index_chunk, tile, q_pos)
            slots = self.module.indexer.block_slots(picked, q_pos)
        if not self.gathers:
            visible = causal_mask(q_pos, k_pos)[None, None]
            return TileSelection(mask=slots_to_mask(slots, k_pos.numel()) & visible, computed=visible)
        # The gathering core reads the int32 index of every selected key (DSA) or block (MSA).
        with counter.op("attn.core"):
            if counter.enabled:
                counter.add(bytes_read=int((picked >= 0).sum()) * INDEX_BYTES)
        return TileSelection(slots=slots)

    def finish(self) -> None:
        """Publish an indexer owner's top-k so that later IndexShare layers reuse it."""
        if self.owner_slots:
            self.ctx.owner_indices = torch.cat(self.owner_slots, dim=1)


class AttentionBase(nn.Module):
    """Parts shared by GQA and MLA: the selection, the indexer and the tiled core loop."""

    def __init__(self, layer: LayerSpec, weight_dtype: str):
        super().__init__()
        self.att = layer.attention
        self.sel = layer.selection
        self.weight_dtype = weight_dtype
        self.indexer: nn.Module | None = None

    @property
    def is_sparse(self) -> bool:
        return isinstance(self.sel, (DSASelection, MSASelection))

    def _window_policy(self) -> tuple[int | None, int]:
        if isinstance(self.sel, WindowSelection):
            return self.sel.window, self.sel.sink_tokens
        return None, 0

    def make_cache(self, batch: int, capacity: int, kv_dtype: str) -> LayerCache:
        """Empty caches of ``batch`` sequences of up to ``capacity`` tokens."""
        window, sinks = self._window_policy()
        main = RecordStore(main_fields(self.att, kv_dtype), batch, capacity, window=window, sink_tokens=sinks)
        return LayerCache(main, self.make_index_store(batch, capacity, kv_dtype))

    def make_index_store(self, batch: int, capacity: int, kv_dtype: str) -> RecordStore | None:
        owns = isinstance(self.sel, MSASelection) or (isinstance(self.sel, DSASelection) and self.sel.owns_indexer)
        if not owns:
            return None
        return RecordStore(index_fields(self.sel.index_head_dim, kv_dtype), batch, capacity)

    def visible_view(self, ctx: RunContext, store: RecordStore, tensors: list[torch.Tensor]):
        """Return the held keys that some query of the chunk can attend; a window layer drops the rest.

        The chunk's queries are consecutive positions, so a window layer's visible keys are the
        band from the first query's window start to the last query, plus the sinks.
        """
        positions = store.positions
        if not isinstance(self.sel, WindowSelection):
            return positions, tensors
        in_band = (positions > ctx.first_position - self.sel.window) & (positions <= ctx.last_position)
        visible = in_band | (positions <= self.sel.sink_tokens)
        return positions[visible], [t[:, visible] for t in tensors]

    def run_core(
        self,
        ctx: RunContext,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        plan: SelectionPlan,
        scale: float,
        key_bytes: int,
        group_key_bytes: int,
        sinks: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Attend every tile of the chunk's queries; returns ``[B, C, H, Dv]``.

        ``key_bytes`` is what one key costs to load for all KV groups, ``group_key_bytes`` for one
        group. A fused dense, window or masked kernel loads each visible key once per chunk. A
        gathering kernel loads each selected entry once per query, and per KV group for MSA.
        """
        counter = ctx.counter
        batch, n_q, n_head = q.shape[:3]
        n_keys, groups = k.shape[1], k.shape[2]
        with counter.op("attn.core"):
            if counter.enabled:
                counter.add(bytes_read=activation_bytes(q), bytes_written=batch * n_q * n_head * v.shape[-1] * ACTIVATION_BYTES)
                if not plan.gathers:
                    counter.add(bytes_read=batch * n_keys * key_bytes)

        per_query = max(n_head * n_keys, groups * self._max_selected() * (q.shape[-1] + v.shape[-1]))
        if self.indexer is not None:
            per_query = max(per_query, getattr(self.sel, "index_n_heads", 1) * n_keys)
        per_query *= batch
        k_groups = k.permute(0, 2, 1, 3)  # [B, G, S, D]
        v_groups = v.permute(0, 2, 1, 3)  # [B, G, S, Dv]
        if groups > 1:
            # Several KV groups interleave in each cached row; one shared head (MQA, absorbed MLA)
            # is read in place, its rows strided by the record width.
            k_groups, v_groups = k_groups.contiguous(), v_groups.contiguous()
        outputs = []
        for tile in query_tiles(n_q, per_query):
            selection = plan.tile(tile)
            with counter.op("attn.core"):
                outputs.append(attend(counter, q[:, tile], k_groups, v_groups, selection, scale, sinks))
                if counter.enabled and selection.slots is not None:
                    entries = int((selection.slots >= 0).sum())
                    counter.add(bytes_read=entries * (key_bytes if selection.slots.shape[1] == 1 else group_key_bytes))
        plan.finish()
        return torch.cat(outputs, dim=1)

    def _max_selected(self) -> int:
        if isinstance(self.sel, DSASelection):
            return self.sel.index_topk
        if isinstance(self.sel, MSASelection):
            return self.sel.topk_blocks * self.sel.block_size
        return 1


# ---------------------------------------------------------------------------------------------
# GQA / MHA / MQA


class GQAModule(AttentionBase):
    """Grouped-query attention with full rotary embedding on every query and key head."""

    def __init__(self, layer: LayerSpec, d_model: int, weight_dtype: str, dtype: torch.dtype, generator):
        super().__init__(layer, weight_dtype)
        att: GQAAttention = self.att
        q_width = att.n_head * att.head_dim
        kv_width = att.n_kv_head * att.head_dim
        self.wq = init_weight(generator, q_width, d_model, dtype)
        self.wkv = init_weight(generator, 2 * kv_width, d_model, dtype)
        self.wo = init_weight(generator, d_model, q_width, dtype)
        self.bq = init_vector(generator, q_width, dtype) if att.qkv_bias else None
        self.bkv = init_vector(generator, 2 * kv_width, dtype) if att.qkv_bias else None
        self.bo = init_vector(generator, d_model, dtype) if att.o_bias else None
        learned_sinks = isinstance(self.sel, WindowSelection) and self.sel.learned_sinks
        self.sinks = init_vector(generator, att.n_head, dtype, scale=1.0) if learned_sinks else None
        if isinstance(self.sel, DSASelection) and self.sel.owns_indexer:
            self.indexer = DSAIndexer(self.sel, d_model, d_model, weight_dtype, dtype, generator)
        elif isinstance(self.sel, MSASelection):
            self.indexer = MSAIndexer(self.sel, d_model, weight_dtype, dtype, generator)

    def _group_record_bytes(self, store: RecordStore) -> int:
        """Bytes of one KV head's K and V in a record."""
        n_kv = self.att.n_kv_head
        return sum(FieldLayout(f.name, f.width // n_kv, f.codec).record_bytes() for f in store.fields)

    def forward(self, ctx: RunContext, h: torch.Tensor, cache: LayerCache) -> torch.Tensor:
        att: GQAAttention = self.att
        counter = ctx.counter
        batch, n_new, _ = h.shape
        with counter.op("attn.q_proj"):
            q = linear(counter, h, self.wq, self.bq, self.weight_dtype).view(batch, n_new, att.n_head, att.head_dim)
        with counter.op("attn.kv_proj"):
            kv = linear(counter, h, self.wkv, self.bkv, self.weight_dtype)
            k, v = kv.view(batch, n_new, 2, att.n_kv_head, att.head_dim).unbind(2)
        with counter.op("attn.rope"):
            q = rope(counter, q, ctx.positions)
            k = rope(counter, k, ctx.positions)
        with counter.op("attn.kv_proj"):
            # The roped K and V go to the cache; the write belongs to the op producing them.
            cache.main.append([k.flatten(2), v.flatten(2)], ctx.positions)
            counter.add(bytes_written=batch * n_new * cache.main.record_bytes)

        index_chunk = None
        if isinstance(self.indexer, MSAIndexer):
            index_chunk = self.indexer.prepare(ctx, h, cache.index)
        elif isinstance(self.indexer, DSAIndexer):
            index_chunk = self.indexer.prepare(ctx, h, h, cache.index)

        key_positions, (k_all, v_all) = self.visible_view(ctx, cache.main, cache.main.read(h.dtype))
        k_all = k_all.view(batch, -1, att.n_kv_head, att.head_dim)
        v_all = v_all.view(batch, -1, att.n_kv_head, att.head_dim)
        plan = SelectionPlan(self, ctx, key_positions, index_chunk)
        record, group_record = cache.main.record_bytes, self._group_record_bytes(cache.main)
        out = self.run_core(ctx, q, k_all, v_all, plan, att.head_dim**-0.5, record, group_record, self.sinks)
        cache.main.evict(ctx.last_position)

        with counter.op("attn.o_proj"):
            return linear(counter, out.flatten(2), self.wo, self.bo, self.weight_dtype)


# ---------------------------------------------------------------------------------------------
# MLA


class MLAModule(AttentionBase):
    """Multi-head latent attention (DeepSeek-V2/V3), in expanded or absorbed mode."""

    def __init__(self, layer: LayerSpec, d_model: int, weight_dtype: str, dtype: torch.dtype, generator):
        super().__init__(layer, weight_dtype)
        att: MLAAttention = self.att
        q_width = att.n_head * att.qk_head_dim
        if att.q_lora_rank:
            self.wq_a = init_weight(generator, att.q_lora_rank, d_model, dtype)
            self.q_norm = ones(att.q_lora_rank, dtype)
            self.wq_b = init_weight(generator, q_width, att.q_lora_rank, dtype)
        else:
            self.wq = init_weight(generator, q_width, d_model, dtype)
        self.wkv_a = init_weight(generator, att.kv_lora_rank + att.qk_rope_head_dim, d_model, dtype)
        self.kv_norm = ones(att.kv_lora_rank, dtype)
        kv_up_width = att.n_head * (att.qk_nope_head_dim + att.v_head_dim)
        self.wkv_b = init_weight(generator, kv_up_width, att.kv_lora_rank, dtype)
        self.wo = init_weight(generator, d_model, att.n_head * att.v_head_dim, dtype)
        if isinstance(self.sel, DSASelection) and self.sel.owns_indexer:
            q_in = att.q_lora_rank or d_model
            self.indexer = DSAIndexer(self.sel, d_model, q_in, weight_dtype, dtype, generator)

    def mode(self, ctx: RunContext) -> str:
        """'expanded' or 'absorbed' for this layer and phase.

        'auto' expands for prefill and absorbs for decode, except that DSA layers absorb in
        gathered prefill, where the sparse MLA kernels attend the latent as one shared KV head.
        """
        if ctx.mla_mode != "auto":
            return ctx.mla_mode
        if ctx.phase == "decode":
            return "absorbed"
        if isinstance(self.sel, DSASelection) and ctx.execution == "gathered":
            return "absorbed"
        return "expanded"

    def _split_kv_up(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Split kv_up into the key (nope) and value up-projections ``[H, nope, C]`` and ``[H, v, C]``."""
        att: MLAAttention = self.att
        w = self.wkv_b.view(att.n_head, att.qk_nope_head_dim + att.v_head_dim, att.kv_lora_rank)
        return w[:, : att.qk_nope_head_dim], w[:, att.qk_nope_head_dim :]

    def forward(self, ctx: RunContext, h: torch.Tensor, cache: LayerCache) -> torch.Tensor:
        att: MLAAttention = self.att
        counter = ctx.counter
        batch, n_new, _ = h.shape
        nope, rope_dim, rank = att.qk_nope_head_dim, att.qk_rope_head_dim, att.kv_lora_rank

        # Queries: d_model -> q_lora_rank (normed) -> per-head nope and rope parts.
        if att.q_lora_rank:
            with counter.op("attn.q_down"):
                q_latent = linear(counter, h, self.wq_a, None, self.weight_dtype)
                q_latent = rms_norm(counter, q_latent, self.q_norm, fused=True)
            with counter.op("attn.q_up"):
                q = linear(counter, q_latent, self.wq_b, None, self.weight_dtype)
        else:
            q_latent = h
            with counter.op("attn.q_proj"):
                q = linear(counter, h, self.wq, None, self.weight_dtype)
        q = q.view(batch, n_new, att.n_head, nope + rope_dim)
        q_nope, q_rope = q[..., :nope], q[..., nope:]

        # The cached record: the normed latent and the shared rope key.
        with counter.op("attn.kv_down"):
            kv = linear(counter, h, self.wkv_a, None, self.weight_dtype)
            latent = rms_norm(counter, kv[..., :rank], self.kv_norm, fused=True)
        with counter.op("attn.rope"):
            q_rope = rope(counter, q_rope, ctx.positions)
            k_rope = rope(counter, kv[..., rank:], ctx.positions)
        with counter.op("attn.kv_down"):
            if len(cache.main.fields) == 2:
                cache.main.append([latent, k_rope], ctx.positions)
            else:
                cache.main.append([torch.cat((latent, k_rope), dim=-1)], ctx.positions)
            counter.add(bytes_written=batch * n_new * cache.main.record_bytes)

        index_chunk = None
        if isinstance(self.indexer, DSAIndexer):
            index_chunk = self.indexer.prepare(ctx, h, q_latent, cache.index)

        parts = cache.main.read(h.dtype)
        key_positions, parts = self.visible_view(ctx, cache.main, parts)
        record = None
        if len(parts) == 2:
            latent_all, k_rope_all = parts
        else:
            record = parts[0]
            latent_all, k_rope_all = record[..., :rank], record[..., rank:]
        plan = SelectionPlan(self, ctx, key_positions, index_chunk)
        scale = (nope + rope_dim) ** -0.5
        if self.mode(ctx) == "expanded":
            out = self._expanded(ctx, q_nope, q_rope, latent_all, k_rope_all, plan, scale, cache.main)
        else:
            out = self._absorbed(ctx, q_nope, q_rope, latent_all, k_rope_all, plan, scale, cache.main, record)
        cache.main.evict(ctx.last_position)

        with counter.op("attn.o_proj"):
            return linear(counter, out.flatten(2), self.wo, None, self.weight_dtype)

    def _expanded(self, ctx, q_nope, q_rope, latent_all, k_rope_all, plan, scale, store):
        """Per-head K and V rebuilt from the latents of every key the chunk can attend."""
        att: MLAAttention = self.att
        counter = ctx.counter
        batch, n_keys = latent_all.shape[:2]
        expanded_bytes = att.n_head * (att.qk_nope_head_dim + att.qk_rope_head_dim + att.v_head_dim) * ACTIVATION_BYTES
        with counter.op("attn.kv_up"):
            # Reads the cached records; writes K (nope and the broadcast rope key) and V per head.
            kv = linear(
                counter, latent_all, self.wkv_b, None, self.weight_dtype,
                in_bytes=batch * n_keys * store.record_bytes, out_bytes=batch * n_keys * expanded_bytes,
            )
        kv = kv.view(batch, n_keys, att.n_head, att.qk_nope_head_dim + att.v_head_dim)
        k_rope_heads = k_rope_all.unsqueeze(2).expand(-1, -1, att.n_head, -1)
        k = torch.cat((kv[..., : att.qk_nope_head_dim], k_rope_heads), dim=-1)
        v = kv[..., att.qk_nope_head_dim :]
        q = torch.cat((q_nope, q_rope), dim=-1)
        head_bytes = expanded_bytes // att.n_head
        return self.run_core(ctx, q, k, v, plan, scale, expanded_bytes, head_bytes)

    def _absorbed(self, ctx, q_nope, q_rope, latent_all, k_rope_all, plan, scale, store, record=None):
        """Attend the latent as one shared KV head, with the up-projections folded into q and the output.

        ``record`` is the stored latent-plus-rope record when the cache keeps it as one field: the
        core then reads it in place (a view) rather than a re-concatenated copy, so a decode step
        moves the cached bytes the counts charge once, not a copy of the whole cache each step.
        """
        counter = ctx.counter
        w_uk, w_uv = self._split_kv_up()
        with counter.op("attn.q_absorb"):
            q_abs = self._head_gemm(counter, "bchn,hnk->bchk", q_nope, w_uk)
        q = torch.cat((q_abs, q_rope), dim=-1)
        if record is None:
            k = torch.cat((latent_all, k_rope_all), dim=-1).unsqueeze(2)  # [B, S, 1, C + R]
        else:
            k = record.unsqueeze(2)  # [B, S, 1, C + R], a view of the stored records
        v = latent_all.unsqueeze(2)  # [B, S, 1, C], a view: the latent is the record's first C values
        out_latent = self.run_core(ctx, q, k, v, plan, scale, store.record_bytes, store.record_bytes)
        with counter.op("attn.v_up"):
            return self._head_gemm(counter, "bchk,hvk->bchv", out_latent, w_uv)

    def _head_gemm(self, counter, equation: str, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """Apply one weight matrix per head to that head's vector, reading the weights and x."""
        y = einsum(counter, equation, x, weight)
        if counter.enabled:
            counter.add(
                bytes_read=weight_bytes(weight.numel(), self.weight_dtype) + activation_bytes(x),
                bytes_written=activation_bytes(y),
            )
        return y
