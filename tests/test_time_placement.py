"""Per-device reports for the time model, and the groups their collectives run over."""

from types import SimpleNamespace

import pytest

import ctxsim
from ctxsim.counts.parallel import parallel_counts
from ctxsim.spec import ParallelPlan, SpecError, Workload
from ctxsim.time.placement import (
    device_report,
    group_ranks,
    ranks_per_domain,
    replica_batch,
    shard_model,
    traced_collectives,
)

# Llama-3.1-70B (meta-llama config.json): 80 layers, d_model 8192, 64 heads, 8 KV heads of 128,
# FFN 28672 gated, vocab 128256, untied LM head; bf16 weights.
N_LAYER, D, N_HEAD, N_KV, HEAD_DIM, FFN, VOCAB = 80, 8192, 64, 8, 128, 28672, 128256


def llama_70b():
    return ctxsim.load_model("llama-3.1-70b")


def attention(spec):
    return spec.layer_kinds["dense"].attention


def test_shard_splits_heads_and_columns():
    sharded = shard_model(llama_70b(), 8)
    assert attention(sharded).n_head == N_HEAD // 8
    assert attention(sharded).n_kv_head == N_KV // 8
    assert sharded.layer_kinds["dense"].ffn.intermediate_size == FFN // 8
    assert sharded.vocab_size == VOCAB // 8


def test_shard_replicates_kv_heads_beyond_n_kv():
    # tp 16 > 8 KV heads: each rank keeps 64 / 16 = 4 query heads and one whole KV head.
    sharded = shard_model(llama_70b(), 16)
    assert attention(sharded).n_head == 4
    assert attention(sharded).n_kv_head == 1


def test_shard_rejects_uneven_heads():
    with pytest.raises(SpecError, match="tp 3 does not divide n_head 64"):
        shard_model(llama_70b(), 3)


def test_shard_keeps_mla_latent_whole():
    # DeepSeek-V3: every rank caches the whole 512 + 64 latent, so KV per token does not shrink.
    spec = ctxsim.load_model("deepseek-v3")
    sharded = shard_model(spec, 8)
    assert sharded.kv_bytes_per_token() == spec.kv_bytes_per_token() == 61 * (512 + 64) * 2
    assert sharded.layer_kinds["moe"].attention.n_head == 128 // 8


def test_shard_tp1_is_identity():
    spec = llama_70b()
    assert shard_model(spec, 1) is spec


def test_device_weights_tp8():
    # Per rank: vocab-parallel embedding and LM head (2 x 16032 x 8192) plus per layer q (8192 x 8 x 128),
    # k and v (2 x 8192 x 1 x 128), o (8 x 128 x 8192) and the gated FFN (3 x 8192 x 3584); 2 bytes each.
    report = device_report(llama_70b(), Workload(context=4096, phase="decode"), ParallelPlan(tp=8))
    per_layer = D * 8 * 128 + 2 * D * 1 * 128 + 8 * 128 * D + 3 * D * 3584
    assert report.weights_bytes == (2 * 16032 * D + N_LAYER * per_layer) * 2


def test_device_kv_tp8():
    # One KV head per rank: 80 layers x K and V x 1 head x 128 x 2 bytes x 4096 tokens.
    report = device_report(llama_70b(), Workload(context=4096, phase="decode"), ParallelPlan(tp=8))
    assert report.kv_cache.bytes_per_sequence == N_LAYER * 2 * 1 * HEAD_DIM * 2 * 4096


def test_tp_all_reduces_two_per_layer():
    # Prefill of 2 x 1000 rows: all-reduce of 2000 x 8192 x 2 bytes, twice per layer.
    report = device_report(llama_70b(), Workload(context=1000, batch=2, phase="prefill"), ParallelPlan(tp=8))
    comm = [op for op in report.ops if op.kind == "collective" and op.layer_kind == "dense"]
    assert len(comm) == 1
    assert comm[0].name == "comm.tp_all_reduce"
    assert comm[0].count == 2 * N_LAYER
    assert comm[0].bytes_read == 2 * 1000 * D * 2


def test_tp_model_level_collectives():
    # Besides the layers: one all-reduce after the vocab-parallel embedding (2000 x 8192 x 2 B)
    # and the all-gather of the fp32 logits of the 2 last positions (2 x 128256 x 4 B).
    report = device_report(llama_70b(), Workload(context=1000, batch=2, phase="prefill"), ParallelPlan(tp=8))
    model_level = {op.name: op for op in report.ops if op.kind == "collective" and op.layer_kind is None}
    assert model_level["comm.tp_all_reduce"].bytes_read == 2 * 1000 * D * 2
    assert model_level["comm.tp_all_gather"].bytes_written == 2 * VOCAB * 4


def test_glm_5_2_tp8_decode_bytes_read():
    # The time model once placed tp with its own sharded model, which left out the model-level
    # collectives and read 93,986,507,437 B here. The per-device counts add the embedding's
    # all-reduce (16 x 6144 x 2 B) and the logits all-gather, which reads this rank's 1/8 of
    # 16 x 154880 fp32 logits.
    spec = ctxsim.load_model("glm-5.2")
    report = device_report(spec, Workload(context=131072, batch=16, phase="decode"), ParallelPlan(tp=8))
    model_level = sum(op.total_bytes_read for op in report.ops if op.kind == "collective" and op.layer_kind is None)
    assert model_level == 16 * 6144 * 2 + 16 * 154880 * 4 // 8
    assert report.total("decode", "bytes_read") == 93_986_507_437 + model_level
    assert report.total("decode", "bytes_read") == 93_987_943_085


