"""Deployment sizing: a model on N devices under a parallel plan; memory, latency and throughput."""

import pandas as pd
import streamlit as st

from ctxsim.cli.common import human_bytes, human_count, human_seconds
from ctxsim.spec import Workload

from dashboards import api, export, inputs
from dashboards.charts import BarChart, LineChart, Marker
from dashboards.state import SWEEP_MAX_TOKENS, SWEEP_MIN_TOKENS, default, field_help

QP = "query-params"

st.title("Deployment sizing")
st.caption("One model on a group of devices: memory per device, TTFT, TPOT, tokens/s and how many sequences fit.")

with export.stop_on_bad_input():
    with st.sidebar:
        base = inputs.model_picker(prefix="s_", preset_default=default("s_model"))
        design = inputs.design_picker(base, prefix="s_")
        profile = inputs.hardware_picker()
        devices, plan_values = inputs.plan_picker()
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
        points = st.slider(
            "sweep points", min_value=10, max_value=100, value=default("time_points"), step=5, key="time_points",
            bind=QP, help="Contexts in the sweeps against context, spaced evenly on the log axis.",
        )
    plan = inputs.build_plan(devices, plan_values)
    spec = api.apply_design(base, design)
    workload = Workload(context=context, chunk_size=int(chunk_size) or None, **workload_args)
    # Per-device memory and traffic of every rank; an invalid plan for this model raises SpecError.
    parallel = api.point(spec, workload, plan).extras["parallel"]
    report, capacity, times, max_sequences, longest = api.deployment(
        spec, workload, plan, profile, memory_fraction, overlap
    )

st.subheader(f"{spec.name} on {devices} x {profile.name} at {inputs.format_tokens(context)} tokens, batch {workload.batch}")
busiest = parallel.busiest()
usable = profile.memory_bytes * memory_fraction
if busiest.memory_bytes > usable:
    st.error(
        f"Does not fit: device {busiest.rank} needs {human_bytes(busiest.memory_bytes)} for weights, KV cache and "
        f"activations, but {human_bytes(usable)} is usable ({memory_fraction:.0%} of {human_bytes(profile.memory_bytes)}). "
        "Add devices, shard more, or shorten the context."
    )

stages = " Each pipeline stage is timed on its slowest device." if plan.pp > 1 else ""
batch = f"{capacity.batch} sequence" if capacity.batch == 1 else f"{capacity.batch} sequences"
runs = f"the replica runs {batch}" if plan.dp == 1 else f"each of the {plan.dp} replicas runs {batch}"
st.caption(
    f"Times are estimates from the {profile.name} profile ({times.provenance}, confidence {times.confidence}); "
    f"{runs}.{stages}"
)
columns = st.columns(6)
columns[0].metric("busiest device memory", human_bytes(busiest.memory_bytes))
columns[1].metric("max concurrency", f"{max_sequences:,}")
columns[2].metric(f"max context ({capacity.batch} seq per replica)", inputs.format_tokens(longest) if longest else "none")
columns[3].metric("TTFT", human_seconds(times.ttft_s))
columns[4].metric("TPOT", human_seconds(times.tpot_s))
columns[5].metric("tokens/s (all replicas)", human_count(times.tokens_per_s))

left, right = st.columns(2)
with left:
    rows = []
    for device in parallel.devices:
        for part, value in (
            ("weights", device.weights_bytes),
            ("KV cache", device.kv_cache_bytes),
            ("activation peak", device.activation_bytes),
        ):
            rows.append({"device": f"rank {device.rank}", "part": part, "bytes": float(value)})
    limits = [Marker(usable, f"usable ({memory_fraction:.0%})"), Marker(profile.memory_bytes, "device memory")]
    export.chart(
        BarChart(pd.DataFrame(rows), "device", "bytes", "part", "Memory per device", "bytes", limits=limits),
        "deploy-memory", "memory",
    )
with right:
    sweep = api.deployment_sweep(
        spec, api.sweep_workload(workload), plan, profile, overlap, memory_fraction,
        tuple(api.sweep_contexts(points, SWEEP_MIN_TOKENS, SWEEP_MAX_TOKENS)),
    )
    chosen = [Marker(context, f"N = {inputs.format_tokens(context)}", dashed=False)]
    memory = pd.concat(
        [
            pd.DataFrame({"context": sweep["context_tokens"], "series": "busiest device", "bytes": sweep["memory_bytes_per_device"]}),
            pd.DataFrame({"context": sweep["context_tokens"], "series": f"usable ({memory_fraction:.0%})", "bytes": usable}),
        ],
        ignore_index=True,
    )
    export.chart(
        LineChart(memory, "context", "bytes", "series", "Device memory against context", "context (tokens)", "bytes", markers=chosen),
        "deploy-memory-sweep", "memory_sweep",
    )

