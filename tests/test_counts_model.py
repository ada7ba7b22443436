"""Projection, FFN, MoE, embedding and LM-head counts, plus report-level invariants."""

import pytest

import ctxsim
from ctxsim.counts import OP_KIND, estimate
from ctxsim.counts.ffn import expected_experts
from ctxsim.spec import SpecError, Workload


def ops(report, phase, layer_kind=None):
    return {op.name: op for op in report.ops if op.phase == phase and (layer_kind is None or op.layer_kind == layer_kind)}


def run(model, context, **workload):
    return estimate(model, Workload(context=context, **workload))


def test_gqa_projections():
    spec = ctxsim.load_model("llama-3.1-8b")  # hidden 4096, 32 heads, 8 KV heads of 128
    step = ops(run(spec, 1000, phase="prefill"), "prefill")
    assert step["attn.q_proj"].matmul_flops == 2 * 1000 * 4096 * 32 * 128
    assert step["attn.kv_proj"].matmul_flops == 2 * 1000 * 4096 * 2 * 8 * 128
    assert step["attn.o_proj"].matmul_flops == 2 * 1000 * 32 * 128 * 4096
    assert step["attn.kv_proj"].kv_bytes_written == 1000 * 8 * 128 * 2 * 2


def test_gemm_bytes():
    spec = ctxsim.load_model("llama-3.1-8b")
    q = ops(run(spec, 1000, phase="prefill"), "prefill")["attn.q_proj"]
    weights = 4096 * 32 * 128 * 2
    assert q.weight_bytes_read == weights
    assert q.bytes_read == weights + 1000 * 4096 * 2
    assert q.bytes_written == 1000 * 32 * 128 * 2


def test_qkv_bias_adds():
    spec = ctxsim.load_model("gpt-oss-120b")  # 64 heads, 8 KV heads of 64, q/k/v/o biases
    step = ops(run(spec, 10, phase="decode"), "decode", "full")
    assert step["attn.q_proj"].other_flops == 64 * 64
    assert step["attn.kv_proj"].other_flops == 2 * 8 * 64
    assert step["attn.o_proj"].other_flops == 2880


def test_mla_query_path():
    spec = ctxsim.load_model("deepseek-v3")  # hidden 7168, q_lora_rank 1536, 128 heads of 192
    step = ops(run(spec, 1000, phase="prefill"), "prefill", "moe")
    assert step["attn.q_down"].matmul_flops == 2 * 1000 * 7168 * 1536
    assert step["attn.q_up"].matmul_flops == 2 * 1000 * 1536 * 128 * 192
    assert step["attn.kv_down"].matmul_flops == 2 * 1000 * 7168 * (512 + 64)
    assert step["attn.o_proj"].matmul_flops == 2 * 1000 * 128 * 128 * 7168
    assert "attn.q_proj" not in step


def test_dense_ffn():
    spec = ctxsim.load_model("llama-3.1-8b")  # intermediate 14336, gated
    step = ops(run(spec, 1000, phase="prefill"), "prefill")
    assert step["ffn.up"].matmul_flops == 2 * 1000 * 4096 * 2 * 14336
    assert step["ffn.down"].matmul_flops == 2 * 1000 * 14336 * 4096
    assert step["ffn.act"].other_flops == 5 * 1000 * 14336


def test_moe_flops_are_k_experts_per_token():
    spec = ctxsim.load_model("deepseek-v3")  # 256 experts, top-8, width 2048, 1 shared
    step = ops(run(spec, 1000, phase="prefill"), "prefill", "moe")
    assert step["moe.experts"].matmul_flops == 2 * 1000 * 8 * 3 * 7168 * 2048
    assert step["moe.shared"].matmul_flops == 2 * 1000 * 3 * 7168 * 2048
    assert step["moe.router"].matmul_flops == 2 * 1000 * 7168 * 256


def test_moe_decode_reads_k_experts():
    spec = ctxsim.load_model("deepseek-v3")  # fp8 weights: 1 byte each
    experts = ops(run(spec, 1000, phase="decode"), "decode", "moe")["moe.experts"]
    assert experts.weight_bytes_read == 8 * 3 * 7168 * 2048


def test_moe_large_batch_reads_all_experts():
    spec = ctxsim.load_model("deepseek-v3")
    experts = ops(run(spec, 10_000, phase="prefill"), "prefill", "moe")["moe.experts"]
    assert experts.weight_bytes_read == 256 * 3 * 7168 * 2048


def test_moe_expected_experts_formula():
    # 256 experts, top-8, 16 tokens: 256 * (1 - (248/256)^16).
    assert expected_experts(256, 8, 16) == pytest.approx(256 * (1 - (248 / 256) ** 16), rel=1e-15)
    assert expected_experts(256, 8, 16) < 16 * 8


