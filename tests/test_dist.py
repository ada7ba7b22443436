"""Multi-rank reference model: per-rank traffic, weights and KV equal the analytic counts exactly,
and the outputs equal the single-process run. Each fixture starts its processes once (gloo on
127.0.0.1) and runs several small plans in them."""

import pytest

from ctxsim.spec import ParallelPlan, Workload, load_model
from refmodel.build import scale_spec
from refmodel.dist import Job, verify_plans
from refmodel.dist.compare import compare_counts

TWO_RANK_JOBS = {
    "tp": ("glm-5.2", ParallelPlan(tp=2), Workload(context=48, chunk_size=24)),
    "pp": ("glm-5.2", ParallelPlan(pp=2, pp_layers=(2, 11)), Workload(context=48, chunk_size=24)),
    "ep": ("deepseek-v3", ParallelPlan(dp=2, attention_dp=True, ep=2), Workload(context=48, chunk_size=24, batch=3)),
    "cp": ("gpt-oss-120b", ParallelPlan(cp=2, cp_sharding="contiguous"), Workload(context=64, phase="prefill")),
    "layer_split": ("glm-5.2", ParallelPlan(tp=2, layer_split=2), Workload(context=64, chunk_size=32)),
}
FOUR_RANK_JOBS = {
    "tp_pp": ("deepseek-v3", ParallelPlan(tp=2, pp=2, ep=2), Workload(context=48, chunk_size=24)),
    "ep_all_gather": (
        "qwen3-235b-a22b", ParallelPlan(tp=2, dp=2, attention_dp=True, ep=4), Workload(context=48, chunk_size=24, batch=3)
    ),
    "cp_all_gather": (
        "glm-5.2", ParallelPlan(tp=2, cp=2, cp_mode="all_gather"), Workload(context=64, cached_context=32, phase="prefill")
    ),
}


def _run(jobs: dict) -> dict:
    specs = {name: scale_spec(load_model(model), "small") for name, (model, _, _) in jobs.items()}
    runs = [Job(specs[name], workload, plan) for name, (_, plan, workload) in jobs.items()]
    return dict(zip(jobs, verify_plans(runs, keep_reports=True)))


@pytest.fixture(scope="module")
def two_ranks():
    return _run(TWO_RANK_JOBS)


@pytest.fixture(scope="module")
def four_ranks():
    return _run(FOUR_RANK_JOBS)


def _failures(result: dict) -> list[dict]:
    return [row for row in result["rows"] if not row["ok"]]


def _row(result: dict, rank, phase: str, item: str) -> dict:
    for row in result["rows"]:
        if row["rank"] == rank and row["phase"] == phase and row["item"] == item:
            return row
    raise AssertionError(f"no row for rank {rank}, {phase}, {item}")


@pytest.mark.parametrize("name", list(TWO_RANK_JOBS))
def test_two_ranks_match_counts(two_ranks, name):
    assert _failures(two_ranks[name]) == []


@pytest.mark.parametrize("name", list(FOUR_RANK_JOBS))
def test_four_ranks_match_counts(four_ranks, name):
    assert _failures(four_ranks[name]) == []


def test_tp_traffic_recorded(two_ranks):
    row = _row(two_ranks["tp"], 0, "prefill", "comm.tp_all_reduce")
    assert row["measured"] > 0


def test_pp_sends_shared_top_k(two_ranks):
    # Small GLM-5.2 split 2/11 opens stage 1 with an IndexShare layer: the decode step sends
    # one token's 64 bf16 activations plus its min(32, 48) int32 top-k slots.
    row = _row(two_ranks["pp"], 0, "decode", "comm.pp_send")
    assert row["measured"] == 64 * 2 + 32 * 4


def test_ep_dispatch_recorded(two_ranks):
    # Rank 0 holds 2 of the 3 sequences: 2 x 48 prefill tokens, top-2 experts, d_model 64, bf16,
    # in each of the 2 MoE layers of small DeepSeek-V3.
    row = _row(two_ranks["ep"], 0, "prefill", "comm.ep_dispatch")
    assert row["measured"] == 2 * 48 * 2 * 64 * 2 * 2


def test_ep_routed_side_summed(two_ranks):
    row = _row(two_ranks["ep"], None, "prefill", "comm.ep_dispatch (received, sum over ranks)")
    assert row["measured"] == 3 * 48 * 2 * 64 * 2 * 2


def test_cp_kv_recorded(two_ranks):
    row = _row(two_ranks["cp"], 1, "prefill", "comm.cp_kv")
    assert row["measured"] > 0


def test_layer_split_broadcast_recorded(two_ranks):
    row = _row(two_ranks["layer_split"], 1, "prefill", "comm.layer_split_broadcast")
    assert row["measured"] > 0


def test_outputs_equal_single_process(two_ranks):
    for result in two_ranks.values():
        for row in result["rows"]:
            if row["item"].endswith("max abs difference"):
                assert row["measured"] <= 1e-9, (result["model"], row)


def test_compare_detects_wrong_plan(two_ranks):
    # The tp 2 run compared with the counts of a plan that has no tp must disagree.
    reports = two_ranks["tp"]["reports"]
    model, _, workload = TWO_RANK_JOBS["tp"]
    rows = compare_counts(scale_spec(load_model(model), "small"), workload, ParallelPlan(pp=2), reports)
    assert any(not row.ok for row in rows)


def test_compare_detects_changed_bytes(two_ranks):
    reports = two_ranks["ep"]["reports"]
    model, plan, workload = TWO_RANK_JOBS["ep"]
    changed = [dict(r, kv_cache_bytes=r["kv_cache_bytes"] + 1) for r in reports]
    rows = compare_counts(scale_spec(load_model(model), "small"), workload, plan, changed)
    assert sum(not row.ok for row in rows) == 2
