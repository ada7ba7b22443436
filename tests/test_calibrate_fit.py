"""Efficiency curves in profiles and the time model, and the calibration fit on synthetic timings.

The synthetic timings are made by the time model itself (ctxsim.time.roofline.op_time) from a
profile with known curves and a known launch overhead, so a correct fit must give them back.
"""

import math

import numpy as np
import pytest

import ctxsim
from ctxsim.calibrate.fit import Sample, fit_samples
from ctxsim.calibrate.profile import DeviceInfo, calibrated_profile, measured_rates, peak_scales, residuals
from ctxsim.counts.report import Op
from ctxsim.spec.errors import SpecError
from ctxsim.spec.hardware import CalibrationRun, EfficiencyCurve, hardware_from_dict
from ctxsim.time.roofline import compute_time_s, memory_time_s, op_time

LAUNCH_S = 5e-6

GEMM_CURVE = {
    "compute_size_flops": [1e6, 1e8, 1e10],
    "compute": [0.02, 0.3, 0.6],
    "memory_size_bytes": [1e4, 1e6, 1e8],
    "memory": [0.01, 0.2, 0.5],
    "source": "synthetic",
}


def _profile(curves: dict | None = None, by_op: dict | None = None, launch_s: float = LAUNCH_S):
    data = ctxsim.load_hardware("cpu").model_dump(mode="json")
    data["launch_overhead_s"] = launch_s
    data["efficiency_curves"] = curves or {}
    data["efficiency_curves_by_op"] = by_op or {}
    return hardware_from_dict(data)


def _gemm(flops: float, intensity: float, name: str = "ffn.up") -> Op:
    bytes_total = flops / intensity
    return Op(name, "gemm", "prefill", 1, matmul_flops=flops, bytes_read=bytes_total / 2, bytes_written=bytes_total / 2)


def _sample(op: Op, time_s: float, launches: int) -> Sample:
    return Sample(op.kind, op.name, op.matmul_flops, op.other_flops, op.bytes_read + op.bytes_written, launches, time_s)


def _synthetic(profile, n: int = 240, seed: int = 0) -> tuple[list[Op], list[int], list[Sample]]:
    rng = np.random.default_rng(seed)
    ops, launches, samples = [], [], []
    for _ in range(n):
        op = _gemm(10 ** rng.uniform(6, 10), 10 ** rng.uniform(-0.5, 3))
        k = int(rng.choice([1, 1, 4]))
        ops.append(op)
        launches.append(k)
        samples.append(_sample(op, op_time(op, profile, k).time_s, k))
    return ops, launches, samples


# ---------------------------------------------------------------------------------------------
# EfficiencyCurve


def test_curve_at_knots():
    curve = EfficiencyCurve(**GEMM_CURVE)
    assert curve.compute_at(1e8) == pytest.approx(0.3)
    assert curve.memory_at(1e4) == pytest.approx(0.01)


def test_curve_between_knots_linear_time():
    curve = EfficiencyCurve(**GEMM_CURVE)
    # Launch times at the knots: 1e8 / 0.3 and 1e10 / 0.6. At 1e9, 9e8 / 9.9e9 of the way between
    # them, the time is 1e8 / 0.3 + (9e8 / 9.9e9) x (1e10 / 0.6 - 1e8 / 0.3).
    time = 1e8 / 0.3 + (9e8 / 9.9e9) * (1e10 / 0.6 - 1e8 / 0.3)
    assert curve.compute_at(1e9) == pytest.approx(1e9 / time)


def test_curve_above_last_knot_flat():
    curve = EfficiencyCurve(**GEMM_CURVE)
    assert curve.compute_at(1e13) == pytest.approx(0.6)


def test_curve_below_first_knot_constant_time():
    curve = EfficiencyCurve(**GEMM_CURVE)
    # 1e4 FLOPs below the first knot 1e6: efficiency 0.02 x 1e4 / 1e6, so the time equals the knot's.
    assert curve.compute_at(1e4) == pytest.approx(0.02 * 1e4 / 1e6)


