"""Deployment sizing page: memory, times, capacity and the plan search equal the ctxsim API."""

from pathlib import Path

import pytest

pytest.importorskip("streamlit")
from streamlit.testing.v1 import AppTest  # noqa: E402

import ctxsim  # noqa: E402
from ctxsim.cli.common import human_bytes, human_seconds  # noqa: E402
from ctxsim.time import device_report, max_context_for_plan, plan_max_sequences, shard_model, time_plan  # noqa: E402
from dashboards import api  # noqa: E402
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


def _table(at: AppTest, column: str, **equal):
    """The one table with ``column`` whose rows all match ``equal`` (column -> value)."""
    tables = [d.value for d in at.dataframe if column in d.value.columns]
    tables = [t for t in tables if all((t[k] == v).all() for k, v in equal.items())]
    assert len(tables) == 1
    return tables[0]


def _metrics(at: AppTest) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


def test_deploy_default_matches_api():
    at = _run()
    spec = ctxsim.load_model("deepseek-v3.2")
    workload = ctxsim.Workload(context=131072, chunk_size=8192)
    plan = ctxsim.ParallelPlan(tp=8)
    report = device_report(spec, workload, plan)
    capacity = ctxsim.capacity_from_report(report, "h200", memory_fraction=0.9)
    times = ctxsim.estimate_time(report, "h200", total_batch=1, model=spec)
    memory = _table(at, "kv_budget_bytes").iloc[0]
    assert _metrics(at)["busiest device memory"] == human_bytes(
        ctxsim.estimate(spec, workload, plan).extras["parallel"].busiest().memory_bytes
    )
    # The MLA latent and the DSA index key are replicated on every tp rank: 61 layers x
    # ((512 + 64) x 2 B + 128 x 2 B) in bf16, times 131,072 tokens.
    assert memory["kv_bytes_per_sequence"] == 61 * ((512 + 64) * 2 + 128 * 2) * 131072
    assert memory["weights_bytes"] == report.weights_bytes
    assert memory["max_sequences"] == capacity.max_sequences
    metrics = _metrics(at)
    assert metrics["TTFT"] == human_seconds(times.ttft_s)
    assert metrics["TPOT"] == human_seconds(times.tpot_s)
    assert metrics["max concurrency"] == f"{capacity.max_sequences:,}"
    phases = _table(at, "hidden_communication_s").set_index("phase")
    assert phases.loc["decode", "time_s"] == times.tpot_s


def test_deploy_max_context_matches_api():
    at = _run(s_model="llama-3.1-8b", gpus=1, tp=1, s_batch=4)
    workload = ctxsim.Workload(context=131072, batch=4, chunk_size=8192)
    spec = shard_model(ctxsim.load_model("llama-3.1-8b"), 1)
    longest = ctxsim.max_context_for(spec, workload, "h200", concurrency=4)
    assert _metrics(at)["max context (4 seq per replica)"] == format_tokens(longest)


def test_deploy_plan_mismatch_shows_error():
    at = _run(gpus=3)
    assert any("= 8 devices, but devices is 3" in e.value for e in at.error)
    assert not at.metric
    # The whole sidebar stays, so the user can fix either number.
    labels = {w.label for w in [*at.sidebar.number_input, *at.sidebar.slider]}
    assert {"chunk_size (0 = one chunk)", "memory fraction"} <= labels


def test_deploy_pipeline_memory_per_device():
    at = _run(tp=4, pp=2)
    assert not at.warning
    plan = ctxsim.ParallelPlan(tp=4, pp=2)
    workload = ctxsim.Workload(context=131072, chunk_size=8192)
    parallel = ctxsim.estimate("deepseek-v3.2", workload, plan).extras["parallel"]
    devices = _table(at, "kv_cache_bytes").set_index("rank")
    assert len(devices) == 8
    for device in parallel.devices:
        assert devices.loc[device.rank, "memory_bytes"] == device.memory_bytes
    # DeepSeek-V3.2 has 61 layers: the first stage gets 31 (61 % 2 = 1 extra), the second 30.
    assert sorted(set(devices["kv_layers"])) == [30, 31]


