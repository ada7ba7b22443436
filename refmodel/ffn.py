"""Feed-forward modules built from a LayerSpec: dense MLP and mixture of experts.

Gated layers run SwiGLU: down(silu(gate(x)) * up(x)); ungated layers run down(gelu(up(x))).
The MoE router takes the top-k logits per token and weights the chosen experts by a softmax over
those k logits (Mixtral, gpt-oss); shared experts run on every token.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ctxsim.counts.conventions import (
    ACT_FLOPS_PER_ELEMENT,
    GATED_ACT_FLOPS_PER_ELEMENT,
    INDEX_BYTES,
    SCORE_BYTES,
    TOPK_FLOPS_PER_CANDIDATE,
)
from ctxsim.spec.dtypes import weight_bytes
from ctxsim.spec.layers import DenseFFN, MoEFFN
from refmodel.basic import init_vector, init_weight
from refmodel.counter import Counter, activation_bytes, linear


def _activate(gated: bool, hidden: torch.Tensor) -> torch.Tensor:
    if gated:
        gate, up = hidden.chunk(2, dim=-1)
        return F.silu(gate) * up
    return F.gelu(hidden)


def _act_flops(gated: bool) -> int:
    return GATED_ACT_FLOPS_PER_ELEMENT if gated else ACT_FLOPS_PER_ELEMENT


class DenseMLP(nn.Module):
    def __init__(self, ffn: DenseFFN, d_model: int, weight_dtype: str, dtype: torch.dtype, generator):
        super().__init__()
        self.ffn = ffn
        self.weight_dtype = weight_dtype
        up_width = 2 * ffn.intermediate_size if ffn.gated else ffn.intermediate_size
        self.w_up = init_weight(generator, up_width, d_model, dtype)
        self.w_down = init_weight(generator, d_model, ffn.intermediate_size, dtype)

    def forward(self, counter: Counter, x: torch.Tensor) -> torch.Tensor:
        with counter.op("ffn.up"):
            hidden = linear(counter, x, self.w_up, None, self.weight_dtype)
        with counter.op("ffn.act"):
            act = _activate(self.ffn.gated, hidden)
            counter.add(
                other_flops=_act_flops(self.ffn.gated) * act.numel(),
                bytes_read=activation_bytes(hidden),
                bytes_written=activation_bytes(act),
            )
        with counter.op("ffn.down"):
            return linear(counter, act, self.w_down, None, self.weight_dtype)


class _Experts(nn.Module):
    """``n`` MLPs of one width, stored as stacked up and down weights."""

    def __init__(self, n: int, width: int, gated: bool, d_model: int, dtype: torch.dtype, generator):
        super().__init__()
        self.gated = gated
        up_width = 2 * width if gated else width
        self.w_up = nn.Parameter(
            torch.stack([init_weight(generator, up_width, d_model, dtype) for _ in range(n)]), requires_grad=False
        )
        self.w_down = nn.Parameter(
            torch.stack([init_weight(generator, d_model, width, dtype) for _ in range(n)]), requires_grad=False
        )

    def params_per_expert(self) -> int:
        return self.w_up[0].numel() + self.w_down[0].numel()

    def run(self, counter: Counter, e: int, x: torch.Tensor) -> torch.Tensor:
        """Expert ``e`` on ``x`` ``[T, d]``; charges its matmul and activation FLOPs (no bytes)."""
        hidden = x @ self.w_up[e].T
        act = _activate(self.gated, hidden)
        y = act @ self.w_down[e].T
        if counter.enabled:
            rows = x.shape[0]
            matmul = 2 * rows * (self.w_up[e].numel() + self.w_down[e].numel())
            counter.add(matmul_flops=matmul, other_flops=_act_flops(self.gated) * act.numel())
        return y


class MoE(nn.Module):
    def __init__(self, ffn: MoEFFN, d_model: int, weight_dtype: str, expert_dtype: str, dtype: torch.dtype, generator):
        super().__init__()
        self.ffn = ffn
        self.weight_dtype = weight_dtype
        self.expert_dtype = expert_dtype
        self.w_router = init_weight(generator, ffn.n_routed_experts, d_model, dtype)
        self.b_router = init_vector(generator, ffn.n_routed_experts, dtype) if ffn.router_bias else None
        self.experts = _Experts(ffn.n_routed_experts, ffn.moe_intermediate_size, ffn.gated, d_model, dtype, generator)
        self.shared = None
        if ffn.n_shared_experts:
            width = ffn.n_shared_experts * ffn.shared_width
            self.shared = _Experts(1, width, ffn.gated, d_model, dtype, generator)

    def forward(self, counter: Counter, x: torch.Tensor) -> torch.Tensor:
        ffn = self.ffn
        shape = x.shape
        flat = x.reshape(-1, shape[-1])  # [T, d]
        k = ffn.experts_per_token

        with counter.op("moe.router"):
            logits = linear(counter, flat, self.w_router, self.b_router, self.weight_dtype)
            # Router logits are written in fp32, not in the bf16 activation dtype.
            counter.add(bytes_written=logits.numel() * SCORE_BYTES - activation_bytes(logits))
        with counter.op("moe.topk"):
            top_logits, top_experts = torch.topk(logits, k, dim=-1)  # [T, k]
            # NOTE: the softmax over the k chosen logits (k values per token) is not counted;
            # ctxsim.counts charges top-k one comparison per candidate and nothing else.
            gates = torch.softmax(top_logits, dim=-1)
            counter.add(
                other_flops=TOPK_FLOPS_PER_CANDIDATE * logits.numel(),
                bytes_read=logits.numel() * SCORE_BYTES,
                bytes_written=top_experts.numel() * INDEX_BYTES + gates.numel() * SCORE_BYTES,
            )

        out = torch.zeros_like(flat)
        if self.shared is not None:
            with counter.op("moe.shared"):
                out = out + self.shared.run(counter, 0, flat)
                counter.add(
                    bytes_read=weight_bytes(self.shared.params_per_expert(), self.weight_dtype) + activation_bytes(flat),
                    bytes_written=activation_bytes(flat),
                )

        with counter.op("moe.experts"):
            touched = torch.unique(top_experts).tolist()
            for e in touched:
                token_ids, slot = torch.nonzero(top_experts == e, as_tuple=True)
                y = self.experts.run(counter, e, flat[token_ids])
                weighted = y * gates[token_ids, slot].unsqueeze(-1)
                out.index_add_(0, token_ids, weighted)
                # The gate-weighted sum: one multiply and one add per output element.
                counter.add(other_flops=2 * weighted.numel())
            expert_bytes = weight_bytes(self.experts.params_per_expert(), self.expert_dtype)
            routing = top_experts.numel() * INDEX_BYTES + gates.numel() * SCORE_BYTES
            counter.add(
                bytes_read=len(touched) * expert_bytes + activation_bytes(flat) + routing,
                bytes_written=activation_bytes(flat),
            )
            counter.add_extra("experts_touched", len(touched))
            counter.add_extra("expert_weight_bytes_read", len(touched) * expert_bytes)
        return out.view(shape)
