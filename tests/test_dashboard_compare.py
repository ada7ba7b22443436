"""Compare page: the table equals ctxsim.estimate per design, and a bad slot leaves the others."""

from pathlib import Path

import pytest

pytest.importorskip("streamlit")
from streamlit.testing.v1 import AppTest  # noqa: E402

import ctxsim  # noqa: E402
from ctxsim.spec.variants import with_selection  # noqa: E402

PAGE = Path(__file__).resolve().parents[1] / "dashboards" / "views" / "compare.py"


def _run(query: dict[str, str] | None = None, **widgets) -> AppTest:
    at = AppTest.from_file(str(PAGE), default_timeout=60)
    for key, value in (query or {}).items():
        at.query_params[key] = value
    at.run()
    for key, value in widgets.items():
        at.get_by_key(key).set_value(value)
    at.run()
    assert not at.exception, at.exception
    return at


def _table(at: AppTest):
    """The table at the chosen context, one row per design."""
    tables = [d.value for d in at.dataframe if "decode_flops_per_token_ratio" in d.value.columns]
    assert len(tables) == 1
    return tables[0].set_index("design")


def test_compare_glm5_vs_glm52_kv_ratio():
    at = _run()
    table = _table(at)
    assert list(table.index) == ["1: glm-5", "2: glm-5.2"]
    # bf16 per token: GLM-5 has 78 x (1,152 B latent + 256 B index key); GLM-5.2 keeps index
    # keys in its 21 indexer owners only: 78 x 1,152 + 21 x 256.
    ratio = (78 * 1152 + 21 * 256) / (78 * (1152 + 256))
    assert table.loc["2: glm-5.2", "kv_bytes_per_sequence_ratio"] == pytest.approx(ratio, rel=1e-15)


def test_compare_matches_estimate():
    at = _run(context=1048576)
    table = _table(at)
    workload = ctxsim.Workload(context=1048576)
    for label, name in (("1: glm-5", "glm-5"), ("2: glm-5.2", "glm-5.2")):
        report = ctxsim.estimate(name, workload)
        assert table.loc[label, "decode_flops_per_token"] == report.total("decode", "flops")
        assert table.loc[label, "kv_bytes_per_sequence"] == report.kv_cache.bytes_per_sequence
        assert table.loc[label, "prefill_flops_per_token"] == report.total("prefill", "flops") / 1048576


def test_compare_four_designs_from_url():
    query = {
        "n_designs": "4",
        "d1_model": "deepseek-v3.2",
        "d1_design": "dense",
        "d2_model": "deepseek-v3.2",
        "d3_model": "deepseek-v3.2",
        "d3_design": "IndexShare",
        "d4_model": "deepseek-v3.2",
        "d4_design": "SWA",
    }
    table = _table(_run(query))
    assert len(table) == 4
    base = ctxsim.load_model("deepseek-v3.2")
    workload = ctxsim.Workload(context=131072)
    specs = [
        with_selection(base, "dense"),
        base,
        with_selection(base, "dsa", index_topk_freq=4, index_skip_topk_offset=1),
        with_selection(base, "window", window=4096),
    ]
    for (label, row), spec in zip(table.iterrows(), specs):
        report = ctxsim.estimate(spec, workload)
        assert row["decode_flops_per_token"] == report.total("decode", "flops"), label


def test_compare_llama_window_link():
    table = _table(_run({"d1_model": "llama-3.1-70b", "d2_model": "llama-3.1-70b", "d2_design": "SWA", "d2_window": "4096"}))
    # 80 layers x 2 x 8 KV heads x 128 x 2 B: 128K tokens dense, 4,096 in the window.
    assert table.iloc[0]["kv_bytes_per_sequence"] == 80 * 2 * 8 * 128 * 2 * 131072
    assert table.iloc[1]["kv_bytes_per_sequence"] == 80 * 2 * 8 * 128 * 2 * 4096


def test_compare_bad_slot_keeps_others():
    at = _run({"d2_model": "glm-5.2", "d2_design": "MSA"})
    assert any("needs GQA attention" in e.value for e in at.error)
    assert list(_table(at).index) == ["1: glm-5"]


def test_compare_invalid_upload_keeps_others():
    at = AppTest.from_file(str(PAGE), default_timeout=60)
    at.run()
    at.get_by_key("d2_upload").upload("config.json", b"[1, 2, 3]")
    at.run()
    assert not at.exception, at.exception
    assert at.error
    assert list(_table(at).index) == ["1: glm-5"]
