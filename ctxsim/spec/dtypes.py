"""Data types of weights, activations and KV-cache records, with their exact byte sizes.

KV-cache dtypes and the record each one stores per token per layer:

- ``bf16``: 2 bytes per element.
- ``fp8``: 1 byte per element. One fp32 scale per cache tensor per layer (per-tensor scaling),
  which is a fixed 4 bytes per tensor, not a per-token cost.
- ``fp8_ds_mla``: the vLLM FP8 layout of DeepSeek-style MLA caches (vLLM blog on DeepSeek-V3.2,
  2025-09-29): the latent's ``kv_lora_rank`` values in fp8, one fp32 scale per 128 of them, and the
  ``qk_rope_head_dim`` rope values kept in bf16. For kv_lora_rank 512 and rope 64 that is
  512 + 4 * 4 + 64 * 2 = 656 bytes. The DSA indexer key is fp8 with one fp32 scale per 128
  values: 128 + 4 = 132 bytes (DeepSeek-V3.2-Exp inference/model.py, ``k_cache`` plus
  ``k_scale_cache``). It applies to MLA layers only.
- ``nvfp4``: 4-bit values (half a byte) plus one fp8 E4M3 scale per 16 values, so 9 bytes per 16
  values. The tensor-wide fp32 scale is a fixed cost, not a per-token one.
"""

from __future__ import annotations

from typing import Literal

KVDtype = Literal["bf16", "fp8", "fp8_ds_mla", "nvfp4"]
KV_DTYPES: tuple[str, ...] = ("bf16", "fp8", "fp8_ds_mla", "nvfp4")

# Weight and activation dtypes, with bytes per element as an exact fraction (numerator, denominator).
# mxfp4 (gpt-oss experts): 4-bit values plus one 8-bit E8M0 scale per 32 values = 17 bytes per 32.
WeightDtype = Literal["fp32", "bf16", "fp16", "fp8", "mxfp4", "nvfp4"]
_WEIGHT_BYTES: dict[str, tuple[int, int]] = {
    "fp32": (4, 1),
    "bf16": (2, 1),
    "fp16": (2, 1),
    "fp8": (1, 1),
    "mxfp4": (17, 32),
    "nvfp4": (9, 16),
}

# Elements per fp32 scale in the block-scaled fp8 records (vLLM FP8 MLA record, DSA indexer key).
FP8_SCALE_BLOCK = 128
FP32_BYTES = 4
BF16_BYTES = 2
# NVFP4: one 1-byte E4M3 scale per 16 four-bit values.
NVFP4_BLOCK = 16


def weight_bytes(n_elements: int, dtype: str) -> int:
    """Return the bytes of ``n_elements`` weights stored in ``dtype``, rounded up to whole bytes."""
    num, den = _WEIGHT_BYTES[dtype]
    return -(-n_elements * num // den)


def bytes_per_element(dtype: str) -> float:
    """Return the mean bytes per element of a weight or activation dtype."""
    num, den = _WEIGHT_BYTES[dtype]
    return num / den


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def plain_record_bytes(n_elements: int, kv_dtype: str) -> int:
    """Bytes of one cached record of ``n_elements`` values in a non-MLA layout.

    ``fp8_ds_mla`` stores a plain (non-latent) vector, such as a DSA or MSA index key, as fp8
    with one fp32 scale per 128 values.
    """
    if kv_dtype == "bf16":
        return n_elements * BF16_BYTES
    if kv_dtype == "fp8":
        return n_elements
    if kv_dtype == "fp8_ds_mla":
        return n_elements + _ceil_div(n_elements, FP8_SCALE_BLOCK) * FP32_BYTES
    if kv_dtype == "nvfp4":
        return _ceil_div(n_elements, 2) + _ceil_div(n_elements, NVFP4_BLOCK)
    raise ValueError(f"unknown kv dtype {kv_dtype!r}: use one of {', '.join(KV_DTYPES)}")


def mla_record_bytes(kv_lora_rank: int, qk_rope_head_dim: int, kv_dtype: str) -> int:
    """Bytes of one MLA latent record (compressed latent plus the decoupled rope key)."""
    if kv_dtype == "fp8_ds_mla":
        scales = _ceil_div(kv_lora_rank, FP8_SCALE_BLOCK) * FP32_BYTES
        return kv_lora_rank + scales + qk_rope_head_dim * BF16_BYTES
    return plain_record_bytes(kv_lora_rank + qk_rope_head_dim, kv_dtype)


def index_key_bytes(index_head_dim: int, kv_dtype: str) -> int:
    """Bytes of one cached indexer key (DSA lightning indexer or MSA shared index key).

    In the ``fp8`` and ``fp8_ds_mla`` layouts the key is fp8 with one fp32 scale per 128 values
    (the 132-byte record of DeepSeek-V3.2), because per-tensor scaling of index keys is not what
    the released kernels do.
    """
    if kv_dtype in ("fp8", "fp8_ds_mla"):
        return index_head_dim + _ceil_div(index_head_dim, FP8_SCALE_BLOCK) * FP32_BYTES
    return plain_record_bytes(index_head_dim, kv_dtype)
