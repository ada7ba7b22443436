"""Layer structure and KV sizes of the model presets, derived by hand from their config.json values."""

import json

import pytest

import ctxsim
from ctxsim.cli.main import main as cli_main
from ctxsim.spec.layers import DSASelection, GQAAttention, MLAAttention, MSASelection, WindowSelection
from ctxsim.spec.load import PRESET_DIR

EXPECTED_PRESETS = [
    "deepseek-v3",
    "deepseek-v3.2",
    "gemma-2-9b",
    "gemma-3-1b",
    "gemma-3-27b",
    "glm-5",
    "glm-5.2",
    "gpt-oss-120b",
    "gpt-oss-20b",
    "kimi-k2",
    "llama-3.1-405b",
    "llama-3.1-70b",
    "llama-3.1-8b",
    "minimax-m2",
    "minimax-m3",
    "mistral-7b-v0.1",
    "qwen3-235b-a22b",
    "qwen3-32b",
]


def test_preset_list():
    assert ctxsim.preset_names() == EXPECTED_PRESETS


@pytest.mark.parametrize("name", EXPECTED_PRESETS)
def test_preset_names_its_source(name):
    spec = ctxsim.load_model(name)
    text = (PRESET_DIR / f"{name}.yaml").read_text()
    assert spec.name == name
    assert "config.json" in spec.source
    assert text.startswith("# ")


def _windowed(spec) -> list[int]:
    return [i for i, layer in enumerate(spec.layer_stack) if isinstance(layer.selection, WindowSelection)]


# --- GLM-5.2 IndexShare ---------------------------------------------------------------------


