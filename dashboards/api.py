"""Cached calls into the public ctxsim API; pages call these, never ctxsim internals.

Every function is wrapped in ``st.cache_data``, so a rerun with the same inputs (a widget that
does not change the model or workload) costs a cache lookup. Specs and workloads are frozen
pydantic models, which Streamlit hashes by value.
"""

from __future__ import annotations

import io
import json
import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import streamlit as st
from pydantic import ValidationError

import ctxsim
from ctxsim.spec import ModelSpec, SpecError, Workload
from ctxsim.spec.errors import format_validation_error
from ctxsim.spec.variants import selection_pattern, with_kv_heads, with_selection
from ctxsim.time import device_report, max_context_for_plan, plan_max_sequences, time_plan

from dashboards.export import to_yaml

log = logging.getLogger(__name__)

# Attention designs offered by the pickers: label (also the URL value) -> Design.kind.
DESIGNS: dict[str, str] = {
    "as released": "released",
    "dense": "dense",
    "SWA": "window",
    "DSA": "dsa",
    "IndexShare": "indexshare",
    "MSA": "msa",
}


@dataclass(frozen=True)
class Design:
    """An attention design to apply to a model: a ``DESIGNS`` key plus its parameters."""

    kind: str = "released"
    params: tuple[tuple[str, int], ...] = ()
    n_kv_head: int = 0  # 0 keeps the released KV heads

    def label(self) -> str:
        if self.kind == "released":
            text = "as released"
        else:
            settings = ", ".join(f"{k} {v}" for k, v in self.params)
            text = f"{self.kind} ({settings})" if settings else self.kind
        return text + (f", n_kv_head {self.n_kv_head}" if self.n_kv_head else "")


@st.cache_data(show_spinner=False)
def preset(name: str) -> ModelSpec:
    return ctxsim.load_model(name)


@st.cache_data(show_spinner=False)
def uploaded_model(file_name: str, data: bytes) -> ModelSpec:
    """Load an uploaded config.json or ctxsim YAML through ``ctxsim.load_model``.

    The bytes go to a temporary file named like the upload, because ``load_model`` picks the
    format from the suffix and names a config.json model after its folder.
    Raises SpecError for any file that is not a valid model.
    """
    suffix = Path(file_name).suffix.lower()
    if suffix not in (".json", ".yaml", ".yml"):
        raise SpecError(f"upload {file_name}: unsupported file type '{suffix}'; upload a config.json or a .yaml spec")
    stem = Path(file_name).stem
    # load_model names a config.json model after its folder; keep the folder name a safe file name.
    safe_stem = "".join(c if c.isalnum() or c in "-_." else "-" for c in stem)
    folder_name = "uploaded" if stem == "config" else safe_stem
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / folder_name
        folder.mkdir()
        path = folder / f"{stem or 'model'}{suffix}"
        path.write_bytes(data)
        try:
            return ctxsim.load_model(path)
        except SpecError as err:
            raise SpecError(str(err).replace(str(path), f"upload {file_name}")) from None
        except UnicodeDecodeError:
            raise SpecError(f"upload {file_name}: the file is not UTF-8 text; upload a config.json or a .yaml spec") from None
        except (KeyError, TypeError, AttributeError) as err:
            # A mapping of the wrong shape can fail before validation names the field.
            log.warning("upload %s failed to load: %r", file_name, err)
            raise SpecError(f"upload {file_name}: not a valid model config ({type(err).__name__}: {err})") from None


@st.cache_data(show_spinner=False)
def released_pattern(spec: ModelSpec) -> dict | None:
    """Return the model's own design as ``with_selection`` arguments, or None for a mixed design."""
    return selection_pattern(spec)


@st.cache_data(show_spinner=False)
def apply_design(spec: ModelSpec, design: Design) -> ModelSpec:
    """Return ``spec`` with ``design`` applied; raises SpecError for an impossible design."""
    out = spec
    if design.n_kv_head:
        out = with_kv_heads(out, design.n_kv_head)
    if design.kind == "released":
        return out
    kind = "dsa" if design.kind == "indexshare" else design.kind
    return with_selection(out, kind, **dict(design.params))


