"""Codecs that store cached vectors in the byte layouts ctxsim counts (ctxsim.spec.dtypes).

A codec turns a float tensor ``[..., n]`` into the tensors that hold it in the cache and back.
Its ``record_bytes(n)`` is the exact size of one stored vector of ``n`` values, and the tensors it
allocates have exactly that many bytes per vector, so a cache's allocated bytes can be measured
with ``numel() * element_size()``.

- ``bf16``: torch.bfloat16 values.
- ``fp8_tensor``: float8_e4m3fn values with one static fp32 scale per cache tensor.
- ``fp8_block``: float8_e4m3fn values plus one fp32 scale per 128 values (DeepSeek-V3.2 indexer
  key, vLLM FP8 MLA latent).
- ``nvfp4``: 4-bit E2M1 codes packed two per byte plus one float8_e4m3fn scale per 16 values.
"""

from __future__ import annotations

import torch

from ctxsim.spec.dtypes import FP8_SCALE_BLOCK, NVFP4_BLOCK

FP8_MAX = 448.0  # largest finite float8_e4m3fn value
FP4_MAX = 6.0  # largest E2M1 magnitude
# E2M1 magnitudes in code order 0..7; bit 3 of a code is the sign.
_FP4_GRID = torch.tensor([0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0])
_FP4_MIDPOINTS = (_FP4_GRID[1:] + _FP4_GRID[:-1]) / 2

# NOTE: per-tensor fp8 caches use a static scale of 1.0 (vLLM's default k_scale/v_scale when no
# calibration is loaded), so a value does not depend on which chunk wrote it. The reference model's
# K/V values are O(1), well inside the e4m3 range.
STATIC_TENSOR_SCALE = 1.0


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def _blocks(x: torch.Tensor, block: int) -> torch.Tensor:
    """Zero-pad the last dim of ``x`` to a multiple of ``block`` and split it: ``[..., nb, block]``."""
    n = x.shape[-1]
    pad = _ceil_div(n, block) * block - n
    if pad:
        x = torch.nn.functional.pad(x, (0, pad))
    return x.reshape(*x.shape[:-1], -1, block)


class BF16Codec:
    name = "bf16"

    def record_bytes(self, n: int) -> int:
        return 2 * n

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return (x.to(torch.bfloat16),)

    def decode(self, parts: tuple[torch.Tensor, ...], n: int, dtype: torch.dtype) -> torch.Tensor:
        return parts[0].to(dtype)


class FP8TensorCodec:
    """fp8 values scaled by one static per-tensor fp32 scale; the scale is not a per-token cost."""

    name = "fp8_tensor"

    def record_bytes(self, n: int) -> int:
        return n

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        scaled = (x / STATIC_TENSOR_SCALE).clamp(-FP8_MAX, FP8_MAX)
        return (scaled.to(torch.float8_e4m3fn),)

    def decode(self, parts: tuple[torch.Tensor, ...], n: int, dtype: torch.dtype) -> torch.Tensor:
        return parts[0].to(dtype) * STATIC_TENSOR_SCALE


class FP8BlockCodec:
    """fp8 values with one fp32 scale (amax / 448) per block of 128 values."""

    name = "fp8_block"

    def record_bytes(self, n: int) -> int:
        return n + 4 * _ceil_div(n, FP8_SCALE_BLOCK)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        n = x.shape[-1]
        blocks = _blocks(x.float(), FP8_SCALE_BLOCK)  # [..., nb, 128]
        scale = (blocks.abs().amax(dim=-1) / FP8_MAX).clamp_min(1e-12)  # [..., nb]
        values = (blocks / scale.unsqueeze(-1)).clamp(-FP8_MAX, FP8_MAX)
        values = values.reshape(*x.shape[:-1], -1)[..., :n].to(torch.float8_e4m3fn)
        return values, scale.to(torch.float32)

    def decode(self, parts: tuple[torch.Tensor, ...], n: int, dtype: torch.dtype) -> torch.Tensor:
        values, scale = parts
        blocks = _blocks(values.to(torch.float32), FP8_SCALE_BLOCK) * scale.unsqueeze(-1)
        return blocks.reshape(*values.shape[:-1], -1)[..., :n].to(dtype)


class NVFP4Codec:
    """E2M1 4-bit codes, two per byte, with one float8_e4m3fn scale (amax / 6) per 16 values.

    NOTE: the tensor-wide fp32 scale of NVFP4 is the static 1.0 of the fp8 caches, and codes are
    packed into uint8 by hand because CPU torch has no E2M1 conversion.
    """

    name = "nvfp4"

    def record_bytes(self, n: int) -> int:
        return _ceil_div(n, 2) + _ceil_div(n, NVFP4_BLOCK)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        n = x.shape[-1]
        blocks = _blocks(x.float(), NVFP4_BLOCK)  # [..., nb, 16]
        scale = (blocks.abs().amax(dim=-1) / FP4_MAX).clamp(min=2.0**-9, max=FP8_MAX)
        scale = scale.to(torch.float8_e4m3fn)
        scaled = blocks / scale.to(torch.float32).unsqueeze(-1)
        codes = torch.bucketize(scaled.abs().clamp(max=FP4_MAX), _FP4_MIDPOINTS.to(scaled.device))
        codes = codes | ((scaled < 0).to(torch.int64) << 3)
        codes = codes.reshape(*x.shape[:-1], -1)[..., :n]
        if n % 2:
            codes = torch.nn.functional.pad(codes, (0, 1))
        packed = (codes[..., 0::2] | (codes[..., 1::2] << 4)).to(torch.uint8)
        return packed, scale

    def decode(self, parts: tuple[torch.Tensor, ...], n: int, dtype: torch.dtype) -> torch.Tensor:
        packed, scale = parts
        low = (packed & 0xF).to(torch.int64)
        high = (packed >> 4).to(torch.int64)
        codes = torch.stack((low, high), dim=-1).reshape(*packed.shape[:-1], -1)[..., :n]
        grid = _FP4_GRID.to(packed.device)
        values = grid[codes & 7] * torch.where(codes >= 8, -1.0, 1.0)
        blocks = _blocks(values, NVFP4_BLOCK) * scale.to(torch.float32).unsqueeze(-1)
        return blocks.reshape(*packed.shape[:-1], -1)[..., :n].to(dtype)


CODECS = {c.name: c for c in (BF16Codec(), FP8TensorCodec(), FP8BlockCodec(), NVFP4Codec())}


def plain_codec(kv_dtype: str) -> str:
    """Codec of a plain cached vector (GQA K or V) in a KV dtype."""
    return {"bf16": "bf16", "fp8": "fp8_tensor", "fp8_ds_mla": "fp8_block", "nvfp4": "nvfp4"}[kv_dtype]


def index_key_codec(kv_dtype: str) -> str:
    """Codec of a cached index key: fp8 layouts use one fp32 scale per 128 values (132-byte record)."""
    return {"bf16": "bf16", "fp8": "fp8_block", "fp8_ds_mla": "fp8_block", "nvfp4": "nvfp4"}[kv_dtype]


def mla_codecs(kv_dtype: str) -> tuple[str, str]:
    """Codecs of the MLA latent and of its rope part; fp8_ds_mla keeps the rope part in bf16."""
    if kv_dtype == "fp8_ds_mla":
        return "fp8_block", "bf16"
    return plain_codec(kv_dtype), plain_codec(kv_dtype)
