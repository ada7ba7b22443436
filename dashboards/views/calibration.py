"""Calibration: what a hardware profile contains, its efficiencies per op kind, and their roofline."""

import numpy as np
import pandas as pd
import streamlit as st

from ctxsim.cli.common import human_bytes, human_count, human_seconds
from ctxsim.spec import SpecError
from ctxsim.spec.hardware import COMPUTE_KINDS, HardwareProfile

from dashboards import api, export, inputs
from dashboards.charts import BarChart, LineChart
from dashboards.state import field_help

# Arithmetic intensities of the roofline chart, in FLOPs per byte.
INTENSITIES = np.geomspace(0.1, 1e4, 120)

st.title("Calibration")
st.caption(
    "A hardware profile's peaks and efficiency factors. Shipped profiles hold datasheet priors; a calibrated "
    "profile holds factors fitted to measurements on a named device."
)

with export.stop_on_bad_input():
    with st.sidebar:
        profile = inputs.hardware_picker(key="profile", upload_key="profile_upload", label="profile")

provenance = profile.provenance
st.subheader(f"{profile.name}: {profile.description}")
st.caption(
    f"{provenance.kind} of {provenance.date}"
    + (f" on {provenance.device}" if provenance.device else "")
    + f"; confidence {profile.confidence}"
    + (f" ({profile.confidence_note})" if profile.confidence_note else "")
)

columns = st.columns(4)
columns[0].metric("bf16 peak", human_count(profile.peak_flops["bf16"], "FLOP/s"), help=field_help(HardwareProfile, "peak_flops"))
columns[1].metric("memory", human_bytes(profile.memory_bytes), help=field_help(HardwareProfile, "memory_bytes"))
columns[2].metric(
    "memory bandwidth", human_count(profile.memory_bandwidth_bytes_per_s, "B/s"),
    help=field_help(HardwareProfile, "memory_bandwidth_bytes_per_s"),
)
columns[3].metric("launch overhead", human_seconds(profile.launch_overhead_s), help=field_help(HardwareProfile, "launch_overhead_s"))

# Efficiency per op kind, and what it means: the attainable FLOP/s of each kind (bf16 roofline).
efficiency = pd.DataFrame(
    [
        {
            "kind": kind,
            "compute": profile.efficiency.of(kind).compute,
            "memory": profile.efficiency.of(kind).memory,
            "ridge_flops_per_byte": profile.ridge_point("bf16", kind),
            "source": profile.efficiency.of(kind).source,
        }
        for kind in COMPUTE_KINDS
    ]
)
left, right = st.columns(2)
with left:
    bars = efficiency.melt(id_vars="kind", value_vars=["compute", "memory"], var_name="fraction of", value_name="efficiency")
    export.chart(
        BarChart(bars, "kind", "efficiency", "fraction of", "Efficiency per op kind", "fraction of peak", stacked=False),
        f"{profile.name}-efficiency", "efficiency",
    )
with right:
    rows = []
    for kind in COMPUTE_KINDS:
        eff = profile.efficiency.of(kind)
        compute = profile.peak_flops_for("bf16") * eff.compute
        bandwidth = profile.memory_bandwidth_bytes_per_s * eff.memory
        rows.append(pd.DataFrame({"intensity": INTENSITIES, "kind": kind, "flops_per_s": np.minimum(compute, INTENSITIES * bandwidth)}))
    roofline = pd.concat(rows, ignore_index=True)
    export.chart(
        LineChart(roofline, "intensity", "flops_per_s", "kind", "Attainable bf16 FLOP/s per op kind", "FLOPs per byte", "FLOP/s", x_ticks=None),
        f"{profile.name}-roofline", "roofline",
    )
export.table(efficiency, f"{profile.name}-efficiency", "efficiency_table", caption="Ridge point: FLOPs per byte above which the kind is compute-bound.")

