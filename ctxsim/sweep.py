"""Sweeps: one tidy pandas DataFrame over models x plans x hardware x contexts x batches.

Each row is one point. Counts (FLOPs, bytes, KV memory, weights, activation peak) come from
``ctxsim.counts.totals``, which evaluates exact polynomials over the whole context x batch grid
at once, so large grids are cheap. With ``hardware``, times come from the public time API
(``ctxsim.estimate_time``) on one op-level report over all contexts per batch.

With ``plans``, every count is that of one device, the one that needs the most memory
(``ctxsim.time.device_report``), and every time is that of the whole plan, as
``ctxsim.time.time_plan`` and ``ctxsim estimate --hardware`` give it. Plans of tp and dp keep
the vectorised path above: their counts are traced totals of the tp-sharded model, and one
report per batch over all contexts is timed. Any other plan (pp, ep, cp, attention_dp,
layer_split) is counted and timed one point at a time (a few ms each), because the per-device
counts of ``ctxsim.counts.parallel`` take one integer context.

pandas is imported inside ``sweep``, so ``import ctxsim`` does not load it.
"""

from __future__ import annotations

import dataclasses
import os
import re
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any, Callable, Iterable, Sequence

import numpy as np
from pydantic import ValidationError

from ctxsim.counts.estimate import estimate
from ctxsim.counts.parallel import ParallelCounts, parallel_counts
from ctxsim.counts.report import OP_KINDS, CostReport
from ctxsim.counts.totals import QUANTITIES, Totals, kind_columns, kv_columns
from ctxsim.spec.errors import SpecError, format_validation_error
from ctxsim.spec.hardware import HardwareProfile, load_hardware
from ctxsim.spec.load import load_model
from ctxsim.spec.model import ModelSpec
from ctxsim.spec.plan import ParallelPlan
from ctxsim.spec.workload import Workload
from ctxsim.time.capacity import DEFAULT_MEMORY_FRACTION
from ctxsim.time.phases import TimeReport, estimate_time
from ctxsim.time.placement import device_report, replica_batch, shard_model, traced_collectives
from ctxsim.time.stages import time_plan

if TYPE_CHECKING:
    import pandas as pd

DEFAULT_POINTS = 100
PHASES = ("prefill", "decode")

# ---------------------------------------------------------------------------------------------
# Context grids

_SUFFIX = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}
_COUNT = re.compile(r"\s*(\d+)\s*([kKmMgG]?)\s*")
_RANGE = re.compile(r"\s*([^.,]+?)\s*\.\.\s*([^.,]+?)\s*")


def parse_token_count(text: str) -> int:
    """Parse a token count such as ``4096``, ``128k`` or ``1m`` (k = 1024, m = 1024^2, g = 1024^3)."""
    match = _COUNT.fullmatch(text)
    if not match:
        raise SpecError(f"invalid token count '{text}': use a positive integer or a k/m/g suffix such as 128k or 1m")
    value = int(match.group(1)) * _SUFFIX[match.group(2).lower()]
    if value < 1:
        raise SpecError(f"invalid token count '{text}': a context must be at least 1 token")
    return value


def context_grid(contexts: str | int | Sequence[int] | np.ndarray, points: int | None = None) -> np.ndarray:
    """Parse contexts into sorted, distinct int64 token counts.

    ``contexts`` is a range ``START..END`` (``1k..10m``), a comma list (``4k,32k,128k``), one
    count, or a sequence of ints. A range gives ``points`` log-spaced whole token counts (default
    DEFAULT_POINTS) from START to END, both included. Rounding can make neighbouring points
    equal at the short end, and such duplicates are dropped, so fewer than ``points`` may return.
    """
    if isinstance(contexts, str):
        text = contexts.strip()
        if not text:
            raise SpecError("empty context list: give a range such as 1k..10m or a list such as 4k,32k,128k")
        if ".." in text:
            return _context_range(text, points)
        parts = [part.strip() for part in text.split(",")]
        if not all(parts):
            raise SpecError(f"invalid context list '{text}': separate token counts with single commas, such as 4k,32k")
        values = np.array([parse_token_count(part) for part in parts], dtype=np.int64)
    elif isinstance(contexts, (int, np.integer)) and not isinstance(contexts, bool):
        values = _whole_numbers([contexts], "context")
    else:
        values = _whole_numbers(contexts, "context")
    if points is not None:
        raise SpecError(f"points {points} applies to a range such as 1k..10m, not to a list of contexts: drop it")
    return _sorted_distinct(values)


