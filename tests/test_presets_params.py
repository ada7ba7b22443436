"""Parameter counts of the model presets against published figures and hand-derived totals.

Active parameters follow ModelSpec.n_active_params: every weight a token multiplies by, so the
LM head counts and the input embedding does not. Publishers round to two or three significant
digits and do not all count embeddings the same way. The cases that miss 1% under this convention
are strict xfails that state the gap, so they fail if the gap closes.
"""

import pytest

import ctxsim

B = 10**9


def _gap(ours: int, published: float) -> float:
    return ours / published - 1


def _case(name: str, published: float, source: str, known_gap: str = ""):
    """One parametrize case; ``known_gap`` makes it a strict xfail that states the gap."""
    marks = [pytest.mark.xfail(strict=True, reason=known_gap)] if known_gap else []
    return pytest.param(name, published, source, marks=marks, id=name)


# (preset, published total, source)
TOTALS = [
    _case("deepseek-v3", 671 * B, "DeepSeek-V3 technical report, arXiv 2412.19437"),
    _case("deepseek-v3.2", 671 * B, "DeepSeek-V3.2 release (same sizes as DeepSeek-V3; the hub's 685B adds the MTP module)"),
    _case("glm-5", 744 * B, "GLM-5 technical report, arXiv 2602.15763, architecture table"),
    _case("glm-5.2", 744 * B, "GLM-5.2 model card zai-org/GLM-5.2 (GLM-5 architecture)"),
    _case("minimax-m2", 230 * B, "MiniMax-M2 model card MiniMaxAI/MiniMax-M2"),
    _case("minimax-m3", 428 * B, "MiniMax-M3 release on Hugging Face, as reported by news coverage"),
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
    _case(
        "kimi-k2",
        1000 * B,
        "Kimi K2 model card moonshotai/Kimi-K2-Instruct",
        known_gap="ours is 1,026.4B, +2.6% over the card's rounded '1T'; secondary summaries give 1.04T (-1.3%)",
    ),
]


@pytest.mark.parametrize("name, published, source", TOTALS)
def test_total_params_match_published(name, published, source):
    spec = ctxsim.load_model(name)
    assert abs(_gap(spec.n_params, published)) <= 0.01, (
        f"{name}: {spec.n_params / B:.3f}B vs {published / B:.2f}B published ({source})"
    )


# (preset, published active, source)
ACTIVE = [
    _case("glm-5.2", 40 * B, "GLM-5.2 model card zai-org/GLM-5.2"),
    _case("kimi-k2", 32 * B, "Kimi K2 model card moonshotai/Kimi-K2-Instruct"),
    _case("gpt-oss-20b", 3.61 * B, "gpt-oss model card, arXiv 2508.10925 (unembedding counted, embedding not)"),
    _case("gpt-oss-120b", 5.13 * B, "gpt-oss model card, arXiv 2508.10925 (unembedding counted, embedding not)"),
    _case(
        "deepseek-v3",
        37 * B,
        "DeepSeek-V3 technical report, arXiv 2412.19437",
        known_gap="ours is 36.63B, -1.01%; counting the input embedding too gives 37.55B, +1.5%",
    ),
    _case(
        "deepseek-v3.2",
        37 * B,
        "DeepSeek-V3.2 release (same sizes as DeepSeek-V3)",
        known_gap="ours is 37.48B, +1.3%: the 61 indexers add 0.85B to DeepSeek-V3's 36.63B",
    ),
    _case(
        "glm-5",
        40 * B,
        "GLM-5 technical report, arXiv 2602.15763, architecture table",
        known_gap="ours is 40.83B, +2.1%; without the LM head it is 39.88B, so Z.ai seems to count no embedding",
    ),
    _case(
        "qwen3-235b-a22b",
        22 * B,
        "Qwen3-235B-A22B model card Qwen/Qwen3-235B-A22B",
        known_gap="ours is 21.57B, -2.0%; with the input embedding too it is 22.19B, so Qwen counts both",
    ),
    _case(
        "minimax-m2",
        10 * B,
        "MiniMax-M2 model card MiniMaxAI/MiniMax-M2",
        known_gap="ours is 10.42B, +4.2%; without the LM head it is 9.80B",
    ),
    _case(
        "minimax-m3",
        23 * B,
        "MiniMax-M3 release on Hugging Face, as reported by news coverage",
        known_gap="ours is 24.73B, +7.5%; without the LM head it is 23.50B (+2.2%); config unverified",
    ),
]


@pytest.mark.parametrize("name, published, source", ACTIVE)
def test_active_params_match_published(name, published, source):
    spec = ctxsim.load_model(name)
    assert abs(_gap(spec.n_active_params, published)) <= 0.01, (
        f"{name}: {spec.n_active_params / B:.3f}B active vs {published / B:.2f}B published ({source})"
    )


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
    indexer = 2048 * 32 * 128 + 6144 * 128 + 6144 * 32
    glm5 = ctxsim.load_model("glm-5")
    glm52 = ctxsim.load_model("glm-5.2")
    assert glm5.n_params - glm52.n_params == 57 * indexer


def test_gpt_oss_biases_and_sinks_counted():
    # Attention per layer: q 2880*4096, k and v 2880*512 each, o 4096*2880, q/k/v biases
    # (64+8+8)*64, o bias 2880; learned sinks 64 on the 18 sliding layers.
    attention = 2880 * 4096 + 2 * 2880 * 512 + 4096 * 2880 + 80 * 64 + 2880
    # 4 of 128 experts of 3*2880*2880 (biases not modelled), router 2880*128 + bias 128.
    moe_active = 4 * 3 * 2880 * 2880 + 2880 * 128 + 128
    lm_head = 201088 * 2880
    expected = 36 * (attention + moe_active) + 18 * 64 + lm_head
    assert ctxsim.load_model("gpt-oss-120b").n_active_params == expected