# ---------------------------------------------------------------------------------------------
# Counts


def sweep_contexts(points: int, low: int, high: int) -> np.ndarray:
    """``points`` whole-number contexts spaced evenly on a log axis from ``low`` to ``high``."""
    return np.unique(np.round(np.geomspace(low, high, points)))


@st.cache_data(show_spinner=False)
def point(spec: ModelSpec, workload: Workload, plan: ctxsim.ParallelPlan | None = None) -> ctxsim.CostReport:
    """Run ``ctxsim.estimate`` at one context: exact integer counts, per device under ``plan``."""
    return ctxsim.estimate(spec, workload, plan)


def per_token(report: ctxsim.CostReport) -> dict[str, object]:
    """Return the headline numbers of a report as floats per token, and the KV bytes per sequence.

    Prefill is averaged over the ``batch * (context - cached_context)`` tokens it computes;
    decode is one step divided by the batch.
    """
    workload = report.workload
    context = report.extras.get("context", workload.context)
    prefill_tokens = workload.batch * (context - workload.cached_context)
    return {
        "prefill_flops_per_token": report.total("prefill", "flops") / prefill_tokens,
        "decode_flops_per_token": report.total("decode", "flops") / workload.batch,
        "kv_bytes_per_sequence": report.kv_cache.bytes_per_sequence,
        "decode_bytes_read_per_token": report.total("decode", "bytes_read") / workload.batch,
    }


def sweep_workload(workload: Workload) -> Workload:
    """``workload`` with its context set to 1, so that sweeps stay cached while the context moves.

    A sweep replaces the context anyway; this keeps the cache key free of it.
    """
    if workload.cached_context:
        return workload
    return workload.model_copy(update={"context": 1})


@st.cache_data(show_spinner=False)
def design_sweep(spec: ModelSpec, workload: Workload, contexts: tuple[int, ...]) -> pd.DataFrame:
    """``ctxsim.sweep`` of one model over ``contexts``, as the ``per_token`` columns (``workload.context`` is ignored).

    One row per context: context, prefill_flops_per_token (mean over the batch's new tokens),
    decode_flops_per_token, kv_bytes_per_sequence and decode_bytes_read_per_token.
    """
    options = workload.model_dump(exclude={"context", "batch"})
    frame = ctxsim.sweep(spec, np.asarray(contexts), batches=workload.batch, by_kind=False, **options)
    batch = frame["batch"]
    return pd.DataFrame(
        {
            "context": frame["context_tokens"].astype(np.int64),
            "prefill_flops_per_token": frame["prefill_flops"] / (batch * frame["new_tokens"]),
            "decode_flops_per_token": frame["decode_flops"] / batch,
            "kv_bytes_per_sequence": frame["kv_bytes_per_sequence"],
            "decode_bytes_read_per_token": frame["decode_bytes_read"] / batch,
        }
    )