def test_curve_size_zero():
    curve = EfficiencyCurve(**GEMM_CURVE)
    assert curve.compute_at(0) == pytest.approx(0.02)


def test_curve_array():
    curve = EfficiencyCurve(**GEMM_CURVE)
    values = curve.memory_at(np.array([1e6, 1e8, 1e9]))
    assert values.tolist() == pytest.approx([0.2, 0.5, 0.5])


def test_curve_knots_must_increase():
    data = {**GEMM_CURVE, "compute_size_flops": [1e6, 1e6, 1e10]}
    with pytest.raises(ValueError, match="increase strictly"):
        EfficiencyCurve(**data)


def test_curve_lengths_must_match():
    data = {**GEMM_CURVE, "memory": [0.1, 0.2]}
    with pytest.raises(ValueError, match="one value per knot"):
        EfficiencyCurve(**data)


def test_profile_rejects_unknown_curve_kind():
    with pytest.raises(SpecError, match="unknown kinds"):
        _profile({"matmul": GEMM_CURVE})


# ---------------------------------------------------------------------------------------------
# The time model with curves


def test_roofline_uses_kind_curve():
    profile = _profile({"gemm": GEMM_CURVE})
    op = _gemm(1e8, 1e3)
    # Compute time at the 1e8-FLOP knot: 1e8 / (bf16 peak x 0.3).
    assert compute_time_s(op, profile) == pytest.approx(1e8 / (profile.peak_flops["bf16"] * 0.3))


def test_roofline_curve_per_launch():
    profile = _profile({"gemm": GEMM_CURVE})
    op = _gemm(4e8, 1e3)
    # Four launches of 1e8 FLOPs each run at the 1e8 knot's efficiency.
    assert compute_time_s(op, profile, 4) == pytest.approx(4e8 / (profile.peak_flops["bf16"] * 0.3))


def test_roofline_memory_curve():
    profile = _profile({"gemm": GEMM_CURVE})
    op = _gemm(1e6, 1.0)
    # 1e6 bytes at the 1e6-byte knot: 1e6 / (bandwidth x 0.2).
    assert memory_time_s(op, profile) == pytest.approx(1e6 / (profile.memory_bandwidth_bytes_per_s * 0.2))


def test_roofline_op_curve_first():
    by_op = {"ffn.up": {**GEMM_CURVE, "compute": [0.01, 0.1, 0.2]}}
    profile = _profile({"gemm": GEMM_CURVE}, by_op)
    assert compute_time_s(_gemm(1e8, 1e3), profile) == pytest.approx(1e8 / (profile.peak_flops["bf16"] * 0.1))


def test_roofline_other_op_uses_kind_curve():
    by_op = {"ffn.up": {**GEMM_CURVE, "compute": [0.01, 0.1, 0.2]}}
    profile = _profile({"gemm": GEMM_CURVE}, by_op)
    op = _gemm(1e8, 1e3, name="ffn.down")
    assert compute_time_s(op, profile) == pytest.approx(1e8 / (profile.peak_flops["bf16"] * 0.3))


def test_roofline_op_curve_above_range():
    # The name's curve ends at 1e8 FLOPs; at 1e10 the kind's curve (0.6) applies.
    by_op = {"ffn.up": {**GEMM_CURVE, "compute_size_flops": [1e6, 1e7, 1e8], "compute": [0.01, 0.1, 0.2]}}
    profile = _profile({"gemm": GEMM_CURVE}, by_op)
    assert compute_time_s(_gemm(1e10, 1e3), profile) == pytest.approx(1e10 / (profile.peak_flops["bf16"] * 0.6))


def _core(flops: float, phase: str) -> Op:
    # Compute-bound attention core: 1e3 FLOPs per byte.
    return Op("attn.core", "attention", phase, 1, matmul_flops=flops, bytes_read=flops / 2e3, bytes_written=flops / 2e3)


def _flat(compute: float) -> dict:
    return {**GEMM_CURVE, "compute_size_flops": [1e6, 1e10], "compute": [compute, compute], "memory": [0.9, 0.9, 0.9]}


ATTN_CURVE = _flat(0.5)


