"""Attention op counts for every design, derived by hand from config values.

Each test targets a kind of mistake seen in real cost tools: heads mixed up, causal sums taken as
N^2/2, windows or top-k ignored, MLA modes confused, indexer work dropped or double counted.
"""

import math

import ctxsim
from ctxsim.counts import estimate
from ctxsim.spec import Workload, model_from_dict


def gqa_model(name, n_layer, d_model, n_head, n_kv_head, head_dim, intermediate_size, vocab_size, selection=None):
    layer = {
        "attention": {"kind": "gqa", "n_head": n_head, "n_kv_head": n_kv_head, "head_dim": head_dim},
        "ffn": {"kind": "dense", "intermediate_size": intermediate_size},
    }
    if selection is not None:
        layer["selection"] = selection
    return model_from_dict(
        {
            "name": name,
            "d_model": d_model,
            "vocab_size": vocab_size,
            "layer_kinds": {"layer": layer},
            "layers": [{"kind": "layer", "count": n_layer}],
        }
    )


def llama_3_8b():
    # meta-llama/Meta-Llama-3-8B config.json: 32 layers, hidden 4096, 32 heads, 8 KV heads of 128.
    return gqa_model("llama-3-8b", 32, 4096, 32, 8, 128, 14336, 128256)


def ops(report, phase, layer_kind=None):
    """Op records of one phase (and layer kind), keyed by name."""
    return {op.name: op for op in report.ops if op.phase == phase and (layer_kind is None or op.layer_kind == layer_kind)}


def run(model, context, **workload):
    return estimate(model, Workload(context=context, **workload))


# --- causal prefill ------------------------------------------------------------------------


def test_causal_prefill_half_plus_diagonal():
    n = 1000
    core = ops(run(llama_3_8b(), n, phase="prefill"), "prefill")["attn.core"]
    pair = 4 * 32 * 128  # 2 * n_head * (head_dim + head_dim)
    assert core.matmul_flops == pair * (n * n + n) // 2
    assert core.matmul_flops == pair * n * (n + 1) // 2
    assert core.matmul_flops != pair * n * n // 2


def test_softmax_is_other_flops():
    n = 1000
    core = ops(run(llama_3_8b(), n, phase="prefill"), "prefill")["attn.core"]
    assert core.other_flops == 5 * 32 * n * (n + 1) // 2


