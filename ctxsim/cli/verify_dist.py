"""``ctxsim verify --nproc N``: the multi-rank reference model against the per-device counts.

With plan flags (``--tp 2 --pp 2 ...``) one plan runs on ``--model`` (default deepseek-v3, whose
MLA, MoE and dense layers admit every kind of plan). With ``--nproc`` alone a built-in suite runs
tp, pp, ep (all-to-all and all-gather), cp (ring and all-gather) and LayerSplit plans of N
processes on small models. torch and refmodel are imported inside the run function.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass, field

from ctxsim.cli.common import format_table, positive_int, print_json
from ctxsim.cli.plan_args import add_plan_arguments, plan_from_args, wants_plan
from ctxsim.spec import ParallelPlan, SpecError, Workload, load_model

DEFAULT_MODEL = "deepseek-v3"


@dataclass(frozen=True)
class SuiteJob:
    """One plan of the built-in suite: what it covers, the preset (run at small scale) and the workload."""

    covers: str
    model: str
    plan: dict
    workload: dict = field(default_factory=dict)


def _both(**extra) -> dict:
    """Return workload fields of a prefill of 64 tokens in chunks of 32 and a decode step at 64."""
    return {"context": 64, "chunk_size": 32, **extra}


def suite(nproc: int) -> list[SuiteJob]:
    """Return the built-in plans of ``nproc`` processes (2, 4 or 8)."""
    prefill = {"phase": "prefill"}
    if nproc == 2:
        return [
            SuiteJob("tp", "llama-3.1-8b", {"tp": 2}, _both()),
            SuiteJob("pp, IndexShare top-k across stages", "glm-5.2", {"pp": 2, "pp_layers": (2, 11)}, _both()),
            SuiteJob("ep all-to-all, attention-DP", "deepseek-v3", {"dp": 2, "attention_dp": True, "ep": 2}, _both(batch=3)),
            SuiteJob("cp ring, window layers", "gpt-oss-120b", {"cp": 2, "cp_sharding": "contiguous"}, {"context": 64, **prefill}),
            SuiteJob("layer_split", "glm-5.2", {"tp": 2, "layer_split": 2}, _both(context=96)),
        ]
    if nproc == 4:
        return [
            SuiteJob("tp x pp", "llama-3.1-8b", {"tp": 2, "pp": 2}, _both()),
            SuiteJob("ep all-to-all, attention-DP", "deepseek-v3", {"dp": 4, "attention_dp": True, "ep": 4}, _both(batch=5)),
            SuiteJob(
                "ep all-gather, tp x attention-DP", "qwen3-235b-a22b",
                {"tp": 2, "dp": 2, "attention_dp": True, "ep": 4}, _both(batch=3),
            ),
            SuiteJob("cp ring, zigzag", "llama-3.1-8b", {"cp": 4}, {"context": 64, **prefill}),
            SuiteJob(
                "cp all-gather, DSA, cached prefix", "glm-5.2", {"tp": 2, "cp": 2, "cp_mode": "all_gather"},
                {"context": 96, "cached_context": 32, **prefill},
            ),
            SuiteJob("layer_split, 2 scratch slots", "glm-5.2", {"tp": 4, "layer_split": 4, "layer_split_scratch": 2}, _both(context=96)),
        ]
    if nproc == 8:
        return [
            SuiteJob("tp x pp, replicated KV heads", "llama-3.1-8b", {"tp": 4, "pp": 2}, _both()),
            SuiteJob("ep all-to-all, attention-DP", "deepseek-v3", {"dp": 8, "attention_dp": True, "ep": 8}, _both(batch=8)),
            SuiteJob(
                "ep all-gather, tp x attention-DP", "qwen3-235b-a22b",
                {"tp": 2, "dp": 4, "attention_dp": True, "ep": 8}, _both(batch=4),
            ),
            SuiteJob("cp ring, zigzag", "llama-3.1-8b", {"cp": 8}, {"context": 128, **prefill}),
            SuiteJob("cp all-gather, DSA", "glm-5.2", {"tp": 4, "cp": 2, "cp_mode": "all_gather"}, {"context": 64, **prefill}),
            SuiteJob("layer_split x pp", "glm-5.2", {"tp": 4, "pp": 2, "layer_split": 4}, _both(context=96)),
        ]
    raise SpecError(f"the built-in suite runs 2, 4 or 8 processes, not {nproc}: use one of those, or give plan flags")


# ---------------------------------------------------------------------------------------------
# Arguments


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--nproc", type=positive_int, default=None,
        help="Run the reference model on N processes (gloo on CPU) under the plan flags, or alone the "
        "built-in suite of N-process plans; compares per-device traffic and memory with the counts exactly.",
    )
    add_plan_arguments(parser)


def wants_distributed(args: argparse.Namespace) -> bool:
    return args.nproc is not None or wants_plan(args)


def _cp_workload(workload: Workload, plan: ParallelPlan) -> tuple[Workload, str]:
    """Limit a cp workload to one prefill pass, and return a note when that changed it."""
    if plan.cp == 1:
        return workload, ""
    changes = {}
    if workload.phase != "prefill":
        changes["phase"] = "prefill"
    if workload.chunk_size is not None and workload.chunk_size < workload.new_tokens:
        changes["chunk_size"] = None
    note = "" if not changes else "cp runs the prefill only, in one pass"
    return workload.model_copy(update=changes), note


def _jobs(args: argparse.Namespace, workload: Workload) -> list[tuple[str, str, ParallelPlan, Workload, str]]:
    if wants_plan(args):
        plan = plan_from_args(args)
        try:
            plan.check_world_size(args.nproc if args.nproc is not None else plan.world_size, "--nproc")
        except ValueError as err:
            raise SpecError(str(err)) from None
        local, note = _cp_workload(workload, plan)
        return [("plan flags", args.model or DEFAULT_MODEL, plan, local, note)]
    if args.model:
        raise SpecError("--nproc with --model needs plan flags such as --tp 2 --pp 2: add them, or drop --model for the suite")
    return [(job.covers, job.model, ParallelPlan(**job.plan), Workload(**job.workload), "") for job in suite(args.nproc)]


# ---------------------------------------------------------------------------------------------
# Run


def _print_mismatches(result: dict) -> None:
    rows = [r for r in result["rows"] if not r["ok"]]
    table = [
        ["-" if r["rank"] is None else str(r["rank"]), r["phase"], r["item"], f"{r['analytic']:,}", f"{r['measured']:,}"]
        for r in rows
    ]
    print(format_table(table, ["rank", "phase", "item", "analytic", "measured"], right_align_from=3))


def run_verify_distributed(args: argparse.Namespace, workload: Workload) -> int:
    """Run every job on ``nproc`` processes and compare; exit code 1 on any mismatch."""
    from refmodel.build import scale_spec
    from refmodel.dist import Job, verify_plans

    if args.all:
        raise SpecError("--nproc runs one model or the built-in suite, not --all: drop --all")
    if args.scale != "small":
        raise SpecError("--nproc runs the small scale only: drop --scale full")

    start = time.perf_counter()
    jobs = _jobs(args, workload)
    specs = [scale_spec(load_model(model), "small") for _, model, _, _, _ in jobs]
    runs = [Job(spec, local, plan, args.seed) for spec, (_, _, plan, local, _) in zip(specs, jobs)]
    results = verify_plans(runs)
    for (covers, _, plan, local, note), spec, result in zip(jobs, specs, results):
        result["covers"] = covers
        result["note"] = note
        if not args.json:
            status = "ok" if result["mismatches"] == 0 else f"{result['mismatches']} MISMATCHES"
            extra = f" ({note})" if note else ""
            print(
                f"{covers}: {spec.name}, {plan.describe()}, {local.phase}{extra}: {result['compared']} numbers, "
                f"{status} ({result['wall_s']:.1f} s)"
            )
            if result["mismatches"]:
                _print_mismatches(result)
    failed = sum(1 for r in results if r["mismatches"])
    if args.json:
        print_json(results if len(results) > 1 else results[0])
    else:
        elapsed = time.perf_counter() - start
        print(
            f"{len(results)} plan{'' if len(results) == 1 else 's'} on {results[0]['nproc']} processes, "
            f"{failed} with mismatches "
            f"({elapsed:.1f} s with the processes' start)"
        )
    return 1 if failed else 0
