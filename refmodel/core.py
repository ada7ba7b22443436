"""The attention core, softmax(Q K^T * scale) V, over masked or gathered keys.

Query head h uses KV group h // (H / G), as GQA does. The core runs one tile of queries at a time
and is charged per (query, head, key) pair it computes: 2 (D + Dv) matmul FLOPs and
SOFTMAX_FLOPS_PER_SCORE other FLOPs each. That is the pairs the selection keeps, except in
masked execution, where every causally visible pair is computed and the unselected ones masked. A learned sink adds one logit per (query, head) to the
softmax, charged as one more score.
"""

from __future__ import annotations

import torch

from ctxsim.counts.conventions import SOFTMAX_FLOPS_PER_SCORE
from refmodel.counter import Counter
from refmodel.selection import TileSelection


def _softmax_with_sinks(scores: torch.Tensor, sinks: torch.Tensor | None) -> torch.Tensor:
    """Softmax over the last dim; ``sinks`` ``[G, r]`` adds one logit per head to the denominator."""
    if sinks is None:
        probs = torch.softmax(scores, dim=-1)
    else:
        sink = sinks.view(1, *sinks.shape, 1, 1).expand(*scores.shape[:-1], 1)
        probs = torch.softmax(torch.cat((scores, sink), dim=-1), dim=-1)[..., :-1]
    # A query row with no key at all (never the case for causal attention) would be all NaN.
    return torch.nan_to_num(probs, nan=0.0)


def attend(
    counter: Counter,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    selection: TileSelection,
    scale: float,
    sinks: torch.Tensor | None = None,
) -> torch.Tensor:
    """Attention of one tile: q ``[B, c, H, D]``, k ``[B, G, S, D]``, v ``[B, G, S, Dv]`` -> ``[B, c, H, Dv]``."""
    batch, n_q, n_head, _ = q.shape
    groups, n_keys = k.shape[1], k.shape[2]
    rep = n_head // groups
    qg = q.view(batch, n_q, groups, rep, -1).permute(0, 2, 3, 1, 4)  # [B, G, r, c, D]
    head_sinks = None if sinks is None else sinks.view(groups, rep)

    if selection.slots is None:
        mask = selection.mask.unsqueeze(2)  # [B|1, G|1, 1, c, S]
        scores = torch.einsum("bgrcd,bgsd->bgrcs", qg, k) * scale
        scores = scores.masked_fill(~mask, float("-inf"))
        probs = _softmax_with_sinks(scores, head_sinks)
        out = torch.einsum("bgrcs,bgse->bgrce", probs, v)
        computed = selection.mask if selection.computed is None else selection.computed
        valid = computed.expand(batch, groups, n_q, -1)
    else:
        slots = selection.slots.expand(batch, groups, n_q, -1)  # [B, G, c, K]
        n_sel = slots.shape[-1]
        # Rows of the flattened [B * G * S, D] keys: one index_select per tile.
        first_row = torch.arange(batch * groups, device=slots.device).view(batch, groups, 1, 1) * n_keys
        rows = (slots.clamp(min=0) + first_row).reshape(-1)
        k_sel = k.reshape(-1, k.shape[-1]).index_select(0, rows).view(batch, groups, n_q, n_sel, -1)
        v_sel = v.reshape(-1, v.shape[-1]).index_select(0, rows).view(batch, groups, n_q, n_sel, -1)
        valid = slots >= 0
        scores = torch.einsum("bgrcd,bgckd->bgrck", qg, k_sel) * scale
        scores = scores.masked_fill(~valid.unsqueeze(2), float("-inf"))
        probs = _softmax_with_sinks(scores, head_sinks)
        out = torch.einsum("bgrck,bgcke->bgrce", probs, v_sel)

    if counter.enabled:
        head_pairs = int(valid.sum()) * rep
        sink_scores = batch * n_q * n_head if sinks is not None else 0
        counter.add(
            matmul_flops=2 * (q.shape[-1] + v.shape[-1]) * head_pairs,
            other_flops=SOFTMAX_FLOPS_PER_SCORE * (head_pairs + sink_scores),
        )
    return out.permute(0, 3, 1, 2, 4).reshape(batch, n_q, n_head, -1)
