"""Invalid model specs and config.json files: each raises a one-line SpecError naming the field."""

import copy
import json
from pathlib import Path

import pytest

import ctxsim
from ctxsim.cli.main import main as cli_main
from ctxsim.spec.errors import SpecError
from ctxsim.spec.hf_import import model_from_hf_config
from ctxsim.spec.load import model_from_dict

FIXTURES = Path(__file__).parent / "fixtures" / "hf_configs"


def _assert_one_line_naming(err: SpecError, field: str) -> None:
    message = str(err)
    assert "\n" not in message
    assert field in message, message


# --- ctxsim YAML / dict specs --------------------------------------------------------------------


def _tiny_spec() -> dict:
    return {
        "name": "tiny",
        "d_model": 64,
        "vocab_size": 100,
        "layer_kinds": {
            "dense": {
                "attention": {"kind": "gqa", "n_head": 4, "n_kv_head": 2, "head_dim": 16},
                "ffn": {"kind": "dense", "intermediate_size": 128},
            }
        },
        "layers": [{"kind": "dense", "count": 2}],
    }


def _set(spec: dict, dotted: str, value) -> dict:
    *parents, last = dotted.split(".")
    node = spec
    for key in parents:
        node = node[int(key)] if isinstance(node, list) else node.setdefault(key, {})
    if isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value
    return spec


KIND = "layer_kinds.dense"
WINDOW = {"kind": "window", "window": 128}
DSA = {"kind": "dsa", "index_n_heads": 4, "index_head_dim": 32, "index_topk": 64}
MSA = {"kind": "msa", "block_size": 16, "topk_blocks": 4, "index_n_heads": 2, "index_head_dim": 16}

# (case id, dotted path to change, new value, text the message must contain)
SPEC_CASES = [
    ("d_model zero", "d_model", 0, "d_model"),
    ("d_model negative", "d_model", -5, "d_model"),
    ("vocab wrong type", "vocab_size", "big", "vocab_size"),
    ("vocab float", "vocab_size", 1000.5, "vocab_size"),
    ("n_head zero", f"{KIND}.attention.n_head", 0, "n_head"),
    ("head_dim negative", f"{KIND}.attention.head_dim", -1, "head_dim"),
    ("n_head not divisible", f"{KIND}.attention.n_head", 5, "n_kv_head"),
    ("intermediate zero", f"{KIND}.ffn.intermediate_size", 0, "intermediate_size"),
    ("window zero", f"{KIND}.selection", dict(WINDOW, window=0), "window"),
    ("window negative", f"{KIND}.selection", dict(WINDOW, window=-128), "window"),
    ("index_topk zero", f"{KIND}.selection", dict(DSA, index_topk=0), "index_topk"),
    ("index heads zero", f"{KIND}.selection", dict(DSA, index_n_heads=0), "index_n_heads"),
    ("topk_blocks zero", f"{KIND}.selection", dict(MSA, topk_blocks=0), "topk_blocks"),
    ("msa index heads", f"{KIND}.selection", dict(MSA, index_n_heads=4), "index_n_heads"),
    ("msa forced blocks", f"{KIND}.selection", dict(MSA, init_blocks=3, local_blocks=2), "topk_blocks"),
    ("unknown selection", f"{KIND}.selection", {"kind": "nsa"}, "selection"),
    ("unknown attention key", f"{KIND}.attention.n_heads", 4, "n_heads"),
    ("unknown top key", "hidden_size", 64, "hidden_size"),
    ("unknown layer kind", "layers.0.kind", "moe", "moe"),
    ("layer count zero", "layers.0.count", 0, "count"),
    ("experts topk", f"{KIND}.ffn", {"kind": "moe", "n_routed_experts": 4, "experts_per_token": 8,
                                     "moe_intermediate_size": 32}, "experts_per_token"),
    ("kv dtype", "kv_dtype", "fp4", "kv_dtype"),
    ("tie wrong type", "tie_word_embeddings", "maybe", "tie_word_embeddings"),
    ("mtp kind unknown", "mtp_kind", "mtp", "mtp_kind"),
]


@pytest.mark.parametrize("path, value, field", [c[1:] for c in SPEC_CASES], ids=[c[0] for c in SPEC_CASES])
def test_invalid_spec_names_field(path, value, field):
    spec = _set(_tiny_spec(), path, value)
    with pytest.raises(SpecError) as err:
        model_from_dict(spec, source="tiny.yaml")
    _assert_one_line_naming(err.value, field)


