"""The vectorised path (numpy arrays of contexts) agrees with exact single estimates."""

import numpy as np
import pytest

import ctxsim
from ctxsim.counts import estimate
from ctxsim.spec import Workload

CONTEXTS = [1001, 4097, 131_072, 1_000_003, 10_000_000]
FIELDS = ("matmul_flops", "other_flops", "bytes_read", "bytes_written", "weight_bytes_read", "kv_bytes_read", "kv_bytes_written")

WORKLOADS = {
    "default": {},
    "chunked": {"chunk_size": 4096, "cached_context": 1000, "batch": 3},
    "masked": {"execution": "masked", "batch": 2},
    "expanded_paged": {"mla_mode": "expanded", "kv_policy": "paged", "page_size": 256},
}


def close(array_value, exact, rel=1e-12):
    return abs(float(array_value) - exact) <= rel * max(abs(exact), 1)


@pytest.mark.parametrize("workload_name", sorted(WORKLOADS))
@pytest.mark.parametrize("name", ctxsim.preset_names())
def test_array_matches_scalar(name, workload_name):
    spec = ctxsim.load_model(name)
    kv_dtype = "fp8" if spec.kv_dtype == "fp8_ds_mla" else None
    workload = Workload(context=CONTEXTS[0], kv_dtype=kv_dtype, **WORKLOADS[workload_name])
    vector = estimate(spec, workload, context=np.array(CONTEXTS, dtype=np.float64))
    for i, n in enumerate(CONTEXTS):
        single = estimate(spec, workload, context=n)
        assert len(single.ops) == len(vector.ops)
        for exact_op, array_op in zip(single.ops, vector.ops):
            for field in FIELDS:
                exact = getattr(exact_op, field)
                value = getattr(array_op, field)
                value = value[i] if isinstance(value, np.ndarray) else value
                assert close(value, exact), (exact_op.phase, exact_op.layer_kind, exact_op.name, field, n)
        assert close(vector.kv_cache.bytes_per_sequence[i], single.kv_cache.bytes_per_sequence)
        assert close(vector.activation_peak_bytes[i], single.activation_peak_bytes)


def test_ints_exact_at_10m():
    n = 10_000_000
    core = next(
        op for op in estimate("qwen3-32b", Workload(context=n, phase="prefill")).ops if op.name == "attn.core"
    )
    assert type(core.matmul_flops) is int
    assert core.matmul_flops == 4 * 64 * 128 * n * (n + 1) // 2  # above 2**63


def test_array_rejects_fractional_context():
    with pytest.raises(ctxsim.SpecError, match="whole numbers"):
        estimate("qwen3-32b", Workload(context=10), context=np.array([100.5]))
