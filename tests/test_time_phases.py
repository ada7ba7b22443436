"""Phase times: TTFT, TPOT, tokens per second, overlap and pipeline stages, on synthetic ops."""

import pytest

import ctxsim
from ctxsim.counts.report import CostReport, KVMemory, Op
from ctxsim.spec import ParallelPlan, Workload
from ctxsim.spec.hardware import hardware_from_dict, load_hardware
from ctxsim.time import estimate_time, pipeline_prefill_s, split_stages, stage_imbalance


def synthetic_profile():
    """BF16 1e12 FLOP/s, memory 1e11 B/s, efficiencies 0.5, launch 1e-6 s; switch of 8 at 1e10 B/s."""
    data = load_hardware("h100-sxm").model_dump(mode="json")
    data.update(
        name="synthetic",
        peak_flops={"bf16": 1e12},
        vector_flops_per_s=1e11,
        memory_bandwidth_bytes_per_s=1e11,
        launch_overhead_s=1e-6,
    )
    for kind in ("gemm", "attention", "gather", "select", "elementwise", "memory"):
        data["efficiency"][kind].update(compute=0.5, memory=0.5)
    data["scale_up"].update(
        bandwidth_bytes_per_s=1e10, efficiency=1.0, base_latency_s=0.0, step_latency_s=0.0, in_switch_reduction=None
    )
    return hardware_from_dict(data)


def synthetic_report(workload, plan=None):
    """Prefill: a 4e9-FLOP GEMM (8e-3 s) on 2 layers and a 1e8-byte all-reduce; decode: a 1e9-byte read (2e-2 s)."""
    ops = [
        Op("ffn.up", "gemm", "prefill", 2, 4e9, 0, 1e8, 0, "dense"),
        Op("comm.tp_all_reduce", "collective", "prefill", 2, 0, 0, 1e8, 1e8, "dense"),
        Op("ffn.up", "gemm", "decode", 2, 1e6, 0, 1e9, 0, "dense"),
    ]
    kv = KVMemory(bytes_per_sequence=1000)
    return CostReport("synthetic", workload, ops, kv, weights_bytes=10**9, activation_peak_bytes=0, plan=plan)


def test_ttft_sums_prefill_ops():
    # GEMM: 2 layers x (8e-3 + 1e-6 launch). All-reduce over tp=2 of S=1e8 at 1e10 B/s:
    # 2 x 1/2 x 1e8 / 1e10 = 1e-2 s per layer, 2 layers.
    report = synthetic_report(Workload(context=100), ParallelPlan(tp=2))
    t = estimate_time(report, synthetic_profile())
    assert t.prefill.compute_s == pytest.approx(2 * (8e-3 + 1e-6))
    assert t.prefill.communication_s == pytest.approx(2 * 1e-2)
    assert t.ttft_s == pytest.approx(2 * (8e-3 + 1e-6) + 2 * 1e-2)


def test_tpot_is_one_decode_step():
    # 2 layers x (1e9 / (1e11 x 0.5) + 1e-6).
    t = estimate_time(synthetic_report(Workload(context=100, batch=4)), synthetic_profile())
    assert t.tpot_s == pytest.approx(2 * (2e-2 + 1e-6))


def test_tokens_per_s_is_batch_over_tpot():
    t = estimate_time(synthetic_report(Workload(context=100, batch=4)), synthetic_profile(), n_devices=2)
    assert t.tokens_per_s == pytest.approx(4 / (2 * (2e-2 + 1e-6)))
    assert t.tokens_per_s_per_device == pytest.approx(t.tokens_per_s / 2)


def test_tokens_per_s_counts_replicas():
    # 3 data-parallel replicas of 4 sequences each.
    t = estimate_time(synthetic_report(Workload(context=100, batch=4), ParallelPlan(dp=3)), synthetic_profile())
    assert t.tokens_per_s == pytest.approx(3 * 4 / (2 * (2e-2 + 1e-6)))


def test_total_batch_overrides_replicas():
    # 1 sequence over 2 replicas keeps one replica idle.
    report = synthetic_report(Workload(context=100, batch=1), ParallelPlan(dp=2))
    t = estimate_time(report, synthetic_profile(), total_batch=1)
    assert t.tokens_per_s == pytest.approx(1 / (2 * (2e-2 + 1e-6)))


def test_devices_default_to_plan_world_size():
    t = estimate_time(synthetic_report(Workload(context=100), ParallelPlan(tp=2, dp=3)), synthetic_profile())
    assert t.n_devices == 6


