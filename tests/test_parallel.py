"""Per-device counts under parallel plans, each expected number derived by hand from config values."""

import pytest

import ctxsim
from ctxsim.counts import report_to_dict
from ctxsim.counts.parallel import device_report, parallel_counts
from ctxsim.spec import ParallelPlan, SpecError, Workload, load_model
from ctxsim.spec.dtypes import weight_bytes

GIB = 2**30


def _device(counts, **coords):
    """The first device whose layout matches ``coords`` (tp_rank=..., pp_rank=..., cp_rank=...)."""
    for device in counts.devices:
        if all(getattr(device.layout, name) == value for name, value in coords.items()):
            return device
    raise AssertionError(f"no device at {coords}")


# ---------------------------------------------------------------------------------------------
# KV cache per device


def test_llama_tp32_one_kv_head_per_device():
    # Llama-3-70B: 8 KV heads over tp 32, so each device keeps 1 head (K and V, head_dim 128,
    # bf16) in each of 80 layers, and each head sits on 32 / 8 = 4 devices.
    counts = parallel_counts(load_model("llama-3.1-70b"), Workload(context=1, phase="decode"), ParallelPlan(tp=32))
    assert counts.devices[0].kv_cache.bytes_per_sequence == 2 * 1 * 128 * 2 * 80  # 40,960 B per token
    assert counts.kv_replication == {"dense": 32 // 8}


def test_llama_tp32_note_names_replication():
    counts = parallel_counts(load_model("llama-3.1-70b"), Workload(context=1, phase="decode"), ParallelPlan(tp=32))
    assert "replicated 4x" in counts.notes[0]


def test_deepseek_tp8_keeps_whole_latent():
    # DeepSeek-V3 MLA: 61 layers x (kv_lora_rank 512 + rope 64) x 2 bytes, at 128K tokens, on
    # every tp rank: 9,210,691,584 B = 8.58 GiB, not an eighth of it.
    workload = Workload(context=131072, phase="decode")
    counts = parallel_counts(load_model("deepseek-v3"), workload, ParallelPlan(tp=8))
    per_rank = 61 * (512 + 64) * 2 * 131072
    assert all(d.kv_cache_bytes == per_rank for d in counts.devices)
    assert round(per_rank / GIB, 2) == 8.58


def test_attention_dp_holds_eight_times_more():
    # Eight 128K sequences: tp 8 puts all eight latents on every device, attention-DP 8 one each,
    # so the same device memory holds eight times more tokens.
    spec = load_model("deepseek-v3")
    workload = Workload(context=131072, phase="decode", batch=8)
    tp8 = parallel_counts(spec, workload, ParallelPlan(tp=8)).devices[0].kv_cache_bytes
    dp8 = parallel_counts(spec, workload, ParallelPlan(dp=8, attention_dp=True, ep=8)).devices[0].kv_cache_bytes
    assert tp8 == 8 * 61 * 576 * 2 * 131072
    assert dp8 == 1 * 61 * 576 * 2 * 131072


def test_cp_ring_keeps_token_shard():
    # Llama-3.1-8B: 32 layers, 8 KV heads x 128 x 2 (K, V) x 2 bytes = 4,096 B per token per
    # layer; cp 4 in ring mode keeps 8192 / 4 tokens per rank.
    workload = Workload(context=8192, phase="prefill")
    counts = parallel_counts(load_model("llama-3.1-8b"), workload, ParallelPlan(cp=4))
    assert counts.devices[3].kv_cache_bytes == 8192 // 4 * 4096 * 32


def test_cp_all_gather_keeps_everything():
    workload = Workload(context=8192, phase="prefill")
    counts = parallel_counts(load_model("llama-3.1-8b"), workload, ParallelPlan(cp=4, cp_mode="all_gather"))
    assert counts.devices[3].kv_cache_bytes == 8192 * 4096 * 32


def test_cp_ring_window_keeps_its_part():
    # gpt-oss-120b window layers (W 128) at context 1024 over cp 2 contiguous: the window's
    # 128 tokens all sit on rank 1, rank 0 keeps none of them.
    spec = load_model("gpt-oss-120b")
    workload = Workload(context=1024, phase="prefill")
    counts = parallel_counts(spec, workload, ParallelPlan(cp=2, cp_sharding="contiguous"))
    record = 2 * 8 * 64 * 2  # K and V of 8 KV heads of width 64, bf16
    assert counts.devices[0].kv_cache.by_component["window"] == 0
    assert counts.devices[1].kv_cache.by_component["window"] == 18 * 128 * record


# ---------------------------------------------------------------------------------------------
# Context-parallel load balance


def test_cp_contiguous_last_rank_imbalance():
    # Causal prefill of N = 4096 over cp 4 contiguous blocks: the last rank's queries
    # 3073..4096 see sum(t) = (4096*4097 - 3072*3073) / 2 = 3,670,528 keys, against a mean of
    # 4096*4097/2 / 4 = 2,097,664; the ratio tends to 1 - (3/4)^2 over 1/4 = 1.75.
    workload = Workload(context=4096, phase="prefill")
    counts = parallel_counts(load_model("llama-3.1-8b"), workload, ParallelPlan(cp=4, cp_sharding="contiguous"))
    assert counts.attention_imbalance == pytest.approx(3670528 / 2097664, rel=1e-15)
    assert counts.attention_imbalance == pytest.approx(1.75, abs=1e-3)


def test_cp_zigzag_is_balanced():
    # Blocks i and 7 - i of 512 tokens: every rank sees 512^2 * 7 + 512 * 513 keys.
    workload = Workload(context=4096, phase="prefill")
    counts = parallel_counts(load_model("llama-3.1-8b"), workload, ParallelPlan(cp=4, cp_sharding="zigzag"))
    assert counts.attention_imbalance == 1.0
    assert counts.devices[0].attention_pairs == 512 * 512 * 7 + 512 * 513


# ---------------------------------------------------------------------------------------------
# Traffic


def test_tp_all_reduce_llama_decode():
    # Two all-reduces per layer of one token's d_model 8192 bf16 activations over 80 layers,
    # plus one after the vocab-parallel embedding.
    counts = parallel_counts(load_model("llama-3.1-70b"), Workload(context=4096, phase="decode"), ParallelPlan(tp=8))
    traffic = counts.devices[0].traffic_bytes["decode"]
    assert traffic["comm.tp_all_reduce"] == 2 * 80 * 8192 * 2 + 8192 * 2


def test_tp_logits_all_gather():
    # fp32 logits of the 128,256-token vocabulary (16,032 rows per rank over tp 8).
    counts = parallel_counts(load_model("llama-3.1-70b"), Workload(context=4096, phase="decode"), ParallelPlan(tp=8))
    assert counts.devices[0].traffic_bytes["decode"]["comm.tp_all_gather"] == 16032 * 8 * 4


def test_pp_send_first_stage_only():
    # Prefill of 4096 tokens: stage 0 sends 4096 x 8192 bf16 activations; the last stage sends nothing.
    counts = parallel_counts(load_model("llama-3.1-70b"), Workload(context=4096, phase="prefill"), ParallelPlan(pp=2))
    assert counts.devices[0].traffic_bytes["prefill"] == {"comm.pp_send": 4096 * 8192 * 2}
    assert counts.devices[1].traffic_bytes["prefill"] == {}


def test_ep_dispatch_bf16_with_mxfp4_experts():
    # gpt-oss-120b stores experts in mxfp4, but dispatch moves bf16 activations: one token per
    # rank, top-4 experts, d_model 2880, 36 MoE layers.
    plan = ParallelPlan(dp=4, attention_dp=True, ep=4)
    counts = parallel_counts(load_model("gpt-oss-120b"), Workload(context=4096, phase="decode", batch=4), plan)
    traffic = counts.devices[0].traffic_bytes["decode"]
    assert traffic["comm.ep_dispatch"] == 1 * 4 * 2880 * 2 * 36
    assert traffic["comm.ep_combine"] == 1 * 4 * 2880 * 2 * 36


def test_ep_dispatch_deepseek_fp8():
    # DeepSeek-V3 (fp8 weights): top-8 of d_model 7168 in bf16, 58 MoE layers.
    plan = ParallelPlan(dp=8, attention_dp=True, ep=8)
    counts = parallel_counts(load_model("deepseek-v3"), Workload(context=4096, phase="decode", batch=8), plan)
    assert counts.devices[5].traffic_bytes["decode"]["comm.ep_dispatch"] == 1 * 8 * 7168 * 2 * 58


def test_ep_all_gather_path():
    # tp 2 x dp 4 with attention-DP: the 4 dp ranks' tokens (2 sequences each) are gathered
    # per MoE layer, 4 x 2 x 7168 x 2 bytes.
    plan = ParallelPlan(tp=2, dp=4, attention_dp=True, ep=8)
    counts = parallel_counts(load_model("deepseek-v3"), Workload(context=4096, phase="decode", batch=8), plan)
    traffic = counts.devices[0].traffic_bytes["decode"]
    assert traffic["comm.ep_all_gather"] == 4 * 2 * 7168 * 2 * 58
    assert traffic["comm.ep_reduce_scatter"] == 4 * 2 * 7168 * 2 * 58


def test_tp_ep_shares_tokens_without_all_to_all():
    plan = ParallelPlan(tp=8, ep=8)
    counts = parallel_counts(load_model("deepseek-v3"), Workload(context=4096, phase="decode"), plan)
    assert "comm.ep_dispatch" not in counts.devices[0].traffic_bytes["decode"]


def test_cp_kv_all_gather_glm():
    # GLM-5.2, fp8_ds_mla: 78 latents of 656 B plus 21 index keys of 132 B per token, all of
    # the prompt's 131,072 tokens gathered onto every cp rank.
    plan = ParallelPlan(cp=8, cp_mode="all_gather")
    workload = Workload(context=131072, phase="prefill", kv_dtype="fp8_ds_mla")
    counts = parallel_counts(load_model("glm-5.2"), workload, plan)
    assert counts.devices[2].traffic_bytes["prefill"]["comm.cp_kv"] == 131072 * (78 * 656 + 21 * 132)


def test_cp_kv_ring_llama():
    workload = Workload(context=8192, phase="prefill")
    counts = parallel_counts(load_model("llama-3.1-8b"), workload, ParallelPlan(cp=4))
    assert counts.devices[1].traffic_bytes["prefill"]["comm.cp_kv"] == 8192 * 4096 * 32


def test_layer_split_broadcasts_history():
    # A 8192-token chunk after 65,536 cached tokens: each layer's 65,536 cached records move to
    # the group, and every rank takes part in all 78 broadcasts.
    plan = ParallelPlan(tp=8, layer_split=8)
    workload = Workload(context=65536 + 8192, cached_context=65536, phase="prefill", kv_dtype="fp8_ds_mla")
    counts = parallel_counts(load_model("glm-5.2"), workload, plan)
    traffic = counts.devices[3].traffic_bytes["prefill"]
    assert traffic["comm.layer_split_broadcast"] == 65536 * (78 * 656 + 21 * 132)


def test_layer_split_history_per_chunk():
    # Two chunks of 8192 from an empty cache: histories 0 and 8192.
    plan = ParallelPlan(tp=8, layer_split=8)
    workload = Workload(context=16384, chunk_size=8192, phase="prefill", kv_dtype="fp8_ds_mla")
    counts = parallel_counts(load_model("glm-5.2"), workload, plan)
    traffic = counts.devices[0].traffic_bytes["prefill"]
    assert traffic["comm.layer_split_broadcast"] == (0 + 8192) * (78 * 656 + 21 * 132)


def test_traffic_totals_over_devices():
    counts = parallel_counts(load_model("llama-3.1-70b"), Workload(context=4096, phase="decode"), ParallelPlan(tp=8))
    assert counts.traffic_bytes_per_step["decode"]["comm.tp_all_reduce"] == 8 * (2 * 80 * 8192 * 2 + 8192 * 2)


# ---------------------------------------------------------------------------------------------
# LayerSplit capacity. The vllm-ascend KVPP feature guide measures 6.25x on one 8-device node
# (TP8 + EP) and 5.35x with pp 2 (38/40 layers) for GLM-5.2 on Ascend 950DT.


def test_layer_split_glm_one_node():
    # GLM-5.2, G = 8 over tp 8, 2 scratch slots, fp8_ds_mla. Without LayerSplit a rank holds
    # 78 x 656 + 21 x 132 = 53,940 B per token. With it, rank 0 owns layers 0..9 (4 of them
    # with index keys: 0, 1, 2, 6) plus two slots of the largest bundle (656 + 132):
    # 10 x 656 + 4 x 132 + 2 x 788 = 8,664 B, a gain of 6.226x. The formula
    # L / (ceil(L/G) + s) = 78 / (10 + 2) = 6.5 ignores the uneven index keys.
    plan = ParallelPlan(tp=8, layer_split=8, layer_split_scratch=2)
    counts = parallel_counts(load_model("glm-5.2"), Workload(context=4096, phase="prefill", kv_dtype="fp8_ds_mla"), plan)
    assert counts.layer_split_gain == pytest.approx(53940 / 8664, rel=1e-12)
    assert counts.layer_split_gain == pytest.approx(6.25, rel=0.01)


def test_layer_split_glm_two_stages():
    # pp 2 with 38/40 layers. Without LayerSplit the 40-layer stage holds 40 x 656 + 10 x 132
    # = 27,560 B per token (index keys on layers 38, 42, ..., 74). With it, the heaviest rank is
    # stage 0's rank 0: layers 0..4 (index keys on 0, 1, 2) plus 2 slots,
    # 5 x 656 + 3 x 132 + 2 x 788 = 5,252 B: 5.25x for the deployment.
    plan = ParallelPlan(tp=8, pp=2, pp_layers=(38, 40), layer_split=8, layer_split_scratch=2)
    workload = Workload(context=4096, phase="prefill", kv_dtype="fp8_ds_mla")
    counts = parallel_counts(load_model("glm-5.2"), workload, plan)
    assert counts.layer_split_gain == pytest.approx(27560 / 5252, rel=1e-12)
    assert counts.layer_split_gain == pytest.approx(5.35, rel=0.02)


def test_layer_split_glm_forty_layer_stage():
    # The 40-layer stage alone: rank 0 owns layers 38..42 (index keys on 38 and 42):
    # 5 x 656 + 2 x 132 + 2 x 788 = 5,120 B, so 27,560 / 5,120 = 5.38x, within 1% of 5.35x.
    spec = load_model("glm-5.2")
    plan = ParallelPlan(tp=8, pp=2, pp_layers=(38, 40), layer_split=8, layer_split_scratch=2)
    workload = Workload(context=1, phase="decode", kv_dtype="fp8_ds_mla")
    split = _device(parallel_counts(spec, workload, plan), pp_rank=1, tp_rank=0).kv_cache.bytes_per_sequence
    whole_plan = plan.model_copy(update={"layer_split": 1})
    whole = _device(parallel_counts(spec, workload, whole_plan), pp_rank=1, tp_rank=0).kv_cache.bytes_per_sequence
    assert split == 5 * 656 + 2 * 132 + 2 * 788
    assert whole == 40 * 656 + 10 * 132
    assert whole / split == pytest.approx(5.35, rel=0.01)


# ---------------------------------------------------------------------------------------------
# Weights, activations, pipeline bubble


def test_weights_single_device_match_model():
    spec = load_model("deepseek-v3")
    counts = parallel_counts(spec, Workload(context=4096, phase="decode"), ParallelPlan())
    assert counts.devices[0].weights_bytes == spec.weight_bytes()


def test_weights_llama_tp_split_exactly():
    # Nothing of Llama-3.1-70B is replicated at tp 8 (8 KV heads, vocab 128,256 = 8 x 16,032).
    spec = load_model("llama-3.1-70b")
    counts = parallel_counts(spec, Workload(context=4096, phase="decode"), ParallelPlan(tp=8))
    assert sum(d.weights_bytes for d in counts.devices) == spec.weight_bytes()


def test_weights_deepseek_tp_replicates_down_projections():
    # At tp 8 every rank keeps the MLA down-projections (7168 x 1536 for q, 7168 x 576 for the
    # latent) in 61 layers and the router (7168 x 256) in 58 MoE layers: 7 extra copies, fp8.
    spec = load_model("deepseek-v3")
    counts = parallel_counts(spec, Workload(context=4096, phase="decode"), ParallelPlan(tp=8))
    replicated = 61 * (7168 * 1536 + 7168 * 576) + 58 * 7168 * 256
    assert sum(d.weights_bytes for d in counts.devices) == spec.weight_bytes() + 7 * replicated


def test_weights_ep_holds_expert_share():
    # Attention-DP 8 with ep 8: a rank holds 256 / 8 = 32 whole experts per MoE layer
    # (3 x 7168 x 2048 fp8 each) instead of all 256.
    spec = load_model("deepseek-v3")
    workload = Workload(context=4096, phase="decode", batch=8)
    full = parallel_counts(spec, workload, ParallelPlan(dp=8)).devices[0].weights_bytes
    shared = parallel_counts(spec, workload, ParallelPlan(dp=8, attention_dp=True, ep=8)).devices[0].weights_bytes
    assert full - shared == 58 * (256 - 32) * 3 * 7168 * 2048


def test_single_device_matches_estimate():
    spec = load_model("qwen3-32b")
    workload = Workload(context=8192, chunk_size=2048)
    report = ctxsim.estimate(spec, workload, ParallelPlan())
    device = report.extras["parallel"].devices[0]
    assert device.activation_bytes == report.activation_peak_bytes
    assert device.kv_cache_bytes == report.kv_cache.bytes_per_device


def test_pipeline_bubble_definition():
    # pp 4 and 8 chunks: (4 - 1) / (8 + 4 - 1) of the stage slots idle.
    workload = Workload(context=8192, chunk_size=1024, phase="prefill")
    counts = parallel_counts(load_model("llama-3.1-8b"), workload, ParallelPlan(pp=4))
    assert counts.pipeline_bubble == 3 / 11


def test_estimate_json_per_device():
    report = ctxsim.estimate("llama-3.1-8b", Workload(context=4096, phase="decode"), ParallelPlan(tp=2, pp=2))
    out = report_to_dict(report)
    assert len(out["per_device"]) == 4
    assert set(out["per_device"][0]) >= {"weights_bytes", "kv_cache_bytes", "activation_bytes", "traffic_bytes"}
    assert out["traffic"]["bytes_per_step"]["decode"]["comm.pp_send"] == 2 * 4096 * 2


def test_estimate_rejects_invalid_plan():
    with pytest.raises(SpecError, match="tp 3 does not divide"):
        ctxsim.estimate("llama-3.1-8b", Workload(context=4096), ParallelPlan(tp=3))


def test_batch_below_dp_leaves_rank_idle():
    counts = parallel_counts(load_model("llama-3.1-8b"), Workload(context=4096), ParallelPlan(dp=2))
    assert counts.devices[1].kv_cache_bytes == 0
    assert counts.devices[0].kv_cache_bytes == 4096 * 32 * 4096


# ---------------------------------------------------------------------------------------------
# One device's CostReport


def test_device_report_stage_ops():
    report = device_report(load_model("llama-3.1-70b"), Workload(context=4096, phase="decode"), ParallelPlan(pp=2), rank=1)
    names = {op.name for op in report.ops}
    assert "embed" not in names
    assert "lm_head" in names


def test_device_report_expert_share():
    # With attention-DP 8 and ep 8 every rank runs 1/8 of the 8 tokens' 8 x 8 (token, expert)
    # pairs: the same FLOPs as one token's 8 experts on one device.
    spec = load_model("deepseek-v3")
    one = ctxsim.estimate(spec, Workload(context=4096, phase="decode"))
    plan = ParallelPlan(dp=8, attention_dp=True, ep=8)
    report = device_report(spec, Workload(context=4096, phase="decode", batch=8), plan, rank=0)
    flops = sum(op.total_matmul_flops for op in report.ops if op.name == "moe.experts")
    assert flops == sum(op.total_matmul_flops for op in one.ops if op.name == "moe.experts")


# ---------------------------------------------------------------------------------------------
# Invariants over every preset


@pytest.mark.parametrize("name", ctxsim.preset_names())
def test_stages_partition_model(name):
    # Two pipeline stages hold every layer once: their KV adds up to the single-device KV, and
    # their weights to the model's, plus a second copy of a tied embedding for the last stage.
    spec = load_model(name)
    workload = Workload(context=8192, phase="decode", batch=2)
    counts = parallel_counts(spec, workload, ParallelPlan(pp=2))
    single = ctxsim.estimate(spec, workload)
    tied_copy = spec.vocab_size * spec.d_model if spec.tie_word_embeddings else 0
    assert sum(d.kv_cache_bytes for d in counts.devices) == single.kv_cache.bytes_per_device
    assert sum(d.weights_bytes for d in counts.devices) == spec.weight_bytes() + weight_bytes(tied_copy, spec.weight_dtype)


@pytest.mark.parametrize("name", ["deepseek-v3", "glm-5.2", "kimi-k2"])
def test_layer_split_partitions_kv(name):
    # Without scratch slots the 8 ranks of a LayerSplit group hold each layer's KV exactly once.
    spec = load_model(name)
    workload = Workload(context=8192, phase="decode")
    plan = ParallelPlan(tp=8, layer_split=8, layer_split_scratch=0)
    counts = parallel_counts(spec, workload, plan)
    whole = parallel_counts(spec, workload, ParallelPlan(tp=8)).devices[0].kv_cache_bytes
    assert sum(d.kv_cache_bytes for d in counts.devices) == whole
