"""Design explorer page: the numbers shown equal ctxsim.estimate for the same inputs."""

from pathlib import Path

import pytest
import yaml

pytest.importorskip("streamlit")
from streamlit.testing.v1 import AppTest  # noqa: E402

import ctxsim  # noqa: E402
from ctxsim.cli.common import human_bytes, human_count  # noqa: E402
from ctxsim.spec.variants import with_selection  # noqa: E402

PAGE = Path(__file__).resolve().parents[1] / "dashboards" / "views" / "design.py"


def _run(**widgets) -> AppTest:
    """Run the page, set widgets by key (select boxes, sliders and number inputs), and rerun."""
    at = AppTest.from_file(str(PAGE), default_timeout=60)
    at.run()
    for key, value in widgets.items():
        at.get_by_key(key).set_value(value)
    at.run()
    assert not at.exception, at.exception
    return at


def _metrics(at: AppTest) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


def _summary(at: AppTest) -> dict[str, float]:
    """The 'Numbers at the chosen context' table, as quantity -> value."""
    tables = [d.value for d in at.dataframe if list(d.value.columns) == ["quantity", "value"]]
    assert len(tables) == 1
    return dict(zip(tables[0]["quantity"], tables[0]["value"]))


def test_design_page_llama_kv_by_hand():
    at = _run(model="llama-3.1-8b", context=131072)
    # 32 layers x 2 (K, V) x 8 KV heads x 128 x 2 B (bf16) x 131,072 tokens = 16 GiB.
    kv = 32 * 2 * 8 * 128 * 2 * 131072
    assert _summary(at)["kv_bytes_per_sequence"] == kv
    assert _metrics(at)["KV cache per sequence"] == "16 GiB"


def test_design_page_matches_estimate():
    at = _run(model="glm-5.2", context=1048576, batch=2)
    report = ctxsim.estimate("glm-5.2", ctxsim.Workload(context=1048576, batch=2))
    prefill = report.total("prefill", "flops") / (2 * 1048576)
    decode = report.total("decode", "flops") / 2
    reads = report.total("decode", "bytes_read") / 2
    summary = _summary(at)
    assert summary["prefill_flops_per_token"] == prefill
    assert summary["decode_flops_per_token"] == decode
    assert summary["kv_bytes_per_sequence"] == report.kv_cache.bytes_per_sequence
    assert summary["decode_bytes_read_per_token"] == reads
    metrics = _metrics(at)
    assert metrics["Decode FLOPs per token"] == human_count(decode, "FLOP")
    assert metrics["Bytes read per decoded token"] == human_bytes(reads)


def test_design_page_window_variant():
    at = AppTest.from_file(str(PAGE), default_timeout=60)
    at.run()
    at.get_by_key("model").set_value("llama-3.1-70b")
    at.get_by_key("design").set_value("SWA")
    at.run()
    at.get_by_key("window").set_value(8192)
    at.get_by_key("context").set_value(1048576)
    at.run()
    assert not at.exception, at.exception
    spec = with_selection(ctxsim.load_model("llama-3.1-70b"), "window", window=8192)
    report = ctxsim.estimate(spec, ctxsim.Workload(context=1048576))
    assert _summary(at)["decode_flops_per_token"] == report.total("decode", "flops")
    # 80 layers x 2 x 8 KV heads x 128 x 2 B x 8,192 window tokens: the cache stops at the window.
    assert _summary(at)["kv_bytes_per_sequence"] == 80 * 2 * 8 * 128 * 2 * 8192


def test_design_page_defaults_from_model():
    at = AppTest.from_file(str(PAGE), default_timeout=60)
    at.run()
    at.get_by_key("model").set_value("glm-5.2")
    at.get_by_key("design").set_value("IndexShare")
    at.run()
    # GLM-5.2 config.json: index_topk_freq 4, index_skip_topk_offset 3, indexer 32 heads.
    assert at.get_by_key("index_topk_freq").value == 4
    assert at.get_by_key("index_skip_topk_offset").value == 3
    assert at.get_by_key("index_n_heads").value == 32


def test_design_page_impossible_design_shows_error():
    at = _run(model="glm-5", design="MSA")
    assert not at.exception
    assert any("needs GQA attention" in e.value for e in at.error)
    assert not at.metric


@pytest.mark.parametrize(
    "name, content",
    [
        ("broken.yaml", b"name: [unclosed\n"),
        ("spec.yaml", b"name: x\nd_model: -1\n"),
        ("config.json", b"{not json"),
        ("config.json", b'{"hidden_size": "wide"}'),
        ("binary.yaml", bytes(range(256))),
        ("notes.txt", b"hello"),
    ],
)
def test_design_page_invalid_upload_shows_error(name, content):
    at = AppTest.from_file(str(PAGE), default_timeout=60)
    at.run()
    at.get_by_key("upload").upload(name, content)
    at.run()
    assert not at.exception, at.exception
    assert at.error
    assert not at.metric