# A calibrated profile also has efficiency curves against op size, and the fit error per kind.
if profile.efficiency_curves:
    st.subheader("Fitted efficiency against op size")
    compute_rows, memory_rows = [], []
    for kind, curve in profile.efficiency_curves.items():
        compute_rows.append(pd.DataFrame({"flops_per_launch": curve.compute_size_flops, "kind": kind, "efficiency": curve.compute}))
        memory_rows.append(pd.DataFrame({"bytes_per_launch": curve.memory_size_bytes, "kind": kind, "efficiency": curve.memory}))
    left, right = st.columns(2)
    with left:
        export.chart(
            LineChart(
                pd.concat(compute_rows, ignore_index=True), "flops_per_launch", "efficiency", "kind",
                "Compute efficiency (knots)", "FLOPs per launch", "fraction of peak FLOP/s", x_ticks=None,
            ),
            f"{profile.name}-compute-curves", "compute_curves",
        )
    with right:
        export.chart(
            LineChart(
                pd.concat(memory_rows, ignore_index=True), "bytes_per_launch", "efficiency", "kind",
                "Memory efficiency (knots)", "bytes per launch", "fraction of memory bandwidth", x_ticks=None,
            ),
            f"{profile.name}-memory-curves", "memory_curves",
        )
    st.caption(
        "Between knots the efficiency is log-linear in log size; above the last knot it stays flat; below the first "
        "the op takes as long as one at the first knot."
    )
    if profile.efficiency_curves_by_op:
        by_op = pd.DataFrame(
            [
                {"op": name, "compute_knots": len(curve.compute), "memory_knots": len(curve.memory), "source": curve.source}
                for name, curve in profile.efficiency_curves_by_op.items()
            ]
        )
        export.table(by_op, f"{profile.name}-curves-by-op", "curves_by_op", caption="Op names with their own fitted curve.")

run = provenance.calibration
if run is not None:
    st.subheader("Calibration run")
    details = {k: v for k, v in run.model_dump(mode="json").items() if k not in ("shapes", "residuals")}
    details["shapes"] = len(run.shapes)
    export.table(pd.DataFrame([details]), f"{profile.name}-calibration-run", "calibration_run")
    residuals = pd.DataFrame(
        [{"kind": kind, **residual.model_dump()} for kind, residual in run.residuals.items()],
        columns=["kind", "samples", "median_abs_error", "max_abs_error"],
    )
    export.table(
        residuals, f"{profile.name}-fit-error", "fit_error",
        caption="Fit error per op kind on the timings it was fitted to: |predicted - measured| / measured.",
    )

st.subheader("Predicted against measured")
if provenance.kind == "calibration":
    st.info(f"Calibrated on {provenance.device} ({', '.join(f'{k} {v}' for k, v in provenance.software.items())}).")
else:
    st.info("This profile holds datasheet priors, not a calibration run: measured times come from a calibration.")
cases_upload = st.file_uploader(
    "validation cases: the output of 'ctxsim validate --json', or a CSV with measured_s and predicted_s",
    key="cases_upload",
    help="Held-out layer runs: measured time, and the time this profile predicts for them.",
)
cases = None
if cases_upload is not None:
    try:
        cases = api.cases_table(cases_upload.name, cases_upload.getvalue())
    except SpecError as err:
        # Only this section depends on the upload, so the rest of the page stays.
        export.show_error(err)
if cases is not None:
    color = "design" if "design" in cases.columns else None
    if color is None:
        cases = cases.assign(design="case")
        color = "design"
    columns = st.columns(3)
    columns[0].metric("cases", f"{len(cases):,}")
    columns[1].metric("mean absolute error", f"{cases['error'].abs().mean():.1%}")
    columns[2].metric("largest absolute error", f"{cases['error'].abs().max():.1%}")
    left, right = st.columns(2)
    with left:
        export.chart(
            LineChart(
                cases, "measured_s", "predicted_s", color, "Predicted against measured", "measured (s)", "predicted (s)",
                x_ticks=None, points=True, diagonal=True,
            ),
            f"{profile.name}-cases", "cases",
        )
    if "context" in cases.columns:
        with right:
            export.chart(
                LineChart(
                    cases, "context", "error", color, "Relative error against context", "context (tokens)",
                    "(predicted - measured) / measured", log_y=False, x_ticks=None, points=True,
                ),
                f"{profile.name}-case-errors", "case_errors",
            )
    export.table(cases, f"{profile.name}-cases", "cases_table")

st.subheader("Peaks, memory and links")
peaks = pd.DataFrame({"dtype": list(profile.peak_flops), "peak_flops_per_s": list(profile.peak_flops.values())})
export.table(peaks, f"{profile.name}-peaks", "peaks")
links = [{"domain": "scale_up", **profile.scale_up.model_dump(exclude={"in_switch_reduction"})}]
if profile.scale_out is not None:
    links.append({"domain": "scale_out", **profile.scale_out.model_dump()})
export.table(pd.DataFrame(links), f"{profile.name}-links", "links")
sources = pd.DataFrame({"number": list(profile.sources), "source": list(profile.sources.values())})
export.table(sources, f"{profile.name}-sources", "sources")

export.yaml_block("Hardware profile (YAML)", profile.model_dump(mode="json"), profile.name, "profile_yaml")
