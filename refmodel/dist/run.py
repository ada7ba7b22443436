"""What one rank does: build its shard, run the workload like ``refmodel.harness``, report.

The phases run as in ``refmodel.harness.run_phase``: fresh caches, the tokens before the counted
span prefilled with recording off (phase ``setup``), then the counted span. A cp prefill is one
pass over the rank's token blocks; its setup prefix (all_gather mode only) runs unsplit, so every
cp rank caches the whole prefix, as all_gather mode keeps it.

``run_rank`` returns a dict of plain values and tensors: the recorded traffic, the weight and KV
bytes this rank holds, and, on tp rank 0 of the last stage, its hidden states and logits.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist

from ctxsim.counts.parallel import cp_token_blocks, device_layout, stage_layers
from ctxsim.spec.model import ModelSpec
from ctxsim.spec.plan import ParallelPlan, gcd_all, kv_replication
from ctxsim.spec.workload import Workload
from refmodel.basic import RunContext
from refmodel.dist.comm import SETUP, Comm
from refmodel.dist.model import DistModel, Groups, batch_sizes, pass_positions
from refmodel.harness import sample_tokens
from refmodel.model import RefModel

DTYPE = torch.float64


@dataclass(frozen=True)
class Job:
    """A multi-rank run: the (scaled) model, the workload, the plan and the seed of weights and tokens."""

    spec: ModelSpec
    workload: Workload
    plan: ParallelPlan
    seed: int = 0


# ---------------------------------------------------------------------------------------------
# Process groups


def _group(ranks: list[int]):
    """A process group of ``ranks``; every rank must call this for every group, in the same order."""
    return dist.new_group(ranks) if len(ranks) > 1 else None


def build_groups(spec: ModelSpec, plan: ParallelPlan, rank: int) -> Groups:
    """Create every group of the plan (collectively) and return the ones ``rank`` belongs to."""
    me = plan.coordinates(rank)
    found: dict[str, tuple] = {}

    def scan(name: str, members_of):
        for ranks in members_of():
            group = _group(ranks)
            if rank in ranks:
                found[name] = (group, ranks)

    def tp_sets():
        for d in range(plan.dp):
            for p in range(plan.pp):
                for c in range(plan.cp):
                    yield [plan.rank_of(t, c, p, d) for t in range(plan.tp)]

    def cp_sets():
        for d in range(plan.dp):
            for p in range(plan.pp):
                for t in range(plan.tp):
                    yield [plan.rank_of(t, c, p, d) for c in range(plan.cp)]

    def dp_sets():
        for p in range(plan.pp):
            for c in range(plan.cp):
                for t in range(plan.tp):
                    yield [plan.rank_of(t, c, p, d) for d in range(plan.dp)]

    def layer_split_sets():
        copies = gcd_all(list(kv_replication(spec, plan).values()))
        keyed: dict[tuple, list[tuple[int, int]]] = {}
        for r in range(plan.world_size):
            c = plan.coordinates(r)
            cp_index = c["cp"] if plan.cp_mode == "all_gather" else 0
            position = cp_index * copies + c["tp"] % copies
            key = (c["dp"], c["pp"], c["tp"] // copies, 0 if plan.cp_mode == "all_gather" else c["cp"], position // plan.layer_split)
            keyed.setdefault(key, []).append((position, r))
        for members in keyed.values():
            yield [r for _, r in sorted(members)]

    scan("tp", tp_sets)
    scan("cp", cp_sets)
    scan("ep", dp_sets)
    scan("layer_split", layer_split_sets)
    prev_stage = plan.rank_of(me["tp"], me["cp"], me["pp"] - 1, me["dp"]) if me["pp"] > 0 else None
    next_stage = plan.rank_of(me["tp"], me["cp"], me["pp"] + 1, me["dp"]) if me["pp"] < plan.pp - 1 else None
    return Groups(
        tp=found["tp"][0],
        cp=found["cp"][0],
        cp_ranks=found["cp"][1],
        ep=found["ep"][0],
        layer_split=found["layer_split"][0],
        layer_split_ranks=found["layer_split"][1],
        prev_stage=prev_stage,
        next_stage=next_stage,
    )


# ---------------------------------------------------------------------------------------------
# The run


def _weight_bytes(model: DistModel) -> int:
    """Bytes of the rank's weights in the spec's dtypes, norms left out as ModelSpec.n_params does."""
    spec = model.spec
    routed = vocab = rest = 0
    for name, tensor in model.named_weights():
        if "norm" in name:
            continue
        if name.endswith("expert_up") or name.endswith("expert_down"):
            routed += tensor.numel()
        elif name in ("embedding", "lm_head"):
            vocab += tensor.numel()
        else:
            rest += tensor.numel()
    return spec.stored_bytes(rest, routed, vocab)


def _kv_bytes(model: DistModel, caches, own_positions: torch.Tensor | None) -> int:
    """Bytes of the records the rank keeps: all held records, or in cp ring mode only its own tokens'."""
    total = 0
    for cache in caches.values():
        for store in (cache.main, cache.index):
            if store is None:
                continue
            if own_positions is None:
                total += store.allocated_bytes() - 4 * len(store.tensor_scales)
            else:
                kept = int(torch.isin(store.positions, own_positions).sum())
                total += kept * store.batch * store.record_bytes
    if model.plan.layer_split > 1:
        total += model.plan.layer_split_scratch * model.scratch_slot_bytes
    return total