def test_roofline_phase_curve_first():
    by_op = {"attn.core": _flat(0.3), "attn.core@decode": _flat(0.1)}
    profile = _profile({"attention": ATTN_CURVE}, by_op)
    assert compute_time_s(_core(1e8, "decode"), profile) == pytest.approx(1e8 / (profile.peak_flops["bf16"] * 0.1))


def test_roofline_phase_falls_back_to_name():
    by_op = {"attn.core": _flat(0.3), "attn.core@decode": _flat(0.1)}
    profile = _profile({"attention": ATTN_CURVE}, by_op)
    assert compute_time_s(_core(1e8, "prefill"), profile) == pytest.approx(1e8 / (profile.peak_flops["bf16"] * 0.3))


def test_roofline_phase_falls_back_to_kind():
    profile = _profile({"attention": ATTN_CURVE}, {"attn.core@decode": _flat(0.1)})
    assert compute_time_s(_core(1e8, "prefill"), profile) == pytest.approx(1e8 / (profile.peak_flops["bf16"] * 0.5))


def test_roofline_phase_curve_above_range():
    # The phase curve ends at 1e8 FLOPs and the name's at 1e10: at 1e9 the name's (0.3) applies.
    short = {**_flat(0.1), "compute_size_flops": [1e6, 1e8]}
    profile = _profile({"attention": ATTN_CURVE}, {"attn.core": _flat(0.3), "attn.core@decode": short})
    assert compute_time_s(_core(1e9, "decode"), profile) == pytest.approx(1e9 / (profile.peak_flops["bf16"] * 0.3))


def test_profile_rejects_unknown_phase_key():
    with pytest.raises(SpecError):
        _profile({}, {"attn.core@train": _flat(0.1)})


def test_roofline_priors_unchanged():
    profile = ctxsim.load_hardware("h200")
    op = _gemm(1e12, 1e3)
    # No curves: the constant gemm efficiency, 1e12 / (989.4e12 x 0.8).
    assert compute_time_s(op, profile, 3) == pytest.approx(1e12 / (989.4e12 * 0.8))


def test_roofline_curve_arrays():
    profile = _profile({"gemm": GEMM_CURVE})
    op = _gemm(1e8, 1e3)
    op.matmul_flops = np.array([1e8, 1e10])
    times = compute_time_s(op, profile)
    peak = profile.peak_flops["bf16"]
    assert times.tolist() == pytest.approx([1e8 / (peak * 0.3), 1e10 / (peak * 0.6)])


# ---------------------------------------------------------------------------------------------
# The fit


def test_fit_recovers_times():
    truth = _profile({"gemm": GEMM_CURVE})
    _, _, samples = _synthetic(truth)
    fit = fit_samples(samples, _profile(), LAUNCH_S)
    assert np.max(np.abs(fit.errors["gemm"])) < 0.01


@pytest.mark.parametrize("regime, size", [("compute", 1e8), ("compute", 3e9), ("memory", 1e6), ("memory", 3e7)])
def test_fit_recovers_efficiencies(regime, size):
    truth = _profile({"gemm": GEMM_CURVE})
    _, _, samples = _synthetic(truth)
    curve = getattr(fit_samples(samples, _profile(), LAUNCH_S).kinds["gemm"], regime)
    expected = getattr(EfficiencyCurve(**GEMM_CURVE), f"{regime}_at")(size)
    assert 1 / curve.slowness_at(np.array([size]))[0] == pytest.approx(expected, rel=0.02)


def test_fit_recovers_fixed_cost():
    truth = _profile({"gemm": GEMM_CURVE})
    _, _, samples = _synthetic(truth)
    fit = fit_samples(samples, _profile(), LAUNCH_S)
    # A GEMM of 1e3 FLOPs lies below every knot: it costs the first knot's time plus one launch.
    tiny = _gemm(1e3, 1e3)
    expected = op_time(tiny, truth).time_s
    assert fit.predict([_sample(tiny, expected, 1)], _profile())[0] == pytest.approx(expected, rel=0.02)


