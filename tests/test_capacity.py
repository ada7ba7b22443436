"""Capacity: KV budget, max sequences at context N, max context at concurrency C."""

import pytest

import ctxsim
from ctxsim.spec import Workload
from ctxsim.spec.hardware import hardware_from_dict, load_hardware
from ctxsim.time import capacity_from_report, kv_budget_bytes, max_context, max_context_for, max_sequences

GIB = 2**30

# Llama-3.1-8B (meta-llama config.json): 32 layers, d_model 4096, 32 heads, 8 KV heads of 128,
# FFN 14336 gated, vocab 128256, untied LM head; bf16 weights. Norm weights are not counted.
LLAMA_8B_PARAMS = 2 * 128256 * 4096 + 32 * (
    4096 * 4096 + 2 * 4096 * 8 * 128 + 4096 * 4096 + 3 * 4096 * 14336
)
LLAMA_8B_WEIGHTS = LLAMA_8B_PARAMS * 2
# KV per token: 32 layers x K and V x 8 heads x 128 x 2 bytes.
LLAMA_8B_KV_PER_TOKEN = 32 * 2 * 8 * 128 * 2
# Activation bytes per prefill row: the residual stream (4096 x 2) plus the largest op, the gated
# activation, which reads gate and up (2 x 14336 x 2) and writes 14336 x 2.
LLAMA_8B_ACT_PER_ROW = 4096 * 2 + 2 * 14336 * 2 + 14336 * 2


def gpu_24gib():
    data = load_hardware("rtx-4090").model_dump(mode="json")
    data.update(name="gpu-24gib", memory_bytes=24 * GIB)
    return hardware_from_dict(data)


def test_llama_8b_kv_per_token():
    assert LLAMA_8B_KV_PER_TOKEN == 131_072
    assert ctxsim.load_model("llama-3.1-8b").kv_bytes_per_token() == LLAMA_8B_KV_PER_TOKEN


def test_kv_budget_formula():
    budget = kv_budget_bytes(24 * GIB, 0.9, 16 * GIB, 1 * GIB, 2 * GIB)
    assert budget == pytest.approx(0.9 * 24 * GIB - 16 * GIB - 1 * GIB - 2 * GIB)


def test_kv_budget_rejects_bad_fraction():
    with pytest.raises(ValueError, match="memory_fraction 1.2"):
        kv_budget_bytes(24 * GIB, 1.2, 0, 0)


def test_max_sequences_floors():
    assert max_sequences(10_000, 3_000) == 3


def test_max_sequences_negative_budget_is_zero():
    assert max_sequences(-5, 3_000) == 0


def test_max_context_closed_form_chunked_vs_unchunked():
    # Budget 1e9 bytes after weights; KV 1000 B/token. Chunked (C = 1000) activation peak is
    # 500 x min(N, 1000), so N <= (1e9 - 5e5) / 1000 = 999,500. Unchunked it is 500 x N, so
    # N <= 1e9 / 1500 = 666,666.
    def chunked(n):
        return 1000 * n, 500 * min(n, 1000)

    def unchunked(n):
        return 1000 * n, 500 * n

    assert max_context(chunked, 1, 1e9, 0) == 999_500
    assert max_context(unchunked, 1, 1e9, 0) == 666_666


def test_max_context_concurrency_divides():
    # Two sequences share the 1e9-byte budget: 2 x 1000 x N <= 1e9.
    assert max_context(lambda n: (1000 * n, 0), 2, 1e9, 0) == 500_000


def test_max_context_nothing_fits():
    assert max_context(lambda n: (1000 * n, 0), 1, 1e9, weights_bytes=2e9) == 0


def test_max_context_everything_fits():
    assert max_context(lambda n: (1, 0), 1, 1e9, 0, max_tokens=4096) == 4096


def test_llama_8b_max_sequences_on_24_gib():
    # (0.9 x 24 GiB - weights - activation peak) / (131,072 B x 8192 tokens), chunk 2048.
    report = ctxsim.estimate("llama-3.1-8b", Workload(context=8192, chunk_size=2048, phase="prefill"))
    capacity = capacity_from_report(report, gpu_24gib())
    activation = 2048 * LLAMA_8B_ACT_PER_ROW
    assert report.weights_bytes == LLAMA_8B_WEIGHTS
    assert report.activation_peak_bytes == activation
    budget = 0.9 * 24 * GIB - LLAMA_8B_WEIGHTS - activation
    assert capacity.max_sequences == int(budget // (LLAMA_8B_KV_PER_TOKEN * 8192))
    assert capacity.fits


def test_llama_8b_max_context_chunked_on_24_gib():
    # (0.9 x 24 GiB - weights - 2048 x activation per row) / 131,072 = 52,947 tokens.
    n = max_context_for("llama-3.1-8b", Workload(context=1024, chunk_size=2048), gpu_24gib())
    budget = 0.9 * 24 * GIB - LLAMA_8B_WEIGHTS - 2048 * LLAMA_8B_ACT_PER_ROW
    assert n == int(budget // LLAMA_8B_KV_PER_TOKEN)
    assert n == 52_947


def test_llama_8b_max_context_unchunked_on_24_gib():
    # Without chunking the activation peak grows with N: N x (131,072 + activation per row) fits in
    # 0.9 x 24 GiB - weights, so N = 31,662.
    n = max_context_for("llama-3.1-8b", Workload(context=1024), gpu_24gib())
    budget = 0.9 * 24 * GIB - LLAMA_8B_WEIGHTS
    assert n == int(budget // (LLAMA_8B_KV_PER_TOKEN + LLAMA_8B_ACT_PER_ROW))
    assert n == 31_662


def test_longer_context_fits_only_with_chunking():
    # 40,000 tokens fit with 2048-token chunks but not with a single-chunk prefill, which
    # fails at a shorter 32,000.
    gpu = gpu_24gib()
    chunked = ctxsim.estimate("llama-3.1-8b", Workload(context=40_000, chunk_size=2048, phase="prefill"))
    unchunked = ctxsim.estimate("llama-3.1-8b", Workload(context=32_000, phase="prefill"))
    assert capacity_from_report(chunked, gpu).fits
    assert not capacity_from_report(unchunked, gpu).fits


def test_capacity_headroom_and_dict():
    report = ctxsim.estimate("llama-3.1-8b", Workload(context=8192, batch=2, chunk_size=2048, phase="prefill"))
    capacity = capacity_from_report(report, gpu_24gib(), reserve_bytes=GIB)
    used = LLAMA_8B_WEIGHTS + report.activation_peak_bytes + GIB + 2 * 8192 * LLAMA_8B_KV_PER_TOKEN
    assert capacity.headroom_bytes == pytest.approx(0.9 * 24 * GIB - used)
    assert capacity.to_dict()["fits"] is True
