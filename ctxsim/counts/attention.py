"""Op records of the attention half of one layer kind: projections, indexer, core, output.

Variants relative to plain GQA attention:
- sliding window: the core attends a band of keys (``keys.py``); the cache write is unchanged.
- MLA: low-rank query, one cached latent per token; expanded mode rebuilds per-head K/V with
  ``attn.kv_up``, absorbed mode folds the up-projections into ``attn.q_absorb`` and ``attn.v_up``.
- DSA: an indexer (query, key and weight projections, scores over all keys, top-k) picks the
  keys of the core; IndexShare ``shared`` layers reuse an earlier layer's top-k and add nothing.
- MSA: one index-query head per KV group and one shared index key. Token scores are max-pooled
  to blocks, and each group picks its top-k blocks.
"""

from __future__ import annotations

from ctxsim.counts.conventions import (
    ACTIVATION_BYTES,
    INDEX_BYTES,
    INDEX_WEIGHT_FLOPS_PER_ELEMENT,
    POOL_FLOPS_PER_ELEMENT,
    RELU_FLOPS_PER_ELEMENT,
    RMSNORM_FLOPS_PER_ELEMENT,
    ROPE_FLOPS_PER_ELEMENT,
    SCORE_BYTES,
    SOFTMAX_FLOPS_PER_SCORE,
    TOPK_FLOPS_PER_CANDIDATE,
)
from ctxsim.counts.keys import (
    dense_key_sum,
    dense_visible_sum,
    msa_block_sum,
    msa_selected_block_sum,
    selected_key_sum,
    visible_sum,
)
from ctxsim.counts.phase import PhaseRun, elementwise_op, gemm_op, norm_op, residual_op
from ctxsim.counts.report import Op
from ctxsim.spec.layers import DSASelection, LayerSpec, MLAAttention, MSASelection, WindowSelection

ACT = ACTIVATION_BYTES


def resolve_mla_mode(run: PhaseRun, layer: LayerSpec) -> str:
    """MLA execution mode of one layer in one phase: 'expanded' or 'absorbed'.

    'auto' expands K/V for prefill and absorbs for decode, with one exception. DSA layers run
    absorbed in gathered prefill, because the sparse MLA kernels attend the latent as one shared
    KV head, and expanded in masked prefill, as the released reference code does.
    """
    if run.mla_mode != "auto":
        return run.mla_mode
    if run.phase == "decode":
        return "absorbed"
    if isinstance(layer.selection, DSASelection) and run.execution == "gathered":
        return "absorbed"
    return "expanded"


def is_masked(run: PhaseRun, layer: LayerSpec) -> bool:
    """Return whether the core computes dense scores plus a mask (sparse layers, masked execution)."""
    return run.execution == "masked" and isinstance(layer.selection, (DSASelection, MSASelection))


def attention_ops(layer: LayerSpec, kind: str, count: int, run: PhaseRun) -> list[Op]:
    """Ops of the attention half of one layer of ``kind``, in dataflow order."""
    ops = [norm_op("attn.norm", run, kind, count, run.rows)]
    if isinstance(layer.attention, MLAAttention):
        mode = resolve_mla_mode(run, layer)
        ops += _mla_input_ops(layer, kind, count, run, mode)
    else:
        mode = "expanded"
        ops += _gqa_input_ops(layer, kind, count, run)
    ops += indexer_ops(layer, kind, count, run)
    ops.append(core_op(layer, kind, count, run, mode))
    ops += _output_ops(layer, kind, count, run, mode)
    ops.append(residual_op("attn.residual", run, kind, count))
    return ops


# ---------------------------------------------------------------------------------------------
# Projections


def _gqa_input_ops(layer: LayerSpec, kind: str, count: int, run: PhaseRun) -> list[Op]:
    att = layer.attention
    rows, d = run.rows, run.d_model
    record = layer.main_record_bytes(run.kv_dtype)
    rotated = rows * (att.n_head + att.n_kv_head) * att.head_dim
    return [
        gemm_op("attn.q_proj", run, kind, count, rows, d, att.n_head * att.head_dim, bias=att.qkv_bias),
        gemm_op(
            "attn.kv_proj", run, kind, count, rows, d, 2 * att.n_kv_head * att.head_dim,
            bias=att.qkv_bias, kv_bytes_written=rows * record,
        ),
        # NOTE: rotary embedding is counted over the full head_dim of q and k, because the spec
        # has no rotary width (MiniMax-M3 rotates part of it). Per-head QK norms (Qwen3,
        # MiniMax-M3) are not counted.
        elementwise_op("attn.rope", run, kind, count, ROPE_FLOPS_PER_ELEMENT * rotated, rotated * ACT, rotated * ACT),
    ]


