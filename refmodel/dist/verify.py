"""Run a plan on several processes and check it: ``verify_plan`` is what ``ctxsim verify --nproc`` runs."""

from __future__ import annotations

import time

from ctxsim.spec.errors import SpecError
from ctxsim.spec.model import ModelSpec
from ctxsim.spec.plan import ParallelPlan, check_plan
from ctxsim.spec.workload import Workload
from refmodel.dist.compare import compare_counts, compare_outputs, reference_outputs
from refmodel.dist.launch import run_distributed
from refmodel.dist.run import Job


def verify_plans(jobs: list[Job], keep_reports: bool = False) -> list[dict]:
    """Run each job (specs already scaled) on one set of processes and compare; one result per job.

    ``rows`` lists every compared number; ``mismatches`` counts the rows that failed. All jobs
    need plans of the same world size. ``keep_reports`` adds the ranks' raw reports (with
    tensors, so not JSON-ready) under ``reports``.
    """
    for job in jobs:
        check_plan(job.spec, job.plan, job.workload)
        if job.workload.batch < job.plan.dp:
            raise SpecError(
                f"batch {job.workload.batch} is smaller than dp {job.plan.dp}: the reference run needs a sequence "
                "on every dp rank, raise --batch"
            )
    all_reports = run_distributed(jobs)
    results = []
    for job, reports in zip(jobs, all_reports):
        compare_start = time.perf_counter()
        rows = compare_counts(job.spec, job.workload, job.plan, reports)
        rows += compare_outputs(reference_outputs(job.spec, job.workload, job.seed), reports)
        results.append({
            "model": job.spec.name,
            "plan": job.plan.model_dump(mode="json"),
            "nproc": job.plan.world_size,
            # Rank 0's run of this job plus the comparison (the processes' start is shared).
            "wall_s": reports[0]["run_s"] + time.perf_counter() - compare_start,
            "compared": len(rows),
            "mismatches": sum(not row.ok for row in rows),
            "rows": [row.to_dict() for row in rows],
        })
        if keep_reports:
            results[-1]["reports"] = reports
    return results


def verify_plan(spec: ModelSpec, workload: Workload, plan: ParallelPlan, seed: int = 0) -> dict:
    """Run ``workload`` on ``spec`` (already scaled) under ``plan`` and compare (see ``verify_plans``)."""
    return verify_plans([Job(spec, workload, plan, seed)])[0]
