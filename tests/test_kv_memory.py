"""KV-cache memory per sequence, by component and policy, derived by hand from config values."""

import pytest

import ctxsim
from ctxsim.counts import kv_memory
from ctxsim.spec import SpecError, model_from_dict

MIB = 2**20


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


def mla_model(name, n_layer, n_head, kv_lora_rank, qk_rope_head_dim):
    layer = {
        "attention": {
            "kind": "mla", "n_head": n_head, "q_lora_rank": 1536, "kv_lora_rank": kv_lora_rank,
            "qk_nope_head_dim": 128, "qk_rope_head_dim": qk_rope_head_dim, "v_head_dim": 128,
        },
        "ffn": {"kind": "dense", "intermediate_size": 12288},
    }
    return model_from_dict(
        {"name": name, "d_model": 5120, "vocab_size": 102400, "layer_kinds": {"layer": layer},
         "layers": [{"kind": "layer", "count": n_layer}]}
    )


# --- head_dim comes from the config --------------------------------------------------------


def test_qwen3_32b_uses_config_head_dim():
    # Qwen3-32B config.json: hidden_size 5120, 64 heads, head_dim 128 (not 5120 / 64 = 80), 8 KV heads.
    spec = gqa_model("qwen3-32b", 64, 5120, 64, 8, 128, 25600, 151936)
    per_token = kv_memory(spec, 1, "bf16").bytes_per_sequence
    assert per_token == 64 * 8 * 128 * 2 * 2 == 262_144
    assert per_token != 64 * 8 * (5120 // 64) * 2 * 2  # 163,840 with hidden / heads


def test_qwen3_32b_preset_matches_config():
    spec = ctxsim.load_model("qwen3-32b")
    assert kv_memory(spec, 4096, "bf16").bytes_per_sequence == 4096 * 64 * 8 * 128 * 2 * 2


# --- KV bytes use KV heads -----------------------------------------------------------------


def test_llama_3_8b_uses_kv_heads():
    # Llama-3-8B: 32 layers, 32 query heads, 8 KV heads of 128.
    spec = gqa_model("llama-3-8b", 32, 4096, 32, 8, 128, 14336, 128256)
    assert kv_memory(spec, 1, "bf16").bytes_per_sequence == 32 * 8 * 128 * 2 * 2 == 131_072


def test_kv_scales_with_context():
    spec = gqa_model("llama-3-8b", 32, 4096, 32, 8, 128, 14336, 128256)
    assert kv_memory(spec, 100_000, "bf16").bytes_per_sequence == 100_000 * 131_072


# --- MLA caches one latent -----------------------------------------------------------------


def test_deepseek_v3_caches_one_latent():
    spec = ctxsim.load_model("deepseek-v3")
    # 61 layers x (kv_lora_rank 512 + qk_rope_head_dim 64) x 2 bytes.
    assert kv_memory(spec, 1, "bf16").bytes_per_sequence == 61 * 576 * 2 == 70_272


def test_llama_3_1_405b_and_70b_for_comparison():
    # DeepSeek-V3 report compares MLA against these GQA caches.
    big = gqa_model("llama-3.1-405b", 126, 16384, 128, 8, 128, 53248, 128256)
    mid = gqa_model("llama-3.1-70b", 80, 8192, 64, 8, 128, 28672, 128256)
    assert kv_memory(big, 1, "bf16").bytes_per_sequence == 126 * 8 * 128 * 2 * 2 == 516_096
    assert kv_memory(mid, 1, "bf16").bytes_per_sequence == 80 * 8 * 128 * 2 * 2 == 327_680


def test_deepseek_v2_fp8_record():
    # DeepSeek-V2: 60 layers, kv_lora_rank 512, rope 64; vLLM fp8 MLA record = 512 fp8 values
    # + 4 fp32 scales + 64 bf16 rope values = 656 bytes.
    spec = mla_model("deepseek-v2", 60, 128, 512, 64)
    assert kv_memory(spec, 1, "fp8_ds_mla").bytes_per_sequence == 60 * (512 + 4 * 4 + 64 * 2) == 39_360


def test_fp8_is_one_byte_per_element():
    spec = gqa_model("llama-3-8b", 32, 4096, 32, 8, 128, 14336, 128256)
    assert kv_memory(spec, 1, "fp8").bytes_per_sequence == 32 * 8 * 128 * 2 * 1


def test_nvfp4_adds_one_scale_per_16():
    spec = gqa_model("llama-3-8b", 32, 4096, 32, 8, 128, 14336, 128256)
    elements = 8 * 128 * 2
    assert kv_memory(spec, 1, "nvfp4").bytes_per_sequence == 32 * (elements // 2 + elements // 16)


def test_fp8_ds_mla_rejected_for_gqa():
    spec = gqa_model("llama-3-8b", 32, 4096, 32, 8, 128, 14336, 128256)
    with pytest.raises(SpecError, match="fp8_ds_mla"):
        kv_memory(spec, 1, "fp8_ds_mla")


# --- windows bound a layer's cache ---------------------------------------------------------


def test_gemma_3_1b_window_bounds_cache():
    spec = ctxsim.load_model("gemma-3-1b")
    kv = kv_memory(spec, 32_768, "bf16")
    per_token_layer = 1 * 256 * 2 * 2  # 1 KV head of 256, K and V, bf16
    assert kv.by_component["main"] == 4 * 32_768 * per_token_layer
    assert kv.by_component["window"] == 22 * 512 * per_token_layer
    assert kv.bytes_per_sequence == 139 * MIB
    assert kv.bytes_per_sequence != 26 * 32_768 * per_token_layer  # 832 MiB with no window


def test_window_holds_all_tokens_below_window():
    spec = ctxsim.load_model("gemma-3-1b")
    assert kv_memory(spec, 300, "bf16").by_component["window"] == 22 * 300 * 1024


def test_window_sinks_are_kept():
    spec = gqa_model("sinky", 2, 1024, 8, 2, 64, 4096, 32000, {"kind": "window", "window": 100, "sink_tokens": 4})
    record = 2 * 2 * 64 * 2
    assert kv_memory(spec, 1000, "bf16").by_component["window"] == 2 * (100 + 4) * record
    assert kv_memory(spec, 102, "bf16").by_component["window"] == 2 * 102 * record


# --- indexer component ---------------------------------------------------------------------


def test_glm_5_2_indexer_only_in_owner_layers():
    spec = ctxsim.load_model("glm-5.2")
    kv = kv_memory(spec, 1000, "bf16")
    assert kv.by_component["main"] == 78 * 1000 * 576 * 2
    assert kv.by_component["indexer"] == 21 * 1000 * 128 * 2


def test_glm_5_2_fp8_per_token():
    spec = ctxsim.load_model("glm-5.2")
    # 78 layers x 656-byte MLA record + 21 owner layers x (128 fp8 + one fp32 scale) index key.
    assert kv_memory(spec, 1, "fp8_ds_mla").bytes_per_sequence == 78 * 656 + 21 * 132 == 53_940


# --- paged policy --------------------------------------------------------------------------


def test_paged_rounds_to_pages():
    spec = gqa_model("llama-3-8b", 32, 4096, 32, 8, 128, 14336, 128256)
    kv = kv_memory(spec, 100, "bf16", policy="paged", page_size=64)
    assert kv.bytes_per_sequence == 2 * 64 * 32 * 8 * 128 * 2 * 2  # 2 pages of 64 tokens


def test_paged_window_charges_window_span():
    spec = ctxsim.load_model("gemma-3-1b")
    # 512 consecutive tokens span at most ceil(511 / 64) + 1 = 9 pages of 64 (when unaligned).
    kv = kv_memory(spec, 32_768, "bf16", policy="paged", page_size=64)
    assert kv.by_component["window"] == 22 * 9 * 64 * 1024


def test_paged_window_matches_held_pages():
    # Brute force: pages held at position t after freeing the pages wholly before the window,
    # maximised over t <= N, for a 1-layer window 100 model with 64-token pages.
    spec = gqa_model("win", 1, 1024, 8, 2, 64, 4096, 32000, {"kind": "window", "window": 100})
    record = 2 * 2 * 64 * 2

    def held(t):
        return -(-t // 64) - max(0, t - 100) // 64

    for n in (50, 100, 128, 129, 164, 165, 1000):
        expected = max(held(t) for t in range(1, n + 1)) * 64 * record
        assert kv_memory(spec, n, "bf16", policy="paged", page_size=64).bytes_per_sequence == expected, n


def test_paged_window_below_span_is_full():
    spec = ctxsim.load_model("gemma-3-1b")
    # N = 600: 10 pages in all, more than the 9 a 512-token window can span.
    kv = kv_memory(spec, 600, "bf16", policy="paged", page_size=64)
    assert kv.by_component["window"] == 22 * 9 * 64 * 1024


def test_paged_window_below_window_is_like_full():
    spec = ctxsim.load_model("gemma-3-1b")
    kv = kv_memory(spec, 300, "bf16", policy="paged", page_size=64)
    assert kv.by_component["window"] == 22 * 5 * 64 * 1024


def test_paged_sink_pages_are_kept():
    spec = gqa_model("sinky", 1, 1024, 8, 2, 64, 4096, 32000, {"kind": "window", "window": 100, "sink_tokens": 4})
    # N = 1000, page 64: the window spans at most ceil(99 / 64) + 1 = 3 pages, plus 1 sink page.
    kv = kv_memory(spec, 1000, "bf16", policy="paged", page_size=64)
    assert kv.by_component["window"] == 4 * 64 * 2 * 2 * 64 * 2


def test_per_device_is_batch_times_sequence():
    spec = ctxsim.load_model("deepseek-v3")
    kv = kv_memory(spec, 1000, "bf16", batch=8)
    assert kv.bytes_per_device == 8 * 1000 * 70_272