def _mla_input_ops(layer: LayerSpec, kind: str, count: int, run: PhaseRun, mode: str) -> list[Op]:
    att = layer.attention
    rows, d, n_h = run.rows, run.d_model, att.n_head
    record = layer.main_record_bytes(run.kv_dtype)
    ops = []

    # Query: directly, or through the q latent (with its RMSNorm).
    if att.q_lora_rank is None:
        ops.append(gemm_op("attn.q_proj", run, kind, count, rows, d, n_h * att.qk_head_dim))
    else:
        q_norm = RMSNORM_FLOPS_PER_ELEMENT * rows * att.q_lora_rank
        ops.append(gemm_op("attn.q_down", run, kind, count, rows, d, att.q_lora_rank, other_flops=q_norm))
        ops.append(gemm_op("attn.q_up", run, kind, count, rows, att.q_lora_rank, n_h * att.qk_head_dim))

    # Latent and rope key (with the latent's RMSNorm), appended to the cache.
    kv_norm = RMSNORM_FLOPS_PER_ELEMENT * rows * att.kv_lora_rank
    ops.append(
        gemm_op(
            "attn.kv_down", run, kind, count, rows, d, att.kv_lora_rank + att.qk_rope_head_dim,
            other_flops=kv_norm, kv_bytes_written=rows * record,
        )
    )

    if mode == "expanded":
        # Every key a chunk loads is re-expanded from the cached latent for that chunk (vLLM's
        # MLA chunked prefill does this for the cached context); K gets the rope key per head.
        keys = visible_sum(layer.selection, run.span) * run.batch
        read = keys * record
        written = keys * n_h * (att.qk_nope_head_dim + att.qk_rope_head_dim + att.v_head_dim) * ACT
        ops.append(
            gemm_op(
                "attn.kv_up", run, kind, count, keys, att.kv_lora_rank, n_h * (att.qk_nope_head_dim + att.v_head_dim),
                in_bytes=read, out_bytes=written, kv_bytes_read=read,
            )
        )
    else:
        ops.append(
            gemm_op("attn.q_absorb", run, kind, count, rows, att.qk_nope_head_dim, att.kv_lora_rank, heads=n_h)
        )

    rotated = rows * (n_h + 1) * att.qk_rope_head_dim
    ops.append(elementwise_op("attn.rope", run, kind, count, ROPE_FLOPS_PER_ELEMENT * rotated, rotated * ACT, rotated * ACT))
    return ops


def _output_ops(layer: LayerSpec, kind: str, count: int, run: PhaseRun, mode: str) -> list[Op]:
    att = layer.attention
    rows = run.rows
    ops = []
    if isinstance(att, MLAAttention):
        if mode == "absorbed":
            ops.append(gemm_op("attn.v_up", run, kind, count, rows, att.kv_lora_rank, att.v_head_dim, heads=att.n_head))
        ops.append(gemm_op("attn.o_proj", run, kind, count, rows, att.n_head * att.v_head_dim, run.d_model))
    else:
        ops.append(
            gemm_op("attn.o_proj", run, kind, count, rows, att.n_head * att.head_dim, run.d_model, bias=att.o_bias)
        )
    return ops


# ---------------------------------------------------------------------------------------------
# Indexer (DSA owners and MSA)


def indexer_ops(layer: LayerSpec, kind: str, count: int, run: PhaseRun) -> list[Op]:
    """Ops of a layer's own indexer; none for dense, window and IndexShare ``shared`` layers."""
    sel = layer.selection
    if isinstance(sel, DSASelection) and sel.owns_indexer:
        return _dsa_indexer_ops(layer, kind, count, run)
    if isinstance(sel, MSASelection):
        return _msa_indexer_ops(layer, kind, count, run)
    return []


def _dsa_indexer_ops(layer: LayerSpec, kind: str, count: int, run: PhaseRun) -> list[Op]:
    sel, att = layer.selection, layer.attention
    rows, d, batch = run.rows, run.d_model, run.batch
    n_i, d_i = sel.index_n_heads, sel.index_head_dim
    index_record = layer.index_record_bytes(run.kv_dtype)
    # The DSA index query is projected from the MLA query latent when there is one.
    # NOTE: the index key's LayerNorm and the rope of index q and k are not counted, and index
    # activations are counted in bf16 although production kernels run the indexer in fp8.
    q_in = att.q_lora_rank if isinstance(att, MLAAttention) and att.q_lora_rank else d

    # Every query scores every visible key; every chunk scans the index keys once.
    pairs = dense_key_sum(run.span) * batch
    scanned = dense_visible_sum(run.span) * batch * index_record
    selected = selected_key_sum(sel, run.span) * batch
    score_other = (RELU_FLOPS_PER_ELEMENT + INDEX_WEIGHT_FLOPS_PER_ELEMENT) * n_i * pairs
    score_read = rows * (n_i * d_i + n_i) * ACT + scanned
    return [
        gemm_op("attn.indexer.q_proj", run, kind, count, rows, q_in, n_i * d_i),
        gemm_op("attn.indexer.k_proj", run, kind, count, rows, d, d_i, kv_bytes_written=rows * index_record),
        gemm_op("attn.indexer.weights_proj", run, kind, count, rows, d, n_i),
        Op(
            "attn.indexer.score", "attention", run.phase, count,
            2 * n_i * d_i * pairs, score_other, score_read, pairs * SCORE_BYTES, kind,
            kv_bytes_read=scanned,
        ),
        elementwise_op(
            "attn.indexer.topk", run, kind, count,
            TOPK_FLOPS_PER_CANDIDATE * pairs, pairs * SCORE_BYTES, selected * INDEX_BYTES,
        ),
    ]


