"""Deployment sizing: a model on N devices under a parallel plan; memory, latency and throughput."""

import pandas as pd
import streamlit as st

import ctxsim
from ctxsim.cli.common import human_bytes, human_count, human_seconds
from ctxsim.spec import ParallelPlan, SpecError, Workload

from dashboards import api, export, inputs
from dashboards.charts import LineChart, Marker, BarChart
from dashboards.state import SWEEP_MAX_TOKENS, SWEEP_MIN_TOKENS, default, field_help

QP = "query-params"
PLAN_DEGREES = ("tp", "pp", "ep", "dp", "cp")


def _hardware_picker() -> ctxsim.HardwareProfile:
    """Show the hardware select box and upload; return the uploaded profile if any, else the chosen one.

    Raises SpecError for an invalid upload.
    """
    names = ctxsim.hardware_names()
    name = st.selectbox(
        "hardware",
        names,
        index=names.index(default("hardware")),
        key="hardware",
        bind=QP,
        help="Accelerator profile: peak rates, memory, links and efficiency priors, each with its source.",
    )
    upload = st.file_uploader("or upload a hardware profile YAML", key="hw_upload")
    if upload is not None:
        profile = api.uploaded_hardware(upload.name, upload.getvalue())
        st.caption(f"Using the uploaded profile {profile.name}; remove it to use {name}.")
        return profile
    return api.hardware(name)


st.title("Deployment sizing")
st.caption("One model on a group of devices: memory per device, TTFT, TPOT, tokens/s and how many sequences fit.")

with export.stop_on_bad_input():
    with st.sidebar:
        base = inputs.model_picker(prefix="s_", preset_default=default("s_model"))
        design = inputs.design_picker(base, prefix="s_")
        profile = _hardware_picker()
        gpus = st.number_input(
            "devices", min_value=1, value=default("gpus"), step=1, key="gpus", bind=QP,
            help="Devices serving one model replica group; the plan's tp x pp x dp x cp must equal it.",
        )
        grid = st.columns(3)
        degrees = {}
        for i, name in enumerate(PLAN_DEGREES):
            degrees[name] = grid[i % 3].number_input(
                name, min_value=1, value=default(name), step=1, key=name, bind=QP, help=field_help(ParallelPlan, name)
            )
        context = inputs.context_picker(prefix="s_")
        workload_args = inputs.workload_picker([base], prefix="s_")
        chunk_size = st.number_input(
            "chunk_size (0 = one chunk)", min_value=0, value=default("chunk_size"), step=1024, key="chunk_size",
            bind=QP, help=field_help(Workload, "chunk_size"),
        )
        memory_fraction = st.slider(
            "memory fraction", min_value=0.5, max_value=1.0, value=default("memory_fraction"), step=0.01,
            key="memory_fraction", bind=QP,
            help="Share of device memory the serving engine may use (vLLM gpu_memory_utilization, default 0.9).",
        )
        overlap = st.slider(
            "communication overlap", min_value=0.0, max_value=1.0, value=default("overlap"), step=0.05, key="overlap",
            bind=QP, help="Fraction of communication time hidden behind compute.",
        )

    spec = api.apply_design(base, design)
    plan = ParallelPlan(**{k: int(v) for k, v in degrees.items()})
    if plan.world_size != gpus:
        raise SpecError(
            f"plan tp {plan.tp} x pp {plan.pp} x dp {plan.dp} x cp {plan.cp} = {plan.world_size} devices, "
            f"but devices is {gpus}: change the degrees or the device count"
        )
    workload = Workload(context=context, chunk_size=int(chunk_size) or None, **workload_args)
    report, capacity, times, longest = api.deployment(spec, workload, plan, profile, memory_fraction, overlap)

st.subheader(f"{spec.name} on {gpus} x {profile.name} at {inputs.format_tokens(context)} tokens, batch {workload.batch}")
st.caption(
    f"Counts are per device ({plan.dp} replica(s) of tp {plan.tp}, {capacity.batch} sequence(s) each). Times are "
    f"estimates from the {profile.name} profile ({times.provenance}, confidence {times.confidence})."
)
if not capacity.fits:
    st.error(
        f"Does not fit: weights, activations and the KV cache of {capacity.batch} sequences need "
        f"{human_bytes(capacity.used_bytes)} per device, but {human_bytes(capacity.usable_bytes)} is usable "
        f"({memory_fraction:.0%} of {human_bytes(capacity.memory_bytes)}). Add devices, shard more, or shorten the context."
    )

columns = st.columns(6)
columns[0].metric("TTFT", human_seconds(times.ttft_s))
columns[1].metric("TPOT", human_seconds(times.tpot_s))
columns[2].metric("tokens/s (all replicas)", human_count(times.tokens_per_s))
columns[3].metric("tokens/s per device", human_count(times.tokens_per_s_per_device))
columns[4].metric("max concurrency", f"{capacity.max_sequences:,}")
columns[5].metric(f"max context ({capacity.batch} seq per replica)", inputs.format_tokens(longest) if longest else "none")