def test_design_page_yaml_upload():
    spec = ctxsim.load_model("llama-3.1-8b").model_dump(mode="json")
    spec["name"] = "my-llama"
    at = AppTest.from_file(str(PAGE), default_timeout=60)
    at.run()
    at.get_by_key("upload").upload("my-llama.yaml", yaml.safe_dump(spec).encode())
    at.run()
    assert not at.exception, at.exception
    assert any("my-llama" in h.value for h in at.subheader)
    # Same KV as the preset: 32 x 2 x 8 x 128 x 2 B x 131,072 tokens (the default context).
    assert _summary(at)["kv_bytes_per_sequence"] == 32 * 2 * 8 * 128 * 2 * 131072


def test_design_page_url_restores_view():
    at = AppTest.from_file(str(PAGE), default_timeout=60)
    at.query_params["model"] = "deepseek-v3.2"
    # The URL carries the slider label, as the link shows it.
    at.query_params["context"] = "1M"
    at.run()
    assert not at.exception, at.exception
    report = ctxsim.estimate("deepseek-v3.2", ctxsim.Workload(context=1048576))
    assert _summary(at)["decode_flops_per_token"] == report.total("decode", "flops")


def test_design_page_model_switch_resets_parameters():
    at = _run(model="glm-5", design="DSA")
    # GLM-5 indexer: 32 heads; DeepSeek-V3.2 indexer: 64 heads.
    assert at.get_by_key("index_n_heads").value == 32
    at.get_by_key("model").set_value("deepseek-v3.2")
    at.run()
    assert at.get_by_key("index_n_heads").value == 64
    report = ctxsim.estimate("deepseek-v3.2", ctxsim.Workload(context=131072))
    assert _summary(at)["decode_flops_per_token"] == report.total("decode", "flops")


def test_design_page_indexer_overtakes_core():
    at = _run(model="deepseek-v3.2", op_phase="decode")
    tables = [d.value for d in at.dataframe if "overtakes" in d.value.columns]
    assert len(tables) == 1
    crossings = tables[0]
    row = crossings[(crossings["op"] == "attn.indexer.score") & (crossings["overtakes"] == "attn.core")]
    assert len(row) == 1
    # Per decode token and layer, per key: the indexer scores 64 heads x 2 x 128 FLOPs plus ReLU
    # (64) and the head weighting (2 x 64) = 16,576; the absorbed core over the top-2048 keys costs
    # 128 heads x 2 x (576 + 512) plus softmax (5 x 128) = 279,168. Equal at N = 279,168 x 2048 /
    # 16,576. The page interpolates between 60 sweep points, hence the 2% tolerance.
    assert row["context"].item() == pytest.approx(279_168 * 2048 / 16_576, rel=0.02)


def test_design_page_hf_config_upload():
    fixture = Path(__file__).resolve().parent / "fixtures" / "hf_configs" / "glm-5.2.json"
    at = AppTest.from_file(str(PAGE), default_timeout=60)
    at.run()
    at.get_by_key("upload").upload("config.json", fixture.read_bytes())
    at.run()
    assert not at.exception, at.exception
    assert not at.error
    # The imported GLM-5.2 config caches like the preset: 78 x 1,152 B latent + 21 x 256 B index
    # keys per token in bf16, at the default 131,072 tokens.
    assert _summary(at)["kv_bytes_per_sequence"] == (78 * 1152 + 21 * 256) * 131072


def _run_link(**params) -> AppTest:
    """Run the page as opened from a link with these query parameters."""
    at = AppTest.from_file(str(PAGE), default_timeout=60)
    for key, value in params.items():
        at.query_params[key] = value
    at.run()
    assert not at.exception, at.exception
    return at


def test_link_context_in_cli_form_is_read():
    at = _run_link(context="1m")
    assert at.get_by_key("context").value == 1 << 20
    assert not at.warning


def test_link_context_not_offered_warns():
    at = _run_link(context="abc")
    assert at.get_by_key("context").value == 131072
    assert [w.value for w in at.warning] == [
        "context 'abc' in the link is not offered: use a power of two from 1K to 8M, or 10,000,000; showing 128K"
    ]


def test_link_model_unknown_warns():
    at = _run_link(model="nosuch-model")
    assert at.get_by_key("model").value == "glm-5.2"
    assert [w.value for w in at.warning] == [
        "model 'nosuch-model' in the link is not a preset: pick one from the list; showing glm-5.2"
    ]


def test_exact_context_overrides_slider():
    # Llama-3.1-8B keeps 128 KiB per token: 163,840 tokens x 131,072 B = 20 GiB.
    at = _run(model="llama-3.1-8b", context_exact=163840)
    assert _metrics(at)["KV cache per sequence"] == "20 GiB"
