"""Multi-rank reference model: a RefModel sharded by a ParallelPlan and run on torch.distributed.

Each rank holds the shard ``ctxsim.counts.parallel`` counts (its pipeline stage, tp heads and
columns, ep experts, cp tokens, LayerSplit layers), runs the workload with gloo collectives on
CPU, and records the bytes of every collective under its ctxsim op name
(``refmodel.dist.comm``). ``verify_plans`` then checks every rank's traffic, weights and KV bytes
against the analytic counts exactly, and the outputs against the single-process run.
"""

from refmodel.dist.run import Job
from refmodel.dist.verify import verify_plan, verify_plans

__all__ = ["Job", "verify_plan", "verify_plans"]