def test_deploy_pipeline_times_match_time_plan():
    at = _run(tp=4, pp=2)
    spec = ctxsim.load_model("deepseek-v3.2")
    plan = ctxsim.ParallelPlan(tp=4, pp=2)
    workload = ctxsim.Workload(context=131072, chunk_size=8192)
    times = time_plan(spec, workload, plan, "h200")
    metrics = _metrics(at)
    assert metrics["TTFT"] == human_seconds(times.ttft_s)
    assert metrics["TPOT"] == human_seconds(times.tpot_s)
    counts = ctxsim.estimate(spec, workload, plan).extras["parallel"]
    assert metrics["max concurrency"] == f"{plan_max_sequences(counts, 'h200'):,}"
    longest = max_context_for_plan(spec, workload, plan, "h200")
    assert metrics["max context (1 seq per replica)"] == format_tokens(longest)
    stages = _table(at, "prefill_rank")
    # Each stage is timed on its tp rank 0: rank 0 for stage 0 and rank 4 for stage 1.
    assert list(stages["prefill_rank"]) == [0, 4]
    assert list(stages["decode_s"]) == [s.decode_s for s in times.stages]
    phases = _table(at, "hidden_communication_s").set_index("phase")
    assert phases.loc["prefill", "time_s"] == times.ttft_s


def test_deploy_pipeline_sweep_has_times():
    at = _run(tp=4, pp=2, time_points=10)
    shown = _table(at, "memory_bytes_per_device")
    assert shown["ttft_s"].notna().all()
    assert shown["tpot_s"].notna().all()


def test_deploy_context_parallel_shows_error():
    # The page times prefill and decode together, and cp splits a prefill only.
    at = _run(tp=4, cp=2, cp_mode="all_gather")
    assert any("decode with cp is not modelled" in e.value for e in at.error)
    assert not at.metric


def test_deploy_invalid_plan_shows_error():
    at = _run(tp=4, gpus=4, ep=3)
    assert any("invalid plan: ep 3" in e.value for e in at.error)
    assert not at.metric


def test_deploy_too_big_shows_error():
    at = _run(s_model="glm-5.2", gpus=1, tp=1)
    assert any("Does not fit" in e.value for e in at.error)
    assert _metrics(at)["max concurrency"] == "0"


def test_deploy_plan_search_matches_size():
    at = _run(s_batch=16, max_gpus=32)
    result = ctxsim.size("deepseek-v3.2", 131072, "h200", concurrency=16, max_gpus=32, chunk_size=8192)
    pareto = _table(at, "meets_tpot", status="Pareto")
    assert list(pareto["plan"]) == [p.describe() for p in result.plans]
    assert list(pareto["tpot_s"]) == [p.tpot_s for p in result.plans]
    tables = [d.value for d in at.dataframe if "meets_tpot" in d.value.columns]
    assert len(tables[-1]) == len(result.evaluated)


def test_deploy_invalid_hardware_upload():
    at = AppTest.from_file(str(PAGE), default_timeout=120)
    at.run()
    at.get_by_key("hw_upload").upload("gpu.yaml", b"name: [\n")
    at.run()
    assert not at.exception, at.exception
    assert any("upload gpu.yaml" in e.value for e in at.error)


def test_deploy_sweep_matches_ctxsim_sweep():
    at = _run(time_points=20)
    contexts = api.sweep_contexts(20, 1024, 10_000_000)
    expected = ctxsim.sweep(
        "deepseek-v3.2", contexts, plans=[ctxsim.ParallelPlan(tp=8)], hardware="h200", chunk_size=8192, by_kind=False
    )
    shown = _table(at, "memory_bytes_per_device")
    assert list(shown["context_tokens"]) == list(expected["context_tokens"])
    assert list(shown["tpot_s"]) == list(expected["tpot_s"])
    assert list(shown["memory_bytes_per_device"]) == list(expected["memory_bytes_per_device"])


def test_deploy_reads_plain_model_and_context_from_link():
    # Design and Compare write model= and context=; Deploy's own keys are s_model and s_context.
    at = AppTest.from_file(str(PAGE), default_timeout=60)
    for key, value in {"model": "llama-3.1-8b", "context": "1M", "gpus": "1", "tp": "1"}.items():
        at.query_params[key] = value
    at.run()
    assert not at.exception, at.exception
    assert at.get_by_key("s_model").value == "llama-3.1-8b"
    assert at.get_by_key("s_context").value == 1 << 20
