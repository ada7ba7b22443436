"""Start the ranks of a multi-rank run: torch.multiprocessing spawn on one machine, or torchrun.

``run_distributed`` spawns ``plan.world_size`` processes that join a gloo process group on
127.0.0.1 at a free port, runs ``refmodel.dist.run.run_rank`` for each job in each, and returns
their reports in rank order. Several jobs share one start of the processes, which is most of the
time of a small job. Under torchrun (RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT set by it),
``run_torchrun`` runs this process's rank and gathers every report on rank 0.

NOTE: only the gloo backend on CPU is implemented; the reference modules keep their caches on
the CPU, so NCCL would need the caches moved to the GPU first.
"""

from __future__ import annotations

import datetime
import os
import socket
import tempfile
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from refmodel.dist.run import Job, run_rank

BACKEND = "gloo"
TIMEOUT = datetime.timedelta(seconds=300)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _spawned(rank: int, world_size: int, port: int, jobs: list[Job], out_dir: str) -> None:
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    dist.init_process_group(BACKEND, rank=rank, world_size=world_size, timeout=TIMEOUT)
    try:
        for index, job in enumerate(jobs):
            start = time.perf_counter()
            report = run_rank(rank, job)
            report["run_s"] = time.perf_counter() - start
            path = Path(out_dir) / f"job{index}-rank{rank}.pt"
            torch.save(report, path.with_suffix(".tmp"))
            path.with_suffix(".tmp").rename(path)
    finally:
        dist.destroy_process_group()


def run_distributed(jobs: list[Job]) -> list[list[dict]]:
    """Run ``jobs`` one after another on one set of spawned CPU processes; return each job's reports by rank.

    Every job's plan must have the same world size, the number of processes spawned.
    """
    world_size = jobs[0].plan.world_size
    for job in jobs:
        job.plan.check_world_size(world_size, "the processes of this run")
    with tempfile.TemporaryDirectory(prefix="ctxsim-dist-") as out_dir:
        mp.spawn(_spawned, args=(world_size, free_port(), jobs, out_dir), nprocs=world_size, join=True)
        return [
            [torch.load(Path(out_dir) / f"job{index}-rank{r}.pt", weights_only=False) for r in range(world_size)]
            for index in range(len(jobs))
        ]


def run_torchrun(job: Job) -> list[dict] | None:
    """Run this process's rank under torchrun; rank 0 returns every rank's report, the others None."""
    dist.init_process_group(BACKEND, timeout=TIMEOUT)
    try:
        rank, world_size = dist.get_rank(), dist.get_world_size()
        job.plan.check_world_size(world_size, "WORLD_SIZE")
        report = run_rank(rank, job)
        gathered = [None] * world_size if rank == 0 else None
        dist.gather_object(report, gathered, dst=0)
        return gathered
    finally:
        dist.destroy_process_group()
