"""Compare: up to four designs side by side, absolute and as ratios to the first."""

from urllib.parse import urlencode

import pandas as pd
import streamlit as st

from ctxsim.cli.common import human_bytes, human_count
from ctxsim.spec import SpecError, Workload

from dashboards import analysis, api, export, inputs
from dashboards.charts import LineChart, Marker
from dashboards.state import SWEEP_MAX_TOKENS, SWEEP_MIN_TOKENS, default

# Ready-made comparisons as URL query parameters; each is a link, so it can also be shared.
PAIRS: dict[str, dict[str, object]] = {
    "GLM-5 vs GLM-5.2 (IndexShare)": {"d1_model": "glm-5", "d2_model": "glm-5.2"},
    "DeepSeek-V3 vs V3.2 (DSA)": {"d1_model": "deepseek-v3", "d2_model": "deepseek-v3.2"},
    "MiniMax-M2 vs M3 (MSA)": {"d1_model": "minimax-m2", "d2_model": "minimax-m3"},
    "Llama-3.1-70B dense vs sliding window": {
        "d1_model": "llama-3.1-70b",
        "d2_model": "llama-3.1-70b",
        "d2_design": "SWA",
        "d2_window": 4096,
    },
    "DeepSeek-V3.2: dense, DSA, IndexShare, SWA": {
        "n_designs": 4,
        "d1_model": "deepseek-v3.2",
        "d1_design": "dense",
        "d2_model": "deepseek-v3.2",
        "d3_model": "deepseek-v3.2",
        "d3_design": "IndexShare",
        "d4_model": "deepseek-v3.2",
        "d4_design": "SWA",
    },
}
QUANTITIES = {
    "prefill_flops_per_token": ("Prefill FLOPs per token (mean)", "FLOPs"),
    "decode_flops_per_token": ("Decode FLOPs per token", "FLOPs"),
    "kv_bytes_per_sequence": ("KV cache per sequence", "bytes"),
    "decode_bytes_read_per_token": ("Bytes read per decoded token", "bytes"),
}


st.title("Compare designs")
st.caption("Up to four models or attention designs on the same workload; ratios are to design 1.")

with st.sidebar:
    st.markdown("**Ready-made comparisons**")
    for title, params in PAIRS.items():
        st.markdown(f"- [{title}](/compare?{urlencode(params)})")
    n_designs = st.slider(
        "designs", min_value=2, max_value=4, value=default("n_designs"), key="n_designs", bind="query-params"
    )
    context = inputs.context_picker()

# Design slots, side by side. A bad slot shows its error and drops out; the others stay.
designs: list[tuple[str, object, api.Design]] = []
for i, column in enumerate(st.columns(n_designs), start=1):
    with column:
        st.markdown(f"**Design {i}**")
        try:
            base = inputs.model_picker(prefix=f"d{i}_", label="Model", preset_default=default(f"d{i}_model"))
            design = inputs.design_picker(base, prefix=f"d{i}_", columns=1)
            spec = api.apply_design(base, design)
        except SpecError as err:
            export.show_error(err)
            continue
        designs.append((f"{i}: {spec.name}", spec, design))

if not designs:
    st.stop()

with export.stop_on_bad_input():
    with st.sidebar:
        workload_args = inputs.workload_picker([spec for _, spec, _ in designs])
        points = st.slider(
            "sweep points", min_value=20, max_value=400, value=default("compare_points"), step=10,
            key="compare_points", bind="query-params", help="Contexts in the sweep, spaced evenly on the log axis.",
        )
    workload = Workload(context=context, **workload_args)
    contexts = tuple(api.sweep_contexts(points, SWEEP_MIN_TOKENS, SWEEP_MAX_TOKENS))
    frames, rows = [], []
    for label, spec, design in designs:
        wide = api.design_sweep(spec, api.sweep_workload(workload), contexts)
        frames.append(wide.assign(design=label))
        numbers = api.per_token(api.point(spec, workload))
        rows.append(
            {
                "design": label,
                "model": spec.name,
                "attention": design.label(),
                "n_params": float(spec.n_params),
                "n_active_params": float(spec.n_active_params),
                **{k: float(v) for k, v in numbers.items()},
            }
        )
sweeps = pd.concat(frames, ignore_index=True)
at_n = pd.DataFrame(rows)
baseline = designs[0][0]
for quantity in QUANTITIES:
    at_n[f"{quantity}_ratio"] = at_n[quantity] / at_n[quantity].iloc[0]

# Headline: each design at the chosen context.
st.subheader(f"At {inputs.format_tokens(context)} tokens")
for column, row in zip(st.columns(len(at_n)), at_n.itertuples()):
    column.metric(f"{row.design} decode FLOPs/token", human_count(row.decode_flops_per_token, "FLOP"))
    column.metric(f"{row.design} KV per sequence", human_bytes(row.kv_bytes_per_sequence))

chosen = [Marker(context, f"N = {inputs.format_tokens(context)}", dashed=False)]
absolute, relative = st.tabs(["Absolute", f"Ratio to {baseline}"])
with absolute:
    grid = st.columns(2)
    for i, (quantity, (title, unit)) in enumerate(QUANTITIES.items()):
        with grid[i % 2]:
            chart = LineChart(sweeps, "context", quantity, "design", title, "context (tokens)", unit, markers=chosen)
            export.chart(chart, f"compare-{quantity}", f"abs_{quantity}")
with relative:
    ratios = analysis.ratios(sweeps, baseline, list(QUANTITIES))
    grid = st.columns(2)
    for i, (quantity, (title, _)) in enumerate(QUANTITIES.items()):
        with grid[i % 2]:
            chart = LineChart(
                ratios[ratios["quantity"] == quantity], "context", "ratio", "design", f"{title}, ratio to {baseline}",
                "context (tokens)", "ratio", markers=chosen,
            )
            export.chart(chart, f"compare-{quantity}-ratio", f"ratio_{quantity}")

st.subheader("Table at the chosen context")
export.table(at_n, "compare", "compare", caption="Per token and per sequence, with ratios to design 1.")
export.table(sweeps, "compare-sweep", "compare_sweep", caption="The full sweep behind the charts.")
export.yaml_block(
    "Model specs (YAML)", "".join(f"# {label}\n{api.spec_yaml(spec)}\n" for label, spec, _ in designs), "compare-specs", "specs"
)
export.yaml_block("Workload (YAML)", workload.model_dump(mode="json"), "compare-workload", "workload")
