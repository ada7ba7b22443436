"""Timing whole plans: pipeline stages, micro-batches, collective groups, overlap and context arrays."""

import numpy as np
import pytest

import ctxsim
from ctxsim.spec import ParallelPlan, Workload
from ctxsim.spec.hardware import load_hardware
from ctxsim.time import estimate_time, pipeline_decode_s, pipeline_prefill_s, time_device, time_plan
from ctxsim.time.collectives import collective_size_bytes, collective_time_s
from ctxsim.time.placement import device_report

REL = 1e-12


def llama_70b():
    return ctxsim.load_model("llama-3.1-70b")


def deepseek_v3():
    return ctxsim.load_model("deepseek-v3")


def op_named(times, name, phase):
    return [t for t in times.ops if t.name == name and t.phase == phase]


# ---------------------------------------------------------------------------------------------
# Pipeline formulas


def test_decode_one_micro_batch_sums_stages():
    # One micro-batch crosses both stages in turn: 3 + 1.
    assert pipeline_decode_s([3.0, 1.0], 1) == pytest.approx(4.0)


def test_decode_slowest_stage_sets_pace():
    # Two micro-batches: the 3 s stage serves both, 2 x 3 = 6 s > 3 + 1.
    assert pipeline_decode_s([3.0, 1.0], 2) == pytest.approx(6.0)


def test_decode_balanced_stages_cycle_is_sum():
    # Balanced stages: 2 micro-batches x 2 s = 2 + 2.
    assert pipeline_decode_s([2.0, 2.0], 2) == pytest.approx(4.0)


def test_prefill_equal_stages_over_bubble():
    # pp 4 equal stages of 8 s over m = 4 chunks: bubble (4 - 1) / (4 + 4 - 1) = 3/7, so the
    # makespan is the stage time over 1 - 3/7: 8 x 7 / 4 = 14 s.
    assert pipeline_prefill_s([8.0] * 4, 4) == pytest.approx(8.0 / (1 - 3 / 7))


# ---------------------------------------------------------------------------------------------
# Stages of a real plan


def test_stages_timed_on_own_reports():
    # Llama-3.1-70B on tp 4 x pp 2: stage s is timed on rank 4 s (tp rank 0 of the stage).
    spec, plan = llama_70b(), ParallelPlan(tp=4, pp=2)
    workload = Workload(context=32768, chunk_size=8192, phase="prefill")
    times = time_plan(spec, workload, plan, "h100-sxm")
    for stage in (0, 1):
        alone = time_device(device_report(spec, workload, plan, rank=4 * stage), "h100-sxm")
        assert abs(times.stages[stage].prefill_s - alone.ttft_s) <= REL * alone.ttft_s
    assert times.prefill.forwards == 4
    assert times.ttft_s == pytest.approx(pipeline_prefill_s([s.prefill_s for s in times.stages], 4), rel=REL)


def test_decode_micro_batches_of_replica():
    # 6 sequences over dp 2 and pp 2: 3 per replica, 2 micro-batches of ceil(3 / 2) = 2.
    spec, plan = llama_70b(), ParallelPlan(tp=4, pp=2, dp=2)
    times = time_plan(spec, Workload(context=8192, batch=6, phase="decode"), plan, "h100-sxm")
    assert times.batch == 3
    assert times.decode.micro_batches == 2
    stage_s = times.decode.stage_s
    assert times.tpot_s == pytest.approx(max(sum(stage_s), 2 * max(stage_s)), rel=REL)
    micro = time_device(device_report(spec, Workload(context=8192, batch=4, phase="decode"), plan, rank=0), "h100-sxm")
    assert abs(stage_s[0] - micro.tpot_s) <= REL * micro.tpot_s


def test_tokens_per_s_counts_whole_batch():
    times = time_plan(llama_70b(), Workload(context=8192, batch=6, phase="decode"), ParallelPlan(tp=4, pp=2, dp=2), "h100-sxm")
    assert times.tokens_per_s == pytest.approx(6 / times.tpot_s)
    assert times.n_devices == 16


def test_estimate_time_with_model_times_every_stage():
    spec, plan = llama_70b(), ParallelPlan(tp=4, pp=2)
    workload = Workload(context=8192, chunk_size=4096, batch=2)
    report = device_report(spec, workload, plan)
    assert estimate_time(report, "h100-sxm", model=spec).to_dict() == time_plan(spec, workload, plan, "h100-sxm").to_dict()


def test_pipeline_report_without_model_raises():
    report = device_report(llama_70b(), Workload(context=8192), ParallelPlan(tp=4, pp=2))
    with pytest.raises(ValueError, match="timed stage by stage from the ModelSpec"):
        estimate_time(report, "h100-sxm")


def test_single_stage_plan_equals_report():
    # With one stage and one cp rank, the plan's time is its busiest device's.
    spec, plan, workload = llama_70b(), ParallelPlan(tp=8, dp=2), Workload(context=8192, batch=5)
    times = time_plan(spec, workload, plan, "h100-sxm")
    alone = estimate_time(device_report(spec, workload, plan), "h100-sxm", total_batch=5)
    assert times.ttft_s == alone.ttft_s
    assert times.tpot_s == alone.tpot_s
    assert times.tokens_per_s == alone.tokens_per_s