def _context(workload: Workload, phase: str, positions: torch.Tensor) -> RunContext:
    from refmodel.counter import Counter

    return RunContext(Counter(enabled=False), positions, execution=workload.execution, mla_mode=workload.mla_mode, phase=phase)


def run_rank(rank: int, job: Job) -> dict:
    """Run ``job`` as global rank ``rank`` of an initialised process group; return its report."""
    torch.set_num_threads(1)
    spec, workload, plan = job.spec, job.workload, job.plan
    context = workload.context
    kv_dtype = workload.kv_dtype or spec.kv_dtype
    full = RefModel(spec, dtype=DTYPE, seed=job.seed)
    groups = build_groups(spec, plan, rank)
    layout = device_layout(spec, plan, workload, rank, context)
    comm = Comm(rank)
    sizes = batch_sizes(workload.batch, plan)
    model = DistModel(full, plan, layout, comm, groups, sizes)
    stages = stage_layers(spec, plan)
    next_layers = stages[layout.pp_rank + 1] if layout.pp_rank + 1 < plan.pp else None

    first_sequence = sum(sizes[: layout.dp_rank])
    tokens = sample_tokens(full, workload.batch, context, job.seed)[first_sequence : first_sequence + layout.batch]
    phases = ("prefill", "decode") if workload.phase == "both" else (workload.phase,)
    split_cp = plan.cp > 1
    own_positions = None
    if split_cp and plan.cp_mode == "ring":
        own_positions = torch.cat([torch.arange(a, b + 1) for a, b in layout.token_blocks])

    def run_pass(phase: str, positions: torch.Tensor, caches, cp_positions, logits: bool):
        ctx = _context(workload, phase, positions)
        return model.forward(ctx, tokens[:, positions - 1], caches, next_layers, cp_positions, logits)

    def run_span(phase: str, first: int, last: int, chunk: int | None, caches, logits: bool):
        hidden, out = [], None
        step = chunk or (last - first + 1)
        for start in range(first, last + 1, step):
            end = min(last, start + step - 1)
            h, out = run_pass(phase, torch.arange(start, end + 1), caches, None, logits and end == last)
            hidden.append(h)
        return hidden, out

    outputs = {}
    caches = {}
    with torch.no_grad():
        for phase in phases:
            caches = model.make_caches(layout.batch, context, kv_dtype)
            model.set_run(context, kv_dtype)
            counted_first = workload.cached_context + 1 if phase == "prefill" else context
            comm.phase = SETUP
            if counted_first > 1:
                run_span("prefill", 1, counted_first - 1, workload.chunk_size, caches, False)
            comm.phase = phase
            if phase == "prefill" and split_cp:
                positions = torch.cat([torch.arange(a, b + 1) for a, b in layout.token_blocks])
                blocks = [cp_token_blocks(plan, workload.cached_context, context, c) for c in range(plan.cp)]
                holds_last = bool((positions == context).any())
                h, out = run_pass(phase, positions, caches, pass_positions(plan, blocks), holds_last)
                hidden, counted_positions = [h], positions
            else:
                chunk = workload.chunk_size if phase == "prefill" else None
                hidden, out = run_span(phase, counted_first, context, chunk, caches, True)
                counted_positions = torch.arange(counted_first, context + 1)
            if layout.pp_rank == plan.pp - 1 and layout.tp_rank == 0:
                outputs[phase] = {
                    "hidden": torch.cat(hidden, dim=1),
                    "logits": out,
                    "positions": counted_positions,
                    "sequences": torch.arange(first_sequence, first_sequence + layout.batch),
                }

    return {
        "rank": rank,
        "traffic": comm.summary(),
        "weights_bytes": _weight_bytes(model),
        "kv_cache_bytes": _kv_bytes(model, caches, own_positions),
        "outputs": outputs,
    }