def test_glm52_show_json(capsys):
    assert cli_main(["show", "glm-5.2", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["n_layer"] == 78
    # Owners: max(i - 3 + 1, 0) % 4 == 0, so layers 0, 1, 2 and then 6, 10, ..., 74.
    assert report["indexer_owner_layers"] == [0, 1, 2] + list(range(6, 75, 4))
    assert len(report["indexer_owner_layers"]) == 21
    attention = report["spec"]["layer_kinds"]["moe_owner"]["attention"]
    assert (attention["kv_lora_rank"], attention["qk_rope_head_dim"]) == (512, 64)
    # Untied embeddings: each convention differs by one 154880 x 6144 matrix.
    counts = report["params_by_embedding_convention"]
    matrix = 154880 * 6144
    assert counts["both"]["total"] == report["n_params"]
    assert counts["lm_head"]["active"] == report["n_active_params"]
    assert counts["both"]["active"] - counts["lm_head"]["active"] == matrix
    assert counts["lm_head"]["active"] - counts["none"]["active"] == matrix
    assert counts["lm_head"]["total"] - counts["none"]["total"] == matrix


def test_show_text_gives_active_without_embeddings(capsys):
    # MiniMax-M2 active: 10,415,112,192 with the LM head, less 200064 x 3072 = 9,800,515,584.
    assert cli_main(["show", "minimax-m2"]) == 0
    out = capsys.readouterr().out
    assert "10.4 G active (LM head counted, input embedding not; 9.8 G without either)" in out


def test_glm52_all_layers_sparse():
    spec = ctxsim.load_model("glm-5.2")
    assert all(isinstance(layer.selection, DSASelection) for layer in spec.layer_stack)
    assert [layer.ffn.kind for layer in spec.layer_stack[:4]] == ["dense", "dense", "dense", "moe"]


def test_glm52_mtp_layer_shares_indexer():
    # index_share_for_mtp_iteration: the MTP layer reuses the main model's top-k.
    spec = ctxsim.load_model("glm-5.2")
    assert spec.layer_kinds[spec.mtp_layer_kind].owns_indexer is False


def test_glm5_every_layer_owns_indexer():
    assert ctxsim.load_model("glm-5").indexer_owner_layers == list(range(78))


# --- MiniMax-M3 MSA ------------------------------------------------------------------------------


def test_minimax_m3_dense_then_msa():
    stack = ctxsim.load_model("minimax-m3").layer_stack
    assert all(layer.selection.kind == "dense" for layer in stack[:3])
    assert all(isinstance(layer.selection, MSASelection) for layer in stack[3:])
    assert len(stack) == 60


def test_minimax_m3_msa_shape():
    layer = ctxsim.load_model("minimax-m3").layer_stack[3]
    msa = layer.selection
    assert (msa.block_size, msa.topk_blocks, msa.topk_tokens) == (128, 16, 16 * 128)
    assert (msa.index_n_heads, msa.index_head_dim) == (4, 128)
    assert (msa.init_blocks, msa.local_blocks) == (1, 1)
    assert msa.index_n_heads == layer.attention.n_kv_head


# --- windows ---------------------------------------------------------------------------------------


def test_gpt_oss_alternates_from_sliding():
    spec = ctxsim.load_model("gpt-oss-120b")
    assert _windowed(spec) == list(range(0, 36, 2))
    first = spec.layer_stack[0]
    assert (first.selection.window, first.selection.learned_sinks) == (128, True)
    assert (first.attention.qkv_bias, first.attention.o_bias) == (True, True)
    assert spec.expert_weight_dtype == "mxfp4"


def test_gpt_oss_20b_layers():
    spec = ctxsim.load_model("gpt-oss-20b")
    assert _windowed(spec) == list(range(0, 24, 2))
    assert spec.layer_stack[1].ffn.n_routed_experts == 32


def test_gemma3_27b_global_layers():
    # sliding_window_pattern 6: global when (i + 1) % 6 == 0, so 10 global layers 5, 11, ..., 59.
    spec = ctxsim.load_model("gemma-3-27b")
    globals_ = [i for i in range(62) if i not in _windowed(spec)]
    assert globals_ == list(range(5, 62, 6))
    assert spec.layer_stack[0].selection.window == 1024


def test_gemma3_1b_global_layers():
    spec = ctxsim.load_model("gemma-3-1b")
    assert [i for i in range(26) if i not in _windowed(spec)] == [5, 11, 17, 23]
    assert spec.layer_stack[0].attention.head_dim == 256


def test_gemma2_alternates():
    spec = ctxsim.load_model("gemma-2-9b")
    assert _windowed(spec) == list(range(0, 42, 2))
    assert spec.layer_stack[0].attention.head_dim == 256
    assert spec.tie_word_embeddings is True


def test_mistral_window_everywhere():
    spec = ctxsim.load_model("mistral-7b-v0.1")
    assert _windowed(spec) == list(range(32))
    assert spec.layer_stack[0].selection.window == 4096


def test_qwen3_32b_head_dim_not_hidden_over_heads():
    spec = ctxsim.load_model("qwen3-32b")
    attention = spec.layer_stack[0].attention
    assert spec.d_model // attention.n_head == 80
    assert attention.head_dim == 128


# --- KV bytes per token, all layers caching every token -------------------------------------------


KV_CASES = [
    # Llama-3.1-405B: 126 layers x 2 (K, V) x 8 KV heads x 128 x 2 bytes.
    ("llama-3.1-405b", "bf16", 126 * 2 * 8 * 128 * 2),
    ("llama-3.1-70b", "bf16", 80 * 2 * 8 * 128 * 2),
    ("qwen3-235b-a22b", "bf16", 94 * 2 * 4 * 128 * 2),
    # MLA latent 512 + rope 64 values x 2 bytes on 61 layers.
    ("deepseek-v3", "bf16", 61 * (512 + 64) * 2),
    ("kimi-k2", "bf16", 61 * (512 + 64) * 2),
    # GLM-5: vLLM fp8 MLA record 656 B plus the 132 B indexer key on all 78 layers.
    ("glm-5", "fp8_ds_mla", 78 * (656 + 132)),
    # GLM-5.2: the indexer key only on the 21 owner layers.
    ("glm-5.2", "fp8_ds_mla", 78 * 656 + 21 * 132),
    # MiniMax-M3: 2 x 4 KV heads x 128 x 2 bytes on 60 layers, plus a 128-wide bf16 index key on 57.
    ("minimax-m3", "bf16", 60 * 2 * 4 * 128 * 2 + 57 * 128 * 2),
]


@pytest.mark.parametrize("name, kv_dtype, expected", KV_CASES, ids=[c[0] for c in KV_CASES])
def test_kv_bytes_per_token(name, kv_dtype, expected):
    assert ctxsim.load_model(name).kv_bytes_per_token(kv_dtype) == expected


def test_mla_presets_use_mla():
    for name in ("deepseek-v3", "deepseek-v3.2", "glm-5", "glm-5.2", "kimi-k2"):
        assert all(isinstance(layer.attention, MLAAttention) for layer in ctxsim.load_model(name).layer_stack), name


def test_gqa_presets_use_gqa():
    for name in ("llama-3.1-8b", "qwen3-235b-a22b", "minimax-m2", "minimax-m3", "gemma-3-27b"):
        assert all(isinstance(layer.attention, GQAAttention) for layer in ctxsim.load_model(name).layer_stack), name


def test_show_text_gives_heads_and_window_growth(capsys):
    assert cli_main(["show", "gemma-3-27b"]) == 0
    out = capsys.readouterr().out
    assert "32 q / 16 kv heads x 128" in out
    # 10 global layers of 2 * 16 * 128 * 2 B = 8192 B keep growing; the 52 local ones stop at 1024 tokens.
    assert "window layers keep at most 1,024 tokens, so past that context the cache grows by 81,920 B per token" in out


def test_show_text_gives_mla_ranks(capsys):
    assert cli_main(["show", "glm-5.2"]) == 0
    assert "64 heads, q_lora 2048, kv_lora 512 + rope 64" in capsys.readouterr().out
