"""Per-rank shards of a RefModel's weights, cut the way ``ctxsim.counts.parallel`` counts them.

Attention and dense MLP shards are the single-process modules (``refmodel.attention``,
``refmodel.ffn``) built from the tp-sharded LayerSpec of ``ctxsim.counts.parallel.shard_layer``,
with their weights copied from the full model's slices, so the per-rank run executes the same
code as the single-process run:

- GQA: the rank's query heads (rows of wq, columns of wo), its KV heads (rows of the K and V
  halves of wkv; one replicated head when tp > n_kv_head), their biases and sinks. The output
  bias is taken out of the module and added once after the all-reduce.
- MLA: the rank's heads in wq_b (or wq), wkv_b and wo; the down-projections, their norms and
  the DSA indexer replicated.
- MSA: the index-query heads of the rank's KV groups; the shared index key replicated.
- Dense MLP: the rank's slice of the hidden units (gate and up rows, down columns).

The MoE layer is ``MoEShard``: the router replicated, the rank's routed experts (an ep share,
each cut to its moe_tp slice of hidden units) and its tp slice of the shared experts.
"""

from __future__ import annotations

import torch
from torch import nn

from ctxsim.counts.parallel import shard_layer
from ctxsim.spec.layers import GQAAttention, LayerSpec, MLAAttention, MoEFFN, MSASelection
from ctxsim.spec.plan import ParallelPlan
from refmodel.ffn import DenseMLP, _activate


def _set(module: nn.Module, name: str, value: torch.Tensor | None) -> None:
    """Replace parameter ``name`` of ``module`` with ``value`` (same shape), or drop it when None."""
    if value is None:
        setattr(module, name, None)
        return
    current = getattr(module, name)
    assert current is not None and current.shape == value.shape, (name, None if current is None else current.shape, value.shape)
    setattr(module, name, nn.Parameter(value.detach().clone(), requires_grad=False))


def _head_rows(weight: torch.Tensor, heads: list[int], width: int) -> torch.Tensor:
    """Rows of ``weight`` (or entries of a vector) that belong to ``heads``, each ``width`` rows."""
    return torch.cat([weight[h * width : (h + 1) * width] for h in heads], dim=0)


def _head_cols(weight: torch.Tensor, heads: list[int], width: int) -> torch.Tensor:
    return torch.cat([weight[:, h * width : (h + 1) * width] for h in heads], dim=1)


def local_heads(n_head: int, tp: int, tp_rank: int) -> list[int]:
    per_rank = n_head // tp
    return list(range(tp_rank * per_rank, (tp_rank + 1) * per_rank))