def test_moe_batch_shares_expert_reads():
    spec = ctxsim.load_model("deepseek-v3")
    experts = ops(run(spec, 1000, phase="decode", batch=16), "decode", "moe")["moe.experts"]
    expected = round(256 * (1 - (248 / 256) ** 16) * 3 * 7168 * 2048)
    assert experts.weight_bytes_read == expected


def test_mxfp4_expert_bytes():
    spec = ctxsim.load_model("gpt-oss-120b")  # experts in mxfp4: 17 bytes per 32 weights
    experts = ops(run(spec, 1000, phase="decode"), "decode", "full")["moe.experts"]
    assert experts.weight_bytes_read == 4 * (3 * 2880 * 2880 * 17 // 32)


def test_lm_head_last_token_only():
    spec = ctxsim.load_model("llama-3.1-8b")  # vocab 128256
    prefill = ops(run(spec, 1000, phase="prefill", batch=2), "prefill")
    assert prefill["lm_head"].matmul_flops == 2 * 2 * 4096 * 128256
    assert prefill["final_norm"].other_flops == 4 * 2 * 1000 * 4096


def test_embed_reads_rows():
    spec = ctxsim.load_model("llama-3.1-8b")
    embed = ops(run(spec, 1000, phase="prefill"), "prefill")["embed"]
    assert embed.weight_bytes_read == 1000 * 4096 * 2
    assert embed.matmul_flops == 0


def test_flops_split_matmul_other():
    report = run(ctxsim.load_model("glm-5.2"), 4096)
    for op in report.ops:
        assert op.flops == op.matmul_flops + op.other_flops


@pytest.mark.parametrize("name", ctxsim.preset_names())
def test_op_names_and_kinds(name):
    report = run(ctxsim.load_model(name), 2048)
    for op in report.ops:
        assert OP_KIND.get(op.name) == op.kind, op.name


@pytest.mark.parametrize("name", ctxsim.preset_names())
def test_counts_are_python_ints(name):
    report = run(ctxsim.load_model(name), 5000, chunk_size=1024, cached_context=100)
    for op in report.ops:
        for value in (op.matmul_flops, op.other_flops, op.bytes_read, op.bytes_written):
            assert type(value) is int, op.name


def test_weights_bytes():
    spec = ctxsim.load_model("deepseek-v3")
    assert run(spec, 100).weights_bytes == spec.weight_bytes()


def test_activation_peak_unchunked():
    spec = ctxsim.load_model("llama-3.1-8b")
    report = run(spec, 1000, phase="prefill")
    # Residual stream plus ffn.act, the largest op: reads gate and up, writes the product.
    assert report.activation_peak_bytes == 1000 * 4096 * 2 + 1000 * (2 * 14336 + 14336) * 2


def test_activation_peak_uses_chunk():
    spec = ctxsim.load_model("llama-3.1-8b")
    report = run(spec, 100_000, phase="prefill", chunk_size=1000)
    assert report.activation_peak_bytes == 1000 * 4096 * 2 + 1000 * (2 * 14336 + 14336) * 2


def test_decode_flops_scale_with_batch():
    spec = ctxsim.load_model("glm-5.2")
    single = run(spec, 8192, phase="decode").total("decode")
    four = run(spec, 8192, phase="decode", batch=4).total("decode")
    assert four == 4 * single


def test_phase_selects_ops():
    report = run(ctxsim.load_model("llama-3.1-8b"), 1000, phase="prefill")
    assert {op.phase for op in report.ops} == {"prefill"}


def test_context_must_exceed_cached():
    with pytest.raises(SpecError, match="cached_context"):
        estimate("llama-3.1-8b", Workload(context=2000, cached_context=1000), context=1000)


def test_fp8_ds_mla_on_gqa_raises():
    with pytest.raises(SpecError, match="fp8_ds_mla"):
        run("minimax-m3", 1000, kv_dtype="fp8_ds_mla")


def test_fp8_release_keeps_vocab_matrices_in_bf16():
    # DeepSeek-V3 ships fp8 linear layers but a bf16 embedding and LM head (129280 x 7168 each).
    spec = ctxsim.load_model("deepseek-v3")
    vocab = 129280 * 7168
    assert spec.weight_bytes() == (spec.n_params - 2 * vocab) * 1 + 2 * vocab * 2
    decode = run(spec, 1000, phase="decode")
    head = next(op for op in decode.ops if op.name == "lm_head")
    assert head.weight_bytes_read == vocab * 2
    assert head.dtype == "bf16"
    embed = next(op for op in decode.ops if op.name == "embed")
    assert embed.weight_bytes_read == 7168 * 2  # one bf16 row for the one decoded token


def test_bf16_model_vocab_dtype_follows_weights():
    spec = ctxsim.load_model("llama-3.1-8b")
    assert spec.vocab_weight_dtype is None
    assert spec.vocab_dtype == "bf16"
    assert spec.weight_bytes() == 2 * spec.n_params