def test_fit_keeps_launch_overhead():
    truth = _profile({"gemm": GEMM_CURVE})
    _, _, samples = _synthetic(truth)
    assert fit_samples(samples, _profile(), LAUNCH_S).launch_overhead_s == LAUNCH_S


def test_fit_robust_to_outlier():
    truth = _profile({"gemm": GEMM_CURVE})
    _, _, samples = _synthetic(truth)
    first = samples[0]
    samples[0] = Sample(first.kind, first.name, first.matmul_flops, 0, first.bytes, first.launches, 10 * first.time_s)
    errors = fit_samples(samples, _profile(), LAUNCH_S).errors["gemm"]
    assert np.median(np.abs(errors[1:])) < 0.02


def test_fit_noise_median_error():
    truth = _profile({"gemm": GEMM_CURVE})
    _, _, samples = _synthetic(truth)
    rng = np.random.default_rng(1)
    noisy = [
        Sample(s.kind, s.name, s.matmul_flops, 0, s.bytes, s.launches, s.time_s * math.exp(rng.normal(0, 0.05)))
        for s in samples
    ]
    fit = fit_samples(noisy, _profile(), LAUNCH_S)
    clean = (fit.predict(samples, _profile()) - np.array([s.time_s for s in samples])) / np.array([s.time_s for s in samples])
    # 5% noise per sample averages out over 240 samples: the fitted model stays within 3% of the truth.
    assert np.median(np.abs(clean)) < 0.03


def test_fit_op_curve_needs_samples():
    truth = _profile({"gemm": GEMM_CURVE})
    ops, launches, samples = _synthetic(truth, n=40)
    few = [Sample("gemm", "ffn.down", s.matmul_flops, 0, s.bytes, s.launches, s.time_s) for s in samples[:3]]
    fit = fit_samples(samples + few, _profile(), LAUNCH_S)
    assert "ffn.up" in fit.ops
    assert "ffn.down" not in fit.ops


def _core_samples(truth, phase: str, n: int = 12) -> list[Sample]:
    samples = []
    for flops in np.logspace(6, 10, n):
        op = _core(float(flops), phase)
        time_s = op_time(op, truth).time_s
        samples.append(Sample("attention", "attn.core", flops, 0, op.bytes_read + op.bytes_written, 1, time_s, phase=phase))
    return samples


def test_fit_phase_curves_recovered():
    # Decode cores run at efficiency 0.1, prefill cores of the same FLOPs at 0.4.
    truth = _profile({}, {"attn.core@decode": _flat(0.1), "attn.core@prefill": _flat(0.4)})
    samples = _core_samples(truth, "decode") + _core_samples(truth, "prefill")
    fit = fit_samples(samples, _profile(), LAUNCH_S)
    decode = fit.ops["attn.core@decode"].compute.slowness_at(np.array([1e8]))[0]
    prefill = fit.ops["attn.core@prefill"].compute.slowness_at(np.array([1e8]))[0]
    # Slowness is against the cpu profile's peaks, the truth's too: 1 / 0.1 and 1 / 0.4.
    assert 1 / decode == pytest.approx(0.1, rel=0.02)
    assert 1 / prefill == pytest.approx(0.4, rel=0.02)


def test_fit_phase_curves_predict():
    truth = _profile({}, {"attn.core@decode": _flat(0.1), "attn.core@prefill": _flat(0.4)})
    samples = _core_samples(truth, "decode") + _core_samples(truth, "prefill")
    fit = fit_samples(samples, _profile(), LAUNCH_S)
    errors = (fit.predict(samples, _profile()) - np.array([s.time_s for s in samples])) / np.array([s.time_s for s in samples])
    assert np.max(np.abs(errors)) < 0.02


def test_fit_phase_from_shape_label():
    sample = Sample("attention", "attn.core", 1e8, 0, 1e5, 1, 1e-3, shape="mla d_model=640 decode N=2048")
    assert sample.run_phase == "decode"


