"""Deployment sizing: fewest devices meeting targets, the Pareto set, and infeasible requests."""

import json

import pytest

import ctxsim
from ctxsim.cli.main import main
from ctxsim.spec import SpecError
from ctxsim.spec.hardware import load_hardware
from ctxsim.time.placement import device_report
from ctxsim.time.size import _dominates, candidate_plans, decode_plan, kv_dtype_candidates, size, tp_candidates

# Llama-3.1-70B bf16 weights: 2 x 128256 x 8192 + 80 x (2 x 8192^2 + 2 x 8192 x 1024 + 3 x 8192 x 28672)
# parameters, 2 bytes each.
LLAMA_70B_WEIGHTS = (2 * 128256 * 8192 + 80 * (2 * 8192**2 + 2 * 8192 * 1024 + 3 * 8192 * 28672)) * 2
# H100 SXM usable memory at fraction 0.9 of 81,559 MiB.
H100_USABLE = 0.9 * 81_559 * 2**20


def test_llama_70b_needs_two_h100():
    # 141 GB of weights exceed one H100's usable 77 GB, and half of them fit, so the fewest is 2.
    assert LLAMA_70B_WEIGHTS > H100_USABLE
    assert LLAMA_70B_WEIGHTS / 2 < H100_USABLE
    result = size("llama-3.1-70b", 8192, "h100-sxm")
    assert result.plans[0].gpus == 2
    assert not any(r.memory.fits for r in result.evaluated if r.gpus == 1)


def test_tpot_target_needs_two_devices():
    # One H100 reads at least Llama-3.1-8B's 16,059,990,016 weight bytes per decode step:
    # 16,059,990,016 / 3.35e12 B/s = 4.79 ms, above a 4.5 ms target, so no 1-device plan
    # qualifies; tp 2 halves the weight bytes per device and is the fewest that does.
    assert 16_059_990_016 / 3.35e12 > 4.5e-3
    result = size("llama-3.1-8b", 8192, "h100-sxm", target_tpot_s=4.5e-3, max_gpus=8)
    assert all(r.tpot_s > 4.5e-3 for r in result.evaluated if r.gpus == 1)
    assert result.plans[0].gpus == 2
    assert result.plans[0].plan.tp == 2


def test_targets_raise_device_count():
    # A TPOT target below the 2-GPU plan's time moves the first plan to more devices.
    loose = size("llama-3.1-70b", 8192, "h100-sxm")
    target = loose.plans[0].tpot_s * 0.6
    tight = size("llama-3.1-70b", 8192, "h100-sxm", target_tpot_s=target)
    assert tight.plans[0].gpus > loose.plans[0].gpus
    assert all(p.tpot_s <= target for p in tight.plans)


def test_first_plan_has_fewest_devices():
    result = size("llama-3.1-70b", 131072, "h100-sxm", concurrency=16, target_tpot_s=0.03, target_ttft_s=20)
    feasible = [r for r in result.evaluated if r.feasible]
    assert result.plans[0].gpus == min(r.gpus for r in feasible)


def test_plans_are_feasible_and_undominated():
    result = size("llama-3.1-70b", 131072, "h100-sxm", concurrency=16, target_tpot_s=0.03)
    for plan in result.plans:
        assert plan.feasible
        assert not any(_dominates(other, plan) for other in result.plans)


def test_memory_shortfall_explained():
    # 4 sequences of 1M tokens of a 405B model cannot fit on 24 GB cards, 8 to a machine.
    result = size("llama-3.1-405b", 2**20, "rtx-4090", concurrency=4)
    assert result.plans == []
    assert result.shortfall[0].startswith("memory: no plan of up to 64 devices")
    assert "more than the usable" in result.shortfall[0]


def test_target_shortfall_explained():
    result = size("llama-3.1-70b", 131072, "h100-sxm", target_tpot_s=1e-4)
    assert result.plans == []
    assert result.shortfall[0].startswith("TPOT: the fastest plan that fits")
    assert "over the target 100 us" in result.shortfall[0]
    assert result.shortfall[0].endswith("; allow more devices or relax the target")


def test_glm_5_2_1m_h200_has_plans():
    result = size("glm-5.2", 2**20, "h200")
    assert result.plans
    assert result.plans[0].memory.fits


def test_glm_5_2_1m_h200_uses_pipeline_and_layer_split():
    # GLM-5.2's 1,486,751,662,080 bf16 weight bytes need at least 12 usable H200s (126.4 GiB
    # each): the Pareto set reaches 16 devices with LayerSplit and 32 with pipeline stages.
    result = size("glm-5.2", 2**20, "h200")
    assert result.plans[0].gpus == 16
    assert result.plans[0].plan.layer_split > 1
    assert any(p.plan.pp > 1 for p in result.plans)