def _context_range(text: str, points: int | None) -> np.ndarray:
    match = _RANGE.fullmatch(text)
    if not match:
        raise SpecError(f"invalid context range '{text}': write START..END with two token counts, such as 1k..10m")
    start, end = parse_token_count(match.group(1)), parse_token_count(match.group(2))
    if start >= end:
        raise SpecError(
            f"invalid context range '{text}': the start ({start:,}) must be below the end ({end:,}); "
            "for one context give it alone"
        )
    points = DEFAULT_POINTS if points is None else points
    if isinstance(points, bool) or not isinstance(points, (int, np.integer)) or points < 2:
        raise SpecError(f"invalid points {points!r} for range '{text}': use a whole number of at least 2")
    values = np.rint(np.geomspace(start, end, int(points)))
    values[0], values[-1] = start, end
    return _sorted_distinct(values.astype(np.int64))


def _whole_numbers(values: Any, what: str) -> np.ndarray:
    """Validate a non-empty list of whole numbers of at least 1; return them as int64."""
    array = np.asarray(values)
    if array.ndim != 1 or array.size == 0:
        raise SpecError(f"{what} values must be a non-empty list of whole numbers, such as [1, 8, 64]")
    if array.dtype == bool or not np.issubdtype(array.dtype, np.number):
        raise SpecError(f"{what} values must be whole numbers, got {array.tolist()[:5]}: fix the list")
    if np.any(array != np.floor(array)) or array.min() < 1:
        raise SpecError(f"{what} values must be whole numbers of at least 1, got {array.tolist()[:5]}: fix the list")
    return array.astype(np.int64)


def _sorted_distinct(values: np.ndarray) -> np.ndarray:
    """Sort and drop repeats (np.unique hashes, which is slower on a million ints)."""
    if values.size > 1 and np.all(values[1:] > values[:-1]):
        return values
    values = np.sort(values)
    keep = np.empty(values.size, dtype=bool)
    keep[:1] = True
    np.not_equal(values[1:], values[:-1], out=keep[1:])
    return values[keep]


# ---------------------------------------------------------------------------------------------
# Plans


def parse_plan(plan: ParallelPlan | dict | str) -> ParallelPlan:
    """Build a ParallelPlan from a plan, a dict, or text such as ``tp=8,dp=2``."""
    if isinstance(plan, ParallelPlan):
        return plan
    if isinstance(plan, str):
        fields: dict[str, Any] = {}
        for part in plan.split(","):
            key, sep, value = (text.strip() for text in part.partition("="))
            if not sep or not key or not value:
                raise SpecError(f"invalid plan '{plan}': write options as key=value pairs, such as tp=8,dp=2")
            fields[key] = _plan_value(value)
        plan = fields
    try:
        return ParallelPlan(**plan)
    except ValidationError as err:
        raise SpecError(format_validation_error(err, "plan")) from None
    except TypeError:
        raise SpecError(f"invalid plan {plan!r}: pass a ParallelPlan, a dict of degrees or text such as tp=8,dp=2") from None


def _plan_value(text: str) -> Any:
    if text.isdigit():
        return int(text)
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    return text


def plan_label(plan: ParallelPlan) -> str:
    """Text of the options that differ from one device, such as ``tp=8,dp=2`` (``tp=1`` for none).

    ``parse_plan`` reads the text back, except a ``pp_layers`` tuple.
    """
    default = ParallelPlan()
    parts = []
    for name, value in plan.model_dump().items():
        if value != getattr(default, name):
            text = str(value).lower() if isinstance(value, bool) else str(value)
            parts.append(f"{name}={text}")
    return ",".join(parts) or "tp=1"


