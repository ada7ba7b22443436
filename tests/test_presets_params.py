"""Parameter counts of the model presets against published figures and hand-derived totals.

Publishers round to two or three significant digits and do not all count embeddings the same way.
So each active case names the embedding convention it is checked under (ModelSpec.count_params).
"both" counts the input embedding and the LM head, "lm_head" only the LM head, "none" neither.
A case uses another convention than the project default ("lm_head", as in n_active_params) only
where the publisher's own figures show it: MiniMax and Z.ai count active parameters without either
vocabulary matrix (see the notes on their cases and test_zai_counts_active_without_embeddings).

Two releases changed the architecture but kept the predecessor's headline active figure:
DeepSeek-V3.2 added an indexer to each of the 61 layers of DeepSeek-V3, and GLM-5.2 removed the
indexer from 57 of the 78 layers of GLM-5. Their cases compare with the predecessor's published
figure plus or minus exactly those indexer weights, derived by hand below.

A case that still misses 1% is a strict xfail that states the gap, so it fails if the gap closes.
"""

import pytest

import ctxsim

B = 10**9

# One DSA indexer of DeepSeek-V3.2 (DeepSeek-V3.2-Exp inference/model.py, class Indexer): query
# up-projection q_lora_rank 1536 -> 64 heads x 128, key projection 7168 -> 128, head weights
# 7168 -> 64. Its 128-wide key LayerNorm is not counted, as ctxsim counts no norms.
DSV32_INDEXER = 1536 * 64 * 128 + 7168 * 128 + 7168 * 64

# One GLM-5 indexer (same layout): q_lora_rank 2048 -> 32 heads x 128, 6144 -> 128, 6144 -> 32.
GLM5_INDEXER = 2048 * 32 * 128 + 6144 * 128 + 6144 * 32


def _gap(ours: int, published: float) -> float:
    return ours / published - 1


def _case(name: str, published: float, source: str, known_gap: str = ""):
    """One parametrize case; ``known_gap`` makes it a strict xfail that states the gap."""
    marks = [pytest.mark.xfail(strict=True, reason=known_gap)] if known_gap else []
    return pytest.param(name, published, source, marks=marks, id=name)


def _active_case(name: str, published: float, source: str, embeddings: str, known_gap: str = ""):
    """One active-parameter case checked under the ``embeddings`` convention of count_params."""
    marks = [pytest.mark.xfail(strict=True, reason=known_gap)] if known_gap else []
    return pytest.param(name, published, source, embeddings, marks=marks, id=name)


# (preset, published total, source)
TOTALS = [
    _case("deepseek-v3", 671 * B, "DeepSeek-V3 technical report, arXiv 2412.19437"),
    _case("deepseek-v3.2", 671 * B, "DeepSeek-V3.2 release (same sizes as DeepSeek-V3; the hub's 685B adds the MTP module)"),
    _case("glm-5", 744 * B, "GLM-5 technical report, arXiv 2602.15763, architecture table"),
    _case("glm-5.2", 744 * B, "GLM-5.2 model card zai-org/GLM-5.2 (GLM-5 architecture)"),
    _case("minimax-m2", 229.9 * B, "MiniMax-M2 series report, arXiv 2605.26494 (229.9B total)"),
    _case("minimax-m3", 428 * B, "MiniMax-M3 model card ('~428B'), read in its unsloth/MiniMax-M3 copy"),
    _case("qwen3-32b", 32.8 * B, "Qwen3-32B model card Qwen/Qwen3-32B"),
    _case("qwen3-235b-a22b", 235 * B, "Qwen3-235B-A22B model card Qwen/Qwen3-235B-A22B"),
    _case("llama-3.1-8b", 8.03 * B, "Llama-3.1-8B model card meta-llama/Llama-3.1-8B"),
    _case("llama-3.1-70b", 70.6 * B, "Llama-3.1-70B model card meta-llama/Llama-3.1-70B"),
    _case("llama-3.1-405b", 405 * B, "Llama 3 paper, arXiv 2407.21783"),
    _case("gpt-oss-20b", 20.91 * B, "gpt-oss model card, arXiv 2508.10925"),
    _case("gpt-oss-120b", 116.83 * B, "gpt-oss model card, arXiv 2508.10925"),
    _case("gemma-2-9b", 9.241 * B, "Gemma 2 report, arXiv 2408.00118: 8,324M non-embedding + 917M embedding"),
    _case("gemma-3-1b", 1.0 * B, "Gemma 3 technical report, parameter table"),
    _case("gemma-3-27b", 27 * B, "Gemma 3 technical report, parameter table (language model)"),
    _case("mistral-7b-v0.1", 7.3 * B, "Mistral AI release announcement of Mistral 7B"),
    # The card rounds to "1T" (ours is +2.6%). The released checkpoint holds 1,026.5B values by the
    # hub's safetensors count, read in a third-party listing of the hub metadata. That count
    # includes about 0.06B fp8 scale values and the norms, which ctxsim leaves out. The report's
    # 1.04T (also "1043B" in the GLM-4.5 report's comparison table) is what counting all 61 layers
    # as MoE layers gives (1,043.0B). The released config has one dense layer, so ctxsim counts
    # 1,026.4B.
    _case(
        "kimi-k2",
        1026.5 * B,
        "Hugging Face safetensors count of moonshotai/Kimi-K2-Instruct (1,026.5B values)",
    ),
]


