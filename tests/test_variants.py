"""Design variants: with_selection and with_kv_heads on the presets."""

import pytest

import ctxsim
from ctxsim.spec import DenseSelection, DSASelection, MSASelection, WindowSelection
from ctxsim.spec.variants import selection_pattern, with_kv_heads, with_selection


def _selections(spec):
    return [spec.layer_kinds[kind].selection for kind in spec.layer_sequence]


def test_indexshare_on_glm5_matches_glm52():
    glm5 = ctxsim.load_model("glm-5")
    glm52 = ctxsim.load_model("glm-5.2")
    variant = with_selection(glm5, "dsa", index_topk_freq=4, index_skip_topk_offset=3)
    # Owners: layers 0-2, then 6, 10, ..., 74 (18 more): 21 of 78.
    owners = [0, 1, 2] + list(range(6, 75, 4))
    assert variant.indexer_owner_layers == owners
    assert len(owners) == 21
    assert variant.indexer_owner_layers == glm52.indexer_owner_layers
    # fp8_ds_mla: 78 layers x 656 B MLA record + 21 owners x 132 B index key = 53,940 B per token.
    assert variant.kv_bytes_per_token("fp8_ds_mla") == 78 * 656 + 21 * 132
    assert variant.n_params == glm52.n_params


def test_indexshare_mtp_layer_shares():
    variant = with_selection(ctxsim.load_model("glm-5"), "dsa", index_topk_freq=4, index_skip_topk_offset=3)
    mtp = variant.layer_kinds[variant.mtp_layer_kind].selection
    assert isinstance(mtp, DSASelection)
    assert mtp.indexer == "shared"


def test_indexshare_default_offset():
    variant = with_selection(ctxsim.load_model("glm-5"), "dsa", index_topk_freq=4)
    # Offset 1: DSA layer j owns when j % 4 == 0: 0, 4, ..., 76 = 20 owners of 78.
    assert variant.indexer_owner_layers == list(range(0, 78, 4))


def test_dsa_on_glm52_restores_every_owner():
    variant = with_selection(ctxsim.load_model("glm-5.2"), "dsa")
    assert variant.indexer_owner_layers == list(range(78))
    # bf16: 78 x ((512 + 64) x 2 B latent + 128 x 2 B index key).
    assert variant.kv_bytes_per_token("bf16") == 78 * ((512 + 64) * 2 + 128 * 2)


def test_dsa_defaults_turn_v3_into_v32():
    variant = with_selection(ctxsim.load_model("deepseek-v3"), "dsa")
    v32 = ctxsim.load_model("deepseek-v3.2")
    first = _selections(variant)[0]
    assert (first.index_n_heads, first.index_head_dim, first.index_topk) == (64, 128, 2048)
    assert variant.n_params == v32.n_params
    # fp8_ds_mla: 61 x (656 + 132) B per token.
    assert variant.kv_bytes_per_token("fp8_ds_mla") == 61 * (656 + 132)


def test_dsa_keeps_existing_parameters():
    variant = with_selection(ctxsim.load_model("glm-5.2"), "dsa", index_topk=512)
    first = _selections(variant)[0]
    # GLM-5 indexer: 32 heads of 128; only index_topk changes.
    assert (first.index_n_heads, first.index_head_dim, first.index_topk) == (32, 128, 512)


def test_window_every_sixth_layer_dense():
    variant = with_selection(ctxsim.load_model("llama-3.1-70b"), "window", window=4096, dense_every=6)
    selections = _selections(variant)
    dense = [i for i, s in enumerate(selections) if isinstance(s, DenseSelection)]
    # (i + 1) % 6 == 0 for i in 0..79: 5, 11, ..., 77 = 13 layers.
    assert dense == list(range(5, 80, 6))
    assert sum(isinstance(s, WindowSelection) for s in selections) == 80 - 13
    assert selections[0].window == 4096


def test_window_all_layers_single_kind():
    variant = with_selection(ctxsim.load_model("llama-3.1-8b"), "window", window=8192)
    assert variant.kind_counts == {"mlp_window": 32}
    assert variant.name == "llama-3.1-8b+window8192"


def test_window_copied_from_model():
    variant = with_selection(ctxsim.load_model("gemma-3-1b"), "window")
    # Gemma 3 1B windows are 512 tokens; every layer now has that window.
    assert {s.window for s in _selections(variant)} == {512}


def test_dense_first_keeps_layers():
    variant = with_selection(ctxsim.load_model("minimax-m3"), "dsa", dense_first=3)
    selections = _selections(variant)
    assert all(isinstance(s, DenseSelection) for s in selections[:3])
    assert all(isinstance(s, DSASelection) and s.owns_indexer for s in selections[3:])
    assert len(selections) == 60