def test_full_overlap_hides_communication():
    # Compute 2 x (8e-3 + 1e-6) is below communication 2e-2, so the phase takes the communication time.
    report = synthetic_report(Workload(context=100), ParallelPlan(tp=2))
    t = estimate_time(report, synthetic_profile(), overlap=1.0)
    assert t.ttft_s == pytest.approx(2 * 1e-2)


def test_half_overlap():
    report = synthetic_report(Workload(context=100), ParallelPlan(tp=2))
    t = estimate_time(report, synthetic_profile(), overlap=0.5)
    compute, communication = 2 * (8e-3 + 1e-6), 2 * 1e-2
    assert t.ttft_s == pytest.approx(compute + communication - 0.5 * compute)


def test_overlap_out_of_range_raises():
    with pytest.raises(ValueError, match="overlap 1.5 must be between 0 and 1"):
        estimate_time(synthetic_report(Workload(context=100)), synthetic_profile(), overlap=1.5)


def test_chunked_prefill_launches_once_per_chunk():
    # 1000 new tokens in chunks of 300: 4 forward passes, so 4 launches of 1e-6 s per GEMM run,
    # and 4 all-reduces of 1e8 / 4 bytes, which cost the same bandwidth time with no latency.
    report = synthetic_report(Workload(context=1000, chunk_size=300), ParallelPlan(tp=2))
    t = estimate_time(report, synthetic_profile())
    gemm = t.phase_ops("prefill")[0]
    assert gemm.launch_s == pytest.approx(4e-6)
    assert t.prefill.forwards == 4
    assert t.prefill.communication_s == pytest.approx(2 * 1e-2)


def test_by_bound_splits_phase():
    report = synthetic_report(Workload(context=100), ParallelPlan(tp=2))
    t = estimate_time(report, synthetic_profile())
    assert set(t.prefill.by_bound) == {"compute", "communication"}
    assert t.decode.by_bound["memory"] == pytest.approx(t.tpot_s)


def test_to_dict_has_metrics():
    out = estimate_time(synthetic_report(Workload(context=100)), synthetic_profile()).to_dict()
    assert {"ttft_s", "tpot_s", "tokens_per_s", "tokens_per_s_per_device", "ops", "confidence"} <= set(out)


# ---------------------------------------------------------------------------------------------
# Pipeline stages


def test_split_stages_gives_extra_layer_to_first():
    assert split_stages(["a", "a", "b", "b", "b"], 2) == [{"a": 2, "b": 1}, {"b": 2}]


def test_split_stages_rejects_too_many():
    with pytest.raises(ValueError, match="pp 6 must be between 1 and the number of layers 5"):
        split_stages(["a"] * 5, 6)


def test_pipeline_prefill_makespan():
    # Stages of 2 s and 1 s over 4 chunks: each chunk 0.5 s and 0.25 s; the first chunk passes both
    # (0.75 s), then 3 more leave at the slowest stage's pace (3 x 0.5 s).
    assert pipeline_prefill_s([2.0, 1.0], 4) == pytest.approx(0.75 + 1.5)


def test_stage_imbalance():
    # Slowest 3 over mean 2.
    assert stage_imbalance([3.0, 1.0]) == pytest.approx(1.5)


def test_pipeline_needs_model():
    report = synthetic_report(Workload(context=100), ParallelPlan(pp=2))
    with pytest.raises(ValueError, match="needs the ModelSpec"):
        estimate_time(report, synthetic_profile())


def test_pipeline_decode_passes_every_stage():
    # The synthetic layers are of kind "dense"; 2 stages of 1 layer each take 2e-2 + 1e-6 s.
    llama = ctxsim.load_model("llama-3.1-8b").model_dump(mode="json")
    spec = ctxsim.spec.model_from_dict({**llama, "layers": [{"kind": "dense", "count": 2}]})
    report = synthetic_report(Workload(context=100), ParallelPlan(pp=2))
    t = estimate_time(report, synthetic_profile(), model=spec)
    assert t.decode.stage_s == pytest.approx([2e-2 + 1e-6, 2e-2 + 1e-6])
    assert t.tpot_s == pytest.approx(2 * (2e-2 + 1e-6))


# ---------------------------------------------------------------------------------------------
# Real counts


def test_llama_decode_at_least_its_bytes_over_bandwidth():
    # A decode step reads every weight and the whole KV cache; at 100% of the 3.35e12 B/s peak
    # that alone takes (weights + KV) / 3.35e12, so the estimate cannot be faster.
    report = ctxsim.estimate("llama-3.1-8b", Workload(context=32768, phase="decode"))
    t = estimate_time(report, "h100-sxm")
    floor = (report.weights_bytes + 32 * 32768 * 2 * 8 * 128 * 2) / 3.35e12
    assert t.tpot_s > floor
    assert t.ttft_s is None