@dataclasses.dataclass
class _Case:
    """One model on one plan (or on one device), and the per-device model that counts it.

    Plans of tp and dp only are counted on the tp-sharded model with ceil(batch / dp) sequences
    per replica plus the tp collectives, as traced totals over the grid. Those equal
    ``ctxsim.time.device_report``, which counts any other plan one point at a time.
    """

    spec: ModelSpec
    plan: ParallelPlan | None

    def __post_init__(self) -> None:
        plan = self.plan
        self.tp_dp_only = plan is None or plan == ParallelPlan(tp=plan.tp, dp=plan.dp)
        self.tp = plan.tp if plan is not None else 1
        self.dp = plan.dp if plan is not None else 1
        self.n_devices = plan.world_size if plan is not None else 1
        self.device_spec = shard_model(self.spec, self.tp) if self.tp_dp_only else None

    def local_batch(self, batch: int) -> int:
        return replica_batch(batch, self.dp)

    def extra_ops(self, template: Workload):
        """Builder of the plan's collectives for a traced run, or None without tp."""
        if self.tp == 1:
            return None
        return traced_collectives(self.spec, self.plan, template)

    def report_over(self, workload: Workload, contexts: np.ndarray) -> CostReport:
        """Per-device report of ``workload`` (one batch) over an array of contexts, for plans of tp and dp only."""
        context = contexts.astype(np.float64)
        if self.plan is None:
            return estimate(self.spec, workload, context=context)
        local = workload.model_copy(update={"batch": self.local_batch(workload.batch)})
        report = estimate(self.device_spec, local, context=context)
        build = self.extra_ops(workload)
        if build is not None:
            for phase in sorted({op.phase for op in report.ops}):
                tokens = context - workload.cached_context if phase == "prefill" else 1
                report.ops += build(SimpleNamespace(phase=phase, batch=local.batch, rows=local.batch * tokens))
        report.plan = self.plan
        return report

    def reference(self, workload: Workload) -> CostReport:
        """Return the public per-device report at one point, which the sweep reproduces."""
        if self.plan is None:
            return estimate(self.spec, workload)
        return device_report(self.spec, workload, self.plan)


class _PointReports:
    """Per-device reports of one plan at one point, each counted once.

    The count columns take the busiest device's report and ``time_plan`` (through its
    ``per_device`` hook) the report of each stage's slowest device, for every hardware profile.
    Both share one ``parallel_counts`` per workload: the point's own, and the per-phase workloads
    that ``time_plan`` builds when pp > 1 decodes in micro-batches.
    """

    def __init__(self) -> None:
        self.counts: dict[Workload, ParallelCounts] = {}
        self.reports: dict[tuple[Workload, int], CostReport] = {}

    def __call__(self, spec: ModelSpec, workload: Workload, plan: ParallelPlan, rank: int | None = None) -> CostReport:
        """Return the report of ``rank`` (default: the busiest device), as ``ctxsim.time.device_report``."""
        if workload not in self.counts:
            self.counts[workload] = parallel_counts(spec, workload, plan)
        counts = self.counts[workload]
        # Name the busiest device by its rank, so that its report is shared with time_plan's.
        rank = counts.busiest().rank if rank is None else rank
        if (workload, rank) not in self.reports:
            self.reports[workload, rank] = device_report(spec, workload, plan, rank=rank, counts=counts)
        return self.reports[workload, rank]


# ---------------------------------------------------------------------------------------------
# Counts and times of one case


def _report_values(report: CostReport) -> dict[str, int]:
    """Columns of one point read from a per-device CostReport (counts, per-kind parts, memory)."""
    out: dict[str, int] = {}
    for phase in sorted({op.phase for op in report.ops}):
        for quantity in QUANTITIES:
            out[f"{phase}_{quantity}"] = report.total(phase, quantity)
        flops = report.by_kind(phase, "flops")
        read, written = report.by_kind(phase, "bytes_read"), report.by_kind(phase, "bytes_written")
        for kind in read:
            out[f"{phase}_{kind}_flops"] = flops[kind]
            out[f"{phase}_{kind}_bytes_moved"] = read[kind] + written[kind]
    kv = report.kv_cache
    out["kv_bytes_per_sequence"] = kv.bytes_per_sequence
    for component, value in kv.by_component.items():
        out[f"kv_{component}_bytes_per_sequence"] = value
    out["kv_bytes_per_device"] = kv.bytes_per_device
    out["weights_bytes"] = report.weights_bytes
    out["activation_peak_bytes"] = report.activation_peak_bytes
    return out