def test_contiguous_cp_last_rank_is_slowest():
    # Contiguous cp blocks: the last cp rank's queries see the most keys, so it sets the stage.
    spec, plan = llama_70b(), ParallelPlan(tp=2, cp=4, cp_sharding="contiguous")
    times = time_plan(spec, Workload(context=65536, phase="prefill"), plan, "h100-sxm")
    assert times.stages[0].prefill_rank == plan.rank_of(cp=3)


# ---------------------------------------------------------------------------------------------
# Collectives over their groups


def test_ep_all_gather_timed_over_dp_ranks():
    # Attention-DP tp 2 x dp 4, ep 8: the all-gather path runs over the 4 dp ranks, which sit
    # 2 ranks apart, so all 4 share one 8-device domain.
    spec, plan = deepseek_v3(), ParallelPlan(tp=2, dp=4, ep=8, attention_dp=True)
    report = device_report(spec, Workload(context=4096, batch=8, phase="decode"), plan)
    profile = load_hardware("h200")
    times = estimate_time(report, profile)
    op = next(o for o in report.ops if o.name == "comm.ep_all_gather")
    timed = next(t for t in times.ops if t.name == "comm.ep_all_gather" and t.layer_kind == op.layer_kind)
    assert timed.time_s == pytest.approx(collective_time_s("all_gather", collective_size_bytes(op), 4, profile, 4))


def test_layer_split_broadcast_timed_over_group():
    spec, plan = deepseek_v3(), ParallelPlan(tp=8, layer_split=8)
    report = device_report(spec, Workload(context=4096, phase="decode"), plan)
    profile = load_hardware("h200")
    times = estimate_time(report, profile)
    op = next(o for o in report.ops if o.name == "comm.layer_split_broadcast")
    timed = next(t for t in times.ops if t.name == op.name and t.layer_kind == op.layer_kind)
    assert timed.time_s == pytest.approx(collective_time_s("broadcast", collective_size_bytes(op), 8, profile))


def test_cp_kv_timed_as_all_gather_over_cp():
    spec, plan = deepseek_v3(), ParallelPlan(tp=4, cp=2, cp_mode="all_gather")
    report = device_report(spec, Workload(context=4096, phase="prefill"), plan)
    profile = load_hardware("h200")
    times = estimate_time(report, profile)
    op = next(o for o in report.ops if o.name == "comm.cp_kv")
    timed = next(t for t in times.ops if t.name == op.name and t.layer_kind == op.layer_kind)
    assert timed.time_s == pytest.approx(collective_time_s("all_gather", collective_size_bytes(op), 2, profile))


def test_pp_send_crosses_nodes():
    # tp 8 x pp 2 on 8-device domains: stage 0 (ranks 0-7) sends to stage 1 (ranks 8-15) over
    # the scale-out network, one message per prefill chunk.
    spec, plan = llama_70b(), ParallelPlan(tp=8, pp=2)
    workload = Workload(context=8192, chunk_size=4096, phase="prefill")
    report = device_report(spec, workload, plan, rank=0)
    profile = load_hardware("h100-sxm")
    times = time_device(report, profile)
    timed = op_named(times, "comm.pp_send", "prefill")[0]
    size = collective_size_bytes(next(o for o in report.ops if o.name == "comm.pp_send"))
    assert timed.time_s == pytest.approx(2 * collective_time_s("send_recv", size / 2, 2, profile, 1))


def test_overlap_hides_layer_split_broadcast():
    # Full overlap: the decode step takes the larger of device ops and communication.
    spec, plan = deepseek_v3(), ParallelPlan(tp=8, layer_split=8)
    workload = Workload(context=65536, phase="decode")
    plain = time_plan(spec, workload, plan, "h200")
    hidden = time_plan(spec, workload, plan, "h200", overlap=1.0)
    assert hidden.tpot_s == pytest.approx(max(plain.decode.compute_s, plain.decode.communication_s))
    assert hidden.tpot_s < plain.tpot_s


# ---------------------------------------------------------------------------------------------
# Context arrays


def test_context_array_equals_scalar_times():
    spec = ctxsim.load_model("glm-5.2")
    workload = Workload(context=4096, chunk_size=8192, batch=2)
    contexts = np.array([4096, 100_000, 1_000_000])
    times = estimate_time(ctxsim.estimate(spec, workload, context=contexts), "h200", overlap=0.5)
    for i, n in enumerate(contexts):
        scalar = estimate_time(ctxsim.estimate(spec, workload.model_copy(update={"context": int(n)})), "h200", overlap=0.5)
        assert abs(times.ttft_s[i] - scalar.ttft_s) <= REL * scalar.ttft_s
        assert abs(times.tpot_s[i] - scalar.tpot_s) <= REL * scalar.tpot_s
        for bound, seconds in scalar.decode.by_bound.items():
            assert abs(times.decode.by_bound[bound][i] - seconds) <= REL * scalar.tpot_s


def test_context_array_to_dict():
    report = ctxsim.estimate("llama-3.1-8b", Workload(context=4096), context=np.array([4096, 65536]))
    out = estimate_time(report, "h100-sxm").to_dict()
    assert len(out["ttft_s"]) == 2
    assert len(out["ops"][0]["bound"]) == 2