@pytest.mark.parametrize("name, published, source", TOTALS)
def test_total_params_match_published(name, published, source):
    spec = ctxsim.load_model(name)
    assert abs(_gap(spec.n_params, published)) <= 0.01, (
        f"{name}: {spec.n_params / B:.3f}B vs {published / B:.2f}B published ({source})"
    )


# (preset, published active, source, embedding convention of the source)
ACTIVE = [
    _active_case("kimi-k2", 32 * B, "Kimi K2 model card moonshotai/Kimi-K2-Instruct; no convention stated", "lm_head"),
    _active_case("gpt-oss-20b", 3.61 * B, "gpt-oss model card, arXiv 2508.10925: unembedding counted, embedding not", "lm_head"),
    _active_case("gpt-oss-120b", 5.13 * B, "gpt-oss model card, arXiv 2508.10925: unembedding counted, embedding not", "lm_head"),
    # DeepSeek's README_WEIGHTS.md first gave 36.7B "including 0.9B for Embedding and 0.9B for the
    # output Head", then corrected it to 36.6B "including 0.9B for the output Head".
    _active_case(
        "deepseek-v3",
        36.6 * B,
        "README_WEIGHTS.md of deepseek-ai/DeepSeek-V3: 36.6B including the output head",
        "lm_head",
    ),
    # DeepSeek publishes no V3.2 active figure of its own; the "37B" quoted for V3.2 is DeepSeek-V3's.
    # The V3.2-Exp report names DSA as the only architectural change from V3.1-Terminus (V3 shapes),
    # so the reference is V3's 36.6B plus the 61 indexers (0.85B): 37.45B.
    _active_case(
        "deepseek-v3.2",
        36.6 * B + 61 * DSV32_INDEXER,
        "README_WEIGHTS.md of deepseek-ai/DeepSeek-V3 (36.6B) plus 61 DSA indexers (DeepSeek-V3.2-Exp report)",
        "lm_head",
    ),
    # Z.ai counts no vocabulary matrix: see test_zai_counts_active_without_embeddings. With the LM
    # head GLM-5 would be 40.83B (+2.1%).
    _active_case(
        "glm-5",
        40 * B,
        "GLM-5 technical report, arXiv 2602.15763, architecture table (40B); Z.ai convention",
        "none",
    ),
    # The GLM-5.2 card keeps GLM-5's "744B-A40B", but IndexShare leaves 57 of the 78 layers without
    # indexer weights (they reuse the top-k of the last full layer), 0.53B fewer. Against the bare
    # 40B ours is 39.35B (-1.6%).
    _active_case(
        "glm-5.2",
        40 * B - 57 * GLM5_INDEXER,
        "GLM-5 report's 40B (kept by the GLM-5.2 model card) less 57 indexers (IndexShare); Z.ai convention",
        "none",
    ),
    # The card lists 234B "non-embedding" beside 235B total, so its headline figures count the
    # embeddings: 235.09B total with both matrices, 233.85B with neither.
    _active_case(
        "qwen3-235b-a22b",
        22 * B,
        "Qwen3-235B-A22B model card Qwen/Qwen3-235B-A22B: headline counts embeddings (234B non-embedding)",
        "both",
    ),
    # MiniMax counts no vocabulary matrix: the report's 9.8B is what "none" gives (9.80B; 10.42B with
    # the LM head). MiniMax-Text-01's 45.9B of 456B fits the same way. Counted by hand from its
    # published dimensions it is 45.94B without either 200064 x 6144 matrix, 47.17B with the LM head.
    _active_case(
        "minimax-m2",
        9.8 * B,
        "MiniMax-M2 series report, arXiv 2605.26494 (9.8B activated); MiniMax convention",
        "none",
    ),
    # The card gives only "~23B". Under MiniMax's convention ours is 23.50B; with the LM head 24.73B.
    _active_case(
        "minimax-m3",
        23 * B,
        "MiniMax-M3 model card ('~23B'), read in its unsloth/MiniMax-M3 copy; MiniMax convention",
        "none",
        known_gap="ours is 23.50B, +2.2% over the card's approximate ~23B; no exact figure is published",
    ),
]