left, right = st.columns(2)
with left:
    parts = pd.DataFrame(
        {
            "device": ["per device"] * 3,
            "part": ["weights", f"KV cache ({capacity.batch} seq)", "activation peak"],
            "bytes": [
                float(capacity.weights_bytes),
                float(capacity.batch * capacity.kv_bytes_per_sequence),
                float(capacity.activation_peak_bytes),
            ],
        }
    )
    limits = [Marker(capacity.usable_bytes, f"usable ({memory_fraction:.0%})"), Marker(capacity.memory_bytes, "device memory")]
    export.chart(BarChart(parts, "device", "bytes", "part", "Memory per device", "bytes", limits=limits), "deploy-memory", "memory")
with right:
    points = st.slider(
        "time sweep points", min_value=10, max_value=100, value=default("time_points"), step=5, key="time_points",
        bind=QP, help="Contexts in the TTFT and TPOT sweep, spaced evenly on the log axis.",
    )
    sweep = api.time_sweep(spec, api.sweep_workload(workload), plan, profile, overlap, tuple(api.sweep_contexts(points, SWEEP_MIN_TOKENS, SWEEP_MAX_TOKENS)))
    lines = sweep.rename(columns={"ttft_s": "TTFT", "tpot_s": "TPOT"})
    lines = lines.melt(id_vars="context", value_vars=["TTFT", "TPOT"], var_name="time", value_name="seconds")
    chosen = [Marker(context, f"N = {inputs.format_tokens(context)}", dashed=False)]
    export.chart(
        LineChart(lines, "context", "seconds", "time", "TTFT and TPOT", "context (tokens)", "seconds", markers=chosen),
        "deploy-times", "times",
    )

st.subheader("Plan search")
grid = st.columns(4)
target_ttft_s = grid[0].number_input(
    "target TTFT (s, 0 = none)", min_value=0.0, value=default("target_ttft_s"), step=1.0, key="target_ttft_s", bind=QP,
    help="Maximum acceptable time to first token, in seconds.",
)
target_tpot_s = grid[1].number_input(
    "target TPOT (s, 0 = none)", min_value=0.0, value=default("target_tpot_s"), step=0.005, format="%.3f",
    key="target_tpot_s", bind=QP, help="Maximum acceptable time per output token, in seconds.",
)
max_gpus = grid[2].number_input(
    "max devices", min_value=1, value=default("max_gpus"), step=1, key="max_gpus", bind=QP,
    help="Largest device count the search may use.",
)
search_chunk = grid[3].number_input(
    "prefill chunk", min_value=1, value=default("search_chunk_size"), step=1024, key="search_chunk_size", bind=QP,
    help=field_help(Workload, "chunk_size"),
)
plans, shortfall, searched = api.plan_search(
    spec, context, profile, workload.batch, target_ttft_s or None, target_tpot_s or None, int(max_gpus),
    int(search_chunk), memory_fraction, overlap,
)
st.caption(f"ctxsim.size, for {workload.batch} sequence(s) of {inputs.format_tokens(context)} tokens; searched: {searched}.")
for line in shortfall:
    st.warning(line)
if not plans.empty:
    ticks = [2**p for p in range(0, int(max_gpus).bit_length())]
    left, right = st.columns(2)
    for column, metric, title in ((left, "tpot_s", "TPOT"), (right, "ttft_s", "TTFT")):
        with column:
            export.chart(
                LineChart(plans, "gpus", metric, "status", f"{title} against devices", "devices", "seconds", x_ticks=ticks, points=True),
                f"deploy-pareto-{metric}", f"pareto_{metric}",
            )
    export.table(plans[plans["status"] == "Pareto"], "deploy-pareto", "pareto", caption="The Pareto set: no other feasible plan beats one on devices, TTFT and TPOT at once.")
    export.table(plans, "deploy-plans", "plans", caption="Every evaluated plan.")


st.subheader("Memory per device")
export.table(pd.DataFrame([capacity.to_dict()]), "deploy-memory", "memory_table")

st.subheader("Phase times")
phase_rows = []
for phase in (times.prefill, times.decode):
    if phase is not None:
        row = {"phase": phase.phase, "time_s": phase.time_s, "compute_s": phase.compute_s}
        row.update(communication_s=phase.communication_s, hidden_communication_s=phase.hidden_s)
        row.update({f"{bound}_bound_s": seconds for bound, seconds in phase.by_bound.items()})
        phase_rows.append(row)
export.table(pd.DataFrame(phase_rows), "deploy-phases", "phases")
export.table(pd.DataFrame([t.to_dict() for t in times.ops]), "deploy-op-times", "op_times", caption="Time of every op record.")
export.table(sweep, "deploy-time-sweep", "time_sweep")

export.yaml_block("Plan (YAML)", {"devices": int(gpus), **plan.model_dump(mode="json")}, "plan", "plan")
export.yaml_block("Workload (YAML)", workload.model_dump(mode="json"), "deploy-workload", "workload")
export.yaml_block("Model spec (YAML)", api.spec_yaml(spec), spec.name, "spec")
export.yaml_block("Hardware profile (YAML)", profile.model_dump(mode="json"), profile.name, "hardware_yaml")
