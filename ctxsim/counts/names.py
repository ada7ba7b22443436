"""Op names and kinds, shared by the analytic counts and the reference model's counters.

The reference model labels its regions with these names, so a name here is a contract: the two
sides are compared op by op. docs/methodology.md describes what each op counts.
"""

from __future__ import annotations

# Op name -> op kind, in the order the ops run inside a forward pass.
OP_KIND: dict[str, str] = {
    "embed": "gather",
    # Attention half of a layer.
    "attn.norm": "elementwise",
    "attn.q_proj": "gemm",  # GQA query, or MLA query without q_lora_rank
    "attn.kv_proj": "gemm",  # GQA key and value together; appends K/V to the cache
    "attn.q_down": "gemm",  # MLA d_model -> q_lora_rank (with its RMSNorm)
    "attn.q_up": "gemm",  # MLA q_lora_rank -> per-head query
    "attn.kv_down": "gemm",  # MLA d_model -> latent + rope key (with its RMSNorm); appends the latent
    "attn.kv_up": "gemm",  # MLA expanded mode: latent -> per-head K (nope) and V
    "attn.q_absorb": "gemm",  # MLA absorbed mode: per-head q_nope -> latent space
    "attn.rope": "elementwise",
    "attn.indexer.q_proj": "gemm",
    "attn.indexer.k_proj": "gemm",  # appends the index key to the indexer cache
    "attn.indexer.weights_proj": "gemm",  # DSA only
    "attn.indexer.score": "attention",
    "attn.indexer.pool": "elementwise",  # MSA only: max-pool token scores to blocks
    "attn.indexer.topk": "select",
    "attn.core": "attention",  # QK^T and PV (matmul) plus softmax (other)
    "attn.v_up": "gemm",  # MLA absorbed mode: latent output -> per-head V
    "attn.o_proj": "gemm",
    "attn.residual": "elementwise",
    # FFN half of a layer.
    "ffn.norm": "elementwise",
    "ffn.up": "gemm",  # gate and up together when gated
    "ffn.act": "elementwise",
    "ffn.down": "gemm",
    "moe.router": "gemm",
    "moe.topk": "select",
    "moe.shared": "gemm",
    "moe.experts": "gemm",
    "ffn.residual": "elementwise",
    # After the last layer.
    "final_norm": "elementwise",
    "lm_head": "gemm",
}

OP_NAMES: tuple[str, ...] = tuple(OP_KIND)

# Ops that belong to the model as a whole rather than to a layer kind.
MODEL_OPS: tuple[str, ...] = ("embed", "final_norm", "lm_head")