@pytest.mark.parametrize("name, published, source, embeddings", ACTIVE)
def test_active_params_match_published(name, published, source, embeddings):
    spec = ctxsim.load_model(name)
    ours = spec.count_params(active=True, embeddings=embeddings)
    assert abs(_gap(ours, published)) <= 0.01, (
        f"{name}: {ours / B:.3f}B active ({embeddings}) vs {published / B:.2f}B published ({source})"
    )


def _glm_45_spec() -> ctxsim.ModelSpec:
    """GLM-4.5 from the GLM-5 report's architecture table (arXiv 2602.15763), which lists it beside GLM-5.

    3 dense and 89 MoE layers, hidden 5120, 96 query and 8 KV heads of 128, dense MLP 12288, 160
    routed experts of 1536 with 8 active and 1 shared, vocabulary 151552, untied embeddings. The q,
    k and v projections have biases (attention_bias true in zai-org/GLM-4.5 config.json).
    """
    attention = {"kind": "gqa", "n_head": 96, "n_kv_head": 8, "head_dim": 128, "qkv_bias": True}
    return ctxsim.ModelSpec.model_validate(
        {
            "name": "glm-4.5",
            "source": "GLM-5 report, arXiv 2602.15763, architecture table",
            "d_model": 5120,
            "vocab_size": 151552,
            "max_context": 131072,
            "layer_kinds": {
                "dense": {"attention": attention, "ffn": {"kind": "dense", "intermediate_size": 12288}},
                "moe": {
                    "attention": attention,
                    "ffn": {
                        "kind": "moe",
                        "n_routed_experts": 160,
                        "experts_per_token": 8,
                        "n_shared_experts": 1,
                        "moe_intermediate_size": 1536,
                    },
                },
            },
            "layers": [{"kind": "dense", "count": 3}, {"kind": "moe", "count": 89}],
        }
    )


def test_zai_counts_active_without_embeddings():
    # The GLM-5 report's table gives GLM-4.5 32B active. Per layer: q and o 5120*12288 each, k and v
    # 5120*1024 each, biases (96+16)*128; dense MLP 3*5120*12288; MoE 9 experts of 3*5120*1536 plus
    # the router 5120*160.
    attention = 2 * 5120 * 12288 + 2 * 5120 * 1024 + 112 * 128
    none = 92 * attention + 3 * (3 * 5120 * 12288) + 89 * (9 * 3 * 5120 * 1536 + 5120 * 160)
    assert none == 32_079_388_672
    spec = _glm_45_spec()
    assert spec.count_params(active=True, embeddings="none") == none
    # Only the count without either vocabulary matrix is within 1% of 32B (+0.25%); with the LM
    # head (151552*5120 more) it is +2.7%. GLM-5 is checked under the same convention.
    assert abs(_gap(none, 32 * B)) <= 0.01
    lm_head = spec.count_params(active=True, embeddings="lm_head")
    assert lm_head == none + 151552 * 5120
    assert _gap(lm_head, 32 * B) > 0.02


def test_deepseek_v32_active_adds_61_indexers():
    v3 = ctxsim.load_model("deepseek-v3")
    v32 = ctxsim.load_model("deepseek-v3.2")
    assert DSV32_INDEXER == 13_959_168
    assert v32.n_active_params - v3.n_active_params == 61 * DSV32_INDEXER
    assert v32.n_params - v3.n_params == 61 * DSV32_INDEXER


@pytest.mark.parametrize("name", ["deepseek-v3", "gemma-3-1b", "kimi-k2"])
def test_count_params_matches_properties(name):
    spec = ctxsim.load_model(name)
    assert spec.count_params(active=False, embeddings="both") == spec.n_params
    assert spec.count_params(active=True, embeddings="lm_head") == spec.n_active_params