CaseValues = tuple[dict[str, np.ndarray], list[dict[str, np.ndarray] | None]]


def _case_values(
    case: _Case,
    template: Workload,
    contexts: np.ndarray,
    batches: np.ndarray,
    profiles: list[HardwareProfile | None],
    by_kind: bool,
    overlap: float,
) -> CaseValues:
    """Count one case on the grid and time it on each profile (None where the profile is None)."""
    if not case.tp_dp_only:
        return _values_point_by_point(case, template, contexts, batches, profiles, by_kind, overlap)
    counts = _traced_counts(case, template, contexts, batches, by_kind)
    times = [None if p is None else _traced_times(case, template, contexts, batches, p, overlap) for p in profiles]
    return counts, times


def _traced_counts(case: _Case, template: Workload, contexts: np.ndarray, batches: np.ndarray, by_kind: bool) -> dict[str, np.ndarray]:
    """Per-device counts of a tp/dp plan (or one device) on the whole grid, from traced totals."""
    totals = Totals(case.device_spec, template, by_kind=by_kind, extra_ops=case.extra_ops(template))

    # The traced totals are tested against estimate and device_report; this check at the
    # largest point guards against either of them changing without the sweep.
    n, batch = int(contexts[-1]), int(batches[-1])
    reference = _report_values(case.reference(template.model_copy(update={"context": n, "batch": batch})))
    got = totals.evaluate(n, case.local_batch(batch))
    for name, value in reference.items():
        if name in got and got[name] != value:
            raise RuntimeError(
                f"sweep totals of {case.spec.name} disagree with the per-device report at context {n}, "
                f"batch {batch}: {name} {got[name]} != {value}; the two counting paths have diverged"
            )

    local = np.array([case.local_batch(int(b)) for b in batches], dtype=np.float64)
    values = totals.evaluate(contexts.astype(np.float64), local)
    values["batch_per_replica"] = np.broadcast_to(local, values["weights_bytes"].shape)
    return _add_memory(values)


def _traced_times(
    case: _Case, template: Workload, contexts: np.ndarray, batches: np.ndarray, profile: HardwareProfile, overlap: float
) -> dict[str, np.ndarray]:
    """TTFT, TPOT, tokens per second and time per op kind of a tp/dp plan, one report per batch over all contexts.

    ``estimate_time`` takes a report over a context array and gives array times. For a plan of
    tp and dp this equals ``time_plan``, which times dp rank 0 (the most sequences) alone.
    """
    shape = (contexts.size, batches.size)
    out: dict[str, np.ndarray] = {}
    for j, b in enumerate(batches):
        report = case.report_over(template.model_copy(update={"batch": int(b)}), contexts)
        times = estimate_time(report, profile, overlap=overlap, n_devices=case.n_devices, total_batch=int(b))
        _store_times(out, shape, slice(None), j, times, _phases(template))
    return out


def _values_point_by_point(
    case: _Case,
    template: Workload,
    contexts: np.ndarray,
    batches: np.ndarray,
    profiles: list[HardwareProfile | None],
    by_kind: bool,
    overlap: float,
) -> CaseValues:
    """Count and time a plan beyond tp and dp at each point, with the same calls as ``ctxsim estimate --hardware``.

    Counts are the busiest device's ``device_report``; times are ``time_plan`` of the whole plan
    on each profile. Each point's per-device reports are shared by the two and freed after it.
    """
    shape = (contexts.size, batches.size)
    counts: dict[str, np.ndarray] = {}
    times: list[dict[str, np.ndarray] | None] = [None if p is None else {} for p in profiles]
    for i, n in enumerate(contexts):
        for j, b in enumerate(batches):
            workload = template.model_copy(update={"context": int(n), "batch": int(b)})
            reports = _PointReports()
            report = reports(case.spec, workload, case.plan)
            values = _report_values(report)
            values["batch_per_replica"] = report.workload.batch
            for name, value in values.items():
                if not by_kind and name not in _TOTALS_ONLY and name.endswith(("_flops", "_bytes_moved")):
                    continue
                if name not in counts:
                    counts[name] = np.zeros(shape)
                counts[name][i, j] = value
            for profile, out in zip(profiles, times):
                if profile is None:
                    continue
                plan_times = time_plan(
                    case.spec, workload, case.plan, profile,
                    overlap=overlap, n_devices=case.n_devices, total_batch=int(b), per_device=reports,
                )
                _store_times(out, shape, i, j, plan_times, _phases(template))
    return _add_memory(counts), times