left, right = st.columns(2)
lines = sweep.rename(columns={"context_tokens": "context", "ttft_s": "TTFT", "tpot_s": "TPOT"})
lines = lines.melt(id_vars="context", value_vars=["TTFT", "TPOT"], var_name="time", value_name="seconds")
with left:
    export.chart(
        LineChart(lines, "context", "seconds", "time", "TTFT and TPOT", "context (tokens)", "seconds", markers=chosen),
        "deploy-times", "times",
    )
throughput = sweep.rename(columns={"context_tokens": "context"}).assign(series="all replicas")
with right:
    export.chart(
        LineChart(
            throughput, "context", "tokens_per_s", "series", "Decode tokens/s", "context (tokens)", "tokens/s",
            markers=chosen,
        ),
        "deploy-throughput", "throughput",
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
with export.stop_on_bad_input():
    plans, shortfall, searched = api.plan_search(
        spec, context, profile, workload.batch, target_ttft_s or None, target_tpot_s or None, int(max_gpus),
        int(search_chunk), memory_fraction, overlap,
    )
sequences = "sequence" if workload.batch == 1 else "sequences"
st.caption(f"ctxsim.size, for {workload.batch} {sequences} of {inputs.format_tokens(context)} tokens; searched: {searched}.")
for line in shortfall:
    st.warning(line)
if not plans.empty:
    ticks = [2**p for p in range(0, int(max_gpus).bit_length())]
    left, right = st.columns(2)
    for column, metric, title in ((left, "tpot_s", "TPOT"), (right, "ttft_s", "TTFT")):
        with column:
            chart = LineChart(
                plans, "gpus", metric, "status", f"{title} against devices", "devices", "seconds", x_ticks=ticks, points=True
            )
            export.chart(chart, f"deploy-pareto-{metric}", f"pareto_{metric}")
    export.table(
        plans[plans["status"] == "Pareto"], "deploy-pareto", "pareto",
        caption="The Pareto set: no other feasible plan beats one on devices, TTFT and TPOT at once.",
    )
    export.table(plans, "deploy-plans", "plans", caption="Every evaluated plan.")

st.subheader("Per device")
device_rows = []
for device in parallel.devices:
    row = device.to_dict()
    row.pop("traffic_bytes")
    row.pop("kv_cache_by_component")
    row["layers"] = str(row["layers"])
    row["memory_bytes"] = device.memory_bytes
    device_rows.append(row)
export.table(pd.DataFrame(device_rows), "deploy-devices", "devices", caption="Weights, KV cache and activation peak of every rank.")
for note in parallel.notes:
    st.caption(note)

st.subheader("Phase times")
phase_rows = []
for phase in (times.prefill, times.decode):
    if phase is not None:
        row = {"phase": phase.phase, "time_s": phase.time_s, "compute_s": phase.compute_s}
        row.update(communication_s=phase.communication_s, hidden_communication_s=phase.hidden_s)
        row.update({f"{bound}_bound_s": seconds for bound, seconds in phase.by_bound.items()})
        phase_rows.append(row)
export.table(pd.DataFrame(phase_rows), "deploy-phases", "phases")
if plan.pp > 1:
    export.table(
        pd.DataFrame([stage.to_dict() for stage in times.stages]), "deploy-stages", "stages",
        caption="Each stage's time per phase and the rank that sets it (the stage's slowest device).",
    )
export.table(
    pd.DataFrame([capacity.to_dict()]), "deploy-capacity", "memory_table",
    caption="Capacity of the device that needs the most memory.",
)
export.table(
    pd.DataFrame([t.to_dict() for t in times.ops]), "deploy-op-times", "op_times",
    caption="Time of every op record, on each stage's slowest device.",
)
export.table(sweep, "deploy-sweep", "deploy_sweep", caption="ctxsim.sweep of this deployment, per device.")

export.yaml_block("Plan (YAML)", {"devices": devices, **plan.model_dump(mode="json")}, "plan", "plan")
export.yaml_block("Workload (YAML)", workload.model_dump(mode="json"), "deploy-workload", "workload")
export.yaml_block("Model spec (YAML)", api.spec_yaml(spec), spec.name, "spec")
export.yaml_block("Hardware profile (YAML)", profile.model_dump(mode="json"), profile.name, "hardware_yaml")