def test_missing_key_named():
    spec = _tiny_spec()
    del spec["d_model"]
    with pytest.raises(SpecError) as err:
        model_from_dict(spec)
    _assert_one_line_naming(err.value, "missing required key 'd_model'")


def test_misspelled_key_suggests_the_missing_one():
    spec = _tiny_spec()
    attention = spec["layer_kinds"]["dense"]["attention"]
    attention["n_kv_heads"] = attention.pop("n_kv_head")
    with pytest.raises(SpecError) as err:
        model_from_dict(spec)
    _assert_one_line_naming(err.value, "unknown key 'layer_kinds.dense.attention.n_kv_heads': did you mean 'n_kv_head'?")


def test_unknown_layer_kind_tag_lists_kinds():
    spec = _set(_tiny_spec(), f"{KIND}.attention.kind", "gqq")
    with pytest.raises(SpecError) as err:
        model_from_dict(spec)
    _assert_one_line_naming(err.value, "invalid 'layer_kinds.dense.attention.kind' = 'gqq': use one of 'gqa', 'mla'")


def test_layer_run_of_undefined_kind():
    spec = _set(_tiny_spec(), "layers.0.kind", "dens")
    with pytest.raises(SpecError) as err:
        model_from_dict(spec)
    message = str(err.value)
    assert message == "layers[0].kind 'dens' is not in layer_kinds: use one of dense"


def test_bound_message_in_plain_words():
    spec = _set(_tiny_spec(), "layers.0.count", -1)
    with pytest.raises(SpecError) as err:
        model_from_dict(spec)
    _assert_one_line_naming(err.value, "invalid 'layers[0].count' = -1: must be greater than 0")


def test_shared_indexer_without_owner():
    spec = _set(_tiny_spec(), f"{KIND}.selection", dict(DSA, indexer="shared"))
    with pytest.raises(SpecError) as err:
        model_from_dict(spec)
    _assert_one_line_naming(err.value, "shares an indexer")


def test_malformed_yaml_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("name: tiny\nd_model: [64\n")
    with pytest.raises(SpecError) as err:
        ctxsim.load_model(path)
    _assert_one_line_naming(err.value, "malformed YAML")


def test_yaml_list_not_mapping(tmp_path):
    path = tmp_path / "list.yaml"
    path.write_text("- name: tiny\n")
    with pytest.raises(SpecError) as err:
        ctxsim.load_model(path)
    _assert_one_line_naming(err.value, "mapping")


def test_unknown_model_name():
    with pytest.raises(SpecError) as err:
        ctxsim.load_model("glm-6")
    _assert_one_line_naming(err.value, "glm-6")


def test_cli_bad_yaml_one_stderr_line(tmp_path, capsys):
    path = tmp_path / "bad.yaml"
    path.write_text(json.dumps(_set(_tiny_spec(), "d_model", 0)))
    assert cli_main(["show", str(path)]) == 2
    stderr = capsys.readouterr().err
    assert stderr.count("\n") == 1
    assert "d_model" in stderr


# --- Hugging Face config.json --------------------------------------------------------------------


def _fixture(name: str) -> dict:
    return json.loads((FIXTURES / f"{name}.json").read_text())


def _mutate(name: str, change) -> dict:
    data = copy.deepcopy(_fixture(name))
    change(data)
    return data


def _del(key):
    return lambda d: d.pop(key)


def _put(key, value):
    return lambda d: d.__setitem__(key, value)


