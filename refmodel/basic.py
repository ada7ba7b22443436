"""Small counted building blocks: weights, RMSNorm, rotary embedding, the run context.

Shape legend used across refmodel: B batch, C query tokens of a chunk, S keys held in a cache
view, H query heads, G KV heads (groups), D head width, K selected keys per query.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ctxsim.counts.conventions import RMSNORM_FLOPS_PER_ELEMENT, ROPE_FLOPS_PER_ELEMENT
from refmodel.counter import Counter, activation_bytes

ROPE_BASE = 10000.0
RMS_EPS = 1e-6
# Score elements (query rows x keys x heads) that one tile of queries may hold. Tiles keep peak
# memory linear in the context length, however long a chunk is.
TILE_ELEMENTS = 1 << 22


def init_weight(generator: torch.Generator, rows: int, cols: int, dtype: torch.dtype) -> nn.Parameter:
    """Draw a ``[rows, cols]`` weight with N(0, 1/cols) entries, so that activations stay O(1)."""
    w = torch.randn(rows, cols, generator=generator, dtype=torch.float64) / cols**0.5
    return nn.Parameter(w.to(dtype), requires_grad=False)


def init_vector(generator: torch.Generator, n: int, dtype: torch.dtype, scale: float = 0.1) -> nn.Parameter:
    v = torch.randn(n, generator=generator, dtype=torch.float64) * scale
    return nn.Parameter(v.to(dtype), requires_grad=False)


def ones(n: int, dtype: torch.dtype) -> nn.Parameter:
    return nn.Parameter(torch.ones(n, dtype=dtype), requires_grad=False)


def rms_norm(counter: Counter, x: torch.Tensor, weight: torch.Tensor, fused: bool = False) -> torch.Tensor:
    """RMSNorm over the last dim, charged per element; reads x and writes the output.

    A ``fused`` norm (the MLA latent norms, fused into their down-projection) moves no bytes of
    its own. NOTE: the norm's weight is left out of the bytes, as ctxsim.counts leaves it out.
    """
    y = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + RMS_EPS) * weight
    if counter.enabled:
        counter.add(other_flops=RMSNORM_FLOPS_PER_ELEMENT * x.numel())
        if not fused:
            counter.add(bytes_read=activation_bytes(x), bytes_written=activation_bytes(y))
    return y


def rope(counter: Counter, x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """Rotate the last dim of ``x`` ``[B, C, ..., R]`` by 1-based ``positions`` ``[C]`` (half-split RoPE)."""
    width = x.shape[-1]
    half = width // 2
    inv_freq = ROPE_BASE ** (-torch.arange(half, dtype=torch.float64) / half)
    angles = (positions.to(torch.float64) - 1).unsqueeze(-1) * inv_freq  # [C, R/2]
    shape = [1, positions.numel()] + [1] * (x.dim() - 3) + [half]
    cos = angles.cos().to(x.dtype).reshape(shape)
    sin = angles.sin().to(x.dtype).reshape(shape)
    x1, x2 = x[..., :half], x[..., half:]
    out = torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1)
    if counter.enabled:
        counter.add(
            other_flops=ROPE_FLOPS_PER_ELEMENT * x.numel(),
            bytes_read=activation_bytes(x),
            bytes_written=activation_bytes(out),
        )
    return out


@dataclass
class RunContext:
    """Inputs of one forward pass of a chunk, besides the activations."""

    counter: Counter
    positions: torch.Tensor  # [C] 1-based positions of the chunk's tokens
    execution: str = "gathered"  # 'gathered' or 'masked'
    mla_mode: str = "auto"  # 'auto', 'expanded' or 'absorbed'
    phase: str = "prefill"
    # Whether indexer owners keep their top-k for later IndexShare layers, and the top-k of the
    # most recent owner for this chunk: [B, C, K] int32 slots, -1 for none.
    share_indices: bool = False
    owner_indices: torch.Tensor | None = None

    @property
    def first_position(self) -> int:
        return int(self.positions[0])

    @property
    def last_position(self) -> int:
        return int(self.positions[-1])


def query_tiles(n_queries: int, elements_per_query: int):
    """Yield slices of at most TILE_ELEMENTS // elements_per_query queries covering 0..n_queries."""
    step = max(1, min(n_queries, TILE_ELEMENTS // max(1, elements_per_query)))
    for start in range(0, n_queries, step):
        yield slice(start, min(n_queries, start + step))
