"""Dashboard helpers that need no running page: crossovers, ratios, grouping, PNG and YAML export."""

import numpy as np
import pandas as pd
import pytest
import yaml

pytest.importorskip("streamlit")

from dashboards import analysis  # noqa: E402
from dashboards.charts import LineChart, Marker, BarChart  # noqa: E402
from dashboards.export import to_yaml  # noqa: E402
from dashboards.inputs import format_tokens  # noqa: E402

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _ops(contexts, series):
    rows = []
    for op, values in series.items():
        for n, v in zip(contexts, values):
            rows.append({"context": n, "phase": "decode", "op": op, "flops_per_token": v})
    return pd.DataFrame(rows)


def test_crossover_interpolates_log_context():
    # 'score' grows as N while 'core' is flat at 2048: equal at N = 2048.
    contexts = [1024, 4096]
    ops = _ops(contexts, {"score": [1024.0, 4096.0], "core": [2048.0, 2048.0]})
    found = analysis.crossovers(ops, "decode")
    assert list(found["op"]) == ["score"]
    assert list(found["overtakes"]) == ["core"]
    # Difference -1024 at log(1024), +2048 at log(4096): t = 1/3 of the way, N = 1024 * 4^(1/3).
    assert found["context"][0] == round(1024 * 4 ** (1 / 3))


def test_crossover_none_when_ordered():
    ops = _ops([1024, 4096], {"a": [1.0, 2.0], "b": [3.0, 4.0]})
    assert analysis.crossovers(ops, "decode").empty


def test_crossover_ignores_small_ops():
    # 'tiny' crosses 'small' but both stay under 5% of the total.
    ops = _ops([1024, 4096], {"big": [1000.0, 1000.0], "tiny": [1.0, 3.0], "small": [2.0, 2.0]})
    assert analysis.crossovers(ops, "decode").empty


def test_ratios_against_baseline():
    wide = pd.DataFrame(
        {"design": ["a", "a", "b", "b"], "context": [1, 2, 1, 2], "flops": [10.0, 20.0, 5.0, 40.0]}
    )
    out = analysis.ratios(wide, "a", ["flops"])
    b = out[out["design"] == "b"].set_index("context")["ratio"]
    assert b[1] == 0.5
    assert b[2] == 2.0
    assert set(out[out["design"] == "a"]["ratio"]) == {1.0}


def test_group_small_merges_into_other():
    frame = pd.DataFrame(
        {"phase": ["p", "p", "p", "d", "d", "d"], "op": ["x", "y", "z", "x", "y", "z"], "v": [97.0, 2.5, 0.5, 50.0, 1.0, 49.0]}
    )
    out = analysis.group_small(frame, "phase", "op", "v", min_share=0.03)
    # y is under 3% in both phases; z reaches 49% in d, so it stays everywhere.
    assert set(out["op"]) == {"x", "z", "other"}
    assert out[(out["phase"] == "p") & (out["op"] == "other")]["v"].item() == 2.5
    assert out["v"].sum() == frame["v"].sum()


def test_line_chart_png():
    data = pd.DataFrame({"context": [1024, 2048, 4096] * 2, "series": ["a"] * 3 + ["b"] * 3, "y": np.arange(1.0, 7.0)})
    chart = LineChart(data, "context", "y", "series", "t", "context", "y", markers=[Marker(2048, "N")])
    assert chart.png().startswith(PNG_MAGIC)
    spec = chart.vega()
    assert spec["layer"][0]["encoding"]["x"]["scale"] == {"type": "log"}
    assert spec["layer"][1]["data"]["values"] == [{"x": 2048, "label": "N"}]


def test_scatter_png():
    data = pd.DataFrame({"gpus": [1, 2, 4], "status": ["Pareto", "feasible", "infeasible"], "tpot_s": [0.01, 0.02, 0.03]})
    chart = LineChart(data, "gpus", "tpot_s", "status", "t", "devices", "s", x_ticks=[1, 2, 4], points=True)
    assert chart.png().startswith(PNG_MAGIC)
    assert chart.vega()["layer"][0]["mark"]["type"] == "point"


def test_stacked_bar_png():
    data = pd.DataFrame({"phase": ["prefill", "prefill", "decode"], "op": ["a", "b", "a"], "v": [1.0, 2.0, 3.0]})
    assert BarChart(data, "phase", "v", "op", "t", "FLOPs").png().startswith(PNG_MAGIC)


def test_yaml_round_trip():
    data = {"name": "x", "layers": [{"kind": "a", "count": 3}]}
    assert yaml.safe_load(to_yaml(data)) == data


@pytest.mark.parametrize("n, text", [(1024, "1K"), (131072, "128K"), (2**23, "8M"), (10_000_000, "10,000,000"), (1000, "1,000")])
def test_format_tokens(n, text):
    assert format_tokens(n) == text


def test_grouped_bar_png():
    data = pd.DataFrame({"kind": ["gemm", "gemm"], "which": ["compute", "memory"], "v": [0.8, 0.7]})
    chart = BarChart(data, "kind", "v", "which", "t", "fraction", stacked=False)
    assert chart.png().startswith(PNG_MAGIC)
    assert chart.vega()["layer"][0]["encoding"]["xOffset"] == {"field": "which", "type": "nominal"}


def test_diagonal_spans_both_axes():
    data = pd.DataFrame({"measured_s": [0.5, 2.0], "predicted_s": [0.25, 1.0], "design": ["a", "a"]})
    chart = LineChart(data, "measured_s", "predicted_s", "design", "t", "m", "p", x_ticks=None, points=True, diagonal=True)
    line = chart.vega()["layer"][1]["data"]["values"]
    # From the smallest to the largest value on either axis: 0.25 to 2.0.
    assert line == [{"measured_s": 0.25, "predicted_s": 0.25}, {"measured_s": 2.0, "predicted_s": 2.0}]
    assert chart.png().startswith(PNG_MAGIC)


def test_byte_axes_use_binary_units():
    from dashboards.charts import BarChart, binary_bytes

    # 94.6 GiB is 101.6e9 bytes: the axis must read GiB, not a decimal 'G'.
    assert binary_bytes(94.6 * 2**30) == "94.6 GiB"
    assert binary_bytes(512) == "512 B"
    frame = pd.DataFrame({"device": ["rank 0"], "part": ["weights"], "bytes": [1.0]})
    axis = BarChart(frame, "device", "bytes", "part", "Memory", "bytes").vega()["layer"][0]["encoding"]["y"]["axis"]
    assert "GiB" in axis["labelExpr"]
    flops = BarChart(frame, "device", "bytes", "part", "Work", "FLOPs").vega()["layer"][0]["encoding"]["y"]["axis"]
    assert flops == {"format": "~s"}


def test_many_series_get_twenty_colours():
    from dashboards.charts import BarChart

    many = pd.DataFrame({"x": ["a"] * 13, "op": [f"op{i}" for i in range(13)], "v": [1.0] * 13})
    few = many.head(3)
    assert BarChart(many, "x", "v", "op", "Ops", "FLOPs").vega()["layer"][0]["encoding"]["color"]["scale"] == {
        "scheme": "tableau20"
    }
    assert "scale" not in BarChart(few, "x", "v", "op", "Ops", "FLOPs").vega()["layer"][0]["encoding"]["color"]
    assert BarChart(many, "x", "v", "op", "Ops", "FLOPs").png().startswith(b"\x89PNG")
