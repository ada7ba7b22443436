"""Parts of one transformer layer: attention projections, key selection, and the FFN.

Shape names follow the field's notation: ``n_head`` query heads, ``n_kv_head`` key/value heads,
``head_dim`` per-head width, and for MLA ``q_lora_rank``, ``kv_lora_rank``, ``qk_nope_head_dim``,
``qk_rope_head_dim``, ``v_head_dim``.
"""

from __future__ import annotations

from typing import Annotated, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ctxsim.spec.dtypes import index_key_bytes, mla_record_bytes, plain_record_bytes

PositiveInt = Annotated[int, Field(gt=0, strict=True)]
NonNegativeInt = Annotated[int, Field(ge=0, strict=True)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# ---------------------------------------------------------------------------------------------
# Attention projections and the shape of the main cache


class GQAAttention(_Strict):
    """Multi-head attention with grouped KV heads: MHA (n_kv_head = n_head), GQA, or MQA (1)."""

    kind: Literal["gqa"] = "gqa"
    n_head: PositiveInt = Field(description="Query heads per layer.")
    n_kv_head: PositiveInt = Field(description="Key/value heads per layer; 1 is MQA, n_head is MHA.")
    head_dim: PositiveInt = Field(description="Width of one query, key or value head.")
    qkv_bias: bool = Field(False, description="Whether the q, k and v projections have biases.")
    o_bias: bool = Field(False, description="Whether the output projection has a bias (gpt-oss).")

    @model_validator(mode="after")
    def _kv_heads_divide_heads(self) -> "GQAAttention":
        if self.n_head % self.n_kv_head != 0:
            raise ValueError(
                f"n_head {self.n_head} is not divisible by n_kv_head {self.n_kv_head}: "
                "use an n_kv_head that divides n_head"
            )
        return self

    @property
    def variant(self) -> str:
        """Name of the head layout: MHA, GQA or MQA."""
        if self.n_kv_head == self.n_head:
            return "MHA"
        if self.n_kv_head == 1:
            return "MQA"
        return "GQA"

    @property
    def n_rep(self) -> int:
        """Query heads per KV head."""
        return self.n_head // self.n_kv_head

    @property
    def qk_head_dim(self) -> int:
        return self.head_dim

    @property
    def v_dim(self) -> int:
        return self.head_dim

    @property
    def cache_elements_per_token(self) -> int:
        """Values cached per token per layer: one K and one V vector per KV head."""
        return 2 * self.n_kv_head * self.head_dim

    def cache_record_bytes(self, kv_dtype: str) -> int:
        if kv_dtype == "fp8_ds_mla":
            raise ValueError("kv dtype 'fp8_ds_mla' applies to MLA layers only: use 'fp8' for GQA layers")
        return plain_record_bytes(self.cache_elements_per_token, kv_dtype)

    def n_params(self, d_model: int) -> int:
        q = d_model * self.n_head * self.head_dim
        kv = 2 * d_model * self.n_kv_head * self.head_dim
        o = self.n_head * self.head_dim * d_model
        bias = (self.n_head + 2 * self.n_kv_head) * self.head_dim if self.qkv_bias else 0
        o_bias = d_model if self.o_bias else 0
        return q + kv + o + bias + o_bias


class MLAAttention(_Strict):
    """Multi-head latent attention (DeepSeek-V2): one cached latent of kv_lora_rank + qk_rope_head_dim."""

    kind: Literal["mla"] = "mla"
    n_head: PositiveInt = Field(description="Query heads per layer.")
    q_lora_rank: PositiveInt | None = Field(
        description="Rank of the low-rank query projection; null projects queries directly from d_model."
    )
    kv_lora_rank: PositiveInt = Field(description="Width of the cached KV latent.")
    qk_nope_head_dim: PositiveInt = Field(description="Per-head query/key width without rotary embedding.")
    qk_rope_head_dim: PositiveInt = Field(description="Width of the decoupled rotary key, shared by all heads.")
    v_head_dim: PositiveInt = Field(description="Per-head value width.")

    variant: Literal["MLA"] = "MLA"

    @property
    def n_kv_head(self) -> int:
        """The latent is one shared KV head (absorbed mode attends it as MQA)."""
        return 1

    @property
    def qk_head_dim(self) -> int:
        return self.qk_nope_head_dim + self.qk_rope_head_dim

    @property
    def v_dim(self) -> int:
        return self.v_head_dim

    @property
    def cache_elements_per_token(self) -> int:
        return self.kv_lora_rank + self.qk_rope_head_dim

    def cache_record_bytes(self, kv_dtype: str) -> int:
        return mla_record_bytes(self.kv_lora_rank, self.qk_rope_head_dim, kv_dtype)

    def n_params(self, d_model: int) -> int:
        if self.q_lora_rank is None:
            q = d_model * self.n_head * self.qk_head_dim
        else:
            q = d_model * self.q_lora_rank + self.q_lora_rank * self.n_head * self.qk_head_dim
        kv_down = d_model * (self.kv_lora_rank + self.qk_rope_head_dim)
        kv_up = self.kv_lora_rank * self.n_head * (self.qk_nope_head_dim + self.v_head_dim)
        o = self.n_head * self.v_head_dim * d_model
        return q + kv_down + kv_up + o


Attention = Annotated[Union[GQAAttention, MLAAttention], Field(discriminator="kind")]


# ---------------------------------------------------------------------------------------------
# Key selection: which cached keys each query attends


class DenseSelection(_Strict):
    """Full causal attention: query t attends keys 1..t."""

    kind: Literal["dense"] = "dense"


class WindowSelection(_Strict):
    """Sliding-window attention: query t attends the last ``window`` keys (itself included).

    NOTE: ``window`` counts the query itself, as Hugging Face masks (key j is kept when t - j < W);
    vLLM's ``window_left`` is W - 1 for the same layer.
    """

    kind: Literal["window"] = "window"
    window: PositiveInt = Field(description="Keys a query attends, itself included.")
    sink_tokens: NonNegativeInt = Field(
        0, description="Initial tokens always kept in the window's cache and attended (StreamingLLM sinks)."
    )
    learned_sinks: bool = Field(
        False, description="A learned per-head sink logit in the softmax denominator (gpt-oss); no cache."
    )


class DSASelection(_Strict):
    """DeepSeek Sparse Attention: a lightning indexer scores all keys; the core attends the top-k.

    A layer either owns its indexer (``indexer: owner``) or reuses the top-k indices of the most
    recent owner layer (``indexer: shared``, GLM-5.2 IndexShare), in which case it has no indexer
    weights, no indexer work and no indexer cache.
    """

    kind: Literal["dsa"] = "dsa"
    index_n_heads: PositiveInt = Field(description="Indexer query heads (H_I).")
    index_head_dim: PositiveInt = Field(description="Indexer head width (d_I); also the cached index key width.")
    index_topk: PositiveInt = Field(description="Keys each query attends (k); min(t, k) at position t.")
    indexer: Literal["owner", "shared"] = Field(
        "owner", description="'owner' runs its own indexer; 'shared' reuses the last owner's top-k (IndexShare)."
    )

    @property
    def owns_indexer(self) -> bool:
        return self.indexer == "owner"


class MSASelection(_Strict):
    """MiniMax Sparse Attention: per-group block top-k over KV blocks, picked by an index branch.

    The index branch has one index-query head per KV group and one shared index-key head. Token
    scores are max-pooled to blocks of ``block_size`` keys; each group picks ``topk_blocks`` blocks,
    among them ``init_blocks`` forced initial blocks and ``local_blocks`` forced most recent blocks
    (the local block holds the query).
    """

    kind: Literal["msa"] = "msa"
    block_size: PositiveInt = Field(description="Keys per KV block.")
    topk_blocks: PositiveInt = Field(description="Blocks each query attends per KV group, forced blocks included.")
    index_n_heads: PositiveInt = Field(description="Index-query heads; one per KV group.")
    index_head_dim: PositiveInt = Field(description="Index head width; also the cached index key width.")
    init_blocks: NonNegativeInt = Field(1, description="Initial blocks always selected.")
    local_blocks: NonNegativeInt = Field(1, description="Most recent blocks always selected (the query's own).")

    @model_validator(mode="after")
    def _forced_blocks_fit(self) -> "MSASelection":
        if self.init_blocks + self.local_blocks > self.topk_blocks:
            raise ValueError(
                f"init_blocks {self.init_blocks} + local_blocks {self.local_blocks} exceed topk_blocks "
                f"{self.topk_blocks}: raise topk_blocks or force fewer blocks"
            )
        return self

    @property
    def topk_tokens(self) -> int:
        return self.topk_blocks * self.block_size


Selection = Annotated[
    Union[DenseSelection, WindowSelection, DSASelection, MSASelection], Field(discriminator="kind")
]


# ---------------------------------------------------------------------------------------------
# Feed-forward part


class DenseFFN(_Strict):
    """Dense MLP; gated (SwiGLU: gate, up and down matrices) unless ``gated`` is false."""

    kind: Literal["dense"] = "dense"
    intermediate_size: PositiveInt = Field(description="Hidden width of the MLP.")
    gated: bool = Field(True, description="Gated MLP (gate and up projections) as in SwiGLU/GeGLU.")

    @property
    def n_matrices(self) -> int:
        return 3 if self.gated else 2

    def n_params(self, d_model: int) -> int:
        return self.n_matrices * d_model * self.intermediate_size

    def n_active_params(self, d_model: int) -> int:
        return self.n_params(d_model)


class MoEFFN(_Strict):
    """Mixture of experts: a router picks ``experts_per_token`` routed experts; shared experts always run."""

    kind: Literal["moe"] = "moe"
    n_routed_experts: PositiveInt = Field(description="Routed experts per layer.")
    experts_per_token: PositiveInt = Field(description="Routed experts each token is sent to (top-k).")
    moe_intermediate_size: PositiveInt = Field(description="Hidden width of one routed expert.")
    n_shared_experts: NonNegativeInt = Field(0, description="Shared experts that every token runs.")
    shared_intermediate_size: PositiveInt | None = Field(
        None, description="Hidden width of one shared expert; defaults to moe_intermediate_size."
    )
    gated: bool = Field(True, description="Gated experts (gate, up and down matrices).")
    router_bias: bool = Field(False, description="Whether the router has a bias.")

    @model_validator(mode="after")
    def _topk_within_experts(self) -> "MoEFFN":
        if self.experts_per_token > self.n_routed_experts:
            raise ValueError(
                f"experts_per_token {self.experts_per_token} exceeds n_routed_experts "
                f"{self.n_routed_experts}: lower experts_per_token"
            )
        return self

    @property
    def n_matrices(self) -> int:
        return 3 if self.gated else 2

    @property
    def shared_width(self) -> int:
        return self.shared_intermediate_size or self.moe_intermediate_size

    def expert_params(self, d_model: int) -> int:
        return self.n_matrices * d_model * self.moe_intermediate_size

    def shared_params(self, d_model: int) -> int:
        return self.n_shared_experts * self.n_matrices * d_model * self.shared_width

    def router_params(self, d_model: int) -> int:
        return d_model * self.n_routed_experts + (self.n_routed_experts if self.router_bias else 0)

    def n_params(self, d_model: int) -> int:
        routed = self.n_routed_experts * self.expert_params(d_model)
        return routed + self.shared_params(d_model) + self.router_params(d_model)

    def n_active_params(self, d_model: int) -> int:
        routed = self.experts_per_token * self.expert_params(d_model)
        return routed + self.shared_params(d_model) + self.router_params(d_model)


FFN = Annotated[Union[DenseFFN, MoEFFN], Field(discriminator="kind")]


# ---------------------------------------------------------------------------------------------
# One layer


class LayerSpec(_Strict):
    """One transformer layer: attention projections, key selection and FFN."""

    attention: Attention
    selection: Selection = Field(default_factory=DenseSelection)
    ffn: FFN

    @model_validator(mode="after")
    def _msa_needs_gqa(self) -> "LayerSpec":
        if isinstance(self.selection, MSASelection):
            if not isinstance(self.attention, GQAAttention):
                raise ValueError("selection 'msa' needs attention kind 'gqa': MSA selects blocks per KV group")
            if self.selection.index_n_heads != self.attention.n_kv_head:
                raise ValueError(
                    f"msa index_n_heads {self.selection.index_n_heads} differs from n_kv_head "
                    f"{self.attention.n_kv_head}: MSA has one index-query head per KV group"
                )
        return self

    @property
    def owns_indexer(self) -> bool:
        """Whether this layer runs and caches its own indexer (DSA owner or MSA)."""
        sel = self.selection
        return isinstance(sel, MSASelection) or (isinstance(sel, DSASelection) and sel.owns_indexer)

    def main_record_bytes(self, kv_dtype: str) -> int:
        """Bytes of the main KV record of one token in this layer."""
        return self.attention.cache_record_bytes(kv_dtype)

    def index_record_bytes(self, kv_dtype: str) -> int:
        """Bytes of the cached index key of one token (0 when the layer has no indexer cache)."""
        if not self.owns_indexer:
            return 0
        return index_key_bytes(self.selection.index_head_dim, kv_dtype)

    def kv_bytes_per_token(self, kv_dtype: str) -> int:
        """Cache bytes per cached token in this layer: main record plus index key."""
        return self.main_record_bytes(kv_dtype) + self.index_record_bytes(kv_dtype)

    def indexer_params(self, d_model: int) -> int:
        sel = self.selection
        if isinstance(sel, DSASelection) and sel.owns_indexer:
            q_in = self.attention.q_lora_rank if isinstance(self.attention, MLAAttention) else None
            q_in = q_in or d_model
            q = q_in * sel.index_n_heads * sel.index_head_dim
            k = d_model * sel.index_head_dim
            weights = d_model * sel.index_n_heads
            return q + k + weights
        if isinstance(sel, MSASelection):
            return d_model * sel.index_n_heads * sel.index_head_dim + d_model * sel.index_head_dim
        return 0

    def attention_params(self, d_model: int) -> int:
        sinks = self.attention.n_head if isinstance(self.selection, WindowSelection) and self.selection.learned_sinks else 0
        return self.attention.n_params(d_model) + self.indexer_params(d_model) + sinks

    def n_params(self, d_model: int) -> int:
        return self.attention_params(d_model) + self.ffn.n_params(d_model)

    def n_active_params(self, d_model: int) -> int:
        return self.attention_params(d_model) + self.ffn.n_active_params(d_model)

    def describe(self) -> str:
        """One-line summary such as 'MLA + DSA(owner, top-2048) + MoE 256x8'."""
        att = self.attention.variant
        sel = self.selection
        if isinstance(sel, DenseSelection):
            sel_text = "dense"
        elif isinstance(sel, WindowSelection):
            sel_text = f"window {sel.window}"
        elif isinstance(sel, DSASelection):
            sel_text = f"DSA {sel.indexer} top-{sel.index_topk}"
        else:
            sel_text = f"MSA {sel.topk_blocks}x{sel.block_size}"
        if isinstance(self.ffn, MoEFFN):
            ffn_text = f"MoE {self.ffn.n_routed_experts}/{self.ffn.experts_per_token}"
            if self.ffn.n_shared_experts:
                ffn_text += f"+{self.ffn.n_shared_experts}"
        else:
            ffn_text = f"MLP {self.ffn.intermediate_size}"
        return f"{att} {sel_text}, {ffn_text}"
