"""ParallelPlan: degrees, rank numbering, and the one-line errors of invalid plans."""

import pytest
from pydantic import ValidationError

from ctxsim.spec import ParallelPlan, SpecError, Workload, load_model
from ctxsim.spec.plan import balanced_blocks, check_plan, kv_replica_ranks, kv_replication, stage_layer_counts


def test_world_size_is_product():
    plan = ParallelPlan(tp=8, pp=2, dp=3, cp=2, ep=8)
    assert plan.world_size == 8 * 2 * 3 * 2


def test_coordinates_round_trip():
    plan = ParallelPlan(tp=2, pp=3, dp=2, cp=2)
    for rank in range(plan.world_size):
        assert plan.rank_of(**plan.coordinates(rank)) == rank


def test_tp_is_fastest_axis():
    plan = ParallelPlan(tp=4, pp=2)
    assert plan.coordinates(5) == {"tp": 1, "cp": 0, "pp": 1, "dp": 0}


def test_check_world_size_names_product():
    with pytest.raises(ValueError, match="tp 2 x pp 2 x dp 1 x cp 1 = 4"):
        ParallelPlan(tp=2, pp=2).check_world_size(3, "--nproc")


def test_expert_group_with_attention_dp():
    plan = ParallelPlan(tp=2, dp=4, attention_dp=True, ep=8)
    assert plan.expert_group_size == 2 * 4
    assert plan.moe_tp == 1


def test_moe_tp_is_group_over_ep():
    # SGLang's rule: experts split ep ways over the tp ranks, each expert tp / ep ways.
    assert ParallelPlan(tp=8, ep=2).moe_tp == 8 // 2


def test_ep_must_divide_expert_group():
    with pytest.raises(ValidationError, match="ep 3 does not divide the expert group"):
        ParallelPlan(tp=4, ep=3)
    with pytest.raises(ValidationError, match="ep 3 exceeds the expert group"):
        ParallelPlan(tp=2, ep=3)


def test_ep_without_attention_dp_hints():
    with pytest.raises(ValidationError, match="set attention_dp"):
        ParallelPlan(tp=1, dp=8, ep=8)


def test_all_to_all_needs_tp_one():
    with pytest.raises(ValidationError, match="ep_mode all_to_all needs tp 1"):
        ParallelPlan(tp=2, dp=2, attention_dp=True, ep=4, ep_mode="all_to_all")


def test_auto_mode_picks_all_to_all():
    assert ParallelPlan(dp=8, attention_dp=True, ep=8).resolved_ep_mode == "all_to_all"


def test_auto_mode_picks_all_gather():
    assert ParallelPlan(tp=2, dp=4, attention_dp=True, ep=2).resolved_ep_mode == "all_gather"


def test_shared_tokens_need_no_ep_path():
    assert ParallelPlan(tp=8, ep=8).resolved_ep_mode == "none"


def test_pp_layers_length_checked():
    with pytest.raises(ValidationError, match="pp_layers has 1 stages but pp is 2"):
        ParallelPlan(pp=2, pp_layers=(78,))


def test_unknown_key_rejected():
    with pytest.raises(ValidationError):
        ParallelPlan(tpp=2)


def test_stage_split_even_first_larger():
    assert stage_layer_counts(78, ParallelPlan(pp=4)) == (20, 20, 19, 19)


def test_stage_split_explicit():
    assert stage_layer_counts(78, ParallelPlan(pp=2, pp_layers=(38, 40))) == (38, 40)


def test_balanced_blocks_contiguous():
    assert balanced_blocks(list(range(10)), 4) == [[0, 1, 2], [3, 4, 5], [6, 7], [8, 9]]


# ---------------------------------------------------------------------------------------------
# Checks against a model


def test_kv_replication_llama_tp32():
    # Llama-3.1-70B has 8 KV heads: tp 32 keeps one per rank, each on 32 / 8 = 4 ranks.
    assert kv_replication(load_model("llama-3.1-70b"), ParallelPlan(tp=32)) == {"dense": 4}


def test_kv_replication_mla_is_tp():
    replication = kv_replication(load_model("deepseek-v3"), ParallelPlan(tp=8))
    assert set(replication.values()) == {8}


def test_replica_ranks_include_all_gather_cp():
    plan = ParallelPlan(tp=8, cp=2, cp_mode="all_gather")
    assert kv_replica_ranks(load_model("glm-5.2"), plan) == 8 * 2


def test_ep_must_divide_routed_experts():
    # DeepSeek-V3 has 256 routed experts; 6 does not divide them.
    with pytest.raises(SpecError, match="ep 6 does not divide the 256 routed experts"):
        check_plan(load_model("deepseek-v3"), ParallelPlan(dp=6, attention_dp=True, ep=6))


def test_ep_needs_moe_model():
    with pytest.raises(SpecError, match="needs a MoE model"):
        check_plan(load_model("llama-3.1-8b"), ParallelPlan(tp=2, ep=2))


def test_pp_at_most_layers():
    with pytest.raises(SpecError, match="pp 64 exceeds the 32 layers"):
        check_plan(load_model("llama-3.1-8b"), ParallelPlan(pp=64))


def test_pp_layers_must_sum_to_layers():
    with pytest.raises(SpecError, match="sum to 70, not the 78 layers"):
        check_plan(load_model("glm-5.2"), ParallelPlan(pp=2, pp_layers=(30, 40)))


def test_tp_must_divide_heads():
    with pytest.raises(SpecError, match="tp 3 does not divide n_head 64"):
        check_plan(load_model("llama-3.1-70b"), ParallelPlan(tp=3))


def test_layer_split_needs_identical_kv():
    # Llama-3.1-70B at tp 8 splits its 8 KV heads, so no two ranks hold the same KV.
    with pytest.raises(SpecError, match="layer_split 2 does not divide the 1 ranks"):
        check_plan(load_model("llama-3.1-70b"), ParallelPlan(tp=8, layer_split=2))


def test_cp_rejects_decode():
    with pytest.raises(SpecError, match="use phase prefill"):
        check_plan(load_model("llama-3.1-8b"), ParallelPlan(cp=2), Workload(context=4096))


def test_cp_ring_rejects_top_k():
    with pytest.raises(SpecError, match="use cp_mode all_gather"):
        check_plan(load_model("glm-5.2"), ParallelPlan(cp=2), Workload(context=4096, phase="prefill"))


def test_cp_needs_equal_blocks():
    workload = Workload(context=1000, phase="prefill")
    with pytest.raises(SpecError, match="divisible by 16"):
        check_plan(load_model("llama-3.1-8b"), ParallelPlan(cp=8), workload)


def test_cp_rejects_chunks():
    workload = Workload(context=4096, phase="prefill", chunk_size=1024)
    with pytest.raises(SpecError, match="drop the chunk size"):
        check_plan(load_model("llama-3.1-8b"), ParallelPlan(cp=2), workload)


def test_valid_plan_passes():
    plan = ParallelPlan(tp=8, pp=2, layer_split=8, pp_layers=(38, 40))
    check_plan(load_model("glm-5.2"), plan, Workload(context=8192, phase="prefill"))