def test_fit_phase_curve_needs_samples():
    truth = _profile({}, {"attn.core@decode": _flat(0.1), "attn.core@prefill": _flat(0.4)})
    samples = _core_samples(truth, "decode") + _core_samples(truth, "prefill", n=3)
    fit = fit_samples(samples, _profile(), LAUNCH_S)
    assert "attn.core@decode" not in fit.ops
    assert "attn.core" in fit.ops


def test_fit_probe_names_only_kind():
    samples = [Sample("memory", "memory.copy", 0, 0, 10.0 ** e, 1, 10.0 ** e / 1e10 + LAUNCH_S) for e in range(3, 9)]
    fit = fit_samples(samples, _profile(), LAUNCH_S)
    assert "memory.copy" not in fit.ops


def test_fit_without_samples():
    with pytest.raises(ValueError, match="no timed ops"):
        fit_samples([], _profile(), LAUNCH_S)


# ---------------------------------------------------------------------------------------------
# The calibrated profile


def _run(samples: int) -> CalibrationRun:
    return CalibrationRun(
        base_profile="cpu", torch_dtype="bfloat16", threads=1, clock="thread CPU time", grid="quick",
        repeats="synthetic", samples=samples, duration_s=1.0,
    )


def _calibrated(samples, peaks="base"):
    base = _profile()
    fit = fit_samples(samples, base, LAUNCH_S)
    device = DeviceInfo("Test CPU (2 cores)", "cpu", 2**34, {"torch": "test"})
    return calibrated_profile(
        base, fit, samples, name="test-cpu", device=device, date="2026-12-04", run=_run(len(samples)), peaks=peaks
    )


def test_calibrated_profile_predicts_truth():
    truth = _profile({"gemm": GEMM_CURVE})
    ops, launches, samples = _synthetic(truth)
    profile = _calibrated(samples)
    for op, k, sample in zip(ops, launches, samples):
        assert op_time(op, profile, k).time_s == pytest.approx(sample.time_s, rel=0.01)


def test_calibrated_profile_provenance():
    truth = _profile({"gemm": GEMM_CURVE})
    _, _, samples = _synthetic(truth)
    profile = _calibrated(samples)
    assert profile.provenance.kind == "calibration"
    assert profile.provenance.device == "Test CPU (2 cores)"
    assert profile.provenance.calibration.clock == "thread CPU time"


def test_calibrated_profile_launch_overhead():
    truth = _profile({"gemm": GEMM_CURVE})
    _, _, samples = _synthetic(truth)
    assert _calibrated(samples).launch_overhead_s == LAUNCH_S


def test_calibrated_profile_measured_peak():
    truth = _profile({"gemm": GEMM_CURVE})
    ops, launches, samples = _synthetic(truth)
    profile = _calibrated(samples, peaks="measured")
    fastest, _ = measured_rates(samples)
    assert profile.peak_flops["bf16"] == pytest.approx(fastest)


def test_calibrated_profile_measured_peak_same_times():
    truth = _profile({"gemm": GEMM_CURVE})
    ops, launches, samples = _synthetic(truth)
    profile = _calibrated(samples, peaks="measured")
    for op, k, sample in zip(ops[:20], launches, samples):
        assert op_time(op, profile, k).time_s == pytest.approx(sample.time_s, rel=0.01)


def test_peak_scales_base_keeps_datasheet():
    # A GEMM at half the base peak: the base peak stays (scale 1).
    base = _profile()
    peak = base.peak_flops["bf16"]
    samples = [Sample("gemm", "ffn.up", peak / 2, 0, 1e6, 1, 1.0)]
    assert peak_scales(base, samples, "base") == (1.0, 1.0)


def test_peak_scales_base_raised():
    base = _profile()
    peak = base.peak_flops["bf16"]
    samples = [Sample("gemm", "ffn.up", 2 * peak, 0, 1e6, 1, 1.0)]
    assert peak_scales(base, samples, "base")[0] == pytest.approx(2.0)


def test_residuals_per_kind():
    truth = _profile({"gemm": GEMM_CURVE})
    _, _, samples = _synthetic(truth, n=50)
    result = residuals(fit_samples(samples, _profile(), LAUNCH_S))
    assert result["gemm"].samples == 50
