"""Import a Hugging Face config.json into a ModelSpec.

Each supported ``model_type`` is read the way its transformers configuration class reads it: keys
that a released config.json may leave out take that class's default, and per-layer patterns come
from the same rules (``layer_types``, ``sliding_window_pattern``, ``first_k_dense_replace``,
``indexer_types``, MiniMax's ``sparse_attention_config``). ``head_dim`` is read from the config
when present; hidden_size / num_attention_heads is used only where transformers itself falls back
to it (Llama, Mistral).

Errors are one-line SpecErrors that name the config key, its value and the fix.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from ctxsim.spec.errors import SpecError
from ctxsim.spec.load import model_from_dict
from ctxsim.spec.model import ModelSpec

_MISSING = object()

# transformers torch dtype names -> ctxsim weight dtypes
_TORCH_DTYPES = {"bfloat16": "bf16", "float16": "fp16", "float32": "fp32"}


class _Config:
    """Typed access to one config.json mapping; every failure names the key."""

    def __init__(self, data: dict, source: str, model_type: str, prefix: str = "") -> None:
        self.data = data
        self.source = source
        self.model_type = model_type
        self.prefix = prefix

    def error(self, message: str) -> SpecError:
        return SpecError(f"{self.source}: {message}")

    def key_name(self, key: str) -> str:
        return f"{self.prefix}{key}"

    def has(self, key: str) -> bool:
        return self.data.get(key) is not None

    def raw(self, key: str, default: Any = _MISSING) -> Any:
        value = self.data.get(key)
        if value is not None:
            return value
        if default is _MISSING:
            if key in self.data:
                raise self.error(
                    f"'{self.key_name(key)}' is null but model_type {self.model_type} needs it: set a value"
                )
            raise self.error(f"missing required key '{self.key_name(key)}' for model_type {self.model_type}: add it")
        return default

    def invalid(self, key: str, value: Any, expected: str) -> SpecError:
        value_text = repr(value)
        if len(value_text) > 60:
            value_text = value_text[:57] + "..."
        return self.error(f"invalid '{self.key_name(key)}' = {value_text}: expected {expected}")

    def positive_int(self, key: str, default: Any = _MISSING) -> int:
        value = self.raw(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise self.invalid(key, value, "a positive integer")
        return value

    def optional_positive_int(self, key: str) -> int | None:
        if not self.has(key):
            return None
        return self.positive_int(key)

    def non_negative_int(self, key: str, default: Any = _MISSING) -> int:
        value = self.raw(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise self.invalid(key, value, "an integer >= 0")
        return value

    def boolean(self, key: str, default: Any = _MISSING) -> bool:
        value = self.raw(key, default)
        if not isinstance(value, bool):
            raise self.invalid(key, value, "true or false")
        return value

    def mapping(self, key: str, default: Any = _MISSING) -> dict:
        value = self.raw(key, default)
        if not isinstance(value, dict):
            raise self.invalid(key, value, "a JSON object")
        return value

    def per_layer_list(self, key: str, n_layer: int, allowed: tuple[Any, ...]) -> list:
        """A list with one entry per layer, each entry one of ``allowed``."""
        value = self.raw(key)
        if not isinstance(value, list):
            raise self.invalid(key, value, f"a list with one entry per layer ({n_layer})")
        if len(value) != n_layer:
            raise self.error(
                f"{self.key_name(key)} has {len(value)} entries but num_hidden_layers is {n_layer}: "
                "give one entry per layer"
            )
        for i, item in enumerate(value):
            if isinstance(item, bool) or item not in allowed:
                choices = " or ".join(repr(a) for a in allowed)
                raise self.invalid(f"{key}[{i}]", item, choices)
        return value

    def index_list(self, key: str, n_layer: int) -> list[int]:
        """A list of layer indices, each in 0..n_layer-1."""
        value = self.raw(key, [])
        if not isinstance(value, list):
            raise self.invalid(key, value, "a list of layer indices")
        for i, item in enumerate(value):
            if isinstance(item, bool) or not isinstance(item, int) or not 0 <= item < n_layer:
                raise self.invalid(f"{key}[{i}]", item, f"a layer index from 0 to {n_layer - 1}")
        return value

    def nested(self, key: str, model_type: str) -> "_Config":
        return _Config(self.mapping(key), self.source, model_type, prefix=f"{self.prefix}{key}.")


# ---------------------------------------------------------------------------------------------
# Shared parts: attention projections, layer patterns, FFNs


def _gqa_attention(cfg: _Config, head_dim_default: Any = _MISSING, bias_default: bool = False) -> dict:
    """GQA projections; ``head_dim`` from the config, else the transformers default."""
    n_head = cfg.positive_int("num_attention_heads")
    n_kv_head = cfg.positive_int("num_key_value_heads", n_head)
    if n_head % n_kv_head != 0:
        raise cfg.error(
            f"{cfg.key_name('num_attention_heads')} {n_head} is not divisible by "
            f"{cfg.key_name('num_key_value_heads')} {n_kv_head}: use a num_key_value_heads that divides it"
        )
    if head_dim_default is _MISSING:
        # Llama and Mistral fall back to hidden_size // num_attention_heads when head_dim is absent.
        d_model = cfg.positive_int("hidden_size")
        if not cfg.has("head_dim") and d_model % n_head != 0:
            raise cfg.error(
                f"{cfg.key_name('hidden_size')} {d_model} is not divisible by "
                f"{cfg.key_name('num_attention_heads')} {n_head} and head_dim is missing: add head_dim"
            )
        head_dim_default = d_model // n_head
    head_dim = cfg.positive_int("head_dim", head_dim_default)
    bias = cfg.boolean("attention_bias", bias_default)
    return {"kind": "gqa", "n_head": n_head, "n_kv_head": n_kv_head, "head_dim": head_dim, "qkv_bias": bias, "o_bias": bias}


def _mla_attention(cfg: _Config) -> dict:
    """MLA projections; num_key_value_heads and head_dim do not shape an MLA layer and are ignored."""
    return {
        "kind": "mla",
        "n_head": cfg.positive_int("num_attention_heads"),
        "q_lora_rank": cfg.optional_positive_int("q_lora_rank"),
        "kv_lora_rank": cfg.positive_int("kv_lora_rank"),
        "qk_nope_head_dim": cfg.positive_int("qk_nope_head_dim"),
        "qk_rope_head_dim": cfg.positive_int("qk_rope_head_dim"),
        "v_head_dim": cfg.positive_int("v_head_dim"),
    }


def _attention_layer_types(cfg: _Config, n_layer: int, default: Callable[[int], str]) -> list[str]:
    """'full_attention' / 'sliding_attention' per layer: ``layer_types`` when given, else ``default(i)``."""
    if cfg.has("layer_types"):
        return cfg.per_layer_list("layer_types", n_layer, ("full_attention", "sliding_attention"))
    return [default(i) for i in range(n_layer)]


def _window_selections(cfg: _Config, layer_types: list[str], window_default: Any, sinks: bool = False) -> list[dict]:
    selections = []
    for kind in layer_types:
        if kind == "sliding_attention":
            window = cfg.positive_int("sliding_window", window_default)
            selections.append({"kind": "window", "window": window, "learned_sinks": sinks})
        else:
            selections.append({"kind": "dense"})
    return selections


def _dense_ffn(cfg: _Config, key: str = "intermediate_size") -> dict:
    return {"kind": "dense", "intermediate_size": cfg.positive_int(key)}


def _check_topk(cfg: _Config, top_k_key: str, experts_key: str) -> None:
    top_k = cfg.positive_int(top_k_key)
    n_experts = cfg.positive_int(experts_key)
    if top_k > n_experts:
        raise cfg.error(
            f"{cfg.key_name(top_k_key)} {top_k} exceeds {cfg.key_name(experts_key)} {n_experts}: "
            "a token cannot be sent to more experts than exist"
        )


def _deepseek_moe(cfg: _Config) -> dict:
    _check_topk(cfg, "num_experts_per_tok", "n_routed_experts")
    return {
        "kind": "moe",
        "n_routed_experts": cfg.positive_int("n_routed_experts"),
        "experts_per_token": cfg.positive_int("num_experts_per_tok"),
        "moe_intermediate_size": cfg.positive_int("moe_intermediate_size"),
        "n_shared_experts": cfg.non_negative_int("n_shared_experts", 0),
    }


def _deepseek_ffns(cfg: _Config, n_layer: int, first_dense_default: Any = 0) -> list[dict]:
    """DeepSeek-V3 rule: layer i is MoE when i >= first_k_dense_replace and i % moe_layer_freq == 0.

    GLM-5 configs may list ``mlp_layer_types`` ('dense' / 'sparse') instead, which wins when present.
    """
    if cfg.has("mlp_layer_types"):
        types = cfg.per_layer_list("mlp_layer_types", n_layer, ("dense", "sparse"))
        is_moe = [t == "sparse" for t in types]
    else:
        first_dense = cfg.non_negative_int("first_k_dense_replace", first_dense_default)
        freq = cfg.positive_int("moe_layer_freq", 1)
        is_moe = [i >= first_dense and i % freq == 0 for i in range(n_layer)]
    moe = _deepseek_moe(cfg) if any(is_moe) else None
    dense = _dense_ffn(cfg) if not all(is_moe) else None
    return [moe if flag else dense for flag in is_moe]


def _weight_dtypes(configs: list[_Config]) -> tuple[str, str | None, str | None]:
    """(weight dtype, routed-expert dtype, vocabulary dtype) from torch_dtype / dtype and quantization_config.

    ``configs`` lists the text config first, then any wrapper around it; the first one holding a
    key wins. An fp8 quantization_config quantizes the linear layers only: the embedding and the
    LM head keep the unquantized dtype (DeepSeek-V3 inference/model.py builds its head in the
    default dtype; MiniMax-M2 lists lm_head in modules_to_not_convert).
    """
    weight_dtype = "bf16"
    dtype_keys = [(c, key) for c in configs for key in ("torch_dtype", "dtype") if c.has(key)]
    if dtype_keys:
        c, key = dtype_keys[0]
        dtype_name = c.raw(key)
        if dtype_name not in _TORCH_DTYPES:
            raise c.invalid(key, dtype_name, "one of " + ", ".join(_TORCH_DTYPES))
        weight_dtype = _TORCH_DTYPES[dtype_name]

    expert_dtype = vocab_dtype = None
    quant_holders = [c for c in configs if c.has("quantization_config")]
    if quant_holders:
        quant = quant_holders[0].nested("quantization_config", quant_holders[0].model_type)
        method = quant.raw("quant_method")
        if method == "fp8":
            vocab_dtype = weight_dtype
            weight_dtype = "fp8"
        elif method == "mxfp4":
            expert_dtype = "mxfp4"
        else:
            raise quant.invalid(
                "quant_method", method, "'fp8' or 'mxfp4' (remove quantization_config to model unquantized weights)"
            )
    return weight_dtype, expert_dtype, vocab_dtype


# ---------------------------------------------------------------------------------------------
# One reader per model type: each returns per-layer (attention, selection, ffn) dicts and top-level fields


def _llama(cfg: _Config) -> dict:
    n_layer = cfg.positive_int("num_hidden_layers")
    attention = _gqa_attention(cfg)
    ffn = _dense_ffn(cfg)
    return {"layers": [(attention, {"kind": "dense"}, ffn)] * n_layer, "tie": cfg.boolean("tie_word_embeddings", False)}


def _mistral(cfg: _Config) -> dict:
    n_layer = cfg.positive_int("num_hidden_layers")
    attention = _gqa_attention(cfg)
    attention["o_bias"] = attention["qkv_bias"] = False
    selection = {"kind": "dense"}
    if cfg.has("sliding_window"):
        selection = {"kind": "window", "window": cfg.positive_int("sliding_window")}
    ffn = _dense_ffn(cfg)
    return {"layers": [(attention, selection, ffn)] * n_layer, "tie": cfg.boolean("tie_word_embeddings", False)}


def _qwen3_layer_types(cfg: _Config, n_layer: int) -> list[str]:
    # Qwen3Config: layers from max_window_layers on slide, and only when use_sliding_window is true.
    sliding = cfg.boolean("use_sliding_window", False) and cfg.has("sliding_window")
    first_window = cfg.non_negative_int("max_window_layers", n_layer) if sliding else n_layer
    return _attention_layer_types(
        cfg, n_layer, lambda i: "sliding_attention" if i >= first_window else "full_attention"
    )


def _qwen3(cfg: _Config) -> dict:
    n_layer = cfg.positive_int("num_hidden_layers")
    attention = _gqa_attention(cfg, head_dim_default=128)
    selections = _window_selections(cfg, _qwen3_layer_types(cfg, n_layer), _MISSING)
    ffn = _dense_ffn(cfg)
    layers = [(attention, sel, ffn) for sel in selections]
    return {"layers": layers, "tie": cfg.boolean("tie_word_embeddings", False)}


def _qwen3_moe(cfg: _Config) -> dict:
    n_layer = cfg.positive_int("num_hidden_layers")
    attention = _gqa_attention(cfg, head_dim_default=128)
    selections = _window_selections(cfg, _qwen3_layer_types(cfg, n_layer), _MISSING)

    # Qwen3MoeConfig: layer i is MoE unless listed in mlp_only_layers, when (i + 1) % decoder_sparse_step == 0.
    dense_only = set(cfg.index_list("mlp_only_layers", n_layer))
    step = cfg.positive_int("decoder_sparse_step", 1)
    is_moe = [i not in dense_only and (i + 1) % step == 0 for i in range(n_layer)]
    moe = None
    if any(is_moe):
        _check_topk(cfg, "num_experts_per_tok", "num_experts")
        moe = {
            "kind": "moe",
            "n_routed_experts": cfg.positive_int("num_experts"),
            "experts_per_token": cfg.positive_int("num_experts_per_tok"),
            "moe_intermediate_size": cfg.positive_int("moe_intermediate_size"),
        }
    dense = _dense_ffn(cfg) if not all(is_moe) else None
    layers = [(attention, sel, moe if flag else dense) for sel, flag in zip(selections, is_moe)]
    return {"layers": layers, "tie": cfg.boolean("tie_word_embeddings", False)}


def _gemma2(cfg: _Config) -> dict:
    n_layer = cfg.positive_int("num_hidden_layers")
    attention = _gqa_attention(cfg, head_dim_default=256)
    # Gemma2Config: even layers (0, 2, ...) slide.
    types = _attention_layer_types(cfg, n_layer, lambda i: "sliding_attention" if i % 2 == 0 else "full_attention")
    selections = _window_selections(cfg, types, 4096)
    ffn = _dense_ffn(cfg)
    return {
        "layers": [(attention, sel, ffn) for sel in selections],
        "tie": cfg.boolean("tie_word_embeddings", True),
        "vocab_default": 256000,
        "max_context_default": 8192,
    }


def _gemma3_text(cfg: _Config) -> dict:
    n_layer = cfg.positive_int("num_hidden_layers")
    attention = _gqa_attention(cfg, head_dim_default=256)
    # Gemma3TextConfig: layer i is global when (i + 1) % sliding_window_pattern == 0.
    pattern = cfg.positive_int("sliding_window_pattern", 6)
    types = _attention_layer_types(
        cfg, n_layer, lambda i: "full_attention" if (i + 1) % pattern == 0 else "sliding_attention"
    )
    selections = _window_selections(cfg, types, 4096)
    ffn = _dense_ffn(cfg)
    return {
        "layers": [(attention, sel, ffn) for sel in selections],
        "tie": cfg.boolean("tie_word_embeddings", True),
        "vocab_default": 262208,
        "max_context_default": 131072,
    }


def _gpt_oss(cfg: _Config) -> dict:
    n_layer = cfg.positive_int("num_hidden_layers")
    attention = _gqa_attention(cfg, head_dim_default=64, bias_default=True)
    # GptOssConfig: layers alternate sliding / full, starting with sliding.
    types = _attention_layer_types(cfg, n_layer, lambda i: "sliding_attention" if i % 2 == 0 else "full_attention")
    selections = _window_selections(cfg, types, 128, sinks=True)
    _check_topk(cfg, "num_experts_per_tok", "num_local_experts")
    moe = {
        "kind": "moe",
        "n_routed_experts": cfg.positive_int("num_local_experts"),
        "experts_per_token": cfg.positive_int("num_experts_per_tok"),
        "moe_intermediate_size": cfg.positive_int("intermediate_size"),
        "router_bias": True,
    }
    return {"layers": [(attention, sel, moe) for sel in selections], "tie": cfg.boolean("tie_word_embeddings", False)}


def _deepseek_v3(cfg: _Config) -> dict:
    n_layer = cfg.positive_int("num_hidden_layers")
    attention = _mla_attention(cfg)
    ffns = _deepseek_ffns(cfg, n_layer)
    return {
        "layers": [(attention, {"kind": "dense"}, ffn) for ffn in ffns],
        "tie": cfg.boolean("tie_word_embeddings", False),
        "n_mtp_layers": cfg.non_negative_int("num_nextn_predict_layers", 0),
    }


def _dsa(cfg: _Config, indexer: str) -> dict:
    return {
        "kind": "dsa",
        "index_n_heads": cfg.positive_int("index_n_heads"),
        "index_head_dim": cfg.positive_int("index_head_dim"),
        "index_topk": cfg.positive_int("index_topk"),
        "indexer": indexer,
    }


def _deepseek_v32(cfg: _Config) -> dict:
    out = _deepseek_v3(cfg)
    selection = _dsa(cfg, "owner")
    out["layers"] = [(att, selection, ffn) for att, _, ffn in out["layers"]]
    return out


def _glm_indexer_types(cfg: _Config, n_layer: int) -> list[str]:
    """GlmMoeDsaConfig: ``indexer_types``, else ``index_topk_pattern`` ('F'/'S'), else the freq/offset rule."""
    if cfg.has("indexer_types"):
        return cfg.per_layer_list("indexer_types", n_layer, ("full", "shared"))
    if cfg.has("index_topk_pattern"):
        pattern = cfg.raw("index_topk_pattern")
        if not isinstance(pattern, str) or len(pattern) != n_layer or set(pattern) - {"F", "S"}:
            raise cfg.invalid("index_topk_pattern", pattern, f"a string of {n_layer} 'F'/'S' letters")
        return ["full" if c == "F" else "shared" for c in pattern]
    freq = cfg.positive_int("index_topk_freq", 1)
    offset = cfg.non_negative_int("index_skip_topk_offset", 2)
    return ["full" if max(i - offset + 1, 0) % freq == 0 else "shared" for i in range(n_layer)]


def _glm_moe_dsa(cfg: _Config) -> dict:
    n_layer = cfg.positive_int("num_hidden_layers")
    attention = _mla_attention(cfg)
    ffns = _deepseek_ffns(cfg, n_layer, first_dense_default=3)
    indexer_types = _glm_indexer_types(cfg, n_layer)
    if indexer_types[0] != "full":
        raise cfg.error(
            f"{cfg.key_name('indexer_types')}[0] is 'shared' but no earlier layer has an indexer: "
            "make layer 0 'full'"
        )
    selections = {kind: _dsa(cfg, "owner" if kind == "full" else "shared") for kind in ("full", "shared")}
    layers = [(attention, selections[kind], ffn) for kind, ffn in zip(indexer_types, ffns)]
    return {
        "layers": layers,
        "tie": cfg.boolean("tie_word_embeddings", False),
        "n_mtp_layers": cfg.non_negative_int("num_nextn_predict_layers", 0),
    }


def _minimax_m2(cfg: _Config) -> dict:
    n_layer = cfg.positive_int("num_hidden_layers")
    if cfg.has("attn_type_list"):
        # MiniMax-Text-01 marks lightning (linear) attention layers 0; M2 has softmax (1) everywhere.
        types = cfg.per_layer_list("attn_type_list", n_layer, (0, 1))
        if 0 in types:
            raise cfg.error(
                f"{cfg.key_name('attn_type_list')}[{types.index(0)}] is 0, a lightning (linear) attention "
                "layer, which ctxsim does not model: only softmax layers (1) are supported"
            )
    attention = _gqa_attention(cfg, head_dim_default=_MISSING)
    _check_topk(cfg, "num_experts_per_tok", "num_local_experts")
    moe = {
        "kind": "moe",
        "n_routed_experts": cfg.positive_int("num_local_experts"),
        "experts_per_token": cfg.positive_int("num_experts_per_tok"),
        "moe_intermediate_size": cfg.positive_int("intermediate_size"),
    }
    shared_width = cfg.non_negative_int("shared_intermediate_size", 0)
    if shared_width:
        moe.update(n_shared_experts=1, shared_intermediate_size=shared_width)
    return {"layers": [(attention, {"kind": "dense"}, moe)] * n_layer, "tie": cfg.boolean("tie_word_embeddings", False)}


def _minimax_m3(cfg: _Config) -> dict:
    n_layer = cfg.positive_int("num_hidden_layers")
    attention = _gqa_attention(cfg, head_dim_default=_MISSING)

    # MSA layers: sparse_attention_config.sparse_attention_freq (0 dense, 1 sparse) or layer_types.
    sparse_cfg = cfg.nested("sparse_attention_config", cfg.model_type) if cfg.has("sparse_attention_config") else None
    if cfg.has("layer_types"):
        types = cfg.per_layer_list("layer_types", n_layer, ("full_attention", "minimax_m3_sparse"))
        is_sparse = [t == "minimax_m3_sparse" for t in types]
    elif sparse_cfg is not None and sparse_cfg.boolean("use_sparse_attention", True):
        is_sparse = [flag == 1 for flag in sparse_cfg.per_layer_list("sparse_attention_freq", n_layer, (0, 1))]
    else:
        is_sparse = [False] * n_layer
    msa = None
    if any(is_sparse):
        if sparse_cfg is None:
            raise cfg.error(f"missing required key '{cfg.key_name('sparse_attention_config')}' for MSA layers: add it")
        # NOTE: sparse_init_block and sparse_local_block default to 1 when absent, as the MSA paper
        # forces one initial and one local block. Copies of the released config disagree on
        # sparse_init_block (0 or 1).
        index_heads = sparse_cfg.positive_int("sparse_num_index_heads")
        if index_heads != attention["n_kv_head"]:
            raise cfg.error(
                f"{sparse_cfg.key_name('sparse_num_index_heads')} {index_heads} differs from "
                f"{cfg.key_name('num_key_value_heads')} {attention['n_kv_head']}: MSA has one index-query "
                "head per KV group"
            )
        msa = {
            "kind": "msa",
            "block_size": sparse_cfg.positive_int("sparse_block_size"),
            "topk_blocks": sparse_cfg.positive_int("sparse_topk_blocks"),
            "index_n_heads": sparse_cfg.positive_int("sparse_num_index_heads"),
            "index_head_dim": sparse_cfg.positive_int("sparse_index_dim"),
            "init_blocks": sparse_cfg.non_negative_int("sparse_init_block", 1),
            "local_blocks": sparse_cfg.non_negative_int("sparse_local_block", 1),
        }

    # MoE layers: moe_layer_freq (0 dense MLP, 1 MoE), one entry per layer.
    if cfg.has("moe_layer_freq"):
        is_moe = [flag == 1 for flag in cfg.per_layer_list("moe_layer_freq", n_layer, (0, 1))]
    else:
        is_moe = [True] * n_layer
    moe = None
    if any(is_moe):
        _check_topk(cfg, "num_experts_per_tok", "num_local_experts")
        moe = {
            "kind": "moe",
            "n_routed_experts": cfg.positive_int("num_local_experts"),
            "experts_per_token": cfg.positive_int("num_experts_per_tok"),
            "moe_intermediate_size": cfg.positive_int("intermediate_size"),
            "n_shared_experts": cfg.non_negative_int("n_shared_experts", 0),
        }
        if moe["n_shared_experts"]:
            moe["shared_intermediate_size"] = cfg.positive_int("shared_intermediate_size")
    dense = _dense_ffn(cfg, "dense_intermediate_size") if not all(is_moe) else None

    layers = [
        (attention, msa if sparse else {"kind": "dense"}, moe if moe_layer else dense)
        for sparse, moe_layer in zip(is_sparse, is_moe)
    ]
    return {"layers": layers, "tie": cfg.boolean("tie_word_embeddings", False)}


_READERS: dict[str, Callable[[_Config], dict]] = {
    "deepseek_v3": _deepseek_v3,
    "deepseek_v32": _deepseek_v32,
    "gemma2": _gemma2,
    "gemma3_text": _gemma3_text,
    "glm_moe_dsa": _glm_moe_dsa,
    "gpt_oss": _gpt_oss,
    "kimi_k2": _deepseek_v3,
    "llama": _llama,
    "minimax_m2": _minimax_m2,
    "minimax_m3": _minimax_m3,
    "mistral": _mistral,
    "qwen3": _qwen3,
    "qwen3_moe": _qwen3_moe,
}

# Multimodal wrappers whose language model sits in text_config, with the text model_type used
# when text_config does not name one.
_WRAPPERS = {"gemma3": "gemma3_text", "minimax_m3_vl": "minimax_m3"}

SUPPORTED_MODEL_TYPES: tuple[str, ...] = tuple(sorted([*_READERS, *_WRAPPERS]))


# ---------------------------------------------------------------------------------------------
# Assembly: per-layer parts -> named layer kinds and runs


def _kind_name(attention: dict, selection: dict, ffn: dict) -> str:
    sel = selection["kind"]
    if sel == "dense":
        sel = "full"
    elif sel == "dsa" and selection["indexer"] == "shared":
        sel = "dsa_shared"
    return f"{sel}_{'moe' if ffn['kind'] == 'moe' else 'mlp'}"


def _layer_kinds_and_runs(layers: list[tuple[dict, dict, dict]]) -> tuple[dict, list[dict]]:
    kinds: dict[str, dict] = {}
    names_by_key: dict[str, str] = {}
    runs: list[dict] = []
    for attention, selection, ffn in layers:
        layer = {"attention": attention, "selection": selection, "ffn": ffn}
        key = json.dumps(layer, sort_keys=True)
        name = names_by_key.get(key)
        if name is None:
            base = _kind_name(attention, selection, ffn)
            name, n = base, 2
            while name in kinds:
                name, n = f"{base}_{n}", n + 1
            kinds[name] = layer
            names_by_key[key] = name
        if runs and runs[-1]["kind"] == name:
            runs[-1]["count"] += 1
        else:
            runs.append({"kind": name, "count": 1})
    return kinds, runs


def model_from_hf_config(data: object, name: str, source: str = "") -> ModelSpec:
    """Build a ModelSpec from a parsed Hugging Face config.json mapping.

    Raises SpecError with a one-line message naming the config key for a missing or invalid
    value, an unsupported model_type, or a per-layer list whose length is not num_hidden_layers.
    """
    source = source or "config.json"
    if not isinstance(data, dict):
        raise SpecError(f"{source}: expected a JSON object of config keys, got {type(data).__name__}")
    model_type = data.get("model_type")
    supported = ", ".join(SUPPORTED_MODEL_TYPES)
    if model_type is None:
        raise SpecError(f"{source}: missing required key 'model_type': set it to one of {supported}")
    if model_type not in _READERS and model_type not in _WRAPPERS:
        raise SpecError(f"{source}: unsupported model_type {model_type!r}: supported are {supported}")

    top = _Config(data, source, model_type)
    cfg = top
    if model_type in _WRAPPERS:
        text = top.mapping("text_config")
        text_type = text.get("model_type") or _WRAPPERS[model_type]
        if text_type not in _READERS:
            raise SpecError(f"{source}: unsupported text_config.model_type {text_type!r}: supported are {supported}")
        cfg = _Config(text, source, text_type, prefix="text_config.")

    parts = _READERS[cfg.model_type](cfg)
    kinds, runs = _layer_kinds_and_runs(parts["layers"])
    weight_dtype, expert_dtype, vocab_dtype = _weight_dtypes([cfg] if cfg is top else [cfg, top])
    max_context = cfg.optional_positive_int("max_position_embeddings")
    if max_context is None:
        max_context = parts.get("max_context_default")
    spec = {
        "name": name,
        "source": source,
        "d_model": cfg.positive_int("hidden_size"),
        "vocab_size": cfg.positive_int("vocab_size", parts.get("vocab_default", _MISSING)),
        "tie_word_embeddings": parts["tie"],
        "layer_kinds": kinds,
        "layers": runs,
        "n_mtp_layers": parts.get("n_mtp_layers", 0),
        "max_context": max_context,
        "weight_dtype": weight_dtype,
        "expert_weight_dtype": expert_dtype,
        "vocab_weight_dtype": vocab_dtype,
        "kv_dtype": "bf16",
    }
    return model_from_dict(spec, source=source)
