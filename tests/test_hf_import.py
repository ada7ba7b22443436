"""Hugging Face config.json import: every fixture imports to the same layers as its preset.

The fixtures under tests/fixtures/hf_configs are written from the published config.json of each
preset's model, keeping only keys the real file has. A preset and an import name their layer
kinds differently, so they are compared by the expanded per-layer stack and the top-level numbers.
"""

import copy
import json
from pathlib import Path

import pytest

import ctxsim
from ctxsim.cli.main import main as cli_main
from ctxsim.spec.hf_import import SUPPORTED_MODEL_TYPES, model_from_hf_config
from ctxsim.spec.layers import DSASelection, MSASelection, WindowSelection

FIXTURES = Path(__file__).parent / "fixtures" / "hf_configs"
TOP_LEVEL = [
    "d_model",
    "vocab_size",
    "tie_word_embeddings",
    "n_layer",
    "max_context",
    "n_mtp_layers",
    "weight_dtype",
    "expert_weight_dtype",
    "kv_dtype",
]


def _fixture(name: str) -> dict:
    return json.loads((FIXTURES / f"{name}.json").read_text())


def _import(data: dict, name: str = "imported") -> ctxsim.ModelSpec:
    return model_from_hf_config(data, name=name, source="config.json")


def _assert_same_model(imported: ctxsim.ModelSpec, preset: ctxsim.ModelSpec) -> None:
    for field in TOP_LEVEL:
        assert getattr(imported, field) == getattr(preset, field), field
    for i, (got, want) in enumerate(zip(imported.layer_stack, preset.layer_stack)):
        assert got == want, f"layer {i}"
    assert imported.layer_kinds[imported.mtp_layer_kind] == preset.layer_kinds[preset.mtp_layer_kind]


def test_fixture_for_every_preset():
    assert sorted(p.stem for p in FIXTURES.glob("*.json")) == ctxsim.preset_names()


@pytest.mark.parametrize("name", ctxsim.preset_names())
def test_fixture_imports_as_preset(name):
    imported = ctxsim.load_model(FIXTURES / f"{name}.json")
    _assert_same_model(imported, ctxsim.load_model(name))


def test_fixtures_cover_supported_types():
    seen = {_fixture(p.stem)["model_type"] for p in FIXTURES.glob("*.json")}
    # minimax_m3 without the multimodal wrapper is covered by test_minimax_m3_flat_config.
    assert set(SUPPORTED_MODEL_TYPES) - seen == {"minimax_m3"}


def test_import_name_from_directory(tmp_path):
    model_dir = tmp_path / "Llama-3.1-8B"
    model_dir.mkdir()
    (model_dir / "config.json").write_text((FIXTURES / "llama-3.1-8b.json").read_text())
    spec = ctxsim.load_model(model_dir / "config.json")
    assert spec.name == "Llama-3.1-8B"
    assert spec.source == str(model_dir / "config.json")


def test_import_from_model_folder(tmp_path):
    model_dir = tmp_path / "Llama-3.1-8B"
    model_dir.mkdir()
    (model_dir / "config.json").write_text((FIXTURES / "llama-3.1-8b.json").read_text())
    spec = ctxsim.load_model(model_dir)
    assert spec.name == "Llama-3.1-8B"
    assert spec.n_params == ctxsim.load_model("llama-3.1-8b").n_params


def test_import_name_from_json_file_name(tmp_path):
    # A JSON file not called config.json is named after the file, whatever its folder.
    path = tmp_path / "my-llama.json"
    path.write_text((FIXTURES / "llama-3.1-8b.json").read_text())
    assert ctxsim.load_model(path).name == "my-llama"


