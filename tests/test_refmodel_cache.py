"""KV caches store the record layouts ctxsim counts, byte for byte."""

import pytest
import torch

import ctxsim
from ctxsim.spec.layers import GQAAttention, MLAAttention
from refmodel.cache import RecordStore, index_fields, main_fields
from refmodel.quant import CODECS

DEEPSEEK_MLA = MLAAttention(
    n_head=128, q_lora_rank=1536, kv_lora_rank=512, qk_nope_head_dim=128, qk_rope_head_dim=64, v_head_dim=128
)
LLAMA_70B = GQAAttention(n_head=64, n_kv_head=8, head_dim=128)


def _one_token_bytes(fields) -> int:
    """Bytes a store allocates for one token of one sequence, per-tensor scales excluded."""
    store = RecordStore(fields, batch=1, capacity=1)
    return store.allocated_bytes() - 4 * len(store.tensor_scales)


def test_fp8_mla_record_is_656_bytes():
    # vLLM FP8 MLA record: 512 fp8 + 4 fp32 scales (one per 128) + 64 bf16 rope values.
    assert _one_token_bytes(main_fields(DEEPSEEK_MLA, "fp8_ds_mla")) == 512 + 4 * 4 + 64 * 2


def test_bf16_mla_record_is_1152_bytes():
    assert _one_token_bytes(main_fields(DEEPSEEK_MLA, "bf16")) == (512 + 64) * 2


def test_fp8_index_key_record_is_132_bytes():
    # DeepSeek-V3.2 indexer key: 128 fp8 values + one fp32 scale.
    assert _one_token_bytes(index_fields(128, "fp8")) == 128 + 4


def test_fp8_gqa_record_and_tensor_scales():
    # K and V of 8 heads x 128 in fp8: 2 x 8 x 128 bytes per token, plus one fp32 scale per tensor.
    store = RecordStore(main_fields(LLAMA_70B, "fp8"), batch=1, capacity=1)
    assert store.allocated_bytes() == 2 * 8 * 128 + 2 * 4


def test_nvfp4_gqa_record():
    # 1024 values per tensor: 512 bytes of 4-bit codes + 64 fp8 scales (one per 16), for K and V.
    assert _one_token_bytes(main_fields(LLAMA_70B, "nvfp4")) == 2 * (1024 // 2 + 1024 // 16)


def test_fp8_caches_use_torch_float8():
    store = RecordStore(main_fields(DEEPSEEK_MLA, "fp8_ds_mla"), batch=1, capacity=4)
    dtypes = [part.dtype for parts in store.parts for part in parts]
    assert dtypes == [torch.float8_e4m3fn, torch.float32, torch.bfloat16]


def _applicable(layer, kv_dtype: str) -> bool:
    return not (kv_dtype == "fp8_ds_mla" and isinstance(layer.attention, GQAAttention))


def test_every_preset_layer_record_matches_spec():
    mismatched = []
    for name in ctxsim.preset_names():
        spec = ctxsim.load_model(name)
        for kind, layer in spec.layer_kinds.items():
            for kv_dtype in ("bf16", "fp8", "fp8_ds_mla", "nvfp4"):
                if not _applicable(layer, kv_dtype):
                    continue
                main = _one_token_bytes(main_fields(layer.attention, kv_dtype))
                if main != layer.main_record_bytes(kv_dtype):
                    mismatched.append((name, kind, kv_dtype, "main", main))
                if layer.owns_indexer:
                    index = _one_token_bytes(index_fields(layer.selection.index_head_dim, kv_dtype))
                    if index != layer.index_record_bytes(kv_dtype):
                        mismatched.append((name, kind, kv_dtype, "index", index))
    assert mismatched == []


@pytest.mark.parametrize("codec", ["fp8_tensor", "fp8_block"])
def test_fp8_round_trip_error(codec):
    # e4m3 keeps 3 mantissa bits: relative rounding error at most 2^-4 for normal values.
    x = torch.randn(4, 300, generator=torch.Generator().manual_seed(1))
    back = CODECS[codec].decode(CODECS[codec].encode(x), 300, torch.float32)
    assert torch.all((back - x).abs() <= x.abs() * 2**-4 + 2**-9)


def test_nvfp4_grid_values_round_trip_exactly():
    # Values on the E2M1 grid with block amax 6 use scale 1 and decode exactly.
    x = torch.tensor([[0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, -6.0, -4.0, -3.0, -2.0, -1.5, -1.0, -0.5, 6.0, 3.0]])
    back = CODECS["nvfp4"].decode(CODECS["nvfp4"].encode(x), 17, torch.float32)
    assert torch.equal(back, x)


def test_window_store_keeps_window_and_sinks():
    # Window 16 with 2 sinks after 50 tokens: positions 1, 2 and 35..50.
    fields = main_fields(GQAAttention(n_head=2, n_kv_head=1, head_dim=16), "bf16")
    store = RecordStore(fields, batch=1, capacity=50, window=16, sink_tokens=2)
    for start in range(1, 51, 7):
        positions = torch.arange(start, min(51, start + 7))
        values = [torch.randn(1, positions.numel(), 16) for _ in fields]
        store.append(values, positions)
        store.evict(int(positions[-1]))
    assert store.positions.tolist() == [1, 2] + list(range(35, 51))
    assert store.capacity == 16 + 2


def test_full_store_reads_back_what_it_wrote():
    fields = main_fields(GQAAttention(n_head=2, n_kv_head=1, head_dim=16), "bf16")
    store = RecordStore(fields, batch=2, capacity=10)
    k, v = torch.randn(2, 10, 16), torch.randn(2, 10, 16)
    store.append([k[:, :4], v[:, :4]], torch.arange(1, 5))
    store.append([k[:, 4:], v[:, 4:]], torch.arange(5, 11))
    k_back, v_back = store.read(torch.float32)
    assert torch.equal(k_back, k.to(torch.bfloat16).float())
    assert torch.equal(v_back, v.to(torch.bfloat16).float())
