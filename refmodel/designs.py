"""Small ModelSpecs, one per attention design, for agreement tests and benchmarks.

Each design is a few layers at d_model 64 with selection sizes small enough that contexts of
tens of tokens already select: window 16 (2 sinks), DSA top-24, MSA blocks of 8 with top-3.
"""

from __future__ import annotations

from ctxsim.spec.model import ModelSpec

D_MODEL = 64
VOCAB = 256

MHA = {"kind": "gqa", "n_head": 4, "n_kv_head": 4, "head_dim": 16}
GQA = {"kind": "gqa", "n_head": 8, "n_kv_head": 2, "head_dim": 16}
GQA_BIASED = {**GQA, "qkv_bias": True, "o_bias": True}
MQA = {"kind": "gqa", "n_head": 4, "n_kv_head": 1, "head_dim": 16}
MLA = {
    "kind": "mla", "n_head": 4, "q_lora_rank": 32, "kv_lora_rank": 32,
    "qk_nope_head_dim": 16, "qk_rope_head_dim": 8, "v_head_dim": 24,
}
MLA_NO_Q_LORA = {**MLA, "q_lora_rank": None}

DENSE = {"kind": "dense"}
WINDOW = {"kind": "window", "window": 16, "sink_tokens": 2}
WINDOW_LEARNED_SINKS = {"kind": "window", "window": 16, "learned_sinks": True}
DSA_OWNER = {"kind": "dsa", "index_n_heads": 4, "index_head_dim": 16, "index_topk": 24, "indexer": "owner"}
DSA_SHARED = {**DSA_OWNER, "indexer": "shared"}
MSA = {"kind": "msa", "block_size": 8, "topk_blocks": 3, "index_n_heads": 2, "index_head_dim": 16}
MSA_TWO_LOCAL = {**MSA, "topk_blocks": 4, "local_blocks": 2}

MLP = {"kind": "dense", "intermediate_size": 64}
MLP_UNGATED = {"kind": "dense", "intermediate_size": 64, "gated": False}
MOE = {"kind": "moe", "n_routed_experts": 8, "experts_per_token": 2, "moe_intermediate_size": 32, "n_shared_experts": 1}
MOE_BIASED = {"kind": "moe", "n_routed_experts": 4, "experts_per_token": 2, "moe_intermediate_size": 32, "router_bias": True}


def _spec(name: str, kinds: dict[str, dict], layers: list[tuple[str, int]], **extra) -> ModelSpec:
    return ModelSpec.model_validate(
        {
            "name": name,
            "d_model": D_MODEL,
            "vocab_size": VOCAB,
            "layer_kinds": kinds,
            "layers": [{"kind": kind, "count": count} for kind, count in layers],
            **extra,
        }
    )


def _layer(attention: dict, selection: dict = DENSE, ffn: dict = MLP) -> dict:
    return {"attention": attention, "selection": selection, "ffn": ffn}


DESIGNS = {
    "mha": lambda: _spec("mha", {"mha": _layer(MHA)}, [("mha", 2)]),
    "gqa": lambda: _spec("gqa", {"gqa": _layer(GQA_BIASED, ffn=MLP_UNGATED)}, [("gqa", 2)], tie_word_embeddings=True),
    "mqa": lambda: _spec("mqa", {"mqa": _layer(MQA, ffn=MOE_BIASED)}, [("mqa", 2)], expert_weight_dtype="mxfp4"),
    "window": lambda: _spec(
        "window", {"local": _layer(GQA, WINDOW), "global": _layer(GQA)}, [("local", 2), ("global", 1)]
    ),
    "window_learned_sinks": lambda: _spec(
        "window_learned_sinks", {"sliding": _layer(GQA_BIASED, WINDOW_LEARNED_SINKS, MOE_BIASED), "full": _layer(GQA)},
        [("sliding", 1), ("full", 1)],
    ),
    "mla": lambda: _spec("mla", {"dense": _layer(MLA), "moe": _layer(MLA, ffn=MOE)}, [("dense", 1), ("moe", 2)], weight_dtype="fp8"),
    "mla_no_q_lora": lambda: _spec("mla_no_q_lora", {"mla": _layer(MLA_NO_Q_LORA)}, [("mla", 2)]),
    "mla_window": lambda: _spec("mla_window", {"mla": _layer(MLA, WINDOW)}, [("mla", 2)]),
    "dsa": lambda: _spec("dsa", {"dsa": _layer(MLA, DSA_OWNER, MOE)}, [("dsa", 2)]),
    "dsa_indexshare": lambda: _spec(
        "dsa_indexshare",
        {"owner": _layer(MLA, DSA_OWNER), "shared": _layer(MLA, DSA_SHARED, MOE)},
        [("owner", 1), ("shared", 2), ("owner", 1), ("shared", 1)],
    ),
    "gqa_dsa": lambda: _spec(
        "gqa_dsa", {"owner": _layer(GQA, DSA_OWNER), "shared": _layer(GQA, DSA_SHARED)}, [("owner", 1), ("shared", 1)]
    ),
    "msa": lambda: _spec("msa", {"dense": _layer(GQA), "msa": _layer(GQA, MSA, MOE)}, [("dense", 1), ("msa", 2)]),
    "msa_two_local": lambda: _spec("msa_two_local", {"msa": _layer(GQA, MSA_TWO_LOCAL)}, [("msa", 2)]),
}

MLA_DESIGNS = ("mla", "mla_no_q_lora", "mla_window", "dsa", "dsa_indexshare")
SPARSE_DESIGNS = ("dsa", "dsa_indexshare", "gqa_dsa", "msa", "msa_two_local")


def design(name: str) -> ModelSpec:
    """Build the small ModelSpec of a named design (see DESIGNS)."""
    return DESIGNS[name]()
