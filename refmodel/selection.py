"""Key selection: which cached keys each query attends.

Positions are 1-based and the query at position t can attend keys 1..t, itself included.

- dense: all t keys.
- window W with sinks: the last min(t, W) keys (W counts the query itself, as Hugging Face masks
  key j when t - j >= W) plus the first ``sink_tokens`` keys when they lie outside the window.
- DSA (DeepSeek-V3.2 lightning indexer): index score I(t, s) = sum_j w(t, j) ReLU(q_j(t) . k(s))
  over H_I index heads; the top min(t, k) keys of 1..t, the query itself a candidate.
- MSA (MiniMax-M3): per KV group, one index query is dotted with one shared index key. Token
  scores are max-pooled to blocks of ``block_size`` keys, and each group takes its top
  ``topk_blocks`` blocks. The init blocks and the local blocks (the block that contains the
  query and the ones before it) are forced in. While ceil(t / block_size) <= topk_blocks every
  visible block is taken.

A selection for a tile of queries is either a mask over the cache view (dense, window, and every
kind in masked execution) or per-query slot lists to gather (DSA and MSA in gathered execution).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ctxsim.counts.conventions import (
    INDEX_BYTES,
    INDEX_WEIGHT_FLOPS_PER_ELEMENT,
    POOL_FLOPS_PER_ELEMENT,
    RELU_FLOPS_PER_ELEMENT,
    SCORE_BYTES,
    TOPK_FLOPS_PER_CANDIDATE,
)
from ctxsim.spec.layers import DSASelection, MSASelection
from refmodel.basic import RunContext, init_weight
from refmodel.counter import Counter, activation_bytes, linear
from refmodel.cache import RecordStore


@dataclass
class TileSelection:
    """Keys attended by the queries of one tile.

    ``mask`` is ``[B|1, G|1, c, S]`` over the cache view; ``slots`` is ``[B, G|1, c, K]`` indices
    into the view with -1 for an empty slot. G is 1 when all KV groups share the selection.
    ``computed`` is the mask of the scores the kernel computes when that is more than it keeps:
    in masked execution every causally visible score is computed and the rest masked out.
    """

    mask: torch.Tensor | None = None
    slots: torch.Tensor | None = None
    computed: torch.Tensor | None = None

    def as_mask(self, n_keys: int) -> torch.Tensor:
        if self.mask is not None:
            return self.mask
        return slots_to_mask(self.slots, n_keys)


def causal_mask(q_pos: torch.Tensor, k_pos: torch.Tensor) -> torch.Tensor:
    """``[c, S]``: key position <= query position."""
    return k_pos.unsqueeze(0) <= q_pos.unsqueeze(1)


def window_mask(q_pos: torch.Tensor, k_pos: torch.Tensor, window: int, sink_tokens: int) -> torch.Tensor:
    """``[c, S]``: the last ``window`` keys up to the query, plus the sink keys."""
    q = q_pos.unsqueeze(1)
    k = k_pos.unsqueeze(0)
    in_window = (k <= q) & (k > q - window)
    sink = (k <= sink_tokens) & (k <= q)
    return in_window | sink


def slots_to_mask(slots: torch.Tensor, n_keys: int) -> torch.Tensor:
    """``[B, G, c, K]`` slot lists (-1 empty) to a ``[B, G, c, S]`` mask."""
    mask = torch.zeros(*slots.shape[:-1], n_keys + 1, dtype=torch.bool, device=slots.device)
    # Empty slots (-1) land in the extra last column, which is dropped.
    mask.scatter_(-1, torch.where(slots < 0, n_keys, slots), True)
    return mask[..., :n_keys]


def _topk_slots(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of the top ``k`` scores along the last dim; -1 where fewer than k are above -inf.

    Forced picks carry +inf and invisible candidates -inf. Among equal scores the most recent
    candidate (highest index) wins, so a selection does not depend on how queries are batched.
    Ties are common: a DSA key whose ReLU terms are all zero scores exactly 0. The indices come
    out in ascending order.
    """
    n = scores.shape[-1]
    k = min(k, n)
    kth = torch.kthvalue(scores, n - k + 1, dim=-1, keepdim=True).values  # k-th largest
    above = scores > kth
    tied = scores == kth
    # Fill the remaining places with the latest tied candidates.
    room = k - above.sum(dim=-1, keepdim=True)
    latest_first = tied.flip(-1).cumsum(dim=-1).flip(-1)
    chosen = (above | (tied & (latest_first <= room))) & (scores > float("-inf"))
    # Compact the chosen positions into k slots; the rest land in a spare last column.
    target = torch.where(chosen, chosen.cumsum(dim=-1) - 1, k)
    slots = torch.full((*scores.shape[:-1], k + 1), -1, dtype=torch.long, device=scores.device)
    slots.scatter_(-1, target, torch.arange(n, device=scores.device).expand_as(target))
    slots = slots[..., :k]
    return slots


