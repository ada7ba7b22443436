"""Run one plan under torchrun and print the comparison on rank 0.

    torchrun --nproc-per-node 4 -m refmodel.dist --model llama-3.1-8b --tp 2 --pp 2

The model runs at small scale with the workload flags below; ``ctxsim verify --nproc`` runs the
same check with torch.multiprocessing instead of torchrun.
"""

from __future__ import annotations

import argparse
import sys

from ctxsim.cli.plan_args import add_plan_arguments, plan_from_args
from ctxsim.spec import Workload, load_model
from refmodel.build import scale_spec
from refmodel.dist.compare import compare_counts, compare_outputs, reference_outputs
from refmodel.dist.launch import run_torchrun
from refmodel.dist.run import Job


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m refmodel.dist", description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="deepseek-v3", help="Preset name (run at small scale; default deepseek-v3).")
    parser.add_argument("--context", type=int, default=64, help="Context length in tokens (default 64).")
    parser.add_argument("--chunk-size", type=int, default=None, help="Prefill chunk size (default: one pass).")
    parser.add_argument("--cached-context", type=int, default=0, help="Tokens cached before the prefill (default 0).")
    parser.add_argument("--batch", type=int, default=1, help="Sequences (default 1).")
    parser.add_argument("--phase", choices=("prefill", "decode", "both"), default="both", help="Phase (default both).")
    parser.add_argument("--seed", type=int, default=0, help="Seed of weights and tokens (default 0).")
    add_plan_arguments(parser)
    args = parser.parse_args(argv)

    spec = scale_spec(load_model(args.model), "small")
    workload = Workload(
        context=args.context, chunk_size=args.chunk_size, cached_context=args.cached_context,
        batch=args.batch, phase=args.phase,
    )
    plan = plan_from_args(args)
    reports = run_torchrun(Job(spec, workload, plan, args.seed))
    if reports is None:
        return 0
    rows = compare_counts(spec, workload, plan, reports) + compare_outputs(reference_outputs(spec, workload, args.seed), reports)
    failed = [row for row in rows if not row.ok]
    for row in failed:
        print(f"MISMATCH rank {row.rank} {row.phase} {row.item}: analytic {row.analytic}, measured {row.measured}")
    print(f"{spec.name}, {plan.describe()}: {len(rows)} numbers compared, {len(failed)} mismatches")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
