"""Op records of the FFN half of one layer kind (dense MLP or MoE) and of the model's ends."""

from __future__ import annotations

import math

import numpy as np

from ctxsim.counts.arith import round_half_up
from ctxsim.counts.conventions import (
    ACT_FLOPS_PER_ELEMENT,
    ACTIVATION_BYTES,
    GATED_ACT_FLOPS_PER_ELEMENT,
    INDEX_BYTES,
    SCORE_BYTES,
    TOPK_FLOPS_PER_CANDIDATE,
)
from ctxsim.counts.keys import traceable
from ctxsim.counts.phase import PhaseRun, elementwise_op, gemm_op, norm_op, residual_op
from ctxsim.counts.report import Number, Op
from ctxsim.spec.dtypes import weight_bytes
from ctxsim.spec.layers import DenseFFN, LayerSpec, MoEFFN

ACT = ACTIVATION_BYTES


def ffn_ops(layer: LayerSpec, kind: str, count: int, run: PhaseRun) -> list[Op]:
    """Ops of the FFN half of one layer of ``kind``, in dataflow order."""
    ops = [norm_op("ffn.norm", run, kind, count, run.rows)]
    if isinstance(layer.ffn, DenseFFN):
        ops += _dense_ops(layer.ffn, kind, count, run)
    else:
        ops += _moe_ops(layer.ffn, kind, count, run)
    ops.append(residual_op("ffn.residual", run, kind, count))
    return ops


def _act_flops(gated: bool) -> int:
    return GATED_ACT_FLOPS_PER_ELEMENT if gated else ACT_FLOPS_PER_ELEMENT


def _dense_ops(ffn: DenseFFN, kind: str, count: int, run: PhaseRun) -> list[Op]:
    rows, d, width = run.rows, run.d_model, ffn.intermediate_size
    up_width = 2 * width if ffn.gated else width
    hidden = rows * width
    return [
        gemm_op("ffn.up", run, kind, count, rows, d, up_width),
        elementwise_op(
            "ffn.act", run, kind, count, _act_flops(ffn.gated) * hidden, rows * up_width * ACT, hidden * ACT
        ),
        gemm_op("ffn.down", run, kind, count, rows, width, d),
    ]


def expected_experts(n_experts: int, experts_per_token: int, tokens: Number) -> Number:
    """Expected number of distinct experts that ``tokens`` tokens touch: E(1 - (1 - k/E)^tokens).

    NOTE: assumes uniform, independent routing; real routers are skewed, which touches fewer
    experts for the same tokens.
    """
    miss = (n_experts - experts_per_token) / n_experts
    if isinstance(tokens, np.ndarray) and 0.0 < miss < 1.0:
        # Past this many tokens miss**tokens < 2**-60, so 1 - miss**tokens rounds to exactly 1.0.
        # Capping the exponent there leaves every result unchanged and keeps numpy's pow off its
        # slow underflow path (about 10x slower per element).
        tokens = np.minimum(tokens, math.ceil(60 / -math.log2(miss)))
    return n_experts * (1.0 - miss**tokens)


@traceable
def expert_weight_reads(ffn: MoEFFN, run: PhaseRun) -> Number:
    """Bytes of routed-expert weights read in the phase: touched experts, once per forward pass.

    Each forward pass (chunk) of the batch reads the experts its tokens touch; the expected
    bytes of a pass are rounded to a whole byte.
    """
    expert_bytes = weight_bytes(ffn.expert_params(run.d_model), run.expert_dtype)
    span, batch = run.span, run.batch
    e, k = ffn.n_routed_experts, ffn.experts_per_token

    def pass_bytes(tokens: Number) -> Number:
        return round_half_up(expected_experts(e, k, tokens) * expert_bytes)

    return (span.n_chunks - 1) * pass_bytes(batch * span.chunk) + pass_bytes(batch * span.last_chunk)


def _moe_ops(ffn: MoEFFN, kind: str, count: int, run: PhaseRun) -> list[Op]:
    rows, d = run.rows, run.d_model
    e, k = ffn.n_routed_experts, ffn.experts_per_token
    act_flops = _act_flops(ffn.gated)
    routing = rows * k * (INDEX_BYTES + SCORE_BYTES)  # expert ids and gate weights per token
    ops = [
        # NOTE: the router is read in the weight dtype; fp8 releases keep it in bf16 (a small share).
        gemm_op("moe.router", run, kind, count, rows, d, e, bias=ffn.router_bias, out_bytes=rows * e * SCORE_BYTES),
        elementwise_op("moe.topk", run, kind, count, TOPK_FLOPS_PER_CANDIDATE * rows * e, rows * e * SCORE_BYTES, routing),
    ]

    if ffn.n_shared_experts:
        width = ffn.n_shared_experts * ffn.shared_width
        ops.append(
            gemm_op(
                "moe.shared", run, kind, count, rows, d, width, heads=ffn.n_matrices,
                other_flops=act_flops * rows * width, in_bytes=rows * d * ACT, out_bytes=rows * d * ACT,
            )
        )

    # Routed experts: exactly k expert evaluations per token; weights of the touched experts.
    # The activation and the gate-weighted sum (a multiply and an add per output element) are
    # part of the fused expert op.
    width = ffn.moe_intermediate_size
    matmul = 2 * rows * k * ffn.n_matrices * d * width
    other = act_flops * rows * k * width + 2 * rows * k * d
    weights = expert_weight_reads(ffn, run)
    ops.append(
        Op(
            "moe.experts", "gemm", run.phase, count, matmul, other,
            weights + rows * d * ACT + routing, rows * d * ACT, kind, run.expert_dtype, weights,
        )
    )
    return ops


# ---------------------------------------------------------------------------------------------
# Ops before the first layer and after the last


def embed_op(run: PhaseRun) -> Op:
    """Embedding lookup: reads one table row per token (and the token id), writes the row."""
    rows, d = run.rows, run.d_model
    table_rows = weight_bytes(d, run.vocab_dtype) * rows
    return Op(
        "embed", "gather", run.phase, 1, 0, 0,
        table_rows + rows * INDEX_BYTES, rows * d * ACT, None, run.vocab_dtype, table_rows,
    )


def head_ops(run: PhaseRun, vocab_size: int) -> list[Op]:
    """Final norm over every token, and the LM head over the last token of each sequence.

    The LM head reads its weights once per phase, because only the last chunk of a prefill
    needs logits; logits are written in fp32.
    """
    lm_rows = run.batch
    return [
        norm_op("final_norm", run, None, 1, run.rows),
        gemm_op(
            "lm_head", run, None, 1, lm_rows, run.d_model, vocab_size,
            out_bytes=lm_rows * vocab_size * SCORE_BYTES, weight_reads=1, weight_dtype=run.vocab_dtype,
        ),
    ]