def test_weights_alone_too_large_explained():
    # max_gpus 1: GLM-5.2's 1,486,751,662,080 weight bytes exceed the usable 0.9 x 141 GB.
    result = size("glm-5.2", 2**20, "h200", max_gpus=1)
    assert result.plans == []
    assert result.shortfall[0].startswith("memory: no plan of up to 1 device holds 1 sequence of 1,048,576 tokens")
    assert result.evaluated
    assert all(r.memory.headroom_bytes < r.memory.usable_bytes - 1_486_751_662_080 for r in result.evaluated)


def test_candidates_cover_every_degree():
    # DeepSeek-V3 (MLA, MoE) with 4 sequences on up to 16 devices.
    plans = list(candidate_plans(ctxsim.load_model("deepseek-v3"), 2**17, 4, 16))
    assert any(p.pp > 1 for p in plans)
    assert any(p.cp > 1 and p.cp_mode == "all_gather" for p in plans)
    assert any(p.ep > 1 and not p.attention_dp for p in plans)
    assert any(p.attention_dp and p.resolved_ep_mode == "all_to_all" for p in plans)
    assert any(p.attention_dp and p.resolved_ep_mode == "all_gather" for p in plans)
    assert all(p.world_size <= 16 and p.dp <= 4 for p in plans)


def test_cp_plan_decodes_as_replicas():
    plan = decode_plan(ctxsim.ParallelPlan(tp=4, cp=2, cp_mode="all_gather"))
    assert (plan.tp, plan.cp, plan.dp) == (4, 1, 2)


def test_kv_dtypes_for_mla_include_ds_mla():
    assert "fp8_ds_mla" in kv_dtype_candidates(ctxsim.load_model("deepseek-v3"), load_hardware("h200"))


def test_kv_dtypes_for_gqa_exclude_ds_mla():
    assert kv_dtype_candidates(ctxsim.load_model("llama-3.1-8b"), load_hardware("h200")) == ["bf16", "fp8"]


def test_nvfp4_kv_only_with_fp4_units():
    assert "nvfp4" in kv_dtype_candidates(ctxsim.load_model("llama-3.1-8b"), load_hardware("b200"))


def test_tp_candidates_divide_heads():
    # Llama-3.1-70B has 64 query heads: tp 128 would leave none.
    assert tp_candidates(ctxsim.load_model("llama-3.1-70b"), 128) == [1, 2, 4, 8, 16, 32, 64]


def test_custom_per_device_model_is_used():
    calls = []

    def counting_model(spec, workload, plan, rank=None):
        calls.append(plan)
        return device_report(spec, workload, plan, rank=rank)

    size("llama-3.1-8b", 4096, "h100-sxm", max_gpus=1, per_device=counting_model)
    assert calls


def test_bad_chunk_size_rejected():
    with pytest.raises(SpecError, match="chunk_size"):
        size("llama-3.1-8b", 4096, "h100-sxm", chunk_size=0)


# ---------------------------------------------------------------------------------------------
# CLI


def test_cli_size_json_has_plans(capsys):
    code = main(["size", "--model", "llama-3.1-70b", "--context", "8k", "--hardware", "h100-sxm", "--json"])
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    assert out["plans"][0]["gpus"] == 2
    assert {"ttft_s", "tpot_s", "tokens_per_s", "memory_headroom_bytes"} <= set(out["plans"][0])


def test_cli_size_table(capsys):
    assert main(["size", "--model", "glm-5.2", "--context", "1m", "--hardware", "h200"]) == 0
    out = capsys.readouterr().out
    assert "GPUs" in out
    assert "headroom" in out
    # The 16-device plan needs LayerSplit to fit, so the legend explains its decode cost.
    assert " ls16 " in out
    assert "ls: LayerSplit; its decode step broadcasts" in out


def test_cli_size_infeasible_says_what_is_short(capsys):
    code = main(
        ["size", "--model", "llama-3.1-70b", "--context", "128k", "--hardware", "h100-sxm", "--target-tpot", "0.0001"]
    )
    assert code == 1
    out = capsys.readouterr().out
    assert "no plan meets the request" in out
    assert "TPOT:" in out


def test_cli_size_rejects_negative_target(capsys):
    with pytest.raises(SystemExit) as info:
        main(["size", "--model", "llama-3.1-8b", "--context", "4k", "--hardware", "h100-sxm", "--target-tpot", "-1"])
    assert info.value.code == 2


def test_cli_size_json_has_settings_and_whole_bytes(capsys):
    argv = ["size", "--model", "llama-3.1-8b", "--context", "32k", "--hardware", "h100-sxm", "--json"]
    assert main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    assert (out["chunk_size"], out["memory_fraction"], out["overlap"]) == (8192, 0.9, 0.0)
    row = out["plans"][0]
    assert type(row["memory_usable_bytes"]) is int
    assert type(row["memory_headroom_bytes"]) is int


def test_human_seconds_keeps_long_times_readable():
    from ctxsim.units import human_seconds

    assert human_seconds(3820.4) == "3,820 s"
    assert human_seconds(314.2) == "314 s"
    assert human_seconds(0.0077) == "7.7 ms"
    assert human_seconds(2e-6) == "2 us"