def test_cached_prefix_counts_new_rows_only():
    core = ops(run(llama_3_8b(), 3000, phase="prefill", cached_context=1000), "prefill")["attn.core"]
    assert core.matmul_flops == 4 * 32 * 128 * (3000 * 3001 // 2 - 1000 * 1001 // 2)


def test_chunking_keeps_core_flops():
    plain = ops(run(llama_3_8b(), 4096, phase="prefill"), "prefill")["attn.core"]
    chunked = ops(run(llama_3_8b(), 4096, phase="prefill", chunk_size=1024), "prefill")["attn.core"]
    assert chunked.matmul_flops == plain.matmul_flops


def test_chunks_reload_visible_kv():
    core = ops(run(llama_3_8b(), 4096, phase="prefill", chunk_size=1024), "prefill")["attn.core"]
    record = 8 * 128 * 2 * 2  # K and V of 8 KV heads, bf16
    assert core.kv_bytes_read == (1024 + 2048 + 3072 + 4096) * record


def test_chunks_reread_weights():
    q = ops(run(llama_3_8b(), 4096, phase="prefill", chunk_size=1024), "prefill")["attn.q_proj"]
    assert q.weight_bytes_read == 4 * 4096 * 32 * 128 * 2


# --- heads ---------------------------------------------------------------------------------


def test_core_flops_follow_query_heads():
    gqa = gqa_model("a", 1, 4096, 32, 8, 128, 14336, 32000)
    mqa = gqa_model("b", 1, 4096, 32, 1, 128, 14336, 32000)
    wide = gqa_model("c", 1, 4096, 64, 8, 128, 14336, 32000)
    flops = [ops(run(m, 512, phase="decode"), "decode")["attn.core"].matmul_flops for m in (gqa, mqa, wide)]
    assert flops[0] == 4 * 32 * 128 * 512
    assert flops[1] == flops[0]
    assert flops[2] == 2 * flops[0]


def test_kv_reads_follow_kv_heads():
    gqa = gqa_model("a", 1, 4096, 32, 8, 128, 14336, 32000)
    mqa = gqa_model("b", 1, 4096, 32, 1, 128, 14336, 32000)
    reads = [ops(run(m, 512, phase="decode"), "decode")["attn.core"].kv_bytes_read for m in (gqa, mqa)]
    assert reads[0] == 512 * 8 * 128 * 2 * 2
    assert reads[1] == 512 * 1 * 128 * 2 * 2


def test_llama_2_70b_decode_kv_read():
    # Llama-2-70B config.json: 80 layers, hidden 8192, 64 heads, 8 KV heads of 128.
    spec = gqa_model("llama-2-70b", 80, 8192, 64, 8, 128, 28672, 32000)
    n = 4096
    report = run(spec, n, phase="decode")
    kv_read = sum(op.kv_bytes_read * op.count for op in report.ops)
    assert kv_read == 327_680 * n  # 80 x 8 x 128 x 2 x 2 per token
    assert kv_read != 8 * 327_680 * n  # as if every query head had its own K/V


# --- sliding window ------------------------------------------------------------------------


def test_window_prefill_sees_min_t_w():
    spec = ctxsim.load_model("gemma-3-1b")  # window 512, 4 heads of 256
    n, w = 2000, 512
    report = run(spec, n, phase="prefill")
    pair = 2 * 4 * (256 + 256)
    assert ops(report, "prefill", "local")["attn.core"].matmul_flops == pair * (w * (w + 1) // 2 + (n - w) * w)
    assert ops(report, "prefill", "global")["attn.core"].matmul_flops == pair * n * (n + 1) // 2


def test_window_decode_reads_window():
    spec = ctxsim.load_model("gemma-3-1b")
    local = ops(run(spec, 2000, phase="decode"), "decode", "local")["attn.core"]
    assert local.matmul_flops == 2 * 4 * (256 + 256) * 512
    assert local.kv_bytes_read == 512 * 1 * 256 * 2 * 2


def test_window_chunk_loads_band():
    spec = ctxsim.load_model("gemma-3-1b")
    core = ops(run(spec, 3000, phase="prefill", chunk_size=1000), "prefill", "local")["attn.core"]
    # Chunk 1 (tokens 1..1000) loads keys 1..1000; chunks 2 and 3 load 999 + 512 keys each.
    assert core.kv_bytes_read == (1000 + 2 * (999 + 512)) * 256 * 2 * 2


def test_window_sinks_add_keys():
    spec = gqa_model("sinky", 1, 1024, 8, 2, 64, 4096, 32000, {"kind": "window", "window": 100, "sink_tokens": 4})
    core = ops(run(spec, 1000, phase="decode"), "decode")["attn.core"]
    assert core.matmul_flops == 4 * 8 * 64 * (100 + 4)


def test_learned_sinks_add_one_logit():
    spec = ctxsim.load_model("gpt-oss-120b")  # 64 heads of 64, window 128 with learned sinks
    core = ops(run(spec, 1000, phase="decode"), "decode", "sliding")["attn.core"]
    assert core.other_flops == 5 * 64 * 128 + 5 * 64


# --- MLA -----------------------------------------------------------------------------------


def test_mla_expanded_prefill():
    spec = ctxsim.load_model("deepseek-v3")  # 128 heads, nope 128, rope 64, v 128, latent 512
    n = 1000
    step = ops(run(spec, n, phase="prefill"), "prefill", "moe")
    assert step["attn.core"].matmul_flops == 2 * 128 * (192 + 128) * n * (n + 1) // 2
    assert 2 * 128 * (192 + 128) == 81_920
    assert step["attn.kv_up"].matmul_flops == 2 * n * 512 * 128 * (128 + 128)
    assert "attn.q_absorb" not in step


def test_mla_chunks_reexpand_history():
    spec = ctxsim.load_model("deepseek-v3")
    kv_up = ops(run(spec, 4096, phase="prefill", chunk_size=1024), "prefill", "moe")["attn.kv_up"]
    assert kv_up.matmul_flops == 2 * (1024 + 2048 + 3072 + 4096) * 512 * 128 * 256
    assert kv_up.kv_bytes_read == (1024 + 2048 + 3072 + 4096) * 576 * 2


def test_mla_absorbed_decode():
    spec = ctxsim.load_model("deepseek-v3")
    n = 5000
    step = ops(run(spec, n, phase="decode"), "decode", "moe")
    assert step["attn.core"].matmul_flops == 278_528 * n
    assert 2 * 128 * ((512 + 64) + 512) == 278_528
    assert step["attn.core"].kv_bytes_read == n * 576 * 2
    assert step["attn.q_absorb"].matmul_flops == 2 * 128 * 128 * 512
    assert step["attn.v_up"].matmul_flops == 2 * 128 * 512 * 128
    assert "attn.kv_up" not in step


def test_mla_expanded_decode_reexpands():
    spec = ctxsim.load_model("deepseek-v3")
    n = 5000
    step = ops(run(spec, n, phase="decode", mla_mode="expanded"), "decode", "moe")
    assert step["attn.kv_up"].matmul_flops == 2 * n * 512 * 128 * 256
    assert step["attn.core"].matmul_flops == 81_920 * n


def test_mla_cache_written_once_per_token():
    spec = ctxsim.load_model("deepseek-v3")
    kv_down = ops(run(spec, 1000, phase="prefill"), "prefill", "moe")["attn.kv_down"]
    assert kv_down.kv_bytes_written == 1000 * 576 * 2


# --- DSA -----------------------------------------------------------------------------------


def test_dsa_decode_per_key_costs():
    spec = ctxsim.load_model("deepseek-v3.2")  # 64 index heads of 128, top-2048
    n = 100_000
    step = ops(run(spec, n, phase="decode"), "decode", "moe")
    assert step["attn.indexer.score"].matmul_flops == 2 * 64 * 128 * n
    assert 2 * 64 * 128 == 16_384
    assert step["attn.core"].matmul_flops == 278_528 * 2048


def test_dsa_indexer_passes_core():
    spec = ctxsim.load_model("deepseek-v3.2")
    crossover = 278_528 * 2048 // 16_384
    assert crossover == 34_816
    for n, relation in ((crossover - 1, -1), (crossover, 0), (crossover + 1, 1)):
        step = ops(run(spec, n, phase="decode"), "decode", "moe")
        score, core = step["attn.indexer.score"].matmul_flops, step["attn.core"].matmul_flops
        assert (score > core) - (score < core) == relation


def test_dsa_decode_bytes():
    spec = ctxsim.load_model("deepseek-v3.2")
    n = 100_000
    step = ops(run(spec, n, phase="decode"), "decode", "moe")
    assert step["attn.indexer.score"].kv_bytes_read == n * 128 * 2  # bf16 index keys
    assert step["attn.core"].kv_bytes_read == 2048 * 576 * 2  # gathered latents
    assert step["attn.indexer.topk"].bytes_written == 2048 * 4  # int32 indices


def test_dsa_prefill_topk_sum():
    spec = ctxsim.load_model("deepseek-v3.2")
    n, k = 10_000, 2048
    step = ops(run(spec, n, phase="prefill"), "prefill", "moe")
    assert step["attn.core"].matmul_flops == 278_528 * (k * (k + 1) // 2 + (n - k) * k)
    assert step["attn.indexer.score"].matmul_flops == 16_384 * n * (n + 1) // 2


def test_dsa_indexer_projections():
    spec = ctxsim.load_model("deepseek-v3.2")
    step = ops(run(spec, 1000, phase="prefill"), "prefill", "moe")
    assert step["attn.indexer.q_proj"].matmul_flops == 2 * 1000 * 1536 * 64 * 128  # from the q latent
    assert step["attn.indexer.k_proj"].matmul_flops == 2 * 1000 * 7168 * 128
    assert step["attn.indexer.weights_proj"].matmul_flops == 2 * 1000 * 7168 * 64


def test_dsa_masked_core_is_dense():
    spec = ctxsim.load_model("deepseek-v3.2")
    n = 10_000
    decode = ops(run(spec, n, phase="decode", execution="masked"), "decode", "moe")
    prefill = ops(run(spec, n, phase="prefill", execution="masked"), "prefill", "moe")
    assert decode["attn.core"].matmul_flops == 278_528 * n
    assert prefill["attn.core"].matmul_flops == 81_920 * n * (n + 1) // 2  # expanded, as the reference code
    assert prefill["attn.indexer.score"].matmul_flops == 16_384 * n * (n + 1) // 2


def test_index_share_layers_skip_indexer():
    spec = ctxsim.load_model("glm-5.2")
    report = run(spec, 10_000, phase="decode")
    shared = ops(report, "decode", "moe_shared")
    owner = ops(report, "decode", "moe_owner")
    assert not [name for name in shared if name.startswith("attn.indexer")]
    assert owner["attn.indexer.score"].count == 18
    assert ops(report, "decode", "dense_mlp")["attn.indexer.score"].count == 3
    assert shared["attn.core"].count == 57
    assert shared["attn.core"].matmul_flops == 2 * 64 * (576 + 512) * 2048


# --- MSA -----------------------------------------------------------------------------------


def msa_keys(t, block=128, topk_blocks=16):
    """Keys one group attends at position t, written out from the MSA rule."""
    blocks = math.ceil(t / block)
    if blocks <= topk_blocks:
        return t
    local_tokens = t - block * (blocks - 1)  # the query's own, partly filled block
    return (topk_blocks - 1) * block + local_tokens


def test_msa_decode_all_keys_below_topk():
    spec = ctxsim.load_model("minimax-m3")  # 64 heads, 4 KV groups of 128, 16 blocks of 128
    step = ops(run(spec, 2048, phase="decode"), "decode", "msa_moe")
    assert step["attn.core"].matmul_flops == 4 * 64 * 128 * 2048


def test_msa_decode_partial_local_block():
    spec = ctxsim.load_model("minimax-m3")
    n = 16 * 128 + 1
    step = ops(run(spec, n, phase="decode"), "decode", "msa_moe")
    assert step["attn.core"].matmul_flops == 4 * 64 * 128 * (15 * 128 + 1)
    assert step["attn.indexer.score"].matmul_flops == 2 * 4 * 128 * n
    assert step["attn.indexer.pool"].other_flops == 4 * n
    assert step["attn.indexer.topk"].other_flops == 4 * 17  # ceil(2049 / 128) blocks per group


def test_msa_prefill_key_sum():
    spec = ctxsim.load_model("minimax-m3")
    n = 5000
    step = ops(run(spec, n, phase="prefill"), "prefill", "msa_moe")
    assert step["attn.core"].matmul_flops == 4 * 64 * 128 * sum(msa_keys(t) for t in range(1, n + 1))


def test_msa_gathered_reads_selected():
    spec = ctxsim.load_model("minimax-m3")
    n = 100_000
    core = ops(run(spec, n, phase="decode"), "decode", "msa_moe")["attn.core"]
    assert core.kv_bytes_read == msa_keys(n) * 4 * 128 * 2 * 2


def test_msa_masked_core_is_dense():
    spec = ctxsim.load_model("minimax-m3")
    core = ops(run(spec, 100_000, phase="decode", execution="masked"), "decode", "msa_moe")["attn.core"]
    assert core.matmul_flops == 4 * 64 * 128 * 100_000


# --- decode is the last prefill row --------------------------------------------------------


def test_decode_is_last_prefill_row():
    for name in ("llama-3.1-8b", "gemma-3-1b", "deepseek-v3.2", "minimax-m3", "glm-5.2"):
        spec = ctxsim.load_model(name)
        n = 3000
        decode = run(spec, n, phase="decode", mla_mode="absorbed").by_name("decode")["attn.core"]
        full = run(spec, n, phase="prefill", mla_mode="absorbed").by_name("prefill")["attn.core"]
        head = run(spec, n - 1, phase="prefill", mla_mode="absorbed").by_name("prefill")["attn.core"]
        assert decode == full - head, name