def test_count_params_embedding_conventions():
    # Untied Llama 3.1 8B: each vocabulary matrix is 128256 * 4096.
    spec = ctxsim.load_model("llama-3.1-8b")
    vocab_matrix = 128256 * 4096
    none = spec.count_params(active=True, embeddings="none")
    assert spec.count_params(active=True, embeddings="lm_head") == none + vocab_matrix
    assert spec.count_params(active=True, embeddings="both") == none + 2 * vocab_matrix


def test_count_params_tied_counts_matrix_once():
    # Gemma 3 1B ties its embeddings: the one 262144 * 1152 matrix counts once under "both".
    spec = ctxsim.load_model("gemma-3-1b")
    none = spec.count_params(active=False, embeddings="none")
    assert spec.count_params(active=False, embeddings="both") == none + 262144 * 1152
    assert spec.count_params(active=False, embeddings="lm_head") == none + 262144 * 1152


def test_qwen3_235b_non_embedding_total():
    # The Qwen3-235B-A22B model card gives 234B non-embedding parameters.
    spec = ctxsim.load_model("qwen3-235b-a22b")
    assert abs(_gap(spec.count_params(active=False, embeddings="none"), 234 * B)) <= 0.01


def test_llama_8b_total_exact():
    # Per layer: q and o 4096*4096 each, k and v 4096*(8*128) each, SwiGLU 3*4096*14336.
    per_layer = 2 * 4096 * 4096 + 2 * 4096 * 8 * 128 + 3 * 4096 * 14336
    embeddings = 2 * 128256 * 4096  # untied input embedding and LM head
    expected = 32 * per_layer + embeddings
    assert expected == 8_029_995_008
    assert ctxsim.load_model("llama-3.1-8b").n_params == expected


def test_llama_8b_total_differs_from_checkpoint_by_norms():
    # The checkpoint contains 8,030,261,248 values (hub safetensors count). The difference is the
    # RMSNorm weights that ctxsim leaves out: 2 per layer plus the final norm, 4096 each.
    norms = (2 * 32 + 1) * 4096
    assert ctxsim.load_model("llama-3.1-8b").n_params + norms == 8_030_261_248


def test_llama_8b_active_drops_input_embedding():
    spec = ctxsim.load_model("llama-3.1-8b")
    assert spec.n_active_params == spec.n_params - 128256 * 4096


def test_gemma_tied_head_counts_as_active():
    # Tied embeddings: the one 262144 x 1152 matrix serves as the LM head, so active = total.
    spec = ctxsim.load_model("gemma-3-1b")
    assert spec.n_active_params == spec.n_params


def test_deepseek_v3_active_exact():
    # MLA per layer: q_a 7168*1536, q_b 1536*128*(128+64), kv_a 7168*(512+64), kv_b 512*128*(128+128),
    # o 128*128*7168.
    mla = 7168 * 1536 + 1536 * 128 * 192 + 7168 * 576 + 512 * 128 * 256 + 128 * 128 * 7168
    dense_mlp = 3 * 7168 * 18432
    # 8 routed + 1 shared expert of 3*7168*2048, plus the router 7168*256.
    moe_active = 9 * 3 * 7168 * 2048 + 7168 * 256
    lm_head = 129280 * 7168
    expected = 61 * mla + 3 * dense_mlp + 58 * moe_active + lm_head
    assert ctxsim.load_model("deepseek-v3").n_active_params == expected


def test_glm_52_drops_57_indexers():
    # IndexShare removes the indexer of 57 of 78 layers: q 2048*32*128, k 6144*128, weights 6144*32.
    assert GLM5_INDEXER == 9_371_648
    glm5 = ctxsim.load_model("glm-5")
    glm52 = ctxsim.load_model("glm-5.2")
    assert glm5.n_params - glm52.n_params == 57 * GLM5_INDEXER
    assert glm5.n_active_params - glm52.n_active_params == 57 * GLM5_INDEXER


def test_gpt_oss_biases_and_sinks_counted():
    # Attention per layer: q 2880*4096, k and v 2880*512 each, o 4096*2880, q/k/v biases
    # (64+8+8)*64, o bias 2880; learned sinks 64 on the 18 sliding layers.
    attention = 2880 * 4096 + 2 * 2880 * 512 + 4096 * 2880 + 80 * 64 + 2880
    # 4 of 128 experts of 3*2880*2880 (biases not modelled), router 2880*128 + bias 128.
    moe_active = 4 * 3 * 2880 * 2880 + 2880 * 128 + 128
    lm_head = 201088 * 2880
    expected = 36 * (attention + moe_active) + 18 * 64 + lm_head
    assert ctxsim.load_model("gpt-oss-120b").n_active_params == expected
