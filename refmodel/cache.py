"""Per-layer KV caches that store every token's record in the byte layout ctxsim counts.

A ``RecordStore`` stores one record per cached token for B sequences. A record is one or more
fields, each a vector stored by a codec (refmodel.quant). GQA caches K and V as two fields. MLA
caches its latent and rope key as one field, or as two in the ``fp8_ds_mla`` layout, where the
rope part stays bf16. An indexer caches its index key as one field.

Two capacity policies, matching what the architecture needs:
- full: one slot per token of the context, allocated up front.
- window: the last ``window`` tokens plus the first ``sink_tokens`` tokens; older tokens are
  evicted after each chunk has attended them.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ctxsim.spec.layers import GQAAttention, MLAAttention
from refmodel.quant import CODECS, STATIC_TENSOR_SCALE, index_key_codec, mla_codecs, plain_codec


@dataclass(frozen=True)
class FieldLayout:
    """One stored vector of a record: its width and codec name."""

    name: str
    width: int
    codec: str

    def record_bytes(self) -> int:
        return CODECS[self.codec].record_bytes(self.width)


def main_fields(attention: GQAAttention | MLAAttention, kv_dtype: str) -> list[FieldLayout]:
    """Fields of a layer's main record: K and V for GQA; the MLA latent with its rope key."""
    if isinstance(attention, GQAAttention):
        codec = plain_codec(kv_dtype)
        width = attention.n_kv_head * attention.head_dim
        return [FieldLayout("k", width, codec), FieldLayout("v", width, codec)]
    latent_codec, rope_codec = mla_codecs(kv_dtype)
    if kv_dtype == "fp8_ds_mla":
        # vLLM's FP8 MLA record: the latent in fp8 with fp32 scales, the rope key kept in bf16.
        return [
            FieldLayout("latent", attention.kv_lora_rank, latent_codec),
            FieldLayout("rope", attention.qk_rope_head_dim, rope_codec),
        ]
    return [FieldLayout("latent_rope", attention.kv_lora_rank + attention.qk_rope_head_dim, latent_codec)]


def index_fields(index_head_dim: int, kv_dtype: str) -> list[FieldLayout]:
    """Fields of an index key record (DSA lightning indexer, MSA shared index key)."""
    return [FieldLayout("index_key", index_head_dim, index_key_codec(kv_dtype))]


class RecordStore:
    """Cached records of B sequences for one layer, addressed by 1-based token position."""

    def __init__(
        self,
        fields: list[FieldLayout],
        batch: int,
        capacity: int,
        window: int | None = None,
        sink_tokens: int = 0,
        device: torch.device | str = "cpu",
    ):
        self.fields = fields
        self.batch = batch
        self.window = window
        self.sink_tokens = sink_tokens
        self.device = torch.device(device)
        if window is not None:
            capacity = min(capacity, window + sink_tokens)
        self.capacity = capacity
        # Slots of a full store are positions 1..capacity; a window store keeps the held
        # positions in `positions` (sorted ascending) and its parts as concatenated tensors.
        self.parts = [self._empty_parts(f, capacity if window is None else 0) for f in fields]
        self.positions = torch.zeros(0, dtype=torch.long, device=self.device)
        # One static fp32 scale per per-tensor-scaled field, as vLLM keeps k_scale and v_scale.
        self.tensor_scales = [
            torch.full((1,), STATIC_TENSOR_SCALE, dtype=torch.float32, device=self.device)
            for f in fields
            if f.codec == "fp8_tensor"
        ]

    def _empty_parts(self, field: FieldLayout, slots: int) -> list[torch.Tensor]:
        probe = CODECS[field.codec].encode(torch.zeros(1, field.width, device=self.device))
        return [torch.empty(self.batch, slots, *p.shape[1:], dtype=p.dtype, device=self.device) for p in probe]

    @property
    def record_bytes(self) -> int:
        """Bytes of one token's record (all fields)."""
        return sum(f.record_bytes() for f in self.fields)

    @property
    def n_tokens(self) -> int:
        return int(self.positions.numel())

    def allocated_bytes(self) -> int:
        """Bytes of every tensor the store holds, per-tensor scales included."""
        data = sum(t.numel() * t.element_size() for parts in self.parts for t in parts)
        scales = sum(t.numel() * t.element_size() for t in self.tensor_scales)
        return data + scales

    # --- writing ---------------------------------------------------------------------------

    def append(self, values: list[torch.Tensor], positions: torch.Tensor) -> None:
        """Encode and store new tokens; ``values[i]`` is ``[B, C, width_i]`` for field i."""
        encoded = [CODECS[f.codec].encode(v) for f, v in zip(self.fields, values)]
        if self.window is None:
            start = int(positions[0]) - 1
            end = start + positions.numel()
            assert start == self.n_tokens, (start, self.n_tokens)
            assert end <= self.capacity, (end, self.capacity)
            for parts, new in zip(self.parts, encoded):
                for stored, part in zip(parts, new):
                    stored[:, start:end] = part
            self.positions = torch.arange(1, end + 1, device=self.device)
            return
        for parts, new in zip(self.parts, encoded):
            for i, part in enumerate(new):
                parts[i] = torch.cat((parts[i], part), dim=1)
        self.positions = torch.cat((self.positions, positions.to(self.device)))

    def evict(self, last_position: int) -> None:
        """Drop tokens that no later query can attend: outside the window and not a sink."""
        if self.window is None:
            return
        keep = (self.positions > last_position - self.window) | (self.positions <= self.sink_tokens)
        if bool(keep.all()):
            return
        for parts in self.parts:
            for i, part in enumerate(parts):
                parts[i] = part[:, keep].clone()
        self.positions = self.positions[keep]

    # --- reading ---------------------------------------------------------------------------

    def _held(self, parts: list[torch.Tensor]) -> list[torch.Tensor]:
        if self.window is None:
            return [p[:, : self.n_tokens] for p in parts]
        return parts

    def read(self, dtype: torch.dtype) -> list[torch.Tensor]:
        """Decode every held token: one ``[B, S, width]`` tensor per field, S = n_tokens."""
        return [
            CODECS[f.codec].decode(tuple(self._held(parts)), f.width, dtype) for f, parts in zip(self.fields, self.parts)
        ]