# ---------------------------------------------------------------------------------------------
# DSA lightning indexer


@dataclass
class DSAChunk:
    """Indexer queries and head weights of one chunk, and the decoded index keys of its view."""

    q: torch.Tensor  # [B, C, H_I, d_I]
    weights: torch.Tensor  # [B, C, H_I], already scaled by H_I^-1/2 d_I^-1/2
    keys: torch.Tensor  # [B, S, d_I]
    key_positions: torch.Tensor  # [S]


class DSAIndexer(nn.Module):
    """Lightning indexer of DeepSeek-V3.2 (DeepSeek-V3.2-Exp inference/model.py, ``Indexer``).

    Queries come from the MLA query latent, or from the layer input when there is none. The one
    key head and the head weights come from the layer input. The H_I^-1/2 d_I^-1/2 scale that
    the released code applies to the head weights is folded into ``weights_proj``, so it costs
    nothing per token.
    NOTE: the released indexer also layer-norms the key and rotates the first qk_rope_head_dim
    values of q and k, and quantises both to fp8 after a Hadamard rotation. ctxsim.counts leaves
    the norm and rope out of the counts, so they are left out here too. The selection rule,
    top-k of ReLU-weighted scores, is unchanged.
    """

    def __init__(self, sel: DSASelection, d_model: int, q_in: int, weight_dtype: str, dtype, generator):
        super().__init__()
        self.sel = sel
        self.weight_dtype = weight_dtype
        self.wq = init_weight(generator, sel.index_n_heads * sel.index_head_dim, q_in, dtype)
        self.wk = init_weight(generator, sel.index_head_dim, d_model, dtype)
        self.weights_proj = init_weight(generator, sel.index_n_heads, d_model, dtype)
        self.weights_proj.data *= (sel.index_n_heads * sel.index_head_dim) ** -0.5

    def prepare(self, ctx: RunContext, h: torch.Tensor, q_source: torch.Tensor, store: RecordStore) -> DSAChunk:
        """Project the chunk's index queries, head weights and keys; append the keys to ``store``."""
        counter = ctx.counter
        batch, n_new, _ = h.shape
        n_heads, head_dim = self.sel.index_n_heads, self.sel.index_head_dim
        with counter.op("attn.indexer.q_proj"):
            q = linear(counter, q_source, self.wq, None, self.weight_dtype).view(batch, n_new, n_heads, head_dim)
        with counter.op("attn.indexer.k_proj"):
            k = linear(counter, h, self.wk, None, self.weight_dtype)
            store.append([k], ctx.positions)
            counter.add(bytes_written=batch * n_new * store.record_bytes)
        with counter.op("attn.indexer.weights_proj"):
            weights = linear(counter, h, self.weights_proj, None, self.weight_dtype)
        (keys,) = store.read(h.dtype)
        chunk = DSAChunk(q, weights, keys, store.positions)
        with counter.op("attn.indexer.score"):
            # The score kernel reads the queries, the head weights and every visible index key
            # once per chunk.
            if counter.enabled:
                scanned = batch * keys.shape[1] * store.record_bytes
                counter.add(bytes_read=activation_bytes(q) + activation_bytes(weights) + scanned)
        return chunk

    def select(self, counter: Counter, chunk: DSAChunk, tile: slice, q_pos: torch.Tensor) -> torch.Tensor:
        """Top-k key slots ``[B, 1, c, K]`` of the tile's queries (-1 where t < k)."""
        visible = causal_mask(q_pos, chunk.key_positions)  # [c, S]
        with counter.op("attn.indexer.score"):
            logits = torch.einsum("bchd,bsd->bchs", chunk.q[:, tile], chunk.keys)  # [B, c, H_I, S]
            scores = torch.einsum("bchs,bch->bcs", torch.relu(logits), chunk.weights[:, tile])
            scores = scores.masked_fill(~visible, float("-inf"))
            if counter.enabled:
                pairs = int(visible.sum()) * scores.shape[0]
                head_pairs = pairs * self.sel.index_n_heads
                counter.add(
                    matmul_flops=2 * self.sel.index_head_dim * head_pairs,
                    other_flops=(RELU_FLOPS_PER_ELEMENT + INDEX_WEIGHT_FLOPS_PER_ELEMENT) * head_pairs,
                    bytes_written=pairs * SCORE_BYTES,
                )
        with counter.op("attn.indexer.topk"):
            slots = _topk_slots(scores, self.sel.index_topk)
            if counter.enabled:
                pairs = int(visible.sum()) * scores.shape[0]
                counter.add(
                    other_flops=TOPK_FLOPS_PER_CANDIDATE * pairs,
                    bytes_read=pairs * SCORE_BYTES,
                    bytes_written=int((slots >= 0).sum()) * INDEX_BYTES,
                )
        return slots.unsqueeze(1)


# ---------------------------------------------------------------------------------------------
# MSA index branch