@st.cache_data(show_spinner=False)
def sweep(spec: ModelSpec, workload: Workload, contexts: tuple[int, ...]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Run one vectorised ``ctxsim.estimate`` over ``contexts`` (``workload.context`` is ignored).

    Returns a wide frame (one row per context, the ``per_token`` columns) and a long frame of the
    per-op FLOPs and bytes read per token (context, phase, op, flops_per_token,
    bytes_read_per_token).
    """
    n = np.asarray(contexts, dtype=np.float64)
    report = ctxsim.estimate(spec, workload, context=n)
    columns = {k: np.broadcast_to(v, n.shape) for k, v in per_token(report).items()}
    wide = pd.DataFrame({"context": n.astype(np.int64), **columns})

    # Long frame: one block of len(n) rows per (phase, op), built as whole columns.
    tokens = {"prefill": workload.batch * (n - workload.cached_context), "decode": np.full(n.shape, workload.batch)}
    phases, ops, flops, reads = [], [], [], []
    for phase in ("prefill", "decode"):
        phase_flops = report.by_name(phase, "flops")
        phase_reads = report.by_name(phase, "bytes_read")
        for op, value in phase_flops.items():
            phases.append(phase)
            ops.append(op)
            flops.append(np.broadcast_to(value / tokens[phase], n.shape))
            reads.append(np.broadcast_to(phase_reads[op] / tokens[phase], n.shape))
    long = pd.DataFrame(
        {
            "context": np.tile(n.astype(np.int64), len(ops)),
            "phase": np.repeat(phases, len(n)),
            "op": np.repeat(ops, len(n)),
            "flops_per_token": np.concatenate(flops) if flops else np.array([]),
            "bytes_read_per_token": np.concatenate(reads) if reads else np.array([]),
        }
    )
    return wide, long


@st.cache_data(show_spinner=False)
def spec_yaml(spec: ModelSpec) -> str:
    """Return the spec as YAML text; cached, because dumping a large spec takes tens of ms."""
    return to_yaml(spec.model_dump(mode="json"))


# ---------------------------------------------------------------------------------------------
# Hardware, plans and time


def make_plan(values: dict) -> ctxsim.ParallelPlan:
    """Validate a ParallelPlan from widget values, raising SpecError with a one-line message."""
    try:
        return ctxsim.ParallelPlan(**values)
    except ValidationError as err:
        first = err.errors()[0]
        if not first.get("loc"):
            # A rule across fields (such as ep against tp) has no field to name.
            raise SpecError(f"invalid plan: {first['msg'].removeprefix('Value error, ')}") from None
        raise SpecError(format_validation_error(err, "plan")) from None


@st.cache_data(show_spinner=False)
def hardware(name: str) -> ctxsim.HardwareProfile:
    return ctxsim.load_hardware(name)


@st.cache_data(show_spinner=False)
def uploaded_hardware(file_name: str, data: bytes) -> ctxsim.HardwareProfile:
    """Load an uploaded hardware profile YAML through ``ctxsim.load_hardware``; raises SpecError."""
    suffix = Path(file_name).suffix.lower()
    if suffix not in (".yaml", ".yml"):
        raise SpecError(f"upload {file_name}: unsupported file type '{suffix}'; upload a hardware profile .yaml")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"profile{suffix}"
        path.write_bytes(data)
        try:
            return ctxsim.load_hardware(path)
        except SpecError as err:
            raise SpecError(str(err).replace(str(path), f"upload {file_name}")) from None
        except UnicodeDecodeError:
            raise SpecError(f"upload {file_name}: the file is not UTF-8 text; upload a hardware profile .yaml") from None


@st.cache_data(show_spinner=False)
def deployment(
    spec: ModelSpec,
    workload: Workload,
    plan: ctxsim.ParallelPlan,
    profile: ctxsim.HardwareProfile,
    memory_fraction: float,
    overlap: float,
) -> tuple[ctxsim.CostReport, object, ctxsim.TimeReport, int, int]:
    """Count, time and fit every device of ``plan``, as ``ctxsim estimate --hardware`` does.

    ``workload.batch`` is the whole deployment's batch; each data-parallel replica runs its share.
    Returns the per-device CostReport of the device that needs the most memory
    (``ctxsim.time.device_report``) and its Capacity, the TimeReport of the whole plan
    (``ctxsim.time.time_plan``: each pipeline stage on its slowest device), the sequences each
    replica can hold (``plan_max_sequences``, the fewest over the devices), and the longest
    context at which every device holds its share of the batch (``max_context_for_plan``).
    Raises SpecError for a plan the per-device model cannot count.
    """
    report = device_report(spec, workload, plan)
    times = time_plan(spec, workload, plan, profile, overlap=overlap)
    capacity = ctxsim.capacity_from_report(report, profile, memory_fraction=memory_fraction)
    max_sequences = plan_max_sequences(report.extras["parallel"], profile, memory_fraction=memory_fraction)
    longest = max_context_for_plan(spec, workload, plan, profile, memory_fraction=memory_fraction)
    return report, capacity, times, max_sequences, longest


@st.cache_data(show_spinner=False)
def deployment_sweep(
    spec: ModelSpec,
    workload: Workload,
    plan: ctxsim.ParallelPlan,
    profile: ctxsim.HardwareProfile,
    overlap: float,
    memory_fraction: float,
    contexts: tuple[int, ...],
) -> pd.DataFrame:
    """``ctxsim.sweep`` of one deployment over ``contexts`` (``workload.context`` is ignored).

    One row per context: ``ttft_s``, ``tpot_s`` and ``tokens_per_s`` of the whole plan, and
    ``memory_bytes_per_device`` and ``memory_fits`` of the device that needs the most memory.
    """
    options = workload.model_dump(exclude={"context", "batch"})
    return ctxsim.sweep(
        spec, np.asarray(contexts), batches=workload.batch, plans=[plan], hardware=profile, by_kind=False,
        overlap=overlap, memory_fraction=memory_fraction, **options,
    )


@st.cache_data(show_spinner=False)
def plan_search(
    spec: ModelSpec,
    context: int,
    profile: ctxsim.HardwareProfile,
    concurrency: int,
    target_ttft_s: float | None,
    target_tpot_s: float | None,
    max_gpus: int,
    chunk_size: int,
    memory_fraction: float,
    overlap: float,
) -> tuple[pd.DataFrame, list[str], str]:
    """Run ``ctxsim.size`` and return every evaluated plan as a frame, the shortfall lines, and the search space.

    The frame has the columns of ``PlanResult.to_dict`` plus ``plan`` (its description) and
    ``status``: 'Pareto' for the plans ``size`` returns, else 'feasible' or 'infeasible'.
    """
    result = ctxsim.size(
        spec, context, profile, concurrency=concurrency, target_ttft_s=target_ttft_s, target_tpot_s=target_tpot_s,
        max_gpus=max_gpus, chunk_size=chunk_size, memory_fraction=memory_fraction, overlap=overlap,
    )
    best = {id(p) for p in result.plans}
    rows = []
    for plan in result.evaluated:
        if id(plan) in best:
            status = "Pareto"
        elif plan.feasible:
            status = "feasible"
        else:
            status = "infeasible"
        rows.append({"plan": plan.describe(), "status": status, **plan.to_dict()})
    return pd.DataFrame(rows), list(result.shortfall), result.to_dict()["searched"]


# ---------------------------------------------------------------------------------------------
# Calibration cases

# Columns a table of validation cases needs: the keys of ctxsim.calibrate's Case.to_dict.
CASE_COLUMNS = ("measured_s", "predicted_s")


@st.cache_data(show_spinner=False)
def cases_table(file_name: str, data: bytes) -> pd.DataFrame:
    """Read validation cases (measured and predicted times) from a JSON or CSV upload.

    JSON is a list of case objects, or an object whose ``cases`` key contains that list; CSV has one
    case per row. Each case needs ``measured_s`` and ``predicted_s`` (positive seconds); the
    other keys of a case (design, phase, context, batch) are kept. Raises SpecError otherwise.
    """
    suffix = Path(file_name).suffix.lower()
    try:
        if suffix == ".json":
            loaded = json.loads(data.decode())
            rows = loaded.get("cases") if isinstance(loaded, dict) else loaded
            if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
                raise SpecError(f"upload {file_name}: expected a list of case objects (or {{'cases': [...]}})")
            table = pd.DataFrame(rows)
        elif suffix == ".csv":
            table = pd.read_csv(io.BytesIO(data))
        else:
            raise SpecError(f"upload {file_name}: unsupported file type '{suffix}'; upload the cases as .json or .csv")
    except (UnicodeDecodeError, json.JSONDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as err:
        raise SpecError(f"upload {file_name}: unreadable cases ({type(err).__name__}); upload JSON or CSV text") from None

    missing = [c for c in CASE_COLUMNS if c not in table.columns]
    if missing or table.empty:
        raise SpecError(f"upload {file_name}: cases need the columns {', '.join(CASE_COLUMNS)}; missing {', '.join(missing) or 'rows'}")
    for column in CASE_COLUMNS:
        values = pd.to_numeric(table[column], errors="coerce")
        if values.isna().any() or (values <= 0).any():
            raise SpecError(f"upload {file_name}: '{column}' must be positive seconds in every case")
        table[column] = values
    table["error"] = (table["predicted_s"] - table["measured_s"]) / table["measured_s"]
    return table
