"""The reference transformer: embedding, the layer stack of a ModelSpec, final norm and LM head.

Each layer is pre-norm: x + attention(norm(x)), then x + ffn(norm(x)). Weights are random
(seeded), because the reference model proves counts and equivalences, not quality.
"""

from __future__ import annotations

import torch
from torch import nn

from ctxsim.counts.conventions import INDEX_BYTES, RESIDUAL_FLOPS_PER_ELEMENT, SCORE_BYTES
from ctxsim.spec.dtypes import weight_bytes
from ctxsim.spec.layers import GQAAttention, LayerSpec, MoEFFN
from ctxsim.spec.model import ModelSpec
from refmodel.attention import GQAModule, LayerCache, MLAModule
from refmodel.basic import RunContext, init_weight, ones, rms_norm
from refmodel.counter import Counter, activation_bytes, linear
from refmodel.ffn import DenseMLP, MoE


def _residual(counter: Counter, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Add a sub-layer output to the stream: reads both, writes the sum."""
    out = x + y
    if counter.enabled:
        counter.add(
            other_flops=RESIDUAL_FLOPS_PER_ELEMENT * out.numel(),
            bytes_read=activation_bytes(x) + activation_bytes(y),
            bytes_written=activation_bytes(out),
        )
    return out


class RefLayer(nn.Module):
    def __init__(self, layer: LayerSpec, spec: ModelSpec, dtype: torch.dtype, generator: torch.Generator):
        super().__init__()
        self.spec = layer
        weight_dtype = spec.weight_dtype
        expert_dtype = spec.expert_weight_dtype or spec.weight_dtype
        attention_class = GQAModule if isinstance(layer.attention, GQAAttention) else MLAModule
        self.attn_norm = ones(spec.d_model, dtype)
        self.attention = attention_class(layer, spec.d_model, weight_dtype, dtype, generator)
        self.ffn_norm = ones(spec.d_model, dtype)
        if isinstance(layer.ffn, MoEFFN):
            self.ffn = MoE(layer.ffn, spec.d_model, weight_dtype, expert_dtype, dtype, generator)
        else:
            self.ffn = DenseMLP(layer.ffn, spec.d_model, weight_dtype, dtype, generator)

    def forward(self, ctx: RunContext, x: torch.Tensor, cache: LayerCache) -> torch.Tensor:
        counter = ctx.counter
        with counter.op("attn.norm"):
            h = rms_norm(counter, x, self.attn_norm)
        y = self.attention(ctx, h, cache)
        with counter.op("attn.residual"):
            x = _residual(counter, x, y)
        with counter.op("ffn.norm"):
            h = rms_norm(counter, x, self.ffn_norm)
        y = self.ffn(counter, h)
        with counter.op("ffn.residual"):
            return _residual(counter, x, y)


class RefModel(nn.Module):
    """A runnable model of a ModelSpec (MTP layers are not built)."""

    def __init__(self, spec: ModelSpec, dtype: torch.dtype = torch.float32, seed: int = 0):
        super().__init__()
        self.spec = spec
        self.dtype = dtype
        generator = torch.Generator().manual_seed(seed)
        # Embedding entries are N(0, 1), like the residual stream they start.
        self.embedding = init_weight(generator, spec.vocab_size, spec.d_model, dtype)
        self.embedding.data *= spec.d_model**0.5
        self.layers = nn.ModuleList(
            RefLayer(spec.layer_kinds[kind], spec, dtype, generator) for kind in spec.layer_sequence
        )
        self.final_norm = ones(spec.d_model, dtype)
        self.lm_head = None if spec.tie_word_embeddings else init_weight(generator, spec.vocab_size, spec.d_model, dtype)

    @property
    def has_shared_indexer(self) -> bool:
        """Whether some layer reuses an earlier layer's DSA top-k (IndexShare)."""
        return any(getattr(layer.spec.selection, "indexer", None) == "shared" for layer in self.layers)

    def make_caches(self, batch: int, capacity: int, kv_dtype: str) -> list[LayerCache]:
        """Empty caches of ``batch`` sequences of up to ``capacity`` tokens, one per layer."""
        return [layer.attention.make_cache(batch, capacity, kv_dtype) for layer in self.layers]

    def forward(self, ctx: RunContext, tokens: torch.Tensor, caches: list[LayerCache], logits: bool = False):
        """Run one chunk ``tokens`` ``[B, C]`` at ``ctx.positions``.

        Returns the final-normed hidden states ``[B, C, d_model]`` and, when ``logits`` is set,
        the LM-head logits of the chunk's last token ``[B, vocab]`` (else None).
        """
        counter = ctx.counter
        spec = self.spec
        with counter.in_layer(None), counter.op("embed"):
            x = self.embedding[tokens]
            if counter.enabled:
                rows = tokens.numel()
                counter.add(
                    bytes_read=rows * weight_bytes(spec.d_model, spec.vocab_dtype) + rows * INDEX_BYTES,
                    bytes_written=activation_bytes(x),
                )

        ctx.owner_indices = None
        ctx.share_indices = self.has_shared_indexer
        for index, (layer, cache) in enumerate(zip(self.layers, caches)):
            with counter.in_layer(index):
                x = layer(ctx, x, cache)

        with counter.in_layer(None):
            with counter.op("final_norm"):
                hidden = rms_norm(counter, x, self.final_norm)
            out = None
            if logits:
                with counter.op("lm_head"):
                    head = self.embedding if self.lm_head is None else self.lm_head
                    out = linear(counter, hidden[:, -1], head, None, spec.vocab_dtype)
                    counter.add(bytes_written=out.numel() * SCORE_BYTES - activation_bytes(out))
        return hidden, out