def _add_memory(values: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    values["memory_bytes_per_device"] = (
        values["weights_bytes"] + values["activation_peak_bytes"] + values["kv_bytes_per_device"]
    )
    return values


_TOTALS_ONLY = {f"{phase}_{q}" for phase in PHASES for q in QUANTITIES}


def _phases(template: Workload) -> tuple[str, ...]:
    return PHASES if template.phase == "both" else (template.phase,)


def _store_times(
    out: dict[str, np.ndarray], shape: tuple[int, int], i: int | slice, j: int, times: TimeReport, phases: Iterable[str]
) -> None:
    """Write the times at row(s) ``i`` and column ``j`` into the grids of ``out``, adding a grid for each new name.

    A per-kind column sums that kind's op times over the stages' timed devices, so with pp
    stages or overlap the kinds do not add up to TTFT or TPOT.
    """
    values: dict[str, float] = {}
    if times.prefill is not None:
        values["ttft_s"] = times.ttft_s
    if times.decode is not None:
        values.update(
            tpot_s=times.tpot_s, tokens_per_s=times.tokens_per_s, tokens_per_s_per_device=times.tokens_per_s_per_device
        )
    for phase in phases:
        for t in times.phase_ops(phase):
            name = f"{phase}_{t.kind}_s"
            values[name] = values.get(name, 0.0) + t.total_s
    for name, value in values.items():
        if name not in out:
            out[name] = np.zeros(shape)
        out[name][i, j] = value


# ---------------------------------------------------------------------------------------------
# The sweep


def _as_list(value: Any) -> list:
    if value is None:
        return [None]
    if isinstance(value, (str, int, np.integer, dict, ModelSpec, ParallelPlan, HardwareProfile)):
        return [value]
    return list(value)


def _template(options: dict[str, Any], contexts: np.ndarray, batches: np.ndarray) -> Workload:
    """Build the workload shared by every point, validated at the smallest context and batch."""
    for key in ("context", "batch"):
        if key in options:
            raise SpecError(f"'{key}' is a sweep axis: pass it as {'contexts' if key == 'context' else 'batches'}=")
    try:
        return Workload(context=int(contexts[0]), batch=int(batches[0]), **options)
    except ValidationError as err:
        raise SpecError(format_validation_error(err, "workload")) from None
    except TypeError as err:
        raise SpecError(f"invalid workload option: {err}") from None


def _column_order(names: set[str], phases: tuple[str, ...], timed: bool = False) -> list[str]:
    """Order the output columns.

    When the sweep reports op kinds, every kind gets its columns (0 when no op has that kind), so
    sweeps of different models can be joined. Time columns come only with hardware.
    """
    kinds = {name for phase in phases for name in kind_columns(phase)}
    if names & kinds:
        names = names | kinds
    kind_times = {f"{phase}_{kind}_s" for phase in phases for kind in OP_KINDS}
    if timed and names & kind_times:
        names = names | kind_times
    order = [f"{phase}_{q}" for phase in phases for q in QUANTITIES]
    order += [name for phase in phases for name in kind_columns(phase)]
    order += kv_columns()[:-1] + ["kv_scratch_bytes_per_sequence", "kv_bytes_per_device"]
    order += ["weights_bytes", "activation_peak_bytes", "memory_bytes_per_device"]
    order += ["ttft_s", "tpot_s", "tokens_per_s", "tokens_per_s_per_device"]
    order += [f"{phase}_{kind}_s" for phase in phases for kind in OP_KINDS]
    order += ["device_memory_bytes", "memory_fits"]
    return [name for name in order if name in names]


def sweep(
    models: str | ModelSpec | Sequence[str | ModelSpec],
    contexts: str | int | Sequence[int] | np.ndarray,
    *,
    points: int | None = None,
    batches: int | Sequence[int] = 1,
    plans: ParallelPlan | dict | str | Sequence[ParallelPlan | dict | str] | None = None,
    hardware: str | HardwareProfile | Sequence[str | HardwareProfile] | None = None,
    by_kind: bool = True,
    overlap: float = 0.0,
    memory_fraction: float = DEFAULT_MEMORY_FRACTION,
    **workload_options: Any,
) -> pd.DataFrame:
    """Count (and with ``hardware``, time) every point of a grid; return one row per point.

    ``contexts`` and ``points`` are read by ``context_grid`` (``"1k..10m"`` with ``points``
    log-spaced values, ``"4k,32k"``, or ints). ``batches`` are sequences per deployment.
    ``workload_options`` are the other Workload fields (phase, chunk_size, cached_context,
    kv_dtype, kv_policy, page_size, execution, mla_mode). ``overlap`` and ``memory_fraction``
    are passed on to the time and memory checks.

    Rows are ordered by model, plan, hardware, context, then batch. Columns:

    - ``model``. With plans: ``plan`` (text such as ``tp=8,dp=2``, where None in the list is the
      single-device plan ``tp=1``), ``tp``, ``pp``, ``ep``, ``dp``, ``cp`` and ``devices``. With
      hardware: ``hardware``.
    - ``context_tokens``, ``batch``, ``new_tokens`` (prefill tokens per sequence, the context
      minus cached_context) and, with plans, ``batch_per_replica``.
    - per phase (prefill: all new tokens of the batch; decode: one step of the batch):
      ``{phase}_flops``, ``{phase}_matmul_flops``, ``{phase}_bytes_read``, ``{phase}_bytes_written``;
      with ``by_kind``, ``{phase}_{kind}_flops`` and ``{phase}_{kind}_bytes_moved`` (read plus
      written) per op kind.
    - ``kv_bytes_per_sequence`` and its ``kv_main/indexer/window_bytes_per_sequence`` parts (and
      ``kv_scratch_bytes_per_sequence`` with layer_split),
      ``kv_bytes_per_device``, ``weights_bytes``, ``activation_peak_bytes``,
      ``memory_bytes_per_device`` (weights + activation peak + KV of the device's batch).
    - with hardware (estimates): ``ttft_s``, ``tpot_s``, ``tokens_per_s`` (all replicas),
      ``tokens_per_s_per_device``, ``{phase}_{kind}_s`` (time of the op kinds the ops have,
      summed over the pipeline stages), ``device_memory_bytes``
      and ``memory_fits`` (memory_bytes_per_device within memory_fraction of it).

    Counts are float64, within 1e-12 relative of the exact ints of ``estimate``. With plans,
    counts and memory are those of the device that needs the most memory, and times are those
    of the whole plan (``ctxsim.time.time_plan``: each pipeline stage timed on its slowest
    device, TTFT and TPOT through the pipeline), for every plan. Plans of tp and dp are
    vectorised over the grid; others cost a few ms per point (see the module docstring).
    """
    import pandas as pd

    grid = context_grid(contexts, points)
    batch_values = _sorted_distinct(_whole_numbers(_as_list(batches), "batch"))
    specs = [m if isinstance(m, ModelSpec) else load_model(m) for m in _as_list(models)]
    # Within a list of plans, None is the single-device plan, so that every row has plan columns.
    plan_list: list[ParallelPlan | None] = [None]
    if plans is not None:
        plan_list = [ParallelPlan() if p is None else parse_plan(p) for p in _as_list(plans)]
    profiles: list[HardwareProfile | None] = []
    for item in _as_list(hardware):
        if isinstance(item, str):
            item = load_hardware(item)
        profiles.append(item)
    if not 0.0 < memory_fraction <= 1.0:
        raise SpecError(f"invalid memory_fraction {memory_fraction}: use a share of device memory in (0, 1]")
    template = _template(workload_options, grid, batch_values)
    phases = _phases(template)

    categories = {
        "model": list(dict.fromkeys(spec.name for spec in specs)),
        "plan": list(dict.fromkeys(plan_label(p) for p in plan_list if p is not None)),
        "hardware": list(dict.fromkeys(p.name for p in profiles if p is not None)),
    }
    blocks = []
    for spec in specs:
        for plan in plan_list:
            case = _Case(spec, plan)
            counts, times = _case_values(case, template, grid, batch_values, profiles, by_kind, overlap)
            local_batch = counts.pop("batch_per_replica")
            for profile, profile_times in zip(profiles, times):
                ids = _id_columns(categories, spec, plan, profile, grid, batch_values, local_batch, template)
                values = dict(counts)
                if profile is not None:
                    values.update(profile_times)
                    values["device_memory_bytes"] = np.full(counts["weights_bytes"].shape, float(profile.memory_bytes))
                    values["memory_fits"] = counts["memory_bytes_per_device"] <= memory_fraction * profile.memory_bytes
                blocks.append((ids, values, profile is not None))
    return _frame(blocks, phases)


def _id_columns(
    categories: dict[str, list[str]],
    spec: ModelSpec,
    plan: ParallelPlan | None,
    profile: HardwareProfile | None,
    grid: np.ndarray,
    batches: np.ndarray,
    local_batch: np.ndarray,
    template: Workload,
) -> dict[str, Any]:
    """Build the columns that name each point of one block: model, plan, hardware, context, batch."""
    n_points = grid.size * batches.size
    ids: dict[str, Any] = {"model": _category(categories["model"], spec.name, n_points)}
    if plan is not None:
        ids["plan"] = _category(categories["plan"], plan_label(plan), n_points)
        for name in ("tp", "pp", "ep", "dp", "cp"):
            ids[name] = np.full(n_points, getattr(plan, name))
        ids["devices"] = np.full(n_points, plan.world_size)
    if profile is not None:
        ids["hardware"] = _category(categories["hardware"], profile.name, n_points)
    ids["context_tokens"] = np.repeat(grid, batches.size)
    ids["batch"] = np.tile(batches, grid.size)
    if template.phase != "decode":
        ids["new_tokens"] = ids["context_tokens"] - template.cached_context
    if plan is not None:
        ids["batch_per_replica"] = np.asarray(local_batch, dtype=np.int64).reshape(-1)
    return ids


def _frame(blocks: list[tuple[dict[str, Any], dict[str, np.ndarray], bool]], phases: tuple[str, ...]) -> pd.DataFrame:
    """Join the blocks into one DataFrame with the same columns in each.

    A column that a block lacks is 0 (the block's ops have no op of that kind), except the
    times of a block without hardware (None in a list of profiles), which are NaN.
    """
    import pandas as pd

    any_timed = any(timed for _, _, timed in blocks)
    names = _column_order(set().union(*(values for _, values, _ in blocks)), phases, any_timed)
    frames = []
    for ids, values, timed in blocks:
        n_points = len(ids["context_tokens"])
        columns = dict(ids)
        for name in names:
            value = values.get(name)
            if value is not None:
                columns[name] = value.reshape(-1)
            elif name.endswith("_s") and not timed:
                columns[name] = np.full(n_points, np.nan)
            else:
                columns[name] = np.zeros(n_points)
        frames.append(pd.DataFrame(columns, copy=False))
    return frames[0] if len(frames) == 1 else pd.concat(frames, ignore_index=True)


def _category(categories: list[str], value: str, n: int) -> Any:
    import pandas as pd

    codes = np.full(n, categories.index(value), dtype=np.int32)
    return pd.Categorical.from_codes(codes, categories=categories)


def write_atomically(path: str | os.PathLike, write: Callable[[str], Any]) -> None:
    """Call ``write(temp_path)`` and rename the temp file to ``path``, so no half-written file is left.

    The temp file sits next to ``path``, so the rename stays on one file system.
    """
    target = Path(path)
    if not target.parent.is_dir():
        raise SpecError(f"output folder '{target.parent}' does not exist: create it or choose another path")
    temp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        write(str(temp))
        os.replace(temp, target)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
