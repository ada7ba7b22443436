"""Deployment sizing page: memory, times and capacity equal the ctxsim API for the same inputs."""

from pathlib import Path

import pytest

pytest.importorskip("streamlit")
from streamlit.testing.v1 import AppTest  # noqa: E402

import ctxsim  # noqa: E402
from ctxsim.cli.common import human_seconds  # noqa: E402
from dashboards.inputs import format_tokens  # noqa: E402

PAGE = Path(__file__).resolve().parents[1] / "dashboards" / "views" / "deploy.py"


def _run(**widgets) -> AppTest:
    at = AppTest.from_file(str(PAGE), default_timeout=120)
    at.run()
    for key, value in widgets.items():
        at.get_by_key(key).set_value(value)
    at.run()
    assert not at.exception, at.exception
    return at


def _table(at: AppTest, column: str):
    tables = [d.value for d in at.dataframe if column in d.value.columns]
    assert len(tables) == 1
    return tables[0]


def _metrics(at: AppTest) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


def test_deploy_llama_on_h200_matches_api():
    at = _run()
    workload = ctxsim.Workload(context=131072)
    report = ctxsim.estimate("llama-3.1-8b", workload, ctxsim.ParallelPlan())
    capacity = ctxsim.capacity_from_report(report, "h200", memory_fraction=0.9)
    times = ctxsim.estimate_time(report, "h200")
    memory = _table(at, "kv_budget_bytes").iloc[0]
    # 32 layers x 2 x 8 KV heads x 128 x 2 B (bf16) x 131,072 tokens.
    assert memory["kv_bytes_per_sequence"] == 32 * 2 * 8 * 128 * 2 * 131072
    assert memory["weights_bytes"] == report.weights_bytes
    assert memory["max_sequences"] == capacity.max_sequences
    metrics = _metrics(at)
    assert metrics["TTFT"] == human_seconds(times.ttft_s)
    assert metrics["TPOT"] == human_seconds(times.tpot_s)
    assert metrics["max concurrency"] == f"{capacity.max_sequences:,}"
    phases = _table(at, "hidden_communication_s").set_index("phase")
    assert phases.loc["decode", "time_s"] == times.tpot_s


def test_deploy_longest_context_matches_api():
    at = _run(s_batch=4)
    longest = ctxsim.max_context_for("llama-3.1-8b", ctxsim.Workload(context=131072, batch=4), "h200", concurrency=4)
    assert _metrics(at)["max context (batch 4)"] == format_tokens(longest)


def test_deploy_plan_mismatch_shows_error():
    at = _run(gpus=3)
    assert any("= 1 devices, but devices is 3" in e.value for e in at.error)
    assert not at.metric


def test_deploy_too_big_shows_error():
    at = _run(s_model="glm-5.2")
    assert any("Does not fit" in e.value for e in at.error)
    assert _metrics(at)["max concurrency"] == "0"


def test_deploy_invalid_hardware_upload():
    at = AppTest.from_file(str(PAGE), default_timeout=120)
    at.run()
    at.get_by_key("hw_upload").upload("gpu.yaml", b"name: [\n")
    at.run()
    assert not at.exception, at.exception
    assert any("upload gpu.yaml" in e.value for e in at.error)
