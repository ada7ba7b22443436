"""Design explorer: one model under one attention design, against context length."""

import pandas as pd
import streamlit as st

from ctxsim.cli.common import human_bytes, human_count
from ctxsim.spec import Workload

from dashboards import analysis, api, export, inputs
from dashboards.charts import LineChart, Marker, BarChart
from dashboards.state import SWEEP_MAX_TOKENS, SWEEP_MIN_TOKENS, default

st.title("Design explorer")
st.caption(
    "Pick a model and an attention design; the charts show what one token and one sequence cost "
    f"from {inputs.format_tokens(SWEEP_MIN_TOKENS)} to {SWEEP_MAX_TOKENS:,} tokens of context."
)

# Inputs. A SpecError (bad upload, impossible design) is shown in the main area and ends the run.
with export.stop_on_bad_input():
    with st.sidebar:
        base = inputs.model_picker()
        design = inputs.design_picker(base)
        context = inputs.context_picker()
        workload_args = inputs.workload_picker([base])
        points = st.slider(
            "sweep points", min_value=20, max_value=400, value=default("points"), step=10, key="points", bind="query-params",
            help="Contexts in the sweep, spaced evenly on the log axis.",
        )
        op_phase = st.segmented_control(
            "per-op chart and crossovers", ["decode", "prefill"], default=default("op_phase"), key="op_phase",
            bind="query-params", help="Phase whose FLOPs per token the per-op chart and the crossovers follow.",
        ) or default("op_phase")
    spec = api.apply_design(base, design)
    workload = Workload(context=context, **workload_args)
    report = api.point(spec, workload)
    wide, ops = api.sweep(spec, api.sweep_workload(workload), tuple(api.sweep_contexts(points, SWEEP_MIN_TOKENS, SWEEP_MAX_TOKENS)))

st.subheader(f"{spec.name} at {inputs.format_tokens(context)} tokens")
policy = "exact size" if report.kv_cache.policy == "need" else "paged"
st.caption(f"{spec.n_layer} layers; design: {design.label()}; KV dtype {report.kv_cache.kv_dtype}, {policy}.")

# Headline numbers at the chosen context.
numbers = api.per_token(report)
columns = st.columns(4)
columns[0].metric("Prefill FLOPs per token (mean)", human_count(numbers["prefill_flops_per_token"], "FLOP"))
columns[1].metric("Decode FLOPs per token", human_count(numbers["decode_flops_per_token"], "FLOP"))
columns[2].metric("KV cache per sequence", human_bytes(numbers["kv_bytes_per_sequence"]))
columns[3].metric("Bytes read per decoded token", human_bytes(numbers["decode_bytes_read_per_token"]))

# Sweeps against context, with the chosen context marked.
chosen = [Marker(context, f"N = {inputs.format_tokens(context)}", dashed=False)]
flops = wide.melt(
    id_vars="context",
    value_vars=["prefill_flops_per_token", "decode_flops_per_token"],
    var_name="phase",
    value_name="flops_per_token",
)
flops["phase"] = flops["phase"].map({"prefill_flops_per_token": "prefill (mean)", "decode_flops_per_token": "decode"})
found = analysis.crossovers(ops, op_phase)
crossing_marks = [Marker(row.context, f"{row.op} overtakes {row.overtakes}") for row in found.itertuples()]

left, right = st.columns(2)
with left:
    export.chart(
        LineChart(flops, "context", "flops_per_token", "phase", "FLOPs per token", "context (tokens)", "FLOPs", markers=chosen),
        f"{spec.name}-flops", "flops",
    )
    kv = wide.assign(series="KV cache per sequence")
    export.chart(
        LineChart(kv, "context", "kv_bytes_per_sequence", "series", "KV cache per sequence", "context (tokens)", "bytes", markers=chosen),
        f"{spec.name}-kv", "kv",
    )
with right:
    reads = wide.assign(series="bytes read per decoded token")
    export.chart(
        LineChart(
            reads, "context", "decode_bytes_read_per_token", "series", "Bytes read per decoded token", "context (tokens)", "bytes",
            markers=chosen,
        ),
        f"{spec.name}-decode-bytes", "reads",
    )
    phase_ops = ops[ops["phase"] == op_phase]
    major = phase_ops[phase_ops["op"].isin(analysis.major_ops(ops, op_phase))]
    export.chart(
        LineChart(
            major, "context", "flops_per_token", "op", f"{op_phase.capitalize()} FLOPs per token by op",
            "context (tokens)", "FLOPs", markers=chosen + crossing_marks,
        ),
        f"{spec.name}-{op_phase}-ops", "phase_ops",
    )

# Per-op breakdown at the chosen context.
st.subheader("Per-op breakdown")
quantity = st.segmented_control(
    "quantity", ["flops", "bytes_read"], default=default("breakdown"), key="breakdown", bind="query-params",
    help="FLOPs (matmul plus non-matmul) or bytes read from memory, per token.",
) or default("breakdown")
point_rows = []
for phase, tokens in (("prefill", workload.batch * context), ("decode", workload.batch)):
    for op, value in report.by_name(phase, quantity).items():
        point_rows.append({"phase": phase, "op": op, "per_token": value / tokens})
breakdown = analysis.group_small(pd.DataFrame(point_rows), "phase", "op", "per_token")
unit = "FLOPs" if quantity == "flops" else "bytes"
export.chart(
    BarChart(breakdown, "phase", "per_token", "op", f"{unit} per token by op at N = {inputs.format_tokens(context)}", unit),
    f"{spec.name}-breakdown-{quantity}", "breakdown",
)

st.subheader(f"Crossovers ({op_phase} FLOPs per token)")
if found.empty:
    st.caption("No op overtakes another between the sweep ends.")
export.table(
    found, f"{spec.name}-crossovers", "crossovers",
    caption="Context (tokens, rounded) at which the cost of 'op' rises above that of 'overtakes'.",
)

st.subheader("Numbers at the chosen context")
summary = pd.DataFrame({"quantity": list(numbers), "value": [float(v) for v in numbers.values()]})
export.table(summary, f"{spec.name}-summary", "summary")
op_table = pd.DataFrame([op.to_dict() for op in report.ops])
number_columns = [c for c in op_table.columns if c not in ("name", "kind", "phase", "layer_kind", "dtype", "count")]
op_table[number_columns] = op_table[number_columns].astype(float)
export.table(op_table, f"{spec.name}-ops", "ops", caption="Every op record: per layer run, and total = times count.")

export.yaml_block("Model spec (YAML)", api.spec_yaml(spec), spec.name, "spec")
export.yaml_block("Workload (YAML)", workload.model_dump(mode="json"), f"{spec.name}-workload", "workload")