def test_msa_index_heads_follow_kv_heads():
    variant = with_selection(ctxsim.load_model("llama-3.1-8b"), "msa")
    first = _selections(variant)[0]
    assert isinstance(first, MSASelection)
    assert first.index_n_heads == 8
    # bf16: 32 layers x (2 x 8 KV heads x 128 x 2 B + 128 x 2 B index key).
    assert variant.kv_bytes_per_token("bf16") == 32 * (2 * 8 * 128 * 2 + 128 * 2)


def test_dense_removes_indexers():
    variant = with_selection(ctxsim.load_model("deepseek-v3.2"), "dense")
    v3 = ctxsim.load_model("deepseek-v3")
    assert variant.indexer_owner_layers == []
    assert variant.n_params == v3.n_params


def test_kv_heads_mqa():
    variant = with_kv_heads(ctxsim.load_model("llama-3.1-8b"), 1)
    # 32 layers x 2 (K and V) x 1 head x 128 x 2 B.
    assert variant.kv_bytes_per_token("bf16") == 32 * 2 * 1 * 128 * 2


def test_kv_heads_msa_index_heads_follow():
    variant = with_kv_heads(ctxsim.load_model("minimax-m3"), 8)
    msa = [s for s in _selections(variant) if isinstance(s, MSASelection)]
    assert len(msa) == 57
    assert {s.index_n_heads for s in msa} == {8}


@pytest.mark.parametrize(
    "call, fragment",
    [
        (lambda: with_selection(ctxsim.load_model("glm-5"), "msa"), "needs GQA attention"),
        (lambda: with_selection(ctxsim.load_model("llama-3.1-8b"), "window"), "needs a window"),
        (lambda: with_selection(ctxsim.load_model("llama-3.1-8b"), "dsa", window=4096), "'window' does not apply"),
        (lambda: with_selection(ctxsim.load_model("llama-3.1-8b"), "sparse"), "unknown selection kind"),
        (lambda: with_selection(ctxsim.load_model("llama-3.1-8b"), "window", window=0), "invalid window 0"),
        (lambda: with_selection(ctxsim.load_model("llama-3.1-8b"), "dense", dense_every=6), "do not apply"),
        (lambda: with_selection(ctxsim.load_model("llama-3.1-8b"), "dsa", dense_first=32), "invalid dense_first"),
        (lambda: with_selection(ctxsim.load_model("llama-3.1-8b"), "dsa", index_skip_topk_offset=0), "invalid"),
        (lambda: with_selection(ctxsim.load_model("llama-3.1-8b"), "msa", topk_blocks=1), "exceed topk_blocks"),
        (lambda: with_kv_heads(ctxsim.load_model("glm-5"), 2), "no GQA layers"),
        (lambda: with_kv_heads(ctxsim.load_model("llama-3.1-8b"), 3), "not divisible"),
    ],
)
def test_invalid_variant_raises(call, fragment):
    with pytest.raises(ctxsim.SpecError, match=fragment):
        call()


@pytest.mark.parametrize("name", ctxsim.preset_names())
def test_selection_pattern_round_trip(name):
    spec = ctxsim.load_model(name)
    pattern = selection_pattern(spec)
    assert pattern is not None
    arguments = dict(pattern)
    rebuilt = with_selection(spec, arguments.pop("kind"), **arguments)
    assert _selections(rebuilt) == _selections(spec)
    assert rebuilt.n_params == spec.n_params


def test_selection_pattern_glm52():
    pattern = selection_pattern(ctxsim.load_model("glm-5.2"))
    # GLM-5.2 config.json: index_topk_freq 4, index_skip_topk_offset 3; GLM-5 indexer 32 x 128, top-2048.
    assert pattern == {
        "kind": "dsa",
        "index_n_heads": 32,
        "index_head_dim": 128,
        "index_topk": 2048,
        "index_topk_freq": 4,
        "index_skip_topk_offset": 3,
    }


def test_selection_pattern_minimax_m3():
    pattern = selection_pattern(ctxsim.load_model("minimax-m3"))
    assert pattern["kind"] == "msa"
    assert pattern["dense_first"] == 3
    assert "index_n_heads" not in pattern


def test_selection_pattern_irregular_is_none():
    # Dense layers 0, 1, then 3, 7, 11, ...: neither a leading block nor a period alone.
    spec = with_selection(ctxsim.load_model("llama-3.1-8b"), "window", window=4096, dense_first=2, dense_every=4)
    assert selection_pattern(spec) is None