def _msa_indexer_ops(layer: LayerSpec, kind: str, count: int, run: PhaseRun) -> list[Op]:
    sel = layer.selection
    rows, d, batch = run.rows, run.d_model, run.batch
    n_g, d_i = sel.index_n_heads, sel.index_head_dim
    index_record = layer.index_record_bytes(run.kv_dtype)

    # Each group scores every visible key, pools the scores to blocks and picks its top blocks.
    pairs = dense_key_sum(run.span) * batch
    scanned = dense_visible_sum(run.span) * batch * index_record
    blocks = msa_block_sum(sel, run.span) * batch
    picked = msa_selected_block_sum(sel, run.span) * batch
    token_scores = n_g * pairs * SCORE_BYTES
    block_scores = n_g * blocks * SCORE_BYTES
    # NOTE: token scores are written out and read back by the pool, as unfused kernels do. A
    # fused MSA index kernel pools on chip and never writes them.
    return [
        gemm_op("attn.indexer.q_proj", run, kind, count, rows, d, n_g * d_i),
        gemm_op("attn.indexer.k_proj", run, kind, count, rows, d, d_i, kv_bytes_written=rows * index_record),
        Op(
            "attn.indexer.score", "attention", run.phase, count,
            2 * n_g * d_i * pairs, 0, rows * n_g * d_i * ACT + scanned, token_scores, kind,
            kv_bytes_read=scanned,
        ),
        elementwise_op("attn.indexer.pool", run, kind, count, POOL_FLOPS_PER_ELEMENT * n_g * pairs, token_scores, block_scores),
        elementwise_op(
            "attn.indexer.topk", run, kind, count,
            TOPK_FLOPS_PER_CANDIDATE * n_g * blocks, block_scores, n_g * picked * INDEX_BYTES,
        ),
    ]


# ---------------------------------------------------------------------------------------------
# Attention core


def core_op(layer: LayerSpec, kind: str, count: int, run: PhaseRun, mode: str) -> Op:
    """QK^T and PV over the attended keys (matmul) and the softmax (other).

    A dense, window or masked core loads the keys visible to each chunk once per chunk, as a
    fused kernel does. A gathered sparse core loads each query's selected entries (per KV group
    for MSA) and their int32 indices.
    """
    att, sel = layer.attention, layer.selection
    batch, rows = run.batch, run.rows
    masked = is_masked(run, layer)
    n_h = att.n_head

    if isinstance(att, MLAAttention) and mode == "absorbed":
        qk_dim, v_dim = att.kv_lora_rank + att.qk_rope_head_dim, att.kv_lora_rank
        key_bytes = layer.main_record_bytes(run.kv_dtype)
    elif isinstance(att, MLAAttention):
        qk_dim, v_dim = att.qk_head_dim, att.v_head_dim
        key_bytes = n_h * (att.qk_nope_head_dim + att.qk_rope_head_dim + att.v_head_dim) * ACT
    else:
        qk_dim = v_dim = att.head_dim
        key_bytes = layer.main_record_bytes(run.kv_dtype)

    pairs = selected_key_sum(sel, run.span, masked) * batch
    matmul = 2 * n_h * (qk_dim + v_dim) * pairs
    other = SOFTMAX_FLOPS_PER_SCORE * n_h * pairs
    if isinstance(sel, WindowSelection) and sel.learned_sinks:
        other = other + SOFTMAX_FLOPS_PER_SCORE * n_h * rows  # one sink logit per head and query

    if isinstance(sel, DSASelection) and not masked:
        kv_read = pairs * key_bytes
        index_read = pairs * INDEX_BYTES
    elif isinstance(sel, MSASelection) and not masked:
        kv_read = pairs * key_bytes
        index_read = sel.index_n_heads * msa_selected_block_sum(sel, run.span) * batch * INDEX_BYTES
    else:
        # NOTE: in masked execution the mask built from the top-k indices is not counted.
        kv_read = visible_sum(sel, run.span) * batch * key_bytes
        index_read = 0

    q_read = rows * n_h * qk_dim * ACT
    written = rows * n_h * v_dim * ACT
    return Op(
        "attn.core", "attention", run.phase, count, matmul, other,
        q_read + kv_read + index_read, written, kind, kv_bytes_read=kv_read,
    )
