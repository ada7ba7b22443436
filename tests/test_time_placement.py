"""Per-device counts of tensor and data parallel plans, derived by hand from config values."""

import pytest

import ctxsim
from ctxsim.spec import ParallelPlan, SpecError, Workload
from ctxsim.time.placement import device_report, replica_batch, shard_model, tp_all_reduce_ops

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
    comm = [op for op in report.ops if op.kind == "collective"]
    assert len(comm) == 1
    assert comm[0].name == "comm.tp_all_reduce"
    assert comm[0].count == 2 * N_LAYER
    assert comm[0].bytes_read == 2 * 1000 * D * 2


def test_tp1_has_no_all_reduce():
    report = ctxsim.estimate("llama-3.1-8b", Workload(context=1000))
    assert tp_all_reduce_ops(ctxsim.load_model("llama-3.1-8b"), report, 1) == []


def test_all_reduce_follows_its_layer_ops():
    report = device_report(llama_70b(), Workload(context=1000, phase="decode"), ParallelPlan(tp=8))
    names = [op.name for op in report.ops]
    assert names.index("comm.tp_all_reduce") == names.index("ffn.residual") + 1


def test_dp_splits_batch():
    # 5 sequences over 2 replicas: the larger replica runs 3.
    assert replica_batch(5, 2) == 3
    report = device_report(llama_70b(), Workload(context=1000, batch=5, phase="decode"), ParallelPlan(tp=8, dp=2))
    assert report.workload.batch == 3


def test_unsupported_plan_rejected():
    with pytest.raises(SpecError, match="plan pp=2 is not modelled yet"):
        device_report(llama_70b(), Workload(context=1000), ParallelPlan(tp=8, pp=2))