def test_model_folder_without_config_is_rejected(tmp_path, capsys):
    assert cli_main(["show", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.endswith(f"model folder {tmp_path} has no config.json: pass a config.json or a ctxsim YAML file")
    assert "\n" not in err


def test_cli_show_config_path(capsys):
    assert cli_main(["show", str(FIXTURES / "glm-5.2.json"), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["n_layer"] == 78
    assert len(report["indexer_owner_layers"]) == 21


# --- head_dim ----------------------------------------------------------------------------------


def test_qwen3_head_dim_from_config():
    # Qwen3-32B: hidden_size 5120 / 64 heads would be 80, but the config gives 128.
    spec = _import(_fixture("qwen3-32b"))
    assert spec.layer_stack[0].attention.head_dim == 128


def test_llama_head_dim_falls_back():
    # Llama-3.1 configs have no head_dim: transformers uses hidden_size / num_attention_heads.
    data = _fixture("llama-3.1-8b")
    assert "head_dim" not in data
    assert _import(data).layer_stack[0].attention.head_dim == 4096 // 32


def test_llama_explicit_head_dim_wins():
    data = _fixture("llama-3.1-8b")
    data["head_dim"] = 64
    assert _import(data).layer_stack[0].attention.head_dim == 64


def test_gemma2_head_dim_not_hidden_over_heads():
    # Gemma-2-9B: 3584 / 16 = 224, but the config gives 256.
    assert _import(_fixture("gemma-2-9b")).layer_stack[0].attention.head_dim == 256


def test_mla_ignores_head_dim_key():
    # The GLM-5.2 config carries head_dim 192; MLA widths come from the qk_*/v_head_dim keys.
    attention = _import(_fixture("glm-5.2")).layer_stack[0].attention
    assert attention.qk_nope_head_dim + attention.qk_rope_head_dim == 192 + 64
    assert attention.v_head_dim == 256


# --- layer patterns ----------------------------------------------------------------------------


def _windowed_layers(spec: ctxsim.ModelSpec) -> list[int]:
    return [i for i, layer in enumerate(spec.layer_stack) if isinstance(layer.selection, WindowSelection)]


def test_gemma3_pattern_without_layer_types():
    # sliding_window_pattern 6: layers 5, 11, 17, 23 are global, the other 22 slide (window 512).
    spec = _import(_fixture("gemma-3-1b"))
    assert _windowed_layers(spec) == [i for i in range(26) if (i + 1) % 6 != 0]
    assert spec.layer_stack[0].selection.window == 512


def test_gemma3_layer_types_override_pattern():
    data = _fixture("gemma-3-1b")
    data["layer_types"] = ["full_attention"] * 13 + ["sliding_attention"] * 13
    assert _windowed_layers(_import(data)) == list(range(13, 26))


def test_gemma3_wrapper_uses_text_defaults():
    # The 27B text_config omits vocab_size and max_position_embeddings; Gemma3TextConfig
    # defaults are 262208 and 131072, with tied embeddings.
    spec = _import(_fixture("gemma-3-27b"))
    assert spec.vocab_size == 262208
    assert spec.max_context == 131072
    assert spec.tie_word_embeddings is True


def test_gemma2_even_layers_slide():
    assert _windowed_layers(_import(_fixture("gemma-2-9b"))) == list(range(0, 42, 2))


def test_gpt_oss_default_alternation():
    data = _fixture("gpt-oss-20b")
    del data["layer_types"]
    spec = _import(data)
    assert _windowed_layers(spec) == list(range(0, 24, 2))
    assert spec.layer_stack[0].selection.learned_sinks is True


def test_mistral_window_every_layer():
    spec = _import(_fixture("mistral-7b-v0.1"))
    assert _windowed_layers(spec) == list(range(32))
    assert spec.layer_stack[0].selection.window == 4096


def test_mistral_null_window_is_dense():
    data = _fixture("mistral-7b-v0.1")
    data["sliding_window"] = None
    assert _windowed_layers(_import(data)) == []


def test_qwen3_sliding_from_max_window_layers():
    # Qwen3Config: with use_sliding_window, layers from max_window_layers on use the window.
    data = _fixture("qwen3-32b")
    data.update(use_sliding_window=True, sliding_window=4096, max_window_layers=60)
    spec = _import(data)
    assert _windowed_layers(spec) == [60, 61, 62, 63]


def test_qwen3_moe_mlp_only_layers():
    data = _fixture("qwen3-235b-a22b")
    data["mlp_only_layers"] = [0, 93]
    stack = _import(data).layer_stack
    assert stack[0].ffn.kind == "dense"
    assert stack[0].ffn.intermediate_size == 12288
    assert stack[1].ffn.kind == "moe"
    assert stack[93].ffn.kind == "dense"


def test_deepseek_first_dense_layers():
    stack = _import(_fixture("deepseek-v3")).layer_stack
    assert [layer.ffn.kind for layer in stack[:4]] == ["dense", "dense", "dense", "moe"]


def test_kimi_one_dense_layer():
    stack = _import(_fixture("kimi-k2")).layer_stack
    assert [layer.ffn.kind for layer in stack[:2]] == ["dense", "moe"]
    assert stack[1].ffn.n_routed_experts == 384


# --- DSA indexers ------------------------------------------------------------------------------


def _owners(spec: ctxsim.ModelSpec) -> list[int]:
    return spec.indexer_owner_layers


GLM52_OWNERS = [0, 1, 2] + list(range(6, 78, 4))


def test_glm52_indexer_types():
    assert _owners(_import(_fixture("glm-5.2"))) == GLM52_OWNERS


def test_glm52_freq_offset_rule():
    # Without indexer_types: full when max(i - offset + 1, 0) % freq == 0 (freq 4, offset 3).
    data = _fixture("glm-5.2")
    del data["indexer_types"]
    owners = _owners(_import(data))
    assert owners == GLM52_OWNERS
    assert len(owners) == 21


def test_glm_topk_pattern_string():
    data = _fixture("glm-5")
    data["index_topk_pattern"] = "F" + "S" * 76 + "F"
    assert _owners(_import(data)) == [0, 77]


def test_glm5_every_layer_owns():
    spec = _import(_fixture("glm-5"))
    assert _owners(spec) == list(range(78))
    assert all(isinstance(layer.selection, DSASelection) for layer in spec.layer_stack)


def test_glm_offset_default_is_two():
    # GlmMoeDsaConfig's default index_skip_topk_offset is 2: with freq 4 that gives 0, 1, 5, 9, ...
    data = _fixture("glm-5")
    data["index_topk_freq"] = 4
    assert _owners(_import(data))[:4] == [0, 1, 5, 9]


def test_deepseek_v32_every_layer_owns():
    spec = _import(_fixture("deepseek-v3.2"))
    assert _owners(spec) == list(range(61))
    assert spec.layer_stack[0].selection.index_topk == 2048


# --- MiniMax ----------------------------------------------------------------------------------


def test_minimax_m3_msa_layers():
    spec = _import(_fixture("minimax-m3"))
    sparse = [i for i, layer in enumerate(spec.layer_stack) if isinstance(layer.selection, MSASelection)]
    assert sparse == list(range(3, 60))
    selection = spec.layer_stack[3].selection
    assert (selection.block_size, selection.topk_blocks, selection.index_n_heads) == (128, 16, 4)


def test_minimax_m3_flat_config():
    # A text-only conversion puts text_config at the root with model_type minimax_m3.
    data = _fixture("minimax-m3")
    flat = copy.deepcopy(data["text_config"])
    _assert_same_model(_import(flat), ctxsim.load_model("minimax-m3"))


def test_minimax_m3_layer_types():
    # One port of MiniMax-M3 names MSA layers in layer_types instead of sparse_attention_freq.
    data = copy.deepcopy(_fixture("minimax-m3")["text_config"])
    del data["sparse_attention_config"]["sparse_attention_freq"]
    data["layer_types"] = ["full_attention"] * 3 + ["minimax_m3_sparse"] * 57
    _assert_same_model(_import(data), ctxsim.load_model("minimax-m3"))


def test_minimax_m2_shared_expert_width():
    data = _fixture("minimax-m2")
    data["shared_intermediate_size"] = 1024
    ffn = _import(data).layer_stack[0].ffn
    assert (ffn.n_shared_experts, ffn.shared_intermediate_size) == (1, 1024)


# --- dtypes ------------------------------------------------------------------------------------


def test_fp8_quantization_sets_weight_dtype():
    assert _import(_fixture("deepseek-v3")).weight_dtype == "fp8"


def test_mxfp4_sets_expert_dtype():
    spec = _import(_fixture("gpt-oss-120b"))
    assert (spec.weight_dtype, spec.expert_weight_dtype) == ("bf16", "mxfp4")


def test_newer_dtype_key():
    # Newer transformers versions write "dtype" where older ones wrote "torch_dtype".
    data = _fixture("llama-3.1-8b")
    del data["torch_dtype"]
    data["dtype"] = "float16"
    assert _import(data).weight_dtype == "fp16"
