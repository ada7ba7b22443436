"""ctxsim.counts.totals: traced phase totals equal estimate, exactly for ints and to 1e-12 on grids."""

import zlib

import numpy as np
import pytest

import ctxsim
from ctxsim.counts import estimate
from ctxsim.counts.ffn import expected_experts
from ctxsim.counts.totals import INT64_MAX_CONTEXT, Poly, TraceError, Totals, _drop_dominated
from ctxsim.spec import Workload

WORKLOADS = {
    "default": {},
    "chunked": {"chunk_size": 4096, "cached_context": 1000},
    "masked": {"execution": "masked"},
    "expanded_paged": {"mla_mode": "expanded", "kv_policy": "paged", "page_size": 256},
    "decode": {"phase": "decode"},
    "prefill_small_chunks": {"phase": "prefill", "chunk_size": 1000},
}
CONTEXTS = [1001, 4097, 131_072, 1_000_003, 10_000_000]
BATCHES = [1, 3, 64]


def reference(report):
    """The outputs of Totals, read from a CostReport."""
    out = {}
    phases = sorted({op.phase for op in report.ops})
    for phase in phases:
        for quantity in ("flops", "matmul_flops", "bytes_read", "bytes_written"):
            out[f"{phase}_{quantity}"] = report.total(phase, quantity)
        for kind, value in report.by_kind(phase, "flops").items():
            out[f"{phase}_{kind}_flops"] = value
        read, written = report.by_kind(phase, "bytes_read"), report.by_kind(phase, "bytes_written")
        for kind in read:
            out[f"{phase}_{kind}_bytes_moved"] = read[kind] + written[kind]
    kv = report.kv_cache
    out["kv_bytes_per_sequence"] = kv.bytes_per_sequence
    for component, value in kv.by_component.items():
        out[f"kv_{component}_bytes_per_sequence"] = value
    out["kv_bytes_per_device"] = kv.bytes_per_device
    out["weights_bytes"] = report.weights_bytes
    out["activation_peak_bytes"] = report.activation_peak_bytes
    return out


def workload_for(spec, name):
    kv_dtype = "fp8" if spec.kv_dtype == "fp8_ds_mla" else None
    return Workload(context=CONTEXTS[0], kv_dtype=kv_dtype, **WORKLOADS[name])


# --- equality with estimate ------------------------------------------------------------------


@pytest.mark.parametrize("workload_name", sorted(WORKLOADS))
@pytest.mark.parametrize("name", ctxsim.preset_names())
def test_totals_ints_equal_estimate(name, workload_name):
    spec = ctxsim.load_model(name)
    workload = workload_for(spec, workload_name)
    totals = Totals(spec, workload, by_kind=True)
    for n in CONTEXTS:
        for b in BATCHES:
            expected = reference(estimate(spec, workload.model_copy(update={"batch": b}), context=n))
            got = totals.evaluate(n, b)
            assert set(got) == set(expected), (n, b)
            for key, value in expected.items():
                assert type(got[key]) is int, (key, n, b)
                assert got[key] == value, (key, n, b)


@pytest.mark.parametrize("workload_name", sorted(WORKLOADS))
@pytest.mark.parametrize("name", ctxsim.preset_names())
def test_totals_grid_matches_estimate(name, workload_name):
    spec = ctxsim.load_model(name)
    workload = workload_for(spec, workload_name)
    rng = np.random.default_rng(zlib.crc32(f"{name}/{workload_name}".encode()))
    contexts = np.unique(rng.integers(1001, 10 * 2**20, size=6)).astype(np.float64)
    batches = np.unique(rng.integers(1, 300, size=3)).astype(np.float64)
    grid = Totals(spec, workload, by_kind=True).evaluate(contexts, batches)
    for i, n in enumerate(contexts):
        for j, b in enumerate(batches):
            expected = reference(estimate(spec, workload.model_copy(update={"batch": int(b)}), context=int(n)))
            for key, value in expected.items():
                assert grid[key].shape == (contexts.size, batches.size)
                assert abs(grid[key][i, j] - value) <= 1e-12 * max(abs(value), 1), (key, n, b)


def test_totals_scalar_batch_gives_vector():
    totals = Totals("llama-3.1-8b", Workload(context=10))
    out = totals.evaluate([4096, 8192], 2)
    assert out["decode_flops"].shape == (2,)


def test_totals_beyond_int64_span_sums():
    # Above INT64_MAX_CONTEXT the span sums run in float64; they still agree to 1e-12.
    n = INT64_MAX_CONTEXT + 1_000
    workload = Workload(context=10, phase="prefill")
    grid = Totals("qwen3-32b", workload).evaluate(np.array([float(n)]), np.array([1.0]))
    expected = estimate("qwen3-32b", workload, context=n).total("prefill", "flops")
    assert abs(grid["prefill_flops"][0, 0] - expected) <= 1e-12 * expected


# --- hand-derived values ---------------------------------------------------------------------


def test_totals_kv_qwen3_32b():
    # Qwen3-32B: 64 layers, 8 KV heads, head_dim 128, bf16 K and V.
    out = Totals("qwen3-32b", Workload(context=10)).evaluate(4096, 8)
    assert out["kv_bytes_per_sequence"] == 4096 * 64 * 8 * 128 * 2 * 2
    assert out["kv_bytes_per_device"] == 8 * 4096 * 64 * 8 * 128 * 2 * 2


def test_totals_decode_attention_llama_8b():
    # Llama-3.1-8B decode at context N, per layer: QK^T and PV over N keys for 32 heads of 128
    # (2 * 32 * (128 + 128) * N matmul FLOPs), plus a 5-FLOP softmax per score (5 * 32 * N).
    # The model has 32 layers.
    n = 100_000
    out = Totals("llama-3.1-8b", Workload(context=10, phase="decode"), by_kind=True).evaluate(n, 1)
    assert out["decode_attention_flops"] == 32 * (2 * 32 * (128 + 128) * n + 5 * 32 * n)


# --- polynomials and tracing -----------------------------------------------------------------


def test_poly_arithmetic():
    b, t = Poly.symbol("B"), Poly.symbol("T")
    poly = (2 * b * t + 3) * 4 - b * t
    assert poly.terms == {("B", "T"): 7, (): 12}


def test_poly_cancels_terms():
    b = Poly.symbol("B")
    assert (b * 5 - 5 * b).terms == {}


def test_poly_rejects_float():
    with pytest.raises(TraceError, match="float"):
        Poly.symbol("T") * 0.5


def test_poly_rejects_branch():
    with pytest.raises(TraceError, match="branched"):
        bool(Poly.symbol("T"))


def test_drop_dominated_keeps_maxima():
    t, s = Poly.symbol("T"), Poly.symbol("S")
    small, large, other = 2 * t, 3 * t, 10 * s
    kept = _drop_dominated([small, large, other, 3 * t])
    assert [p.terms for p in kept] == [large.terms, other.terms]


def test_expected_experts_cap_changes_nothing():
    # The exponent cap in expected_experts must give the uncapped formula's values bit for bit.
    tokens = np.concatenate([np.arange(1.0, 50_000.0), np.geomspace(1.0, 1e9, 5_000)])
    for n_experts, k in ((256, 8), (384, 8), (128, 4), (8, 2), (1024, 1), (32, 32)):
        miss = (n_experts - k) / n_experts
        assert np.array_equal(expected_experts(n_experts, k, tokens), n_experts * (1.0 - miss**tokens)), n_experts
