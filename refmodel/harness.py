"""Run a RefModel on a Workload and report, op by op, the work it really did.

A phase runs on fresh caches. Tokens before the counted span (a cached prefix, or the N - 1
tokens before a decode step) are prefilled with counting off. Then the counted span runs with
counting on: the prefill tokens cached_context + 1 .. context in chunks of chunk_size, or the one
decode token at position context. KV bytes are measured from the tensors the caches hold at the
end (N tokens).
"""

from __future__ import annotations

from contextlib import nullcontext

import torch

from ctxsim.counts.memory import KV_COMPONENTS, check_kv_dtype
from ctxsim.counts.names import OP_KIND
from ctxsim.counts.report import CostReport, KVMemory, Op
from ctxsim.spec.errors import SpecError
from ctxsim.spec.layers import WindowSelection
from ctxsim.spec.workload import Workload
from refmodel.attention import LayerCache
from refmodel.basic import RunContext
from refmodel.counter import Counter, TorchMatmulWatch
from refmodel.model import RefModel


def sample_tokens(model: RefModel, batch: int, context: int, seed: int = 0) -> torch.Tensor:
    """Random token ids ``[batch, context]``, distinct within a sequence while the vocabulary allows.

    Repeated tokens give identical first-layer index keys (the indexers have no position
    information), so their index scores tie exactly and top-k may break the tie either way.
    """
    generator = torch.Generator().manual_seed(seed)
    vocab = model.spec.vocab_size
    if context > vocab:
        return torch.randint(0, vocab, (batch, context), generator=generator)
    return torch.stack([torch.randperm(vocab, generator=generator)[:context] for _ in range(batch)])


def run_span(
    model: RefModel,
    ctx_args: dict,
    counter: Counter,
    tokens: torch.Tensor,
    caches: list[LayerCache],
    first: int,
    last: int,
    chunk_size: int | None,
    logits: bool,
):
    """Run positions ``first .. last`` (1-based) in chunks; returns the hidden states and last logits."""
    hidden, out = [], None
    step = chunk_size or (last - first + 1)
    for start in range(first, last + 1, step):
        end = min(last, start + step - 1)
        positions = torch.arange(start, end + 1)
        ctx = RunContext(counter, positions, **ctx_args)
        h, out = model(ctx, tokens[:, start - 1 : end], caches, logits=logits and end == last)
        hidden.append(h)
    return torch.cat(hidden, dim=1), out


def _context_args(workload: Workload, phase: str) -> dict:
    return {"execution": workload.execution, "mla_mode": workload.mla_mode, "phase": phase}


def run_phase(
    model: RefModel,
    workload: Workload,
    phase: str,
    tokens: torch.Tensor,
    counter: Counter,
) -> tuple[list[LayerCache], torch.Tensor, torch.Tensor]:
    """Run one counted phase on fresh caches; returns the caches, hidden states and logits."""
    kv_dtype = workload.kv_dtype or model.spec.kv_dtype
    caches = model.make_caches(workload.batch, workload.context, kv_dtype)
    n = workload.context
    counted_first = workload.cached_context + 1 if phase == "prefill" else n
    setup = Counter(enabled=False)
    if counted_first > 1:
        run_span(model, _context_args(workload, "prefill"), setup, tokens, caches, 1, counted_first - 1, workload.chunk_size, False)
    counter.phase = phase
    chunk = workload.chunk_size if phase == "prefill" else None
    hidden, logits = run_span(model, _context_args(workload, phase), counter, tokens, caches, counted_first, n, chunk, True)
    return caches, hidden, logits


def kv_allocated(model: RefModel, caches: list[LayerCache], batch: int, kv_dtype: str) -> KVMemory:
    """Bytes per sequence of the cache records the caches hold, by ctxsim.counts component.

    NOTE: the static fp32 scale of each per-tensor-scaled fp8 cache (4 bytes per tensor per
    layer, shared by the batch) is left out, as ctxsim.counts leaves it out.
    """
    by_component = {name: 0 for name in KV_COMPONENTS}
    for index, cache in enumerate(caches):
        layer = model.spec.layer_kinds[model.spec.layer_sequence[index]]
        main_data = cache.main.allocated_bytes() - 4 * len(cache.main.tensor_scales)
        component = "window" if isinstance(layer.selection, WindowSelection) else "main"
        by_component[component] += main_data // batch
        if cache.index is not None:
            by_component["indexer"] += (cache.index.allocated_bytes() - 4 * len(cache.index.tensor_scales)) // batch
    per_sequence = sum(by_component.values())
    return KVMemory(per_sequence, by_component, "need", kv_dtype, per_sequence * batch)


def counted_weight_bytes(model: RefModel) -> int:
    """Bytes of the model's weights in the spec's dtypes, norms excluded as ModelSpec.n_params does."""
    spec = model.spec
    routed = vocab = rest = 0
    for name, param in model.named_parameters():
        if "norm" in name:
            continue
        if ".experts." in name and ".shared." not in name:
            routed += param.numel()
        elif name in ("embedding", "lm_head"):
            vocab += param.numel()
        else:
            rest += param.numel()
    return spec.stored_bytes(rest, routed, vocab)


def _ops_from_tallies(model: RefModel, counter: Counter) -> list[Op]:
    ops = []
    for (phase, layer, name), tally in counter.tallies.items():
        kind = None if layer is None else model.spec.layer_sequence[layer]
        ops.append(
            Op(
                name, OP_KIND[name], phase, 1, tally.matmul_flops, tally.other_flops,
                tally.bytes_read, tally.bytes_written, kind,
            )
        )
    return ops


def count_workload(model: RefModel, workload: Workload, seed: int = 0, watch_torch: bool = False) -> CostReport:
    """Run ``workload`` on ``model`` and return a CostReport of the work it did, one Op per layer.

    ``extras`` contains the raw tallies (``tallies``, keyed by phase, layer index and op name) and
    the hidden states and logits of each phase. ``watch_torch`` also records torch's own FLOP
    count of every aten matmul in each tally (slower).
    """
    spec = model.spec
    kv_dtype = workload.kv_dtype or spec.kv_dtype
    check_kv_dtype(spec, kv_dtype)
    if workload.kv_policy != "need":
        raise SpecError(f"kv_policy '{workload.kv_policy}' is not run by the reference model: use 'need'")
    phases = ("prefill", "decode") if workload.phase == "both" else (workload.phase,)
    tokens = sample_tokens(model, workload.batch, workload.context, seed)
    counter = Counter()
    outputs = {}
    caches: list[LayerCache] = []
    with torch.no_grad(), (TorchMatmulWatch(counter) if watch_torch else nullcontext()):
        for phase in phases:
            caches, hidden, logits = run_phase(model, workload, phase, tokens, counter)
            outputs[phase] = (hidden, logits)

    report = CostReport(
        spec.name,
        workload,
        _ops_from_tallies(model, counter),
        kv_allocated(model, caches, workload.batch, kv_dtype),
        counted_weight_bytes(model),
    )
    report.extras.update(tallies=counter.tallies, outputs=outputs, tokens=tokens)
    return report
