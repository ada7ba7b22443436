"""Build a RefModel from a ModelSpec at full size or scaled down to run on a CPU.

The small scale keeps what the counts depend on structurally: the order of layer kinds (each run
of identical layers shortened to at most two layers), every attention, selection and FFN kind,
MHA/GQA/MQA head sharing, MLA with and without a query latent and with v_head_dim different from
qk_nope_head_dim, IndexShare owner/shared layers, forced MSA blocks, sinks, biases, shared experts
and the weight and KV dtypes. Widths shrink, and the selection sizes (window, top-k, blocks) shrink
so that contexts of a few hundred tokens already select.
"""

from __future__ import annotations

import torch

from ctxsim.spec.errors import SpecError
from ctxsim.spec.layers import (
    DenseFFN,
    DSASelection,
    GQAAttention,
    LayerSpec,
    MLAAttention,
    MoEFFN,
    MSASelection,
    WindowSelection,
)
from ctxsim.spec.model import ModelSpec
from refmodel.model import RefModel

SCALES = ("small", "full")

# Small-scale sizes. Widths are multiples of 16 so that every block-scaled layout (fp8 scale per
# 128 values, NVFP4 scale per 16, MXFP4 per 32) divides evenly per head.
SMALL_D_MODEL = 64
SMALL_VOCAB = 512
SMALL_HEAD_DIM = 16
SMALL_HEADS = 4
SMALL_MAX_KV_HEADS = 2
SMALL_MLA = {"q_lora_rank": 32, "kv_lora_rank": 32, "qk_nope_head_dim": 16, "qk_rope_head_dim": 8}
SMALL_INDEX_HEADS = 4
SMALL_INDEX_HEAD_DIM = 16
SMALL_INDEX_TOPK = 32
SMALL_WINDOW = 32
SMALL_SINKS = 4
SMALL_BLOCK_SIZE = 8
SMALL_TOPK_BLOCKS = 4
SMALL_FFN = 64
SMALL_EXPERTS = 8
SMALL_EXPERTS_PER_TOKEN = 2
SMALL_EXPERT_FFN = 32
SMALL_MAX_RUN = 2
SMALL_MAX_RUNS = 8


def _small_attention(att) -> dict:
    if isinstance(att, MLAAttention):
        v_head_dim = SMALL_MLA["qk_nope_head_dim"] if att.v_head_dim == att.qk_nope_head_dim else 24
        q_lora = SMALL_MLA["q_lora_rank"] if att.q_lora_rank else None
        return {**att.model_dump(), **SMALL_MLA, "n_head": SMALL_HEADS, "q_lora_rank": q_lora, "v_head_dim": v_head_dim}
    if att.variant == "MHA":
        n_head = n_kv_head = SMALL_HEADS
    elif att.variant == "MQA":
        n_head, n_kv_head = SMALL_HEADS, 1
    else:
        n_kv_head = min(att.n_kv_head, SMALL_MAX_KV_HEADS)
        n_head = n_kv_head * min(att.n_rep, SMALL_HEADS)
    return {**att.model_dump(), "n_head": n_head, "n_kv_head": n_kv_head, "head_dim": SMALL_HEAD_DIM}


def _small_selection(sel, n_kv_head: int) -> dict:
    data = sel.model_dump()
    if isinstance(sel, WindowSelection):
        data.update(window=min(sel.window, SMALL_WINDOW), sink_tokens=min(sel.sink_tokens, SMALL_SINKS))
    elif isinstance(sel, DSASelection):
        data.update(
            index_n_heads=min(sel.index_n_heads, SMALL_INDEX_HEADS),
            index_head_dim=SMALL_INDEX_HEAD_DIM,
            index_topk=min(sel.index_topk, SMALL_INDEX_TOPK),
        )
    elif isinstance(sel, MSASelection):
        forced = sel.init_blocks + sel.local_blocks
        data.update(
            block_size=min(sel.block_size, SMALL_BLOCK_SIZE),
            topk_blocks=max(forced, min(sel.topk_blocks, SMALL_TOPK_BLOCKS)),
            index_n_heads=n_kv_head,
            index_head_dim=SMALL_INDEX_HEAD_DIM,
        )
    return data


def _small_ffn(ffn) -> dict:
    data = ffn.model_dump()
    if isinstance(ffn, DenseFFN):
        data.update(intermediate_size=SMALL_FFN)
    elif isinstance(ffn, MoEFFN):
        n_experts = min(ffn.n_routed_experts, SMALL_EXPERTS)
        data.update(
            n_routed_experts=n_experts,
            experts_per_token=min(ffn.experts_per_token, SMALL_EXPERTS_PER_TOKEN, n_experts),
            moe_intermediate_size=SMALL_EXPERT_FFN,
            shared_intermediate_size=SMALL_EXPERT_FFN if ffn.shared_intermediate_size else None,
        )
    return data


def _small_layer(layer: LayerSpec) -> dict:
    attention = _small_attention(layer.attention)
    n_kv_head = attention.get("n_kv_head", 1)
    return {
        "attention": attention,
        "selection": _small_selection(layer.selection, n_kv_head),
        "ffn": _small_ffn(layer.ffn),
    }


def _small_runs(spec: ModelSpec) -> list[dict]:
    """Runs shortened to SMALL_MAX_RUN layers; the first SMALL_MAX_RUNS runs, then only new kinds."""
    runs, seen = [], set()
    for i, run in enumerate(spec.layers):
        if i < SMALL_MAX_RUNS or run.kind not in seen:
            runs.append({"kind": run.kind, "count": min(run.count, SMALL_MAX_RUN)})
            seen.add(run.kind)
    return runs


def scale_spec(spec: ModelSpec, scale: str = "small") -> ModelSpec:
    """The ModelSpec a RefModel of ``scale`` is built from: ``spec`` itself for 'full'."""
    if scale == "full":
        return spec
    if scale != "small":
        raise SpecError(f"invalid scale '{scale}': use one of {', '.join(SCALES)}")
    data = spec.model_dump()
    data.update(
        name=f"{spec.name}-small",
        d_model=SMALL_D_MODEL,
        vocab_size=SMALL_VOCAB,
        max_context=None,
        layer_kinds={name: _small_layer(layer) for name, layer in spec.layer_kinds.items()},
        layers=_small_runs(spec),
    )
    return ModelSpec.model_validate(data)


def build_model(spec: ModelSpec, scale: str = "small", dtype: torch.dtype = torch.float32, seed: int = 0) -> RefModel:
    """A RefModel of ``spec`` at ``scale`` ('small' or 'full'), with seeded random weights."""
    return RefModel(scale_spec(spec, scale), dtype=dtype, seed=seed)