HF_CASES = [
    ("unsupported type", "llama-3.1-8b", _put("model_type", "bert"), "model_type 'bert'"),
    ("missing model_type", "llama-3.1-8b", _del("model_type"), "model_type"),
    ("hidden zero", "llama-3.1-8b", _put("hidden_size", 0), "hidden_size"),
    ("layers negative", "llama-3.1-8b", _put("num_hidden_layers", -2), "num_hidden_layers"),
    ("heads not divisible", "llama-3.1-8b", _put("num_attention_heads", 30), "num_key_value_heads"),
    ("head_dim string", "qwen3-32b", _put("head_dim", "128"), "head_dim"),
    ("heads bool", "qwen3-32b", _put("num_attention_heads", True), "num_attention_heads"),
    ("missing vocab", "llama-3.1-8b", _del("vocab_size"), "vocab_size"),
    ("window negative", "mistral-7b-v0.1", _put("sliding_window", -1), "sliding_window"),
    ("window zero", "gemma-2-9b", _put("sliding_window", 0), "sliding_window"),
    ("layer_types length", "gpt-oss-20b", _put("layer_types", ["full_attention"] * 23), "layer_types"),
    ("layer_types entry", "gpt-oss-20b",
     _put("layer_types", ["sliding_attention", "chunked_attention"] * 12), "layer_types[1]"),
    ("index_topk zero", "deepseek-v3.2", _put("index_topk", 0), "index_topk"),
    ("indexer_types length", "glm-5.2", _put("indexer_types", ["full"] * 77), "indexer_types"),
    ("indexer first shared", "glm-5.2", _put("indexer_types", ["shared"] * 78), "indexer_types"),
    ("topk pattern letters", "glm-5", _put("index_topk_pattern", "FX" * 39), "index_topk_pattern"),
    ("experts topk", "qwen3-235b-a22b", _put("num_experts_per_tok", 200), "num_experts_per_tok"),
    ("msa freq length", "minimax-m3",
     lambda d: d["text_config"]["sparse_attention_config"].__setitem__("sparse_attention_freq", [1] * 5),
     "text_config.sparse_attention_config.sparse_attention_freq"),
    ("msa topk zero", "minimax-m3",
     lambda d: d["text_config"]["sparse_attention_config"].__setitem__("sparse_topk_blocks", 0),
     "sparse_topk_blocks"),
    ("msa index heads", "minimax-m3",
     lambda d: d["text_config"]["sparse_attention_config"].__setitem__("sparse_num_index_heads", 8),
     "text_config.sparse_attention_config.sparse_num_index_heads"),
    ("quant method", "deepseek-v3", lambda d: d["quantization_config"].__setitem__("quant_method", "awq"),
     "quantization_config.quant_method"),
    ("torch dtype", "llama-3.1-8b", _put("torch_dtype", "int8"), "torch_dtype"),
    ("missing text_config", "gemma-3-27b", _del("text_config"), "text_config"),
    ("mlp_only index", "qwen3-235b-a22b", _put("mlp_only_layers", [94]), "mlp_only_layers[0]"),
    ("linear attention", "minimax-m2", _put("attn_type_list", [0] + [1] * 61), "attn_type_list[0]"),
]


@pytest.mark.parametrize("fixture, change, field", [c[1:] for c in HF_CASES], ids=[c[0] for c in HF_CASES])
def test_invalid_config_names_key(fixture, change, field):
    with pytest.raises(SpecError) as err:
        model_from_hf_config(_mutate(fixture, change), name="bad", source="config.json")
    _assert_one_line_naming(err.value, field)


def test_unsupported_type_lists_supported():
    with pytest.raises(SpecError) as err:
        model_from_hf_config({"model_type": "bert"}, name="bad")
    for model_type in ("llama", "qwen3_moe", "glm_moe_dsa", "minimax_m3", "gemma3_text", "kimi_k2"):
        assert model_type in str(err.value)


def test_layer_types_length_message():
    data = _mutate("gemma-3-1b", _put("layer_types", ["full_attention"] * 30))
    with pytest.raises(SpecError) as err:
        model_from_hf_config(data, name="bad", source="config.json")
    assert str(err.value) == (
        "config.json: layer_types has 30 entries but num_hidden_layers is 26: give one entry per layer"
    )


def test_config_not_object():
    with pytest.raises(SpecError) as err:
        model_from_hf_config([1, 2], name="bad", source="config.json")
    _assert_one_line_naming(err.value, "JSON object")


def test_malformed_json_file(tmp_path):
    path = tmp_path / "config.json"
    path.write_text('{"model_type": "llama", "hidden_size": 4096,,}')
    with pytest.raises(SpecError) as err:
        ctxsim.load_model(path)
    _assert_one_line_naming(err.value, "malformed JSON")


def test_null_config_key_named():
    config = json.loads((FIXTURES / "deepseek-v3.json").read_text())
    config["n_routed_experts"] = None
    with pytest.raises(SpecError) as err:
        model_from_hf_config(config, name="dsv3", source="config.json")
    _assert_one_line_naming(err.value, "'n_routed_experts' is null but model_type deepseek_v3 needs it: set a value")


def test_missing_config_file(tmp_path):
    with pytest.raises(SpecError) as err:
        ctxsim.load_model(tmp_path / "config.json")
    _assert_one_line_naming(err.value, "not found")