def local_kv_heads(n_kv_head: int, tp: int, tp_rank: int) -> list[int]:
    """KV heads of a rank: its n_kv_head / tp heads, or the one head it shares with tp / n_kv_head ranks."""
    if tp <= n_kv_head:
        return local_heads(n_kv_head, tp, tp_rank)
    return [tp_rank // (tp // n_kv_head)]


def _new_module(full: nn.Module, local: LayerSpec, d_model: int) -> nn.Module:
    generator = torch.Generator().manual_seed(0)
    dtype = full.wo.dtype
    return type(full)(local, d_model, full.weight_dtype, dtype, generator)


def shard_gqa(full: nn.Module, layer: LayerSpec, plan: ParallelPlan, tp_rank: int, d_model: int):
    """Return the rank's GQA module and the output bias to add after the all-reduce (or None)."""
    att: GQAAttention = layer.attention
    module = _new_module(full, shard_layer(layer, plan), d_model)
    heads = local_heads(att.n_head, plan.tp, tp_rank)
    kv_heads = local_kv_heads(att.n_kv_head, plan.tp, tp_rank)
    hd = att.head_dim
    half = att.n_kv_head * hd

    def kv_rows(weight: torch.Tensor) -> torch.Tensor:
        return torch.cat((_head_rows(weight[:half], kv_heads, hd), _head_rows(weight[half:], kv_heads, hd)), dim=0)

    _set(module, "wq", _head_rows(full.wq, heads, hd))
    _set(module, "wkv", kv_rows(full.wkv))
    _set(module, "wo", _head_cols(full.wo, heads, hd))
    if full.bq is not None:
        _set(module, "bq", _head_rows(full.bq, heads, hd))
        _set(module, "bkv", kv_rows(full.bkv))
    if full.sinks is not None:
        _set(module, "sinks", full.sinks[heads])
    if isinstance(layer.selection, MSASelection):
        width = layer.selection.index_head_dim
        _set(module.indexer, "wq", _head_rows(full.indexer.wq, kv_heads, width))
        _set(module.indexer, "wk", full.indexer.wk)
    elif full.indexer is not None:
        module.indexer.load_state_dict(full.indexer.state_dict())
    output_bias = None if full.bo is None else full.bo.detach().clone()
    module.bo = None
    return module, output_bias


def shard_mla(full: nn.Module, layer: LayerSpec, plan: ParallelPlan, tp_rank: int, d_model: int) -> nn.Module:
    att: MLAAttention = layer.attention
    module = _new_module(full, shard_layer(layer, plan), d_model)
    heads = local_heads(att.n_head, plan.tp, tp_rank)
    if att.q_lora_rank:
        _set(module, "wq_a", full.wq_a)
        _set(module, "q_norm", full.q_norm)
        _set(module, "wq_b", _head_rows(full.wq_b, heads, att.qk_head_dim))
    else:
        _set(module, "wq", _head_rows(full.wq, heads, att.qk_head_dim))
    _set(module, "wkv_a", full.wkv_a)
    _set(module, "kv_norm", full.kv_norm)
    _set(module, "wkv_b", _head_rows(full.wkv_b, heads, att.qk_nope_head_dim + att.v_head_dim))
    _set(module, "wo", _head_cols(full.wo, heads, att.v_head_dim))
    if full.indexer is not None:
        module.indexer.load_state_dict(full.indexer.state_dict())
    return module


def shard_attention(full: nn.Module, layer: LayerSpec, plan: ParallelPlan, tp_rank: int, d_model: int):
    """Return the rank's attention module and the output bias to add after the all-reduce."""
    if isinstance(layer.attention, GQAAttention):
        return shard_gqa(full, layer, plan, tp_rank, d_model)
    return shard_mla(full, layer, plan, tp_rank, d_model), None


def hidden_slice(up: torch.Tensor, down: torch.Tensor, gated: bool, parts: int, index: int):
    """Up rows ``[(2)I, d]`` and down columns ``[d, I]`` of slice ``index`` of ``parts`` equal hidden-unit slices."""
    width = down.shape[-1]
    size = width // parts
    cols = slice(index * size, (index + 1) * size)
    if gated:
        local_up = torch.cat((up[cols], up[width + cols.start : width + cols.stop]), dim=0)
    else:
        local_up = up[cols]
    return local_up, down[:, cols]


def shard_dense(full: DenseMLP, layer: LayerSpec, plan: ParallelPlan, tp_rank: int, d_model: int) -> DenseMLP:
    module = DenseMLP(shard_layer(layer, plan).ffn, d_model, full.weight_dtype, full.w_up.dtype, torch.Generator().manual_seed(0))
    up, down = hidden_slice(full.w_up, full.w_down, layer.ffn.gated, plan.tp, tp_rank)
    _set(module, "w_up", up)
    _set(module, "w_down", down)
    return module


class MoEShard(nn.Module):
    """One rank's part of a MoE layer: the router, its routed experts' slices and its shared-expert slice.

    ``experts`` are the global expert ids it holds; their hidden units are slice ``moe_tp_rank``
    of ``moe_tp``. The shared experts are cut by tp, because the tp ranks share their tokens.
    """

    def __init__(self, full: nn.Module, ffn: MoEFFN, plan: ParallelPlan, ep_rank: int, moe_tp_rank: int, tp_rank: int):
        super().__init__()
        self.ffn = ffn
        self.weight_dtype = full.weight_dtype
        self.expert_dtype = full.expert_dtype
        self.w_router = nn.Parameter(full.w_router.detach().clone(), requires_grad=False)
        self.b_router = None if full.b_router is None else nn.Parameter(full.b_router.detach().clone(), requires_grad=False)
        per_rank = ffn.n_routed_experts // plan.ep
        self.first_expert = ep_rank * per_rank
        self.n_local = per_rank
        ups, downs = [], []
        for e in range(self.first_expert, self.first_expert + per_rank):
            up, down = hidden_slice(full.experts.w_up[e], full.experts.w_down[e], ffn.gated, plan.moe_tp, moe_tp_rank)
            ups.append(up)
            downs.append(down)
        self.expert_up = nn.Parameter(torch.stack(ups), requires_grad=False)
        self.expert_down = nn.Parameter(torch.stack(downs), requires_grad=False)
        self.shared_up = self.shared_down = None
        if full.shared is not None:
            up, down = hidden_slice(full.shared.w_up[0], full.shared.w_down[0], ffn.gated, plan.tp, tp_rank)
            self.shared_up = nn.Parameter(up.clone(), requires_grad=False)
            self.shared_down = nn.Parameter(down.clone(), requires_grad=False)

    def route(self, flat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Top-k expert ids ``[T, k]`` and their gate weights (softmax over the k chosen logits)."""
        logits = torch.nn.functional.linear(flat, self.w_router, self.b_router)
        top_logits, top_experts = torch.topk(logits, self.ffn.experts_per_token, dim=-1)
        return top_experts, torch.softmax(top_logits, dim=-1)

    def expert(self, local_index: int, x: torch.Tensor) -> torch.Tensor:
        hidden = x @ self.expert_up[local_index].T
        return _activate(self.ffn.gated, hidden) @ self.expert_down[local_index].T

    def shared(self, flat: torch.Tensor) -> torch.Tensor:
        if self.shared_up is None:
            return torch.zeros_like(flat)
        return _activate(self.ffn.gated, flat @ self.shared_up.T) @ self.shared_down.T

    def local_experts(self, flat: torch.Tensor, top_experts: torch.Tensor, gates: torch.Tensor) -> torch.Tensor:
        """Gate-weighted sum of this rank's experts (its slices) over the tokens routed to them."""
        out = torch.zeros_like(flat)
        for local_index in range(self.n_local):
            token_ids, slot = torch.nonzero(top_experts == self.first_expert + local_index, as_tuple=True)
            if token_ids.numel():
                y = self.expert(local_index, flat[token_ids])
                out.index_add_(0, token_ids, y * gates[token_ids, slot].unsqueeze(-1))
        return out
