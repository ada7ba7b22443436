"""Roofline op times, derived by hand on a synthetic profile with round numbers."""

import numpy as np
import pytest

from ctxsim.counts.report import Op
from ctxsim.spec.hardware import hardware_from_dict, load_hardware
from ctxsim.time import classify_bound, op_time


def synthetic_profile(launch_overhead_s: float = 0.0):
    """BF16 peak 1e12 FLOP/s, vector 1e11 FLOP/s, memory 1e11 B/s, every efficiency 0.5.

    The ridge point is (1e12 x 0.5) / (1e11 x 0.5) = 10 FLOPs per byte.
    """
    data = load_hardware("h100-sxm").model_dump(mode="json")
    data.update(
        name="synthetic",
        peak_flops={"bf16": 1e12},
        vector_flops_per_s=1e11,
        memory_bandwidth_bytes_per_s=1e11,
        launch_overhead_s=launch_overhead_s,
    )
    for kind in ("gemm", "attention", "gather", "select", "elementwise", "memory"):
        data["efficiency"][kind].update(compute=0.5, memory=0.5)
    return hardware_from_dict(data)


def gemm(flops, bytes_read, bytes_written=0, other_flops=0, count=1, dtype="bf16"):
    return Op("ffn.up", "gemm", "decode", count, flops, other_flops, bytes_read, bytes_written, "dense", dtype)


def test_ridge_point_is_ten():
    assert synthetic_profile().ridge_point() == 10.0


def test_compute_bound_above_ridge():
    # 40 FLOPs per byte: compute 4e9 / (1e12 x 0.5) = 8e-3 s, memory 1e8 / (1e11 x 0.5) = 2e-3 s.
    t = op_time(gemm(4e9, 1e8), synthetic_profile())
    assert t.compute_s == pytest.approx(8e-3)
    assert t.memory_s == pytest.approx(2e-3)
    assert t.time_s == pytest.approx(8e-3)
    assert t.bound == "compute"


def test_memory_bound_below_ridge():
    # 1 FLOP per byte: compute 1e9 / 5e11 = 2e-3 s, memory (6e8 + 4e8) / 5e10 = 2e-2 s.
    t = op_time(gemm(1e9, 6e8, 4e8), synthetic_profile())
    assert t.memory_s == pytest.approx(2e-2)
    assert t.time_s == pytest.approx(2e-2)
    assert t.bound == "memory"


def test_balanced_exactly_on_ridge():
    # 10 FLOPs per byte: compute 1e9 / 5e11 = 2e-3 s and memory 1e8 / 5e10 = 2e-3 s.
    t = op_time(gemm(1e9, 1e8), synthetic_profile())
    assert t.compute_s == t.memory_s
    assert t.time_s == pytest.approx(2e-3)
    assert t.bound == "balanced"


def test_other_flops_run_on_vector_units():
    # 1e8 non-matmul FLOPs at 1e11 x 0.5 = 2e-3 s, plus 1e9 matmul FLOPs at 5e11 = 2e-3 s.
    t = op_time(gemm(1e9, 0, other_flops=1e8), synthetic_profile())
    assert t.compute_s == pytest.approx(4e-3)


def test_fp32_matmul_runs_on_vector_units():
    # 1e9 FLOPs at the vector rate 1e11 x 0.5 = 2e-2 s.
    t = op_time(gemm(1e9, 0, dtype="fp32"), synthetic_profile())
    assert t.compute_s == pytest.approx(2e-2)


def test_fp8_without_fp8_peak_runs_at_bf16():
    t = op_time(gemm(1e9, 0, dtype="fp8"), synthetic_profile())
    assert t.compute_s == pytest.approx(2e-3)


def test_launch_overhead_added_per_launch():
    # Three launches of 1e-5 s on top of the 8e-3 s compute-bound time.
    t = op_time(gemm(4e9, 1e8), synthetic_profile(launch_overhead_s=1e-5), launches=3)
    assert t.launch_s == pytest.approx(3e-5)
    assert t.time_s == pytest.approx(8e-3 + 3e-5)


def test_launch_bound_tiny_op():
    # 1e3 FLOPs and 1e3 bytes take 2e-9 and 2e-8 s, far below a 1e-5 s launch.
    t = op_time(gemm(1e3, 1e3), synthetic_profile(launch_overhead_s=1e-5))
    assert t.bound == "launch"


def test_count_multiplies_total():
    t = op_time(gemm(4e9, 1e8, count=32), synthetic_profile())
    assert t.total_s == pytest.approx(32 * 8e-3)


def test_array_counts_give_array_bounds():
    # Bytes 1e7, 1e8, 1e9 against 1e9 FLOPs: intensities 100, 10 and 1 FLOPs per byte.
    t = op_time(gemm(1e9, np.array([1e7, 1e8, 1e9])), synthetic_profile())
    assert list(t.bound) == ["compute", "balanced", "memory"]
    assert t.time_s == pytest.approx(np.array([2e-3, 2e-3, 2e-2]))


def test_collective_rejected_by_op_time():
    op = Op("comm.tp_all_reduce", "collective", "decode", 1, 0, 0, 1e6, 1e6, "dense")
    with pytest.raises(ValueError, match="is a collective"):
        op_time(op, synthetic_profile())


def test_classify_bound_scalar_cases():
    assert classify_bound(2.0, 1.0, 0.0) == "compute"
    assert classify_bound(1.0, 2.0, 0.0) == "memory"
    assert classify_bound(1.0, 1.0, 0.0) == "balanced"
    assert classify_bound(1.0, 1.0, 3.0) == "launch"


def test_h100_gemm_time_from_datasheet():
    # A 8192 x 8192 x 8192 BF16 GEMM: 2 x 8192^3 FLOPs at 989.4e12 x 0.8 (MAMF prior);
    # bytes 3 x 8192^2 x 2 at 3.35e12 x 0.8 are far below, so it is compute-bound.
    h100 = load_hardware("h100-sxm")
    flops = 2 * 8192**3
    bytes_moved = 3 * 8192**2 * 2
    t = op_time(gemm(flops, bytes_moved), h100)
    assert t.bound == "compute"
    assert t.time_s == pytest.approx(flops / (989.4e12 * 0.8) + 2e-6)