@dataclass
class MSAChunk:
    """Index queries of one chunk and the decoded index keys of its view."""

    q: torch.Tensor  # [B, C, G, d_I]
    keys: torch.Tensor  # [B, S, d_I]
    key_positions: torch.Tensor  # [S]


class MSAIndexer(nn.Module):
    """Index branch of MiniMax Sparse Attention: one index query per KV group, one shared index key."""

    def __init__(self, sel: MSASelection, d_model: int, weight_dtype: str, dtype, generator):
        super().__init__()
        self.sel = sel
        self.weight_dtype = weight_dtype
        self.wq = init_weight(generator, sel.index_n_heads * sel.index_head_dim, d_model, dtype)
        self.wk = init_weight(generator, sel.index_head_dim, d_model, dtype)

    def prepare(self, ctx: RunContext, h: torch.Tensor, store: RecordStore) -> MSAChunk:
        """Project the chunk's index queries and keys; append the keys to ``store``."""
        counter = ctx.counter
        batch, n_new, _ = h.shape
        with counter.op("attn.indexer.q_proj"):
            q = linear(counter, h, self.wq, None, self.weight_dtype)
            q = q.view(batch, n_new, self.sel.index_n_heads, self.sel.index_head_dim)
        with counter.op("attn.indexer.k_proj"):
            k = linear(counter, h, self.wk, None, self.weight_dtype)
            store.append([k], ctx.positions)
            counter.add(bytes_written=batch * n_new * store.record_bytes)
        (keys,) = store.read(h.dtype)
        with counter.op("attn.indexer.score"):
            if counter.enabled:
                scanned = batch * keys.shape[1] * store.record_bytes
                counter.add(bytes_read=activation_bytes(q) + scanned)
        return MSAChunk(q, keys, store.positions)

    def select(self, counter: Counter, chunk: MSAChunk, tile: slice, q_pos: torch.Tensor) -> torch.Tensor:
        """Pick blocks for the tile's queries: block ids ``[B, G, c, K]``, -1 for an empty pick.

        Slot s of the view holds position s + 1, because MSA layers keep every token.
        """
        sel = self.sel
        b = sel.block_size
        n_keys = chunk.keys.shape[1]
        n_blocks = -(-n_keys // b)
        batch, groups = chunk.q.shape[0], sel.index_n_heads
        visible = causal_mask(q_pos, chunk.key_positions)  # [c, S]
        pairs = int(visible.sum()) * batch * groups if counter.enabled else 0

        with counter.op("attn.indexer.score"):
            scores = torch.einsum("bcgd,bsd->bgcs", chunk.q[:, tile], chunk.keys)  # [B, G, c, S]
            scores = scores.masked_fill(~visible, float("-inf"))
            counter.add(matmul_flops=2 * sel.index_head_dim * pairs, bytes_written=pairs * SCORE_BYTES)

        with counter.op("attn.indexer.pool"):
            padded = torch.nn.functional.pad(scores, (0, n_blocks * b - n_keys), value=float("-inf"))
            pooled = padded.view(*scores.shape[:-1], n_blocks, b).amax(dim=-1)  # [B, G, c, nb]
            q_block = (q_pos - 1) // b  # [c]
            block_ids = torch.arange(n_blocks)
            seen = block_ids.unsqueeze(0) <= q_block.unsqueeze(1)  # [c, nb]
            forced = (block_ids.unsqueeze(0) < sel.init_blocks) | (
                block_ids.unsqueeze(0) > q_block.unsqueeze(1) - sel.local_blocks
            )
            pooled = pooled.masked_fill(forced & seen, float("inf")).masked_fill(~seen, float("-inf"))
            n_seen = int(seen.sum()) * batch * groups if counter.enabled else 0
            counter.add(
                other_flops=POOL_FLOPS_PER_ELEMENT * pairs,
                bytes_read=pairs * SCORE_BYTES,
                bytes_written=n_seen * SCORE_BYTES,
            )

        with counter.op("attn.indexer.topk"):
            picks = _topk_slots(pooled, sel.topk_blocks)
            counter.add(
                other_flops=TOPK_FLOPS_PER_CANDIDATE * n_seen,
                bytes_read=n_seen * SCORE_BYTES,
                bytes_written=int((picks >= 0).sum()) * INDEX_BYTES if counter.enabled else 0,
            )
        return picks

    def block_slots(self, picks: torch.Tensor, q_pos: torch.Tensor) -> torch.Tensor:
        """Token slots ``[B, G, c, K * block_size]`` of picked blocks, -1 past the query or empty."""
        b = self.sel.block_size
        slots = picks.unsqueeze(-1) * b + torch.arange(b)
        causal = slots <= (q_pos - 1).view(1, 1, -1, 1, 1)
        slots = torch.where((picks.unsqueeze(-1) >= 0) & causal, slots, -1)
        return slots.flatten(-2)
