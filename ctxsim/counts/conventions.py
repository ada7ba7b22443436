"""Counting conventions shared by ``ctxsim.counts`` and the reference model's counters.

1 multiply-accumulate = 2 FLOPs, so a (M x K) @ (K x N) matmul is 2*M*K*N matmul FLOPs.
Non-matmul work is counted per element with the constants below; they are conventions, stated
once here so that the analytic model and the reference model count the same way.
"""

# Softmax over a row of scores: max, subtract, exp, sum, divide = 5 per score.
SOFTMAX_FLOPS_PER_SCORE = 5
# RMSNorm per element: square, accumulate, scale by the reciprocal root, multiply by the weight.
RMSNORM_FLOPS_PER_ELEMENT = 4
# Rotary embedding per rotated element: x*cos + rotate(x)*sin = 2 multiplies + 1 add.
ROPE_FLOPS_PER_ELEMENT = 3
# Gated activation per hidden element: SiLU (or GELU) counted as 4, times the up projection 1.
GATED_ACT_FLOPS_PER_ELEMENT = 5
# Ungated activation per hidden element.
ACT_FLOPS_PER_ELEMENT = 4
# ReLU in the DSA indexer, per (query, index head, key) score.
RELU_FLOPS_PER_ELEMENT = 1
# Weighted sum over index heads: one multiply and one add per (query, index head, key).
INDEX_WEIGHT_FLOPS_PER_ELEMENT = 2
# Top-k selection: one comparison per candidate (keys for DSA, blocks for MSA, experts for MoE).
TOPK_FLOPS_PER_CANDIDATE = 1
# Max-pool of token scores to block scores (MSA): one comparison per pooled token score.
POOL_FLOPS_PER_ELEMENT = 1
# Residual add per element.
RESIDUAL_FLOPS_PER_ELEMENT = 1

# Activation dtype bytes (bf16) used for activations between ops.
ACTIVATION_BYTES = 2
# Bytes of one top-k index (int32), written by a top-k op and read by the gather that uses it.
INDEX_BYTES = 4
# Bytes of one score or logit that an op writes for a later op to read (fp32): DSA indexer
# scores, MSA token and block scores, MoE router logits and gate weights.
SCORE_BYTES = 4