def test_tp1_has_no_collectives():
    build = traced_collectives(ctxsim.load_model("llama-3.1-8b"), ParallelPlan(tp=1), Workload(context=1000))
    assert build(SimpleNamespace(phase="prefill", batch=2, rows=2000)) == []


def test_traced_collectives_equal_report():
    # The polynomial builder gives the same collectives as the per-device report.
    spec, workload, plan = llama_70b(), Workload(context=1000, batch=3, phase="prefill"), ParallelPlan(tp=8)
    report = device_report(spec, workload, plan)

    def fields(ops):
        return sorted((op.name, op.layer_kind or "", op.count, op.bytes_read, op.bytes_written) for op in ops)

    built = traced_collectives(spec, plan, workload)(SimpleNamespace(phase="prefill", batch=3, rows=3000))
    assert fields(built) == fields(op for op in report.ops if op.kind == "collective")


def test_all_reduce_follows_its_layer_ops():
    report = device_report(llama_70b(), Workload(context=1000, phase="decode"), ParallelPlan(tp=8))
    names = [op.name for op in report.ops]
    assert names.index("comm.tp_all_reduce") == names.index("ffn.residual") + 1


def test_dp_splits_batch():
    # 5 sequences over 2 replicas: the larger replica runs 3.
    assert replica_batch(5, 2) == 3
    report = device_report(llama_70b(), Workload(context=1000, batch=5, phase="decode"), ParallelPlan(tp=8, dp=2))
    assert report.workload.batch == 3


def test_pipeline_stage_report():
    # pp 2 over 80 layers: rank 8 is stage 1 (layers 40-79), which runs the LM head, not the
    # embedding, and sends nothing on.
    report = device_report(llama_70b(), Workload(context=1000, phase="decode"), ParallelPlan(tp=8, pp=2), rank=8)
    names = {op.name for op in report.ops}
    assert "lm_head" in names
    assert "embed" not in names
    assert "comm.pp_send" not in names
    assert [op.count for op in report.ops if op.name == "attn.core"] == [40]


def test_pipeline_first_stage_sends():
    # Stage 0 sends its 1 x 8192 bf16 output rows of the decode step to stage 1.
    report = device_report(llama_70b(), Workload(context=1000, phase="decode"), ParallelPlan(tp=8, pp=2), rank=0)
    sends = [op for op in report.ops if op.name == "comm.pp_send"]
    assert [op.bytes_read for op in sends] == [1 * D * 2]


def test_uneven_tp_rejected():
    with pytest.raises(SpecError, match="tp 3 does not divide n_head 64"):
        device_report(llama_70b(), Workload(context=1000), ParallelPlan(tp=3))


# ---------------------------------------------------------------------------------------------
# Collective groups


def counts_of(spec, plan, workload=None):
    return parallel_counts(spec, workload or Workload(context=4096, batch=8, phase="decode"), plan)


def test_tp_group_is_consecutive():
    plan = ParallelPlan(tp=4, pp=2)
    counts = counts_of(llama_70b(), plan)
    assert group_ranks(plan, counts, 5, "comm.tp_all_reduce") == [4, 5, 6, 7]


def test_pp_send_pairs_next_stage():
    # tp 4 x pp 2: rank 1 of stage 0 sends to rank 5, the same tp rank of stage 1.
    plan = ParallelPlan(tp=4, pp=2)
    assert group_ranks(plan, counts_of(llama_70b(), plan), 1, "comm.pp_send") == [1, 5]


def test_cp_group_strides_over_tp():
    plan = ParallelPlan(tp=2, cp=4)
    counts = counts_of(llama_70b(), plan, Workload(context=4096, phase="prefill"))
    assert group_ranks(plan, counts, 3, "comm.cp_kv") == [1, 3, 5, 7]


def test_ep_all_gather_group_is_dp_ranks():
    # Attention-DP with tp 2 x dp 4 and ep 8: the all-gather path runs over the 4 dp ranks
    # that share the tokens (same tp rank), not over the 8 expert-parallel ranks.
    spec = ctxsim.load_model("deepseek-v3")
    plan = ParallelPlan(tp=2, dp=4, ep=8, attention_dp=True)
    counts = counts_of(spec, plan)
    assert group_ranks(plan, counts, 1, "comm.ep_all_gather") == [1, 3, 5, 7]


def test_ep_all_to_all_group_is_expert_group():
    spec = ctxsim.load_model("deepseek-v3")
    plan = ParallelPlan(dp=8, ep=8, attention_dp=True)
    assert group_ranks(plan, counts_of(spec, plan), 3, "comm.ep_dispatch") == list(range(8))


def test_layer_split_group():
    # MLA: all 8 tp ranks hold the same latent; LayerSplit 4 makes two groups of 4.
    spec = ctxsim.load_model("deepseek-v3")
    plan = ParallelPlan(tp=8, layer_split=4)
    counts = counts_of(spec, plan)
    assert group_ranks(plan, counts, 6, "comm.layer_split_broadcast") == [4, 5, 6, 7]


def test_ranks_per_domain():
    # Ranks 4-11 over domains of 8: 4 in the first, 4 in the second.
    assert ranks_per_domain(list(range(4, 12)), 8) == 4
    assert ranks_per_domain([0, 8, 16], 8) == 1
